//! Property tests of the ALB `x-amzn-oidc-data` verifier (issue 12), with real ES256
//! tokens and the key served as PEM from a loopback key server: `AlbVerifier::verify`
//! never panics on arbitrary input; a token signed by the load balancer's key verifies to
//! its subject; any single-bit flip or truncation of a signed token is refused.
//!
//! Bounded: [`CASES`] cases per property, so `cargo test --workspace` runs them.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::*;
use latchkey_authn::alb::verify::{AlbError, AlbUser, AlbVerifier};
use latchkey_authn::outbound::{OutboundClient, OutboundPolicy};
use latchkey_core::clock::ManualClock;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::json;
use tokio::runtime::Runtime;

const CASES: u32 = 256;

struct Fixture {
    rt: Runtime,
    key: EcKey,
    verifier: AlbVerifier,
    _keys: KeyServer,
}

impl Fixture {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let key = EcKey::generate("0b9c7a3e-prop-4c2a-9e8b-7d6f5a4c3b2a");
        let keys = rt.block_on(KeyServer::start(&[&key]));
        let client = OutboundClient::new(OutboundPolicy {
            allow_private_addresses: true,
            ..OutboundPolicy::default()
        })
        .unwrap();
        let verifier = AlbVerifier::new(
            alb_config(&keys),
            client,
            Arc::new(ManualClock::new(NOW_MS)),
        );
        let fixture = Self {
            rt,
            key,
            verifier,
            _keys: keys,
        };
        // Warm the key cache, so every case below is a pure verification.
        let warm = alb_token(&fixture.key, "warm", true);
        assert_eq!(fixture.verify(&warm).unwrap().subject, "warm");
        fixture
    }

    fn verify(&self, token: &str) -> Result<AlbUser, AlbError> {
        self.rt.block_on(self.verifier.verify(token))
    }

    fn token(&self, sub: &str, padded: bool) -> String {
        let mut payload = alb_payload(sub);
        payload["name"] = json!("Prop Test");
        jws(
            &self.key,
            &alb_header(&self.key.kid, SIGNER),
            &payload,
            padded,
        )
    }
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    })
}

fn run<S: Strategy>(strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    if let Err(e) = runner().run(&strategy, test) {
        panic!("{e}");
    }
}

/// `[A-Za-z0-9_=-]` strings split by dots: shaped like a token, never a valid one.
fn b64ish() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_=-]{0,40}(\\.[A-Za-z0-9_=-]{0,40}){0,3}"
}

#[test]
fn alb_verifier_properties() {
    let f = Fixture::new();

    // Arbitrary strings and token-shaped garbage: refused, never a panic.
    run(any::<String>(), |s| {
        prop_assert!(f.verify(&s).is_err());
        Ok(())
    });
    run(b64ish(), |s| {
        prop_assert!(f.verify(&s).is_err());
        Ok(())
    });

    // Headers and payloads of arbitrary JSON, validly encoded and signed by the real key:
    // no panic; what verifies has a usable subject from the payload.
    let json_part = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..48),
        Just(serde_json::to_vec(&alb_header(&f.key.kid, SIGNER)).unwrap()),
        Just(serde_json::to_vec(&alb_payload("alice")).unwrap()),
        (any::<i64>(), any::<f64>(), ".{0,10}").prop_map(|(i, x, s)| {
            serde_json::to_vec(&json!({
                "alg": "ES256", "kid": "0b9c7a3e-prop-4c2a-9e8b-7d6f5a4c3b2a",
                "signer": SIGNER, "exp": i, "nbf": x, "sub": s, "iss": ALB_ISSUER,
            }))
            .unwrap()
        }),
    ];
    run(
        (json_part.clone(), json_part, any::<bool>()),
        |(h, p, padded)| {
            let hp = b64(&h, padded);
            let pp = b64(&p, padded);
            let token = sign_parts(&f.key, &hp, &pp, padded);
            if let Ok(user) = f.verify(&token) {
                let payload: serde_json::Value = serde_json::from_slice(&p).unwrap();
                prop_assert_eq!(payload["sub"].as_str(), Some(user.subject.as_str()));
                prop_assert!(
                    !user.subject.is_empty() && !user.subject.chars().any(char::is_control)
                );
            }
            Ok(())
        },
    );

    // A signed token verifies to exactly its subject; a subject with control characters is
    // never accepted.
    run((".{1,64}", any::<bool>()), |(sub, padded)| {
        let token = f.token(&sub, padded);
        match f.verify(&token) {
            Ok(user) => {
                prop_assert_eq!(&user.subject, &sub);
                prop_assert!(
                    !sub.chars().any(char::is_control),
                    "control character accepted"
                );
            }
            // Only the subject may be the reason (the subject rules may tighten; the
            // signature, structure and key handling must not fail on a valid token).
            Err(e) => prop_assert!(
                !matches!(
                    e,
                    AlbError::Malformed(_)
                        | AlbError::Algorithm
                        | AlbError::WrongSigner
                        | AlbError::BadKid
                        | AlbError::UnknownKey
                        | AlbError::KeyUnavailable(_)
                        | AlbError::BadSignature
                        | AlbError::Expired
                        | AlbError::NotYetValid
                        | AlbError::WrongIssuer
                ),
                "signed token refused: {e}"
            ),
        }
        Ok(())
    });
    run(
        ("[A-Za-z0-9@._|+-]{1,64}", any::<bool>()),
        |(sub, padded)| {
            let user = f.verify(&f.token(&sub, padded));
            prop_assert_eq!(user.map(|u| u.subject), Ok(sub));
            Ok(())
        },
    );

    // Any single-bit flip (kept ASCII) or truncation is refused. Stripping `=` padding from
    // the end is not a change (padded and unpadded parts are the same token), so a
    // truncation that only removes trailing `=` is not counted.
    run(
        (
            "[A-Za-z0-9]{1,32}",
            any::<bool>(),
            any::<usize>(),
            0u8..7,
            any::<usize>(),
        ),
        |(sub, padded, i, bit, cut)| {
            let token = f.token(&sub, padded);
            prop_assert!(f.verify(&token).is_ok());
            let n = token.len();
            let mut bytes = token.clone().into_bytes();
            bytes[i % n] ^= 1 << bit;
            let flipped = String::from_utf8(bytes).unwrap();
            prop_assert!(
                f.verify(&flipped).is_err(),
                "flip at {} bit {} accepted",
                i % n,
                bit
            );
            let truncated = &token[..cut % n];
            if token.trim_end_matches('=') != truncated.trim_end_matches('=') {
                prop_assert!(
                    f.verify(truncated).is_err(),
                    "truncation to {} accepted",
                    cut % n
                );
            }
            Ok(())
        },
    );

    // A token signed by another key under the same kid, or for another signer, is refused.
    let impostor = EcKey::generate(&f.key.kid);
    run("[A-Za-z0-9]{1,32}", |sub| {
        let forged = jws(
            &impostor,
            &alb_header(&f.key.kid, SIGNER),
            &alb_payload(&sub),
            true,
        );
        prop_assert!(matches!(f.verify(&forged), Err(AlbError::BadSignature)));
        let other = jws(
            &f.key,
            &alb_header(&f.key.kid, OTHER_SIGNER),
            &alb_payload(&sub),
            true,
        );
        prop_assert!(matches!(f.verify(&other), Err(AlbError::WrongSigner)));
        Ok(())
    });
}
