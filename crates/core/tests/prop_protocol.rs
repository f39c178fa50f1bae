//! Property tests of the protocol value types (issue 13, item 4): each type accepts
//! exactly what AgentCore's model allows (length in characters, then the pattern), and
//! what it accepts survives serde and `Display` unchanged.
//!
//! Bounded: [`CASES`] cases per property, so `cargo test --workspace` runs them.
#![allow(clippy::unwrap_used)]

use latchkey_core::protocol::{
    CredentialProviderName, InvalidValue, MAX_SESSION_URI_LEN, SESSION_URI_PREFIX, Scopes,
    SessionUri, WorkloadName,
};
use proptest::prelude::*;

const CASES: u32 = 512;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        ..ProptestConfig::default()
    }
}

/// The model's rule, written out independently: `min..=max` characters, all in `class`.
fn model(s: &str, min: usize, max: usize, class: &str) -> bool {
    let n = s.chars().count();
    (min..=max).contains(&n)
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric() || (c.is_ascii() && class.contains(c) && !c.is_whitespace())
        })
}

/// Mostly allowed characters, with a few of every kind that is refused.
fn name_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_.-]{0,300}",
        "[A-Za-z0-9_.~:/ %é\\-]{0,20}",
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn workload_name_accepts_exactly_the_model(s in name_like()) {
        let parsed = WorkloadName::parse(&s);
        prop_assert_eq!(parsed.is_ok(), model(&s, 3, 255, "_.-"), "{:?}", s);
        if let Ok(name) = parsed {
            prop_assert_eq!(name.to_string(), s.clone());
            let json = serde_json::to_string(&name).unwrap();
            prop_assert_eq!(serde_json::from_str::<WorkloadName>(&json).unwrap(), name);
        }
    }

    #[test]
    fn provider_name_accepts_exactly_the_model(s in name_like()) {
        let parsed = CredentialProviderName::parse(&s);
        prop_assert_eq!(parsed.is_ok(), model(&s, 1, 128, "_-"), "{:?}", s);
        if let Ok(name) = parsed {
            let json = serde_json::to_string(&name).unwrap();
            prop_assert_eq!(serde_json::from_str::<CredentialProviderName>(&json).unwrap(), name);
        }
    }

    /// Every id of allowed characters that fits makes a session URI whose id is itself.
    #[test]
    fn session_uri_from_any_valid_id(
        id in proptest::string::string_regex(&format!(
            "[a-zA-Z0-9._~-]{{1,{}}}",
            MAX_SESSION_URI_LEN - SESSION_URI_PREFIX.len()
        )).unwrap()
    ) {
        let uri = SessionUri::from_id(&id).unwrap();
        prop_assert_eq!(uri.id(), id.as_str());
        prop_assert_eq!(uri.as_str(), format!("{SESSION_URI_PREFIX}{id}"));
        prop_assert_eq!(uri.as_str().parse::<SessionUri>().unwrap(), uri);
    }

    /// Anything else is refused, and nothing panics.
    #[test]
    fn session_uri_accepts_exactly_the_model(tail in name_like(), prefixed in any::<bool>()) {
        let s = if prefixed { format!("{SESSION_URI_PREFIX}{tail}") } else { tail.clone() };
        let expected = s.chars().count() <= MAX_SESSION_URI_LEN
            && s.strip_prefix(SESSION_URI_PREFIX).is_some_and(|id| model(id, 1, usize::MAX, "-._~"));
        prop_assert_eq!(SessionUri::parse(&s).is_ok(), expected, "{:?}", s);
    }

    #[test]
    fn scopes_accept_exactly_the_model(scopes in prop::collection::vec(".{0,140}", 0..6)) {
        let expected = scopes.iter().all(|s| (1..=128).contains(&s.chars().count()));
        let parsed = Scopes::parse(&scopes);
        prop_assert_eq!(parsed.is_ok(), expected);
        match parsed {
            Ok(parsed) => prop_assert_eq!(parsed.as_slice(), scopes.as_slice()),
            Err(error) => prop_assert_eq!(error, InvalidValue::Length { min: 1, max: 128 }),
        }
    }
}
