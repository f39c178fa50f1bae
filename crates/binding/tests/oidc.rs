//! The OIDC ID-token source, against a loopback issuer (discovery + JWKS) with a real
//! ES256 key: `Authorization: Bearer` and a configured cookie.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use latchkey_binding::pages::Page;
use serde_json::json;

async fn oidc_setup(cookie: Option<&str>) -> (Binding, Idp, EcKey, IdentityStandIn) {
    let key = EcKey::generate("idp-key-1");
    let idp = Idp::start(&[&key]).await;
    let identity = IdentityStandIn::start().await;
    let mut config = base_config(&identity.url());
    config.users.oidc = Some(oidc_config(&idp, cookie));
    let binding = Binding::start(config).await;
    (binding, idp, key, identity)
}

fn assert_forwarded_token(identity: &IdentityStandIn, token: &str) {
    let received = identity.received();
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].body,
        json!({"userIdentifier": {"userToken": token}, "sessionUri": SESSION})
    );
    assert_eq!(
        received[0].authorization.as_deref(),
        Some(format!("Bearer {ACCESS_KEY_ID}:{SECRET}").as_str())
    );
}

#[tokio::test]
async fn oidc_bearer_completes() {
    let (binding, idp, key, identity) = oidc_setup(None).await;
    let token = id_token(&key, &idp.issuer, AUDIENCE, "alice");
    let (status, _, body) = binding
        .bind_with(&[("authorization", &format!("Bearer {token}"))])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, Page::Success.html());
    assert_forwarded_token(&identity, &token);
    assert!(idp.hits() >= 2, "discovery and JWKS were fetched");
}

#[tokio::test]
async fn oidc_cookie_completes() {
    let (binding, idp, key, identity) = oidc_setup(Some("__Host-id_token")).await;
    let token = id_token(&key, &idp.issuer, AUDIENCE, "alice");
    let (status, _, body) = binding
        .bind_with(&[(
            "cookie",
            &format!("theme=dark; __Host-id_token={token}; other=1"),
        )])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_forwarded_token(&identity, &token);
}

#[tokio::test]
async fn oidc_cookie_ignored_when_not_configured() {
    let (binding, idp, key, identity) = oidc_setup(None).await;
    let token = id_token(&key, &idp.issuer, AUDIENCE, "alice");
    let (status, _, body) = binding
        .bind_with(&[("cookie", &format!("id_token={token}"))])
        .await;
    assert_eq!(status, 401);
    assert_eq!(body, Page::NotSignedIn.html());
    assert_eq!(identity.calls(), 0);
}

#[tokio::test]
async fn oidc_invalid_tokens_rejected() {
    let (binding, idp, key, identity) = oidc_setup(Some("id_token")).await;
    let stranger = EcKey::generate("idp-key-1");
    let cases = [
        // Wrong audience, wrong issuer, a key the issuer never published, garbage.
        id_token(&key, &idp.issuer, "another-app", "alice"),
        id_token(&key, "https://evil.example.com", AUDIENCE, "alice"),
        id_token(&stranger, &idp.issuer, AUDIENCE, "alice"),
        "not.a.jwt".to_string(),
        // Validly signed, with a subject that would forge a log line or colour a log.
        id_token(
            &key,
            &idp.issuer,
            AUDIENCE,
            "alice\nINFO session binding completed user=admin",
        ),
        id_token(&key, &idp.issuer, AUDIENCE, "\u{1b}[31malice\u{1b}[0m"),
        id_token(&key, &idp.issuer, AUDIENCE, "alice\u{2028}admin"),
    ];
    for token in &cases {
        let (status, _, _) = binding
            .bind_with(&[("authorization", &format!("Bearer {token}"))])
            .await;
        assert_eq!(status, 401, "bearer {token:.40}");
        let (status, _, _) = binding
            .bind_with(&[("cookie", &format!("id_token={token}"))])
            .await;
        assert_eq!(status, 401, "cookie {token:.40}");
    }
    // An invalid bearer is not rescued by a valid cookie.
    let good = id_token(&key, &idp.issuer, AUDIENCE, "alice");
    let (status, _, _) = binding
        .bind_with(&[
            ("authorization", &format!("Bearer {}", cases[0])),
            ("cookie", &format!("id_token={good}")),
        ])
        .await;
    assert_eq!(status, 401);
    assert_eq!(identity.calls(), 0);
}

#[tokio::test]
async fn oidc_issuer_unreachable_is_try_again() {
    // An issuer on a port nobody listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let identity = IdentityStandIn::start().await;
    let mut config = base_config(&identity.url());
    config.users.oidc = Some(latchkey_binding::OidcConfig::new(issuer.clone(), AUDIENCE));
    let binding = Binding::start(config).await;
    let key = EcKey::generate("k");
    let token = id_token(&key, &issuer, AUDIENCE, "alice");
    let (status, _, body) = binding
        .bind_with(&[("authorization", &format!("Bearer {token}"))])
        .await;
    assert_eq!(status, 502);
    assert_eq!(body, Page::TryAgain.html());
    assert_eq!(identity.calls(), 0);
}
