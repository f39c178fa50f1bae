use serde_json::json;

use super::*;
use crate::validate::{Validator, is_provider_char, is_workload_char};

fn length(min: usize, max: usize) -> Result<(), InvalidValue> {
    Err(InvalidValue::Length { min, max })
}

fn pattern(pattern: &'static str) -> Result<(), InvalidValue> {
    Err(InvalidValue::Pattern { pattern })
}

fn workload(s: &str) -> Result<(), InvalidValue> {
    WorkloadName::parse(s).map(|_| ())
}

fn provider(s: &str) -> Result<(), InvalidValue> {
    CredentialProviderName::parse(s).map(|_| ())
}

fn session(s: &str) -> Result<(), InvalidValue> {
    SessionUri::parse(s).map(|_| ())
}

#[test]
fn workload_names() {
    for ok in ["abc", "my-agent", "a.b_c-D9", "...", "___", "---", "000"] {
        let name = WorkloadName::parse(ok).unwrap();
        assert_eq!(name.as_str(), ok);
        assert_eq!(name.to_string(), ok);
        assert_eq!(name, ok);
        assert_eq!(ok.parse::<WorkloadName>().unwrap(), name);
    }
    // Boundary lengths: 3..=255.
    assert_eq!(workload(""), length(3, 255));
    assert_eq!(workload("ab"), length(3, 255));
    assert_eq!(workload("abc"), Ok(()));
    assert_eq!(workload(&"a".repeat(255)), Ok(()));
    assert_eq!(workload(&"a".repeat(256)), length(3, 255));
    // Length is checked before the characters, as AgentCore reports it.
    assert_eq!(workload("a/"), length(3, 255));
    // Each refused character class.
    for bad in [
        "has space",
        "tab\there",
        "new\nline",
        "slash/name",
        "back\\slash",
        "colon:name",
        "at@name",
        "plus+name",
        "tilde~name",
        "percent%41",
        "accentué",
        "wide\u{FF21}\u{FF22}",
        "nul\0byte",
        "rtl\u{202E}name",
    ] {
        assert_eq!(workload(bad), pattern("[A-Za-z0-9_.-]+"), "{bad:?}");
    }
    // Lengths count characters: 3 non-ASCII characters pass the length rule, not the pattern.
    assert_eq!(workload("ééé"), pattern("[A-Za-z0-9_.-]+"));
}

#[test]
fn credential_provider_names() {
    for ok in ["g", "github", "my_provider-2", "A-Z_a-z_0-9"] {
        assert_eq!(CredentialProviderName::parse(ok).unwrap().as_str(), ok);
    }
    assert_eq!(provider(""), length(1, 128));
    assert_eq!(provider("a"), Ok(()));
    assert_eq!(provider(&"a".repeat(128)), Ok(()));
    assert_eq!(provider(&"a".repeat(129)), length(1, 128));
    for bad in [
        "dot.name", // allowed in a workload name, not here
        "has space",
        "slash/name",
        "colon:name",
        "tilde~name",
        "accentué",
        "new\nline",
    ] {
        assert_eq!(provider(bad), pattern("[a-zA-Z0-9\\-_]+"), "{bad:?}");
    }
}

#[test]
fn session_uris() {
    let ok = "urn:ietf:params:oauth:request_uri:abc-._~XYZ09";
    let uri = SessionUri::parse(ok).unwrap();
    assert_eq!(uri.as_str(), ok);
    assert_eq!(uri.id(), "abc-._~XYZ09");
    assert_eq!(SessionUri::from_id("abc-._~XYZ09").unwrap(), uri);
    assert!(SessionUri::matches_pattern(ok));

    // Boundary lengths: the whole URI, prefix included, is 1..=1024.
    let room = MAX_SESSION_URI_LEN - SESSION_URI_PREFIX.len();
    assert_eq!(session(""), length(1, 1024));
    assert_eq!(session(&format!("{SESSION_URI_PREFIX}a")), Ok(()));
    assert_eq!(
        session(&format!("{SESSION_URI_PREFIX}{}", "a".repeat(room))),
        Ok(())
    );
    assert_eq!(
        session(&format!("{SESSION_URI_PREFIX}{}", "a".repeat(room + 1))),
        length(1, 1024)
    );
    // Too long is refused even where the pattern would match.
    assert!(SessionUri::matches_pattern(&format!(
        "{SESSION_URI_PREFIX}{}",
        "a".repeat(room + 1)
    )));

    let refused = pattern("urn:ietf:params:oauth:request_uri:[a-zA-Z0-9-._~]+");
    // The prefix alone, another prefix, a prefix in another case, the prefix not first.
    for bad in [
        SESSION_URI_PREFIX,
        "urn:ietf:params:oauth:request_uri",
        "urn:other:abc",
        "URN:IETF:PARAMS:OAUTH:REQUEST_URI:abc",
        " urn:ietf:params:oauth:request_uri:abc",
        "https://evil.example/urn:ietf:params:oauth:request_uri:abc",
    ] {
        assert_eq!(session(bad), refused, "{bad:?}");
    }
    // Each refused character class in the id.
    for c in ['/', '%', ' ', '+', ':', '?', '#', '=', '&', 'é', '\n', '\0'] {
        let bad = format!("{SESSION_URI_PREFIX}ab{c}cd");
        assert_eq!(session(&bad), refused, "{bad:?}");
    }
}

#[test]
fn scopes() {
    assert!(Scopes::parse::<&str>(&[]).unwrap().is_empty());
    let scopes = Scopes::parse(&["repo", "read:user", "https://graph.example/.default"]).unwrap();
    assert_eq!(scopes.len(), 3);
    assert_eq!(
        scopes.join(" "),
        "repo read:user https://graph.example/.default"
    );
    assert_eq!(scopes.as_slice()[1], "read:user");
    assert_eq!(scopes.iter().count(), 3);
    // Order and duplicates are the caller's.
    let dup = Scopes::parse(&["b", "a", "b"]).unwrap();
    assert_eq!(dup.into_vec(), vec!["b", "a", "b"]);
    // Boundary lengths of one scope: 1..=128; ScopeType has no pattern.
    let err = |s: &str| Scopes::parse(&["ok", s]).map(|_| ());
    assert_eq!(err(""), length(1, 128));
    assert_eq!(err(&"s".repeat(128)), Ok(()));
    assert_eq!(err(&"s".repeat(129)), length(1, 128));
    assert_eq!(err("any thing: é/%\n"), Ok(()));
}

#[test]
fn serde_uses_the_wire_form_and_validates() {
    let name: WorkloadName = serde_json::from_value(json!("my-agent")).unwrap();
    assert_eq!(serde_json::to_value(&name).unwrap(), json!("my-agent"));
    assert!(serde_json::from_value::<WorkloadName>(json!("a b c")).is_err());
    assert!(serde_json::from_value::<WorkloadName>(json!(42)).is_err());
    assert!(serde_json::from_value::<CredentialProviderName>(json!("")).is_err());
    assert!(serde_json::from_value::<SessionUri>(json!("urn:other:x")).is_err());

    let scopes: Scopes = serde_json::from_value(json!(["a", "b"])).unwrap();
    assert_eq!(serde_json::to_value(&scopes).unwrap(), json!(["a", "b"]));
    assert!(serde_json::from_value::<Scopes>(json!(["a", ""])).is_err());
    assert_eq!(
        serde_json::from_value::<Scopes>(json!([])).unwrap(),
        Scopes::default()
    );
}

#[test]
fn errors_never_name_the_value() {
    let secret = "s3cr3t/value";
    for error in [
        WorkloadName::parse(secret).unwrap_err(),
        CredentialProviderName::parse(secret).unwrap_err(),
        SessionUri::parse(secret).unwrap_err(),
    ] {
        assert!(!error.to_string().contains(secret), "{error}");
    }
}

/// `Validator::value` records what `Validator::chars` records for the same member, so the
/// handlers can switch to the types without changing a message.
#[test]
fn validator_messages_match_the_character_rules() {
    for input in [
        "",
        "ab",
        "abc",
        "a b c",
        "ok-name",
        &"x".repeat(256),
        "dot.name",
    ] {
        let mut by_type = Validator::new();
        let parsed = by_type.value::<WorkloadName>("workloadName", input);
        let mut by_chars = Validator::new();
        let ok = by_chars.chars(
            "workloadName",
            input,
            3,
            255,
            is_workload_char,
            "[A-Za-z0-9_.-]+",
        );
        assert_eq!(parsed.is_some(), ok, "{input:?}");
        assert_eq!(
            format!("{:?}", by_type.finish()),
            format!("{:?}", by_chars.finish())
        );

        let mut by_type = Validator::new();
        let parsed = by_type.value::<CredentialProviderName>("name", input);
        let mut by_chars = Validator::new();
        let ok = by_chars.chars("name", input, 1, 128, is_provider_char, "[a-zA-Z0-9\\-_]+");
        assert_eq!(parsed.is_some(), ok, "{input:?}");
        assert_eq!(
            format!("{:?}", by_type.finish()),
            format!("{:?}", by_chars.finish())
        );
    }
}

/// The messages the identity service sends today for `sessionUri` and `scopes`.
#[test]
fn messages_are_agentcores() {
    assert_eq!(
        SessionUri::parse("urn:x").unwrap_err().to_string(),
        "Member must satisfy regular expression pattern: urn:ietf:params:oauth:request_uri:[a-zA-Z0-9-._~]+"
    );
    assert_eq!(
        SessionUri::parse("").unwrap_err().to_string(),
        "Member must have length between 1 and 1024, inclusive"
    );
    // `Validator::scopes` records one failure per refused scope, like a loop of `length`.
    let scopes: Vec<String> = vec!["ok".into(), String::new(), "x".repeat(129)];
    let mut by_type = Validator::new();
    assert!(by_type.scopes("scopes", &scopes).is_none());
    let mut by_length = Validator::new();
    for s in &scopes {
        by_length.length("scopes", s, 1, 128);
    }
    assert_eq!(
        format!("{:?}", by_type.finish()),
        format!("{:?}", by_length.finish())
    );
    let mut v = Validator::new();
    assert_eq!(
        v.scopes("scopes", &["a".to_string()]).unwrap().as_slice(),
        ["a"]
    );
    assert!(v.finish().is_ok());
}
