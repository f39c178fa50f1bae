//! Property tests of provider JSON parsing (issue 12): `parse_create` (the
//! `CreateOauth2CredentialProvider` input), `AuthorizationServerMetadata::
//! from_discovery_document` (a fetched discovery document) and `matches_discovery_pattern`
//! never panic on arbitrary JSON; the client secret never appears in an error or in the
//! rendered output; what parses renders and stores stably.
//!
//! Bounded: [`CASES`] cases per property, so `cargo test --workspace` runs them.
#![allow(clippy::unwrap_used)]

use latchkey_core::ApiError;
use latchkey_core::oauth2_provider::{
    AuthorizationServerMetadata, ProviderConfig, Vendor, matches_discovery_pattern, parse_create,
    render_output,
};
use proptest::prelude::*;
use secrecy::ExposeSecret;
use serde_json::{Map, Value, json};

const CASES: u32 = 256;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        ..ProptestConfig::default()
    }
}

/// Member names the parser knows, so arbitrary JSON reaches deep into it.
const KEYS: &[&str] = &[
    "clientId",
    "clientSecret",
    "clientSecretConfig",
    "clientSecretSource",
    "tenantId",
    "issuer",
    "authorizationEndpoint",
    "tokenEndpoint",
    "oauthDiscovery",
    "discoveryUrl",
    "authorizationServerMetadata",
    "responseTypes",
    "tokenEndpointAuthMethods",
    "onBehalfOfTokenExchangeConfig",
    "clientAuthenticationMethod",
    "privateKeyJwtConfig",
    "privateEndpoint",
    "privateEndpointOverrides",
    "certificateConfigurations",
    "googleOauth2ProviderConfig",
    "githubOauth2ProviderConfig",
    "slackOauth2ProviderConfig",
    "salesforceOauth2ProviderConfig",
    "microsoftOauth2ProviderConfig",
    "customOauth2ProviderConfig",
    "atlassianOauth2ProviderConfig",
    "linkedinOauth2ProviderConfig",
    "includedOauth2ProviderConfig",
    "authorization_endpoint",
    "token_endpoint",
    "response_types_supported",
    "token_endpoint_auth_methods_supported",
    "revocation_endpoint",
    "jwks_uri",
    "grantType",
    "tokenExchangeUrl",
    "audience",
    "actorTokenContent",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(KEYS).prop_map(str::to_owned),
        1 => ".{0,12}",
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,24}".prop_map(Value::String),
        "https://[a-z.]{1,12}(:[0-9]{1,5})?(/[a-z.%-]{0,10}){0,3}".prop_map(Value::String),
        "https://[a-z]{1,8}\\.example/\\.well-known/(openid-configuration|oauth-authorization-server)"
            .prop_map(Value::String),
        prop::sample::select(Vendor::ALL.to_vec()).prop_map(|v| Value::String(v.as_str().into())),
        prop::sample::select(vec!["MANAGED", "EXTERNAL", "CLIENT_SECRET_BASIC", "code", "client_secret_post"])
            .prop_map(|s| Value::String(s.into())),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A secret that cannot occur by chance in a message: a marker and 24 random characters,
/// or one long enough to fail the length check.
fn secret() -> impl Strategy<Value = String> {
    prop_oneof![
        5 => "[A-Za-z0-9]{24}".prop_map(|s| format!("SeCrEt{s}")),
        1 => "[A-Za-z0-9]{24}".prop_map(|s| format!("SeCrEt{s}").repeat(80)),
    ]
}

fn error_text(e: &ApiError) -> String {
    let mut text = format!("{e} {e:?}");
    if let ApiError::Validation { fields, .. } = e {
        for f in fields {
            text.push_str(&f.name);
            text.push_str(&f.message);
        }
    }
    text
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn parse_create_never_panics(vendor in json_value(), input in json_value()) {
        let _ = parse_create(&vendor, &input);
    }

    /// A well-formed envelope with arbitrary members: no panic, the secret never in an error
    /// or in the output, and the stored config survives a JSON round trip unchanged.
    #[test]
    fn parse_create_keeps_the_secret_out_of_errors_and_output(
        vendor in prop::sample::select(Vendor::ALL.to_vec()),
        member in prop_oneof![
            3 => Just(None),
            1 => prop::sample::select(&KEYS[19..28]).prop_map(Some),
        ],
        client_id in prop_oneof![".{0,20}", Just("client-1".to_owned())],
        secret in secret(),
        extra in prop::collection::vec((key(), json_value()), 0..2),
        secret_in_extra in prop::bool::weighted(0.15),
        issuer in prop::option::of(Just("https://idp.example.com")),
    ) {
        let mut body = Map::new();
        body.insert("clientId".into(), json!(client_id));
        body.insert("clientSecret".into(), json!(secret));
        // Mostly the vendor's own member, sometimes another one.
        let member = member.unwrap_or(vendor.config_variant().member_name());
        if let Some(issuer) = issuer.filter(|_| member == "includedOauth2ProviderConfig") {
            body.insert("issuer".into(), json!(issuer));
        }
        for (k, v) in extra {
            if k != "clientSecret" {
                body.insert(k, v);
            }
        }
        if secret_in_extra {
            // The secret misplaced under another member must not be echoed either.
            body.insert("clientSecretSource".into(), json!(secret));
        }
        let input = json!({ member: Value::Object(body) });
        match parse_create(&json!(vendor.as_str()), &input) {
            Err(e) => {
                let text = error_text(&e);
                prop_assert!(!text.contains("SeCrEt"), "the client secret is in an error: {}", e.name());
            }
            Ok(parsed) => {
                prop_assert_eq!(parsed.vendor, vendor);
                prop_assert_eq!(parsed.client_secret.as_ref().map(|s| s.expose_secret().to_owned()), Some(secret.clone()));
                prop_assert!(!format!("{parsed:?}").contains("SeCrEt"), "Debug shows the secret");
                let out = render_output(&parsed.config, None).to_string();
                prop_assert!(!out.contains("SeCrEt"), "the secret is in the rendered output");
                let stored = serde_json::to_value(&parsed.config).unwrap();
                prop_assert!(!stored.to_string().contains("SeCrEt"), "the secret is in the stored config");
                let back: ProviderConfig = serde_json::from_value(stored).unwrap();
                prop_assert_eq!(&back, &parsed.config);
                prop_assert_eq!(render_output(&back, None).to_string(), out);
            }
        }
    }

    #[test]
    fn discovery_documents_never_panic(doc in json_value()) {
        if let Ok(m) = AuthorizationServerMetadata::from_discovery_document(&doc) {
            // What was accepted names endpoints the document gave.
            let s = doc.to_string();
            prop_assert!(s.contains(&m.issuer.replace('/', "\\/")) || s.contains(&m.issuer));
        }
    }

    #[test]
    fn discovery_pattern_never_panics(s in any::<String>(), t in ".{0,12}/\\.well-known/.{0,20}") {
        let _ = matches_discovery_pattern(&s);
        if matches_discovery_pattern(&t) {
            prop_assert!(!t.chars().any(|c| c.is_whitespace() || c == '?' || c == '#'));
        }
    }
}
