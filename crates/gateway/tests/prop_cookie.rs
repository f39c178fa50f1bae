//! Property tests of the gateway's sealed cookies (issue 12): `CookieSealer::open` never
//! panics on arbitrary values; what is sealed opens to the same bytes, for that cookie
//! name (purpose) and key only; any single-bit flip or truncation of a sealed value is
//! refused.
//!
//! Bounded: [`CASES`] cases per property, so `cargo test --workspace` runs them.
#![allow(clippy::unwrap_used)]

use latchkey_gateway::keys::CookieSealer;
use proptest::prelude::*;

const CASES: u32 = 256;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        ..ProptestConfig::default()
    }
}

fn sealer(key: &[u8; 32]) -> CookieSealer {
    CookieSealer::from_key(key).unwrap()
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![Just("__Host-latchkey".to_owned()), "[A-Za-z0-9_-]{1,24}"]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn open_never_panics(key in any::<[u8; 32]>(), name in name(), value in any::<String>()) {
        let _ = sealer(&key).open(&name, &value);
    }

    #[test]
    fn open_never_panics_on_base64(key in any::<[u8; 32]>(), value in "[A-Za-z0-9_-]{0,300}") {
        let _ = sealer(&key).open("c", &value);
        let mut raw = value.clone().into_bytes();
        let _ = sealer(&key).open_bytes("c", &mut raw);
    }

    #[test]
    fn seal_then_open_round_trips(
        key in any::<[u8; 32]>(),
        name in name(),
        id in prop::collection::vec(any::<u8>(), 0..96),
    ) {
        let s = sealer(&key);
        let sealed = s.seal(&name, &id).unwrap();
        prop_assert_eq!(s.open(&name, &sealed), Some(id.clone()));
        // Two seals of the same value differ (random nonce) and both open.
        let again = s.seal(&name, &id).unwrap();
        prop_assert_ne!(&again, &sealed);
        prop_assert_eq!(s.open(&name, &again), Some(id.clone()));

        let bytes = s.seal_bytes(&name, id.clone()).unwrap();
        let mut copy = bytes.clone();
        prop_assert_eq!(s.open_bytes(&name, &mut copy), Some(&id[..]));
    }

    /// Another cookie name, another key: refused.
    #[test]
    fn sealed_values_are_bound_to_name_and_key(
        key in any::<[u8; 32]>(),
        other_key in any::<[u8; 32]>(),
        name in name(),
        other_name in name(),
        id in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let sealed = sealer(&key).seal(&name, &id).unwrap();
        if other_name != name {
            prop_assert_eq!(sealer(&key).open(&other_name, &sealed), None);
        }
        if other_key != key {
            prop_assert_eq!(sealer(&other_key).open(&name, &sealed), None);
        }
    }

    /// Any single-bit flip (kept ASCII) or truncation of a sealed cookie value is refused,
    /// and so is any flip or truncation of the raw sealed bytes.
    #[test]
    fn flipped_or_truncated_cookies_are_refused(
        key in any::<[u8; 32]>(),
        id in prop::collection::vec(any::<u8>(), 0..64),
        i in any::<usize>(),
        bit in 0u8..8,
        cut in any::<usize>(),
    ) {
        let s = sealer(&key);
        let sealed = s.seal("c", &id).unwrap();
        let n = sealed.len();
        let mut bytes = sealed.clone().into_bytes();
        bytes[i % n] ^= 1 << (bit % 7);
        let flipped = String::from_utf8(bytes).unwrap();
        prop_assert_eq!(s.open("c", &flipped), None, "flip at {} accepted", i % n);
        prop_assert_eq!(s.open("c", &sealed[..cut % n]), None, "truncation accepted");

        let raw = s.seal_bytes("c", id.clone()).unwrap();
        let m = raw.len();
        let mut flipped = raw.clone();
        flipped[i % m] ^= 1 << bit;
        prop_assert_eq!(s.open_bytes("c", &mut flipped), None);
        let mut cut_raw = raw[..cut % m].to_vec();
        prop_assert_eq!(s.open_bytes("c", &mut cut_raw), None);
    }
}
