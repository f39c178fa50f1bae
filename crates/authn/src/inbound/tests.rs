use super::*;

fn config() -> InboundIssuerConfig {
    InboundIssuerConfig::new("https://idp.example.com", vec!["latchkey".to_string()])
}

#[test]
fn config_defaults_from_toml_like_json() {
    let parsed: InboundIssuerConfig =
        serde_json::from_str(r#"{"issuer": "https://idp.example.com", "audiences": ["a"]}"#)
            .expect("parses");
    assert_eq!(parsed.algorithms, vec!["RS256", "ES256", "PS256", "EdDSA"]);
    assert_eq!(parsed.leeway_seconds, 60);
    assert_eq!(
        parsed.effective_discovery_url(),
        "https://idp.example.com/.well-known/openid-configuration"
    );
    assert!(parsed.validate().is_ok());
    let trailing = InboundIssuerConfig::new("https://idp.example.com/realm/", vec!["a".into()]);
    assert_eq!(
        trailing.effective_discovery_url(),
        "https://idp.example.com/realm/.well-known/openid-configuration"
    );
    assert!(
        serde_json::from_str::<InboundIssuerConfig>(r#"{"issuer": "x", "audience": ["a"]}"#)
            .is_err()
    );
}

#[test]
fn validation_names_the_failing_key() {
    let key_of = |c: InboundIssuerConfig| c.validate().expect_err("invalid").key;
    assert_eq!(
        key_of(InboundIssuerConfig {
            audiences: vec![],
            ..config()
        }),
        "audiences"
    );
    assert_eq!(
        key_of(InboundIssuerConfig {
            audiences: vec![" ".into()],
            ..config()
        }),
        "audiences"
    );
    assert_eq!(
        key_of(InboundIssuerConfig {
            algorithms: vec!["HS256".into()],
            ..config()
        }),
        "algorithms"
    );
    assert_eq!(
        key_of(InboundIssuerConfig {
            algorithms: vec!["none".into()],
            ..config()
        }),
        "algorithms"
    );
    assert_eq!(
        key_of(InboundIssuerConfig {
            algorithms: vec!["RS1".into()],
            ..config()
        }),
        "algorithms"
    );
    assert_eq!(
        key_of(InboundIssuerConfig {
            algorithms: vec![],
            ..config()
        }),
        "algorithms"
    );
    assert_eq!(
        key_of(InboundIssuerConfig {
            issuer: "idp".into(),
            ..config()
        }),
        "issuer"
    );
    assert_eq!(
        key_of(InboundIssuerConfig {
            jwks_uri: Some("ftp://x/".into()),
            ..config()
        }),
        "jwks_uri"
    );
    assert_eq!(
        key_of(InboundIssuerConfig {
            discovery_url: Some("nope".into()),
            ..config()
        }),
        "discovery_url"
    );
    assert_eq!(
        key_of(InboundIssuerConfig {
            leeway_seconds: 10_000,
            ..config()
        }),
        "leeway_seconds"
    );
}

#[test]
fn claim_checks() {
    let c = config();
    let now = 1_000_000;
    let ok = serde_json::json!({"iss": c.issuer, "aud": ["other", "latchkey"], "sub": "u", "exp": now + 10, "iat": now});
    assert_eq!(check_claims(&c, &ok, now), Ok(()));
    let with = |k: &str, v: Value| {
        let mut claims = ok.clone();
        claims[k] = v;
        check_claims(&c, &claims, now)
    };
    assert_eq!(
        with("exp", serde_json::json!(now - 61)),
        Err(InboundError::Expired)
    );
    assert_eq!(with("exp", serde_json::json!(now - 30)), Ok(()));
    assert_eq!(
        with("exp", serde_json::json!("soon")),
        Err(InboundError::Malformed("exp is not a number"))
    );
    assert_eq!(
        with("nbf", serde_json::json!(now + 61)),
        Err(InboundError::NotYetValid)
    );
    assert_eq!(
        with("iat", serde_json::json!(now + 61)),
        Err(InboundError::NotYetValid)
    );
    assert_eq!(
        with("aud", serde_json::json!("other")),
        Err(InboundError::WrongAudience)
    );
    assert_eq!(
        with("sub", serde_json::json!("")),
        Err(InboundError::MissingSubject)
    );
    for sub in [
        "alice\nINFO forged line",
        "alice\r",
        "\u{1b}[31malice",
        "alice\u{85}",
        "alice\u{2028}x",
        "\u{202e}ecila",
    ] {
        assert_eq!(
            with("sub", serde_json::json!(sub)),
            Err(InboundError::UnsafeSubject),
            "{sub:?}"
        );
    }
    assert_eq!(
        with("iss", serde_json::json!("https://evil.example")),
        Err(InboundError::WrongIssuer)
    );
    let mut no_exp = ok.clone();
    no_exp.as_object_mut().expect("object").remove("exp");
    assert_eq!(
        check_claims(&c, &no_exp, now),
        Err(InboundError::Malformed("exp claim missing"))
    );
}

#[test]
fn refused_algorithms() {
    for name in ["none", "None", "HS256", "hs512", "HS999", "", "RSA-OAEP"] {
        assert!(parse_algorithm(name).is_err(), "{name}");
    }
    for name in DEFAULT_ALGORITHMS {
        assert!(parse_algorithm(name).is_ok(), "{name}");
    }
    assert_eq!(printable_alg("<script>"), "(unrecognised)");
}
