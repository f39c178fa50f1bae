use secrecy::ExposeSecret;
use serde_json::{Value, json};

use super::presets::preset;
use super::*;
use crate::error::{ApiError, ValidationReason};

fn parse(vendor: &str, input: Value) -> Result<ProviderInput, ApiError> {
    parse_create(&json!(vendor), &input)
}

fn ok(vendor: &str, input: Value) -> ProviderInput {
    match parse(vendor, input) {
        Ok(p) => p,
        Err(e) => panic!("expected {vendor} to parse, got {e:?}"),
    }
}

fn err(vendor: &str, input: Value) -> (Vec<(String, String)>, String) {
    match parse(vendor, input) {
        Ok(p) => panic!("expected a validation error, got {p:?}"),
        Err(ApiError::Validation {
            fields, message, ..
        }) => (
            fields.into_iter().map(|f| (f.name, f.message)).collect(),
            message,
        ),
        Err(other) => panic!("expected a validation error, got {other:?}"),
    }
}

fn has_field(fields: &[(String, String)], name: &str) -> bool {
    fields.iter().any(|(n, _)| n == name)
}

fn custom(discovery: Value) -> Value {
    json!({"customOauth2ProviderConfig": {"clientId": "cid", "clientSecret": "s3cr3t", "oauthDiscovery": discovery}})
}

fn custom_with(extra: Value) -> Value {
    let mut body = json!({"clientId": "cid", "oauthDiscovery": {"discoveryUrl": "https://idp.example.com/.well-known/openid-configuration"}});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    json!({ "customOauth2ProviderConfig": body })
}

fn rendered_metadata(out: &Value, member: &str) -> Value {
    out[member]["oauthDiscovery"]["authorizationServerMetadata"].clone()
}

#[test]
fn all_25_vendor_names_round_trip() {
    let names = [
        "GoogleOauth2",
        "GithubOauth2",
        "SlackOauth2",
        "SalesforceOauth2",
        "MicrosoftOauth2",
        "CustomOauth2",
        "AtlassianOauth2",
        "LinkedinOauth2",
        "XOauth2",
        "OktaOauth2",
        "OneLoginOauth2",
        "PingOneOauth2",
        "FacebookOauth2",
        "YandexOauth2",
        "RedditOauth2",
        "ZoomOauth2",
        "TwitchOauth2",
        "SpotifyOauth2",
        "DropboxOauth2",
        "NotionOauth2",
        "HubspotOauth2",
        "CyberArkOauth2",
        "FusionAuthOauth2",
        "Auth0Oauth2",
        "CognitoOauth2",
    ];
    assert_eq!(Vendor::ALL.len(), names.len());
    for (name, vendor) in names.iter().zip(Vendor::ALL) {
        assert_eq!(vendor.as_str(), *name);
        assert_eq!(name.parse::<Vendor>().unwrap(), vendor);
        assert_eq!(serde_json::to_value(vendor).unwrap(), json!(name));
        assert_eq!(
            serde_json::from_value::<Vendor>(json!(name)).unwrap(),
            vendor
        );
        assert_eq!(vendor.to_string(), *name);
    }
    for bad in ["githuboauth2", "Github", "", "GithubOauth2 "] {
        let Err(ApiError::Validation { fields, .. }) = bad.parse::<Vendor>() else {
            panic!("{bad} parsed")
        };
        assert_eq!(fields[0].name, "credentialProviderVendor");
    }
    let (fields, _) = err(
        "Nope",
        json!({"githubOauth2ProviderConfig": {"clientId": "a"}}),
    );
    assert!(has_field(&fields, "credentialProviderVendor"));
}

#[test]
fn builtin_presets_parse_and_render() {
    let cases = [
        (
            "GoogleOauth2",
            "googleOauth2ProviderConfig",
            "https://accounts.google.com/o/oauth2/v2/auth",
            "https://oauth2.googleapis.com/token",
        ),
        (
            "GithubOauth2",
            "githubOauth2ProviderConfig",
            "https://github.com/login/oauth/authorize",
            "https://github.com/login/oauth/access_token",
        ),
        (
            "SlackOauth2",
            "slackOauth2ProviderConfig",
            "https://slack.com/oauth/v2/authorize",
            "https://slack.com/api/oauth.v2.access",
        ),
        (
            "SalesforceOauth2",
            "salesforceOauth2ProviderConfig",
            "https://login.salesforce.com/services/oauth2/authorize",
            "https://login.salesforce.com/services/oauth2/token",
        ),
        (
            "AtlassianOauth2",
            "atlassianOauth2ProviderConfig",
            "https://auth.atlassian.com/authorize",
            "https://auth.atlassian.com/oauth/token",
        ),
        (
            "LinkedinOauth2",
            "linkedinOauth2ProviderConfig",
            "https://www.linkedin.com/oauth/v2/authorization",
            "https://www.linkedin.com/oauth/v2/accessToken",
        ),
        (
            "MicrosoftOauth2",
            "microsoftOauth2ProviderConfig",
            "https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
            "https://login.microsoftonline.com/common/oauth2/v2.0/token",
        ),
    ];
    for (vendor, member, authorize, token) in cases {
        let p = ok(
            vendor,
            json!({ member: {"clientId": "client-1", "clientSecret": "pw"} }),
        );
        assert_eq!(p.vendor.as_str(), vendor);
        assert_eq!(p.config.variant.member_name(), member);
        assert_eq!(p.config.client_id, "client-1");
        assert_eq!(p.client_secret.as_ref().unwrap().expose_secret(), "pw");
        let m = p.config.metadata().unwrap();
        assert_eq!(m.authorization_endpoint, authorize);
        assert_eq!(m.token_endpoint, token);
        let out = render_output(&p.config, None);
        assert_eq!(out.as_object().unwrap().len(), 1);
        assert_eq!(out[member]["clientId"], "client-1");
        let md = rendered_metadata(&out, member);
        assert_eq!(md["authorizationEndpoint"], authorize);
        assert_eq!(md["tokenEndpoint"], token);
        assert!(md["issuer"].as_str().unwrap().starts_with("https://"));
        assert_eq!(md["responseTypes"], json!(["code"]));
        let methods = md["tokenEndpointAuthMethods"].as_array().unwrap();
        assert!((1..=2).contains(&methods.len()));
        // Stored JSON round-trips exactly.
        let stored = serde_json::to_value(&p.config).unwrap();
        assert_eq!(
            serde_json::from_value::<ProviderConfig>(stored).unwrap(),
            p.config
        );
    }
}

#[test]
fn preset_quirks_and_extras() {
    let g = ok(
        "GoogleOauth2",
        json!({"googleOauth2ProviderConfig": {"clientId": "a"}}),
    )
    .config;
    assert_eq!(
        g.quirks
            .authorize_params
            .get("access_type")
            .map(String::as_str),
        Some("offline")
    );
    assert_eq!(
        g.quirks.authorize_params.get("prompt").map(String::as_str),
        Some("consent")
    );
    assert_eq!(
        g.revocation_endpoint.as_deref(),
        Some("https://oauth2.googleapis.com/revoke")
    );
    assert_eq!(
        g.oidc_discovery_url.as_deref(),
        Some("https://accounts.google.com/.well-known/openid-configuration")
    );

    let gh = ok(
        "GithubOauth2",
        json!({"githubOauth2ProviderConfig": {"clientId": "a"}}),
    )
    .config;
    assert!(gh.quirks.token_accept_json);
    assert_eq!(gh.oidc_discovery_url, None);
    assert_eq!(
        gh.client_auth_method(None),
        ClientAuthMethod::ClientSecretPost
    );

    let s = ok(
        "SlackOauth2",
        json!({"slackOauth2ProviderConfig": {"clientId": "a"}}),
    )
    .config;
    assert!(s.quirks.slack_user_token);
    assert_eq!(s.quirks.scope_separator, ",");
    assert_eq!(
        s.revocation_endpoint.as_deref(),
        Some("https://slack.com/api/auth.revoke")
    );

    let a = ok(
        "AtlassianOauth2",
        json!({"atlassianOauth2ProviderConfig": {"clientId": "a"}}),
    )
    .config;
    assert_eq!(
        a.quirks
            .authorize_params
            .get("audience")
            .map(String::as_str),
        Some("api.atlassian.com")
    );
    assert_eq!(
        a.quirks.authorize_params.get("prompt").map(String::as_str),
        Some("consent")
    );

    let sf = ok(
        "SalesforceOauth2",
        json!({"salesforceOauth2ProviderConfig": {"clientId": "a"}}),
    )
    .config;
    assert_eq!(
        sf.revocation_endpoint.as_deref(),
        Some("https://login.salesforce.com/services/oauth2/revoke")
    );
    assert_eq!(
        sf.oidc_discovery_url.as_deref(),
        Some("https://login.salesforce.com/.well-known/openid-configuration")
    );
    assert_eq!(sf.default_token_lifetime_secs, Some(7200));
    assert_eq!(sf.quirks.scope_separator, " ");
}

#[test]
fn included_vendors_with_fixed_endpoints_get_presets() {
    for vendor in Vendor::ALL
        .into_iter()
        .filter(|v| v.config_variant() == ConfigVariant::Included)
    {
        let input = json!({"includedOauth2ProviderConfig": {"clientId": "a", "clientSecret": "b"}});
        match preset(vendor, "") {
            Some(p) => {
                let cfg = ok(vendor.as_str(), input).config;
                assert_eq!(cfg.metadata().unwrap(), &p.metadata());
                let out = render_output(&cfg, None);
                assert_eq!(
                    rendered_metadata(&out, "includedOauth2ProviderConfig")["tokenEndpoint"],
                    json!(p.token_endpoint)
                );
            }
            None => {
                let (fields, message) = err(vendor.as_str(), input);
                assert!(
                    has_field(
                        &fields,
                        "oauth2ProviderConfigInput.includedOauth2ProviderConfig"
                    ),
                    "{vendor}: {fields:?}"
                );
                assert!(message.contains("has no fixed endpoints"), "{message}");
            }
        }
    }
    let x = ok(
        "XOauth2",
        json!({"includedOauth2ProviderConfig": {"clientId": "a"}}),
    )
    .config;
    assert_eq!(
        x.metadata().unwrap().authorization_endpoint,
        "https://x.com/i/oauth2/authorize"
    );
    assert_eq!(
        x.client_auth_method(None),
        ClientAuthMethod::ClientSecretBasic
    );
    let d = ok(
        "DropboxOauth2",
        json!({"includedOauth2ProviderConfig": {"clientId": "a"}}),
    )
    .config;
    assert_eq!(
        d.quirks
            .authorize_params
            .get("token_access_type")
            .map(String::as_str),
        Some("offline")
    );
}

#[test]
fn included_tenant_vendors() {
    // Issuer only: OIDC discovery derived from it.
    let okta = ok(
        "OktaOauth2",
        json!({"includedOauth2ProviderConfig": {"clientId": "a", "issuer": "https://dev-1.okta.com/oauth2/default/"}}),
    );
    assert_eq!(
        okta.config.discovery_url(),
        Some("https://dev-1.okta.com/oauth2/default/.well-known/openid-configuration")
    );
    assert!(matches_discovery_pattern(
        okta.config.discovery_url().unwrap()
    ));
    assert_eq!(
        okta.config.quirks.offline_scope.as_deref(),
        Some("offline_access")
    );
    let out = render_output(&okta.config, None);
    assert_eq!(
        out["includedOauth2ProviderConfig"]["oauthDiscovery"]["discoveryUrl"],
        json!(okta.config.discovery_url())
    );

    // All three: explicit metadata.
    let cognito = ok(
        "CognitoOauth2",
        json!({"includedOauth2ProviderConfig": {
            "clientId": "a",
            "issuer": "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_abc",
            "authorizationEndpoint": "https://x.auth.us-east-1.amazoncognito.com/oauth2/authorize",
            "tokenEndpoint": "https://x.auth.us-east-1.amazoncognito.com/oauth2/token"
        }}),
    );
    let m = cognito.config.metadata().unwrap();
    assert_eq!(
        m.token_endpoint,
        "https://x.auth.us-east-1.amazoncognito.com/oauth2/token"
    );

    // Endpoints without issuer for a tenant vendor: issuer required.
    let (fields, _) = err(
        "Auth0Oauth2",
        json!({"includedOauth2ProviderConfig": {"clientId": "a", "authorizationEndpoint": "https://t.auth0.com/authorize", "tokenEndpoint": "https://t.auth0.com/oauth/token"}}),
    );
    assert!(has_field(
        &fields,
        "oauth2ProviderConfigInput.includedOauth2ProviderConfig.issuer"
    ));

    // Half the endpoints.
    let (fields, _) = err(
        "OktaOauth2",
        json!({"includedOauth2ProviderConfig": {"clientId": "a", "issuer": "https://o.okta.com", "authorizationEndpoint": "https://o.okta.com/authorize"}}),
    );
    assert!(has_field(
        &fields,
        "oauth2ProviderConfigInput.includedOauth2ProviderConfig.tokenEndpoint"
    ));

    // Auth0 pins client_secret_post.
    let auth0 = ok(
        "Auth0Oauth2",
        json!({"includedOauth2ProviderConfig": {"clientId": "a", "issuer": "https://t.auth0.com/"}}),
    );
    assert_eq!(
        auth0.config.client_auth_method(None),
        ClientAuthMethod::ClientSecretPost
    );

    // A fixed-endpoint vendor overridden for an isolated tenant keeps its issuer preset.
    let zoom = ok(
        "ZoomOauth2",
        json!({"includedOauth2ProviderConfig": {"clientId": "a", "authorizationEndpoint": "https://zoom.example.com/oauth/authorize", "tokenEndpoint": "https://zoom.example.com/oauth/token"}}),
    );
    let m = zoom.config.metadata().unwrap();
    assert_eq!(m.issuer, "https://zoom.us");
    assert_eq!(m.token_endpoint, "https://zoom.example.com/oauth/token");
    assert_eq!(zoom.config.revocation_endpoint, None);

    // Issuer alone for a fixed-endpoint vendor is ambiguous.
    let (fields, _) = err(
        "ZoomOauth2",
        json!({"includedOauth2ProviderConfig": {"clientId": "a", "issuer": "https://zoom.us"}}),
    );
    assert!(has_field(
        &fields,
        "oauth2ProviderConfigInput.includedOauth2ProviderConfig.authorizationEndpoint"
    ));
}

#[test]
fn union_needs_exactly_one_member() {
    let (fields, _) = err("GithubOauth2", json!({}));
    assert!(has_field(&fields, "oauth2ProviderConfigInput"));
    let (fields, message) = err(
        "GithubOauth2",
        json!({"githubOauth2ProviderConfig": {"clientId": "a"}, "googleOauth2ProviderConfig": {"clientId": "b"}}),
    );
    assert!(has_field(&fields, "oauth2ProviderConfigInput"));
    assert!(message.contains("got 2"), "{message}");
    let (fields, _) = err(
        "GithubOauth2",
        json!({"gitlabOauth2ProviderConfig": {"clientId": "a"}}),
    );
    assert!(has_field(
        &fields,
        "oauth2ProviderConfigInput.gitlabOauth2ProviderConfig"
    ));
    let (fields, _) = err("GithubOauth2", Value::Null);
    assert!(has_field(&fields, "oauth2ProviderConfigInput"));
    let (fields, _) = err("GithubOauth2", json!({"githubOauth2ProviderConfig": null}));
    assert!(has_field(&fields, "oauth2ProviderConfigInput"));
    let Err(ApiError::Validation { reason, .. }) =
        parse_create(&json!("GithubOauth2"), &json!("nope"))
    else {
        panic!()
    };
    assert_eq!(reason, ValidationReason::CannotParse);
    let Err(ApiError::Validation { reason, .. }) = parse_create(
        &json!(7),
        &json!({"githubOauth2ProviderConfig": {"clientId": "a"}}),
    ) else {
        panic!()
    };
    assert_eq!(reason, ValidationReason::CannotParse);
    let (fields, _) = err("GithubOauth2", json!({"githubOauth2ProviderConfig": {}}));
    assert!(has_field(
        &fields,
        "oauth2ProviderConfigInput.githubOauth2ProviderConfig.clientId"
    ));
}

#[test]
fn vendor_variant_mismatch() {
    let (fields, message) = err(
        "GoogleOauth2",
        json!({"githubOauth2ProviderConfig": {"clientId": "a"}}),
    );
    assert_eq!(fields.len(), 1);
    assert_eq!(fields[0].0, "credentialProviderVendor");
    assert!(message.contains("googleOauth2ProviderConfig"), "{message}");
    let (fields, _) = err(
        "GithubOauth2",
        custom(json!({"discoveryUrl": "https://idp.example.com/.well-known/openid-configuration"})),
    );
    assert!(has_field(&fields, "credentialProviderVendor"));
    let (fields, message) = err(
        "CustomOauth2",
        json!({"includedOauth2ProviderConfig": {"clientId": "a"}}),
    );
    assert!(has_field(&fields, "credentialProviderVendor"));
    assert!(message.contains("customOauth2ProviderConfig"));
    let (fields, _) = err(
        "OktaOauth2",
        json!({"githubOauth2ProviderConfig": {"clientId": "a"}}),
    );
    assert!(has_field(&fields, "credentialProviderVendor"));
    // GitHub takes the included member only to override its endpoints.
    let (fields, message) = err(
        "GithubOauth2",
        json!({"includedOauth2ProviderConfig": {"clientId": "a"}}),
    );
    assert!(has_field(
        &fields,
        "oauth2ProviderConfigInput.includedOauth2ProviderConfig.authorizationEndpoint"
    ));
    assert!(message.contains("GitHub Enterprise Server"), "{message}");
}

#[test]
fn lengths_are_enforced() {
    let long = "a".repeat(257);
    let (fields, _) = err(
        "GithubOauth2",
        json!({"githubOauth2ProviderConfig": {"clientId": long}}),
    );
    assert_eq!(fields.len(), 1);
    assert_eq!(
        fields[0].0,
        "oauth2ProviderConfigInput.githubOauth2ProviderConfig.clientId"
    );
    assert!(fields[0].1.contains("between 1 and 256"));
    ok(
        "GithubOauth2",
        json!({"githubOauth2ProviderConfig": {"clientId": "a".repeat(256)}}),
    );
    let (fields, _) = err(
        "GithubOauth2",
        json!({"githubOauth2ProviderConfig": {"clientId": ""}}),
    );
    assert!(has_field(
        &fields,
        "oauth2ProviderConfigInput.githubOauth2ProviderConfig.clientId"
    ));

    // Custom allows an empty or absent client id.
    let p = ok(
        "CustomOauth2",
        json!({"customOauth2ProviderConfig": {"clientId": "", "oauthDiscovery": {"discoveryUrl": "https://i.example/.well-known/openid-configuration"}}}),
    );
    assert_eq!(p.config.client_id, "");
    assert!(
        render_output(&p.config, None)["customOauth2ProviderConfig"]
            .get("clientId")
            .is_none()
    );
    let (fields, _) = err("CustomOauth2", custom_with(json!({"clientId": long})));
    assert!(has_field(
        &fields,
        "oauth2ProviderConfigInput.customOauth2ProviderConfig.clientId"
    ));

    let (fields, _) = err(
        "GithubOauth2",
        json!({"githubOauth2ProviderConfig": {"clientId": "a", "clientSecret": "s".repeat(2049)}}),
    );
    assert!(has_field(
        &fields,
        "oauth2ProviderConfigInput.githubOauth2ProviderConfig.clientSecret"
    ));
    assert!(ok("GithubOauth2", json!({"githubOauth2ProviderConfig": {"clientId": "a", "clientSecret": "s".repeat(2048)}})).client_secret.is_some());

    let (fields, _) = err(
        "MicrosoftOauth2",
        json!({"microsoftOauth2ProviderConfig": {"clientId": "a", "tenantId": ""}}),
    );
    assert!(has_field(
        &fields,
        "oauth2ProviderConfigInput.microsoftOauth2ProviderConfig.tenantId"
    ));
}

#[test]
fn empty_secret_means_absent() {
    let p = ok(
        "GithubOauth2",
        json!({"githubOauth2ProviderConfig": {"clientId": "a", "clientSecret": ""}}),
    );
    assert!(p.client_secret.is_none());
    let p = ok(
        "GithubOauth2",
        json!({"githubOauth2ProviderConfig": {"clientId": "a"}}),
    );
    assert!(p.client_secret.is_none());
    let p = ok(
        "GithubOauth2",
        json!({"githubOauth2ProviderConfig": {"clientId": "a", "clientSecretSource": "MANAGED"}}),
    );
    assert!(p.client_secret.is_none());
}

#[test]
fn bad_discovery_urls() {
    let field = "oauth2ProviderConfigInput.customOauth2ProviderConfig.oauthDiscovery.discoveryUrl";
    for bad in [
        "https://idp.example.com/openid-configuration",
        "https://idp.example.com/.well-known/openid-configuration?x=1",
        "https://idp.example.com/.well-known/openid-configuration#frag",
        "https://idp.example.com/.well-known/openid-configuration ",
        "https://idp example.com/.well-known/openid-configuration",
        "ftp://idp.example.com/.well-known/openid-configuration",
        "http://idp.example.com/.well-known/openid-configuration",
        "https://idp.example.com/.well-known/jwks.json",
        "/.well-known/openid-configuration",
        "https://idp.example.com/.well-known/openid-configuration/",
        "https://user:pw@idp.example.com/.well-known/openid-configuration",
        "https:idp.example.com/.well-known/openid-configuration",
        "https:\\\\idp.example.com/.well-known/openid-configuration",
    ] {
        let (fields, _) = err("CustomOauth2", custom(json!({ "discoveryUrl": bad })));
        assert!(has_field(&fields, field), "{bad}: {fields:?}");
    }
    for good in [
        "https://idp.example.com/.well-known/openid-configuration",
        "https://idp.example.com/tenant/.well-known/oauth-authorization-server",
        "https://idp.example.com/.well-known/oauth-authorization-server/tenant1",
        "http://localhost:8080/.well-known/openid-configuration",
        "http://127.0.0.1:9000/realms/x/.well-known/openid-configuration",
        "http://[::1]/.well-known/openid-configuration",
    ] {
        let p = ok("CustomOauth2", custom(json!({ "discoveryUrl": good })));
        assert_eq!(p.config.discovery_url(), Some(good));
        let out = render_output(&p.config, None);
        assert_eq!(
            out["customOauth2ProviderConfig"]["oauthDiscovery"]["discoveryUrl"],
            good
        );
    }
    assert!(matches_discovery_pattern(
        "x/.well-known/.well-known/openid-configuration"
    ));
    assert!(!matches_discovery_pattern(
        "https://a/.well-known/openid-configurationX"
    ));
    assert!(!matches_discovery_pattern(
        "https://a/.well-known/openid-configuration/a b"
    ));
}

#[test]
fn metadata_urls() {
    let md = |issuer: &str, auth: &str, token: &str| {
        custom(
            json!({"authorizationServerMetadata": {"issuer": issuer, "authorizationEndpoint": auth, "tokenEndpoint": token}}),
        )
    };
    let path = "oauth2ProviderConfigInput.customOauth2ProviderConfig.oauthDiscovery.authorizationServerMetadata";
    let (fields, message) = err(
        "CustomOauth2",
        md(
            "https://idp.example.com",
            "http://idp.example.com/authorize",
            "https://idp.example.com/token",
        ),
    );
    assert_eq!(fields.len(), 1);
    assert_eq!(fields[0].0, format!("{path}.authorizationEndpoint"));
    assert!(message.contains("https"), "{message}");
    let (fields, _) = err(
        "CustomOauth2",
        md(
            "http://10.0.0.1",
            "https://idp.example.com/authorize",
            "https://idp.example.com/token",
        ),
    );
    assert!(has_field(&fields, &format!("{path}.issuer")));
    let (fields, _) = err(
        "CustomOauth2",
        md(
            "https://idp.example.com?x=1",
            "https://idp.example.com/a",
            "https://idp.example.com/t#f",
        ),
    );
    assert!(has_field(&fields, &format!("{path}.issuer")));
    assert!(has_field(&fields, &format!("{path}.tokenEndpoint")));
    let (fields, _) = err(
        "CustomOauth2",
        md("https://idp.example.com", "not a url", "/token"),
    );
    assert!(has_field(&fields, &format!("{path}.authorizationEndpoint")));
    assert!(has_field(&fields, &format!("{path}.tokenEndpoint")));
    let (fields, _) = err(
        "CustomOauth2",
        custom(json!({"authorizationServerMetadata": {"issuer": "https://idp.example.com"}})),
    );
    assert!(has_field(&fields, &format!("{path}.authorizationEndpoint")));
    assert!(has_field(&fields, &format!("{path}.tokenEndpoint")));

    // Loopback http is fine; a query on an endpoint is fine.
    let p = ok(
        "CustomOauth2",
        md(
            "http://localhost:9000",
            "http://127.0.0.1:9000/authorize?x=1",
            "http://[::1]:9000/token",
        ),
    );
    let m = p.config.metadata().unwrap();
    assert_eq!(
        m.authorization_endpoint,
        "http://127.0.0.1:9000/authorize?x=1"
    );

    // Both discovery members, or none.
    let (fields, _) = err(
        "CustomOauth2",
        custom(
            json!({"discoveryUrl": "https://i.example/.well-known/openid-configuration", "authorizationServerMetadata": {"issuer": "https://i.example", "authorizationEndpoint": "https://i.example/a", "tokenEndpoint": "https://i.example/t"}}),
        ),
    );
    assert!(has_field(
        &fields,
        "oauth2ProviderConfigInput.customOauth2ProviderConfig.oauthDiscovery"
    ));
    let (fields, _) = err("CustomOauth2", custom(json!({})));
    assert!(has_field(
        &fields,
        "oauth2ProviderConfigInput.customOauth2ProviderConfig.oauthDiscovery"
    ));
    let (fields, _) = err(
        "CustomOauth2",
        json!({"customOauth2ProviderConfig": {"clientId": "a"}}),
    );
    assert!(has_field(
        &fields,
        "oauth2ProviderConfigInput.customOauth2ProviderConfig.oauthDiscovery"
    ));
}

#[test]
fn token_endpoint_auth_methods() {
    let with = |methods: Value| {
        custom(
            json!({"authorizationServerMetadata": {"issuer": "https://i.example", "authorizationEndpoint": "https://i.example/a", "tokenEndpoint": "https://i.example/t", "tokenEndpointAuthMethods": methods, "responseTypes": ["code"]}}),
        )
    };
    let field = "oauth2ProviderConfigInput.customOauth2ProviderConfig.oauthDiscovery.authorizationServerMetadata.tokenEndpointAuthMethods";
    let (fields, _) = err("CustomOauth2", with(json!([])));
    assert!(has_field(&fields, field));
    let (fields, _) = err("CustomOauth2", with(json!([POST, BASIC, POST])));
    assert!(has_field(&fields, field));
    let (fields, _) = err("CustomOauth2", with(json!(["private_key_jwt"])));
    assert!(has_field(&fields, &format!("{field}.0")));
    let p = ok("CustomOauth2", with(json!([POST])));
    assert_eq!(
        p.config.client_auth_method(None),
        ClientAuthMethod::ClientSecretPost
    );
    let out = render_output(&p.config, None);
    let md = rendered_metadata(&out, "customOauth2ProviderConfig");
    assert_eq!(md["tokenEndpointAuthMethods"], json!([POST]));
    assert_eq!(md["responseTypes"], json!(["code"]));
    let p = ok("CustomOauth2", with(json!([POST, BASIC])));
    assert_eq!(
        p.config.client_auth_method(None),
        ClientAuthMethod::ClientSecretBasic
    );
    // The explicit method wins.
    let mut body = with(json!([BASIC]));
    body["customOauth2ProviderConfig"]["clientAuthenticationMethod"] = json!("CLIENT_SECRET_POST");
    let p = ok("CustomOauth2", body);
    assert_eq!(
        p.config.client_auth_method(None),
        ClientAuthMethod::ClientSecretPost
    );
    let out = render_output(&p.config, None);
    assert_eq!(
        out["customOauth2ProviderConfig"]["clientAuthenticationMethod"],
        "CLIENT_SECRET_POST"
    );
    let (fields, _) = err(
        "CustomOauth2",
        custom_with(json!({"clientAuthenticationMethod": "BOGUS"})),
    );
    assert!(has_field(
        &fields,
        "oauth2ProviderConfigInput.customOauth2ProviderConfig.clientAuthenticationMethod"
    ));
}

#[test]
fn unsupported_features_are_rejected() {
    let cases = [
        json!({"privateEndpoint": {"selfManagedLatticeResource": {"resourceConfigurationIdentifier": "rcfg-0123456789abcdefg"}}}),
        json!({"privateEndpointOverrides": [{"domain": "a.example", "privateEndpoint": {}}]}),
        json!({"certificateConfigurations": [{"s3": {"uri": "s3://b/k"}}]}),
        json!({"privateKeyJwtConfig": {"signingAlgorithm": "RS256"}}),
        json!({"clientAuthenticationMethod": "PRIVATE_KEY_JWT"}),
        json!({"clientAuthenticationMethod": "AWS_IAM_ID_TOKEN_JWT"}),
        json!({"clientSecretSource": "EXTERNAL"}),
        json!({"clientSecretConfig": {"secretId": "s", "jsonKey": "k"}}),
        json!({"onBehalfOfTokenExchangeConfig": {"grantType": "TOKEN_EXCHANGE", "tokenExchangeGrantTypeConfig": {"actorTokenContent": "AWS_IAM_ID_TOKEN_JWT"}}}),
        json!({"someFutureMember": true}),
    ];
    for extra in cases {
        let (fields, message) = err("CustomOauth2", custom_with(extra.clone()));
        assert!(
            message.contains("not supported by Latchkey"),
            "{extra}: {message}"
        );
        assert!(
            fields.iter().all(
                |(n, _)| n.starts_with("oauth2ProviderConfigInput.customOauth2ProviderConfig.")
            ),
            "{fields:?}"
        );
    }
    for extra in [
        json!({"clientSecretSource": "EXTERNAL"}),
        json!({"clientSecretConfig": {"secretId": "s", "jsonKey": "k"}}),
    ] {
        let mut body = json!({"clientId": "a"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (_, message) = err(
            "GithubOauth2",
            json!({ "githubOauth2ProviderConfig": body }),
        );
        assert!(message.contains("not supported by Latchkey"), "{message}");
    }
    let (fields, _) = err(
        "GithubOauth2",
        json!({"githubOauth2ProviderConfig": {"clientId": "a", "clientSecretSource": "OTHER"}}),
    );
    assert!(has_field(
        &fields,
        "oauth2ProviderConfigInput.githubOauth2ProviderConfig.clientSecretSource"
    ));
    // tenantId belongs to Microsoft only.
    let (fields, _) = err(
        "GithubOauth2",
        json!({"githubOauth2ProviderConfig": {"clientId": "a", "tenantId": "common"}}),
    );
    assert!(has_field(
        &fields,
        "oauth2ProviderConfigInput.githubOauth2ProviderConfig.tenantId"
    ));
    // Empty overrides and explicit nulls are harmless.
    ok(
        "CustomOauth2",
        custom_with(json!({"privateEndpointOverrides": [], "privateEndpoint": null})),
    );
}

#[test]
fn on_behalf_of_is_stored_and_rendered() {
    let obo = json!({
        "grantType": "TOKEN_EXCHANGE",
        "tokenExchangeGrantTypeConfig": {"actorTokenContent": "M2M", "actorTokenScopes": ["a", "b"]},
        "onBehalfOfAuthenticationConfig": {"clientAuthenticationMethod": "NO_CLIENT"}
    });
    let p = ok(
        "CustomOauth2",
        custom_with(json!({ "onBehalfOfTokenExchangeConfig": obo.clone() })),
    );
    let stored = p.config.on_behalf_of.clone().unwrap();
    assert_eq!(stored.grant_type, OboGrantType::TokenExchange);
    assert!(stored.no_client_authentication);
    let out = render_output(&p.config, None);
    assert_eq!(
        out["customOauth2ProviderConfig"]["onBehalfOfTokenExchangeConfig"],
        obo
    );
    let back: ProviderConfig =
        serde_json::from_value(serde_json::to_value(&p.config).unwrap()).unwrap();
    assert_eq!(back, p.config);

    let jwt = json!({"grantType": "JWT_AUTHORIZATION_GRANT"});
    let p = ok(
        "CustomOauth2",
        custom_with(json!({ "onBehalfOfTokenExchangeConfig": jwt.clone() })),
    );
    assert_eq!(
        render_output(&p.config, None)["customOauth2ProviderConfig"]["onBehalfOfTokenExchangeConfig"],
        jwt
    );

    let base = "oauth2ProviderConfigInput.customOauth2ProviderConfig.onBehalfOfTokenExchangeConfig";
    let (fields, _) = err(
        "CustomOauth2",
        custom_with(json!({"onBehalfOfTokenExchangeConfig": {}})),
    );
    assert!(has_field(&fields, &format!("{base}.grantType")));
    let (fields, _) = err(
        "CustomOauth2",
        custom_with(
            json!({"onBehalfOfTokenExchangeConfig": {"grantType": "TOKEN_EXCHANGE", "tokenExchangeGrantTypeConfig": {"actorTokenContent": "M2M", "actorTokenScopes": [""]}}}),
        ),
    );
    assert!(has_field(
        &fields,
        &format!("{base}.tokenExchangeGrantTypeConfig.actorTokenScopes.0")
    ));
    let (fields, _) = err(
        "CustomOauth2",
        custom_with(
            json!({"onBehalfOfTokenExchangeConfig": {"grantType": "TOKEN_EXCHANGE", "onBehalfOfAuthenticationConfig": {"clientAuthenticationMethod": "BASIC"}}}),
        ),
    );
    assert!(has_field(
        &fields,
        &format!("{base}.onBehalfOfAuthenticationConfig.clientAuthenticationMethod")
    ));
    let (fields, _) = err(
        "CustomOauth2",
        custom_with(
            json!({"onBehalfOfTokenExchangeConfig": {"grantType": "JWT_AUTHORIZATION_GRANT", "tokenExchangeGrantTypeConfig": {"actorTokenContent": "NONE"}}}),
        ),
    );
    assert!(has_field(
        &fields,
        &format!("{base}.tokenExchangeGrantTypeConfig")
    ));
}

#[test]
fn secrets_never_leak() {
    let secret = "sUp3r-s3cret-VALUE-9f8e7d";
    let inputs = [
        (
            "GithubOauth2",
            json!({"githubOauth2ProviderConfig": {"clientId": "a", "clientSecret": secret}}),
        ),
        (
            "MicrosoftOauth2",
            json!({"microsoftOauth2ProviderConfig": {"clientId": "a", "clientSecret": secret, "tenantId": "contoso.onmicrosoft.com"}}),
        ),
        (
            "SpotifyOauth2",
            json!({"includedOauth2ProviderConfig": {"clientId": "a", "clientSecret": secret}}),
        ),
        (
            "CustomOauth2",
            custom(json!({"discoveryUrl": "https://i.example/.well-known/openid-configuration"})),
        ),
    ];
    for (vendor, mut input) in inputs {
        if vendor == "CustomOauth2" {
            input["customOauth2ProviderConfig"]["clientSecret"] = json!(secret);
        }
        let p = ok(vendor, input);
        assert_eq!(p.client_secret.as_ref().unwrap().expose_secret(), secret);
        assert!(!format!("{p:?}").contains(secret));
        assert!(!format!("{:?}", p.config).contains(secret));
        assert!(!render_output(&p.config, None).to_string().contains(secret));
        assert!(!serde_json::to_string(&p.config).unwrap().contains(secret));
    }
    // Nor in error messages.
    let (fields, message) = err(
        "GithubOauth2",
        json!({"githubOauth2ProviderConfig": {"clientId": "", "clientSecret": format!("{secret}{}", "x".repeat(2048))}}),
    );
    assert!(!message.contains(secret));
    assert!(fields.iter().all(|(_, m)| !m.contains(secret)));
}

#[test]
fn microsoft_tenants() {
    let ms = |tenant: &str| json!({"microsoftOauth2ProviderConfig": {"clientId": "a", "tenantId": tenant}});
    for bad in [
        "../evil",
        "a/b",
        "evil?x=1",
        "evil#x",
        "a b",
        "..",
        ".",
        "-a",
        "a..b",
        "%2e%2e",
        "a\\b",
        "tenant@evil.com",
    ] {
        let (fields, _) = err("MicrosoftOauth2", ms(bad));
        assert!(
            has_field(
                &fields,
                "oauth2ProviderConfigInput.microsoftOauth2ProviderConfig.tenantId"
            ),
            "{bad}"
        );
    }
    for (tenant, expect) in [
        (
            "72f988bf-86f1-41af-91ab-2d7cd011db47",
            "72f988bf-86f1-41af-91ab-2d7cd011db47",
        ),
        ("contoso.onmicrosoft.com", "contoso.onmicrosoft.com"),
        ("organizations", "organizations"),
        ("consumers", "consumers"),
    ] {
        let p = ok("MicrosoftOauth2", ms(tenant));
        assert_eq!(p.config.tenant_id.as_deref(), Some(tenant));
        let m = p.config.metadata().unwrap();
        assert_eq!(
            m.authorization_endpoint,
            format!("https://login.microsoftonline.com/{expect}/oauth2/v2.0/authorize")
        );
        assert_eq!(
            m.token_endpoint,
            format!("https://login.microsoftonline.com/{expect}/oauth2/v2.0/token")
        );
        assert_eq!(
            p.config.oidc_discovery_url.as_deref(),
            Some(format!("https://login.microsoftonline.com/{expect}/v2.0/.well-known/openid-configuration").as_str())
        );
        assert_eq!(
            p.config.quirks.offline_scope.as_deref(),
            Some("offline_access")
        );
    }
    let p = ok(
        "MicrosoftOauth2",
        json!({"microsoftOauth2ProviderConfig": {"clientId": "a"}}),
    );
    assert_eq!(p.config.tenant_id, None);
    assert!(
        p.config
            .metadata()
            .unwrap()
            .token_endpoint
            .contains("/common/")
    );
}

#[test]
fn wrong_types_cannot_parse() {
    for input in [
        json!({"githubOauth2ProviderConfig": {"clientId": 5}}),
        json!({"githubOauth2ProviderConfig": {"clientId": "a", "clientSecret": ["x"]}}),
        json!({"githubOauth2ProviderConfig": "a"}),
    ] {
        let Err(ApiError::Validation {
            reason, message, ..
        }) = parse("GithubOauth2", input)
        else {
            panic!()
        };
        assert_eq!(reason, ValidationReason::CannotParse);
        assert!(message.contains("githubOauth2ProviderConfig"), "{message}");
    }
}

#[test]
fn resolved_metadata_wins_in_output() {
    let p = ok(
        "CustomOauth2",
        custom(json!({"discoveryUrl": "https://i.example/.well-known/openid-configuration"})),
    );
    let doc = json!({
        "issuer": "https://i.example",
        "authorization_endpoint": "https://i.example/authorize",
        "token_endpoint": "https://i.example/token",
        "response_types_supported": ["code", "id_token"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_post"]
    });
    let resolved = AuthorizationServerMetadata::from_discovery_document(&doc).unwrap();
    assert_eq!(resolved.token_endpoint_auth_methods, vec![POST.to_owned()]);
    assert_eq!(
        p.config.client_auth_method(Some(&resolved)),
        ClientAuthMethod::ClientSecretPost
    );
    assert_eq!(
        p.config.client_auth_method(None),
        ClientAuthMethod::ClientSecretBasic
    );
    let out = render_output(&p.config, Some(&resolved));
    let md = rendered_metadata(&out, "customOauth2ProviderConfig");
    assert_eq!(md["tokenEndpoint"], "https://i.example/token");
    assert_eq!(md["tokenEndpointAuthMethods"], json!([POST]));
    assert!(
        out["customOauth2ProviderConfig"]["oauthDiscovery"]
            .get("discoveryUrl")
            .is_none()
    );

    let mut bad = doc.clone();
    bad["token_endpoint"] = json!("http://i.example/token");
    assert!(AuthorizationServerMetadata::from_discovery_document(&bad).is_err());
    let mut missing = doc.clone();
    missing
        .as_object_mut()
        .unwrap()
        .remove("authorization_endpoint");
    assert!(AuthorizationServerMetadata::from_discovery_document(&missing).is_err());
    let mut default_methods = doc;
    default_methods
        .as_object_mut()
        .unwrap()
        .remove("token_endpoint_auth_methods_supported");
    let m = AuthorizationServerMetadata::from_discovery_document(&default_methods).unwrap();
    assert_eq!(m.token_endpoint_auth_methods, vec![BASIC.to_owned()]);
}

#[test]
fn stored_json_shape() {
    let p = ok(
        "GithubOauth2",
        json!({"githubOauth2ProviderConfig": {"clientId": "cid", "clientSecret": "x"}}),
    );
    let stored = serde_json::to_value(&p.config).unwrap();
    assert_eq!(stored["variant"], "github");
    assert_eq!(stored["client_id"], "cid");
    assert_eq!(
        stored["discovery"]["metadata"]["token_endpoint"],
        "https://github.com/login/oauth/access_token"
    );
    assert_eq!(stored["quirks"]["token_accept_json"], true);
    // Older rows without optional fields still load.
    let minimal = json!({"variant": "custom", "client_id": "", "discovery": {"discovery_url": "https://i.example/.well-known/openid-configuration"}});
    let cfg: ProviderConfig = serde_json::from_value(minimal).unwrap();
    assert_eq!(cfg.quirks, Quirks::default());
    assert_eq!(
        cfg.discovery_url(),
        Some("https://i.example/.well-known/openid-configuration")
    );
}

#[test]
fn vendors_with_a_self_hosted_edition_take_endpoint_overrides() {
    let ghes = json!({"includedOauth2ProviderConfig": {
        "clientId": "a", "clientSecret": "b",
        "authorizationEndpoint": "https://ghe.example.com/login/oauth/authorize",
        "tokenEndpoint": "https://ghe.example.com/login/oauth/access_token",
    }});
    let input = ok("GithubOauth2", ghes.clone());
    assert_eq!(input.vendor, Vendor::GithubOauth2);
    let m = input.config.metadata().unwrap();
    assert_eq!(
        m.token_endpoint,
        "https://ghe.example.com/login/oauth/access_token"
    );
    // The preset's issuer stays unless given; GitHub's behaviour comes along.
    assert_eq!(m.issuer, "https://github.com");
    assert!(
        input.config.quirks.token_accept_json,
        "GitHub answers form-encoded without it"
    );
    let out = render_output(&input.config, None);
    assert_eq!(
        rendered_metadata(&out, "includedOauth2ProviderConfig")["authorizationEndpoint"],
        json!("https://ghe.example.com/login/oauth/authorize")
    );
    // Both endpoints, or none.
    let (fields, _) = err(
        "GithubOauth2",
        json!({"includedOauth2ProviderConfig": {"clientId": "a", "issuer": "https://ghe.example.com"}}),
    );
    assert!(
        has_field(
            &fields,
            "oauth2ProviderConfigInput.includedOauth2ProviderConfig.authorizationEndpoint"
        ),
        "{fields:?}"
    );
    // A vendor without a self-hosted edition still takes only its own member.
    let (fields, message) = err("GoogleOauth2", ghes);
    assert!(has_field(&fields, "credentialProviderVendor"), "{fields:?}");
    assert!(
        message.contains(
            "GoogleOauth2 takes oauth2ProviderConfigInput.googleOauth2ProviderConfig, not"
        ),
        "{message}"
    );
    let (_, message) = err(
        "GithubOauth2",
        json!({"googleOauth2ProviderConfig": {"clientId": "a"}}),
    );
    assert!(
        message.contains("(or includedOauth2ProviderConfig with endpoint overrides)"),
        "{message}"
    );
    // Plain http only for loopback (a test provider), as everywhere.
    let (fields, _) = err(
        "AtlassianOauth2",
        json!({"includedOauth2ProviderConfig": {"clientId": "a",
            "authorizationEndpoint": "http://jira.example.com/rest/oauth2/latest/authorize",
            "tokenEndpoint": "http://jira.example.com/rest/oauth2/latest/token"}}),
    );
    assert!(
        has_field(
            &fields,
            "oauth2ProviderConfigInput.includedOauth2ProviderConfig.authorizationEndpoint"
        ),
        "{fields:?}"
    );
}
