//! Property tests of inbound user-JWT verification (`GetWorkloadAccessTokenForJWT`'s
//! verifier, issue 12), against a local issuer serving discovery and a JWKS with a real
//! ES256 key: `InboundVerifier::verify` never panics on arbitrary input; a token signed by
//! the issuer's key verifies to its subject; any single-bit flip or truncation is refused;
//! tokens signed by another key or with another algorithm are refused.
//!
//! Bounded: [`CASES`] cases per property, so `cargo test --workspace` runs them.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use axum::Json;
use axum::Router;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use latchkey_authn::inbound::{InboundIssuerConfig, InboundVerifier};
use latchkey_authn::outbound::{OutboundClient, OutboundPolicy};
use latchkey_core::clock::ManualClock;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};
use tokio::runtime::Runtime;

const CASES: u32 = 256;
const AUDIENCE: &str = "latchkey-prop";
const NOW_MS: i64 = 1_750_000_000_000;
const NOW: i64 = NOW_MS / 1000;
const KID: &str = "prop-es256";

struct Key {
    encoding: EncodingKey,
    jwk: Value,
}

fn ec_key(kid: &str) -> Key {
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let point = pair.public_key().as_ref();
    Key {
        encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
        jwk: json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        }),
    }
}

struct Fixture {
    rt: Runtime,
    issuer: String,
    key: Key,
    verifier: InboundVerifier,
}

impl Fixture {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let key = ec_key(KID);
        let jwks = json!({ "keys": [key.jwk.clone()] });
        let issuer = rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let issuer = format!("http://{}", listener.local_addr().unwrap());
            let discovery = json!({
                "issuer": issuer,
                "jwks_uri": format!("{issuer}/jwks"),
                "authorization_endpoint": format!("{issuer}/authorize"),
                "id_token_signing_alg_values_supported": ["ES256"],
            });
            let router = Router::new()
                .route(
                    "/.well-known/openid-configuration",
                    get(move || async move { Json(discovery) }),
                )
                .route("/jwks", get(move || async move { Json(jwks) }));
            tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
            issuer
        });
        let client = OutboundClient::new(OutboundPolicy {
            allow_private_addresses: true,
            ..OutboundPolicy::default()
        })
        .unwrap();
        let verifier = InboundVerifier::new(
            vec![InboundIssuerConfig::new(
                issuer.clone(),
                vec![AUDIENCE.to_string()],
            )],
            client,
            Arc::new(ManualClock::new(NOW_MS)),
        );
        let f = Self {
            rt,
            issuer,
            key,
            verifier,
        };
        // Warm the key cache: every case below is a pure verification.
        assert!(f.verify(&f.token("warm")).is_ok());
        f
    }

    fn verify(&self, token: &str) -> Result<String, String> {
        self.rt
            .block_on(self.verifier.verify(token))
            .map(|u| u.subject)
            .map_err(|e| e.to_string())
    }

    fn claims(&self, sub: &str) -> Value {
        json!({"iss": self.issuer, "aud": AUDIENCE, "sub": sub, "iat": NOW - 5, "exp": NOW + 300})
    }

    fn token(&self, sub: &str) -> String {
        sign(&self.key, KID, &self.claims(sub))
    }
}

fn sign(key: &Key, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
}

fn run<S: Strategy>(strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{e}");
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[test]
fn inbound_jwt_verifier_properties() {
    let f = Fixture::new();

    // Arbitrary strings: refused, never a panic.
    run(any::<String>(), |s| {
        prop_assert!(f.verify(&s).is_err());
        Ok(())
    });

    // Headers of arbitrary or hostile JSON (alg none/HS256, the issuer's kid, jwk/jku
    // injection) over a payload naming the real issuer, with arbitrary signatures.
    let header = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..40),
        (
            prop::sample::select(vec![
                "none", "HS256", "ES256", "RS256", "ES384", "PS256", "EdDSA", ""
            ]),
            prop::option::of(".{0,8}")
        )
            .prop_map(|(alg, kid)| serde_json::to_vec(
                &json!({"alg": alg, "typ": "JWT", "kid": kid.unwrap_or_else(|| KID.into())})
            )
            .unwrap()),
        Just(
            serde_json::to_vec(
                &json!({"alg": "ES256", "kid": KID, "jwk": {"kty": "oct", "k": "AAAA"}})
            )
            .unwrap()
        ),
        Just(serde_json::to_vec(&json!({"alg": "ES256", "kid": KID, "crit": ["exp"]})).unwrap()),
    ];
    let payload = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..60),
        Just(serde_json::to_vec(&f.claims("mallory")).unwrap()),
    ];
    run(
        (header, payload, prop::collection::vec(any::<u8>(), 0..72)),
        |(h, p, s)| {
            let token = format!("{}.{}.{}", b64(&h), b64(&p), b64(&s));
            prop_assert!(f.verify(&token).is_err(), "forged token accepted");
            Ok(())
        },
    );

    // A signed token verifies to exactly its subject.
    run("[A-Za-z0-9@._|+-]{1,64}", |sub| {
        prop_assert_eq!(f.verify(&f.token(&sub)), Ok(sub));
        Ok(())
    });

    // Any single-bit flip (kept ASCII) or truncation is refused.
    run(
        ("[A-Za-z0-9]{1,32}", any::<usize>(), 0u8..7, any::<usize>()),
        |(sub, i, bit, cut)| {
            let token = f.token(&sub);
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
            prop_assert!(
                f.verify(&token[..cut % n]).is_err(),
                "truncation to {} accepted",
                cut % n
            );
            Ok(())
        },
    );

    // Another key under the issuer's kid: refused. Other claims that must hold: refused.
    let impostor = ec_key(KID);
    run("[A-Za-z0-9]{1,32}", |sub| {
        prop_assert!(f.verify(&sign(&impostor, KID, &f.claims(&sub))).is_err());
        let mut c = f.claims(&sub);
        c["aud"] = json!("someone-else");
        prop_assert!(
            f.verify(&sign(&f.key, KID, &c)).is_err(),
            "wrong audience accepted"
        );
        let mut c = f.claims(&sub);
        c["exp"] = json!(NOW - 3600);
        prop_assert!(
            f.verify(&sign(&f.key, KID, &c)).is_err(),
            "expired token accepted"
        );
        Ok(())
    });
}
