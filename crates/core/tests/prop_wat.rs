//! Property tests of workload access tokens (issue 12): `verify` never panics on arbitrary
//! input, what is issued verifies to the same claims, and any single-bit flip or truncation
//! of a token is refused.
//!
//! Bounded: [`CASES`] cases per property, so `cargo test --workspace` runs them.
#![allow(clippy::unwrap_used)]

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use latchkey_core::UserPrincipal;
use latchkey_core::wat::{WatAuthority, WatKey};
use proptest::prelude::*;

const CASES: u32 = 256;
const ISSUER: &str = "https://identity.proptest.example";
const NOW: i64 = 1_780_000_000;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        ..ProptestConfig::default()
    }
}

/// One authority for every case (key generation is the slow part).
fn authority() -> &'static WatAuthority {
    static A: OnceLock<WatAuthority> = OnceLock::new();
    A.get_or_init(|| {
        let (key, _) = WatKey::generate("prop-k1".into()).unwrap();
        WatAuthority::new(ISSUER.into(), key, vec![])
    })
}

fn user() -> impl Strategy<Value = Option<UserPrincipal>> {
    prop::option::of(
        (
            ".{1,40}",
            prop::option::of("https://[a-z]{1,10}\\.example(/[a-z]{0,6})?"),
        )
            .prop_filter_map("a valid user", |(subject, issuer)| match issuer {
                Some(issuer) => UserPrincipal::jwt(issuer, subject).ok(),
                None => UserPrincipal::user_id(subject).ok(),
            }),
    )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn verify_never_panics_on_arbitrary_strings(s in any::<String>()) {
        prop_assert!(authority().verify(&s, NOW).is_err());
    }

    /// Three base64url parts of arbitrary (or JSON-ish) bytes: refused, never a panic.
    #[test]
    fn verify_never_panics_on_forged_structure(
        header in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            Just(br#"{"alg":"ES256","typ":"JWT","kid":"prop-k1"}"#.to_vec()),
            Just(br#"{"alg":"none","typ":"JWT","kid":"prop-k1"}"#.to_vec()),
            Just(br#"{"alg":"ES256","kid":"prop-k1"}"#.to_vec()),
        ],
        payload in prop::collection::vec(any::<u8>(), 0..128),
        sig in prop::collection::vec(any::<u8>(), 0..80),
    ) {
        let token = format!("{}.{}.{}", B64.encode(header), B64.encode(payload), B64.encode(sig));
        prop_assert!(authority().verify(&token, NOW).is_err());
    }

    #[test]
    fn issued_tokens_verify_to_their_claims(
        workload in "[A-Za-z0-9_-]{1,48}",
        user in user(),
        ttl in 1i64..86_400,
        elapsed in 0i64..86_400,
    ) {
        let a = authority();
        let (token, claims) = a.issue(&workload, user.as_ref(), NOW, ttl).unwrap();
        let at = NOW + elapsed;
        match a.verify(&token, at) {
            Ok(v) => {
                prop_assert!(elapsed < ttl);
                prop_assert_eq!(v, claims);
            }
            Err(_) => prop_assert!(elapsed >= ttl, "a live token was refused"),
        }
    }

    /// Any single-bit flip (kept ASCII) or any truncation of a valid token is refused.
    #[test]
    fn flipped_or_truncated_tokens_are_refused(
        workload in "[A-Za-z0-9_-]{1,48}",
        user in user(),
        i in any::<usize>(),
        bit in 0u8..7,
        cut in any::<usize>(),
    ) {
        let a = authority();
        let (token, _) = a.issue(&workload, user.as_ref(), NOW, 900).unwrap();
        prop_assert!(a.verify(&token, NOW).is_ok());

        let mut bytes = token.clone().into_bytes();
        let n = bytes.len();
        bytes[i % n] ^= 1 << bit;
        let flipped = String::from_utf8(bytes).unwrap();
        prop_assert!(a.verify(&flipped, NOW).is_err(), "flip at {} bit {} accepted", i % n, bit);

        let truncated = &token[..cut % n];
        prop_assert!(a.verify(truncated, NOW).is_err(), "truncation to {} accepted", cut % n);
    }
}
