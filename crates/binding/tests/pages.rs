//! Pages: the mapping of identity-service answers to pages, `session_id` validation, the
//! hardening headers on every response, and that nothing from the request or the identity
//! service is reflected.

#![allow(clippy::unwrap_used)]

mod common;

use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::*;
use latchkey_binding::pages::{CSP, Page, STYLE};

const HEADER: &str = "x-amzn-oidc-data";

#[tokio::test]
async fn invalid_session_id_not_forwarded() {
    let key = EcKey::generate("kid-session");
    let (binding, keys, identity) = alb_setup(&key).await;
    let token = alb_token(&key, "alice", true);
    let prefix = "urn:ietf:params:oauth:request_uri:";
    let too_long = format!("{prefix}{}", "a".repeat(1025 - prefix.len()));
    let queries = [
        String::new(),
        "?".to_string(),
        "?session_id=".to_string(),
        "?other=1".to_string(),
        format!("?session_id={}", url_encode(prefix)),
        format!(
            "?session_id={}",
            url_encode("urn:ietf:params:oauth:request_uri:a/b")
        ),
        format!(
            "?session_id={}",
            url_encode("urn:ietf:params:oauth:request_uri:a b")
        ),
        format!(
            "?session_id={}",
            url_encode("urn:ietf:params:oauth:request_uri:<script>")
        ),
        format!(
            "?session_id={}",
            url_encode("urn:ietf:params:oauth:request_uri:a%2Fb")
        ),
        format!(
            "?session_id={}",
            url_encode("urn:ietf:params:oauth:authorization_code:abc")
        ),
        format!(
            "?session_id={}",
            url_encode("URN:IETF:PARAMS:OAUTH:REQUEST_URI:abc")
        ),
        format!("?session_id={}", url_encode(&format!(" {SESSION}"))),
        format!("?session_id={}", url_encode(&too_long)),
        format!("?session_id={0}&session_id={0}", url_encode(SESSION)),
        format!("?session_id={}", url_encode("https://evil.example.com/")),
    ];
    for query in &queries {
        let url = format!("{}/oauth2/session-binding{query}", binding.base);
        let (status, _, body) = binding.get(&url, &[(HEADER, &token)]).await;
        assert_eq!(status, 400, "{query:.80}");
        assert_eq!(body, Page::InvalidLink.html());
    }
    assert_eq!(identity.calls(), 0, "no invalid session_id was forwarded");
    assert_eq!(keys.hits(), 0, "not even the user was looked up");
    // The longest valid one is forwarded.
    let longest = format!("{prefix}{}", "a".repeat(1024 - prefix.len()));
    let (status, _, _) = binding
        .get(&binding.binding_url(&longest), &[(HEADER, &token)])
        .await;
    assert_eq!(status, 200);
    assert_eq!(identity.received()[0].body["sessionUri"], longest.as_str());
}

#[tokio::test]
async fn no_user_is_not_signed_in_page() {
    // ALB source only: no header; an Authorization header or cookie is not a source.
    let key = EcKey::generate("kid-nouser");
    let (binding, keys, identity) = alb_setup(&key).await;
    let (status, headers, body) = binding.bind_with(&[]).await;
    assert_eq!(status, 401);
    assert_eq!(body, Page::NotSignedIn.html());
    assert!(headers.contains_key("www-authenticate"));
    let (status, _, _) = binding
        .bind_with(&[
            ("authorization", "Bearer a.b.c"),
            ("cookie", "id_token=a.b.c"),
        ])
        .await;
    assert_eq!(status, 401);
    assert_eq!(identity.calls(), 0);
    assert_eq!(keys.hits(), 0);

    // OIDC source only: no bearer and no cookie; an ALB header is not trusted.
    let idp_key = EcKey::generate("idp");
    let idp = Idp::start(&[&idp_key]).await;
    let mut config = base_config(&identity.url());
    config.users.oidc = Some(oidc_config(&idp, Some("id_token")));
    let binding = Binding::start(config).await;
    let alb = alb_token(&key, "alice", true);
    for headers in [
        vec![],
        vec![(HEADER, alb.as_str())],
        vec![("authorization", "Basic YWxpY2U6cHc=")],
        vec![("cookie", "other=1")],
    ] {
        let (status, _, body) = binding.bind_with(&headers).await;
        assert_eq!(status, 401);
        assert_eq!(body, Page::NotSignedIn.html());
    }
    assert_eq!(identity.calls(), 0);
    assert_eq!(idp.hits(), 0);
}

#[tokio::test]
async fn identity_errors_map_to_pages() {
    let key = EcKey::generate("kid-errors");
    let (binding, _keys, identity) = alb_setup(&key).await;
    let token = alb_token(&key, "alice", true);
    let cases = [
        (Reply::Ok, 200, Page::Success),
        (
            Reply::error(
                403,
                "AccessDeniedException",
                "the user does not match the user who started this authorization session",
            ),
            403,
            Page::WrongUser,
        ),
        (Reply::expired(), 410, Page::Expired),
        (Reply::cancelled(), 410, Page::Cancelled),
        (
            // The reason is typed: a message that merely mentions expiry is not one.
            Reply::error(
                400,
                "ValidationException",
                "the link expired, says the text",
            ),
            400,
            Page::InvalidLink,
        ),
        (
            Reply::error(
                400,
                "ValidationException",
                "authorization session already used: it was completed before",
            ),
            400,
            Page::InvalidLink,
        ),
        (
            Reply::error(400, "ValidationException", "1 validation error detected"),
            400,
            Page::InvalidLink,
        ),
        (
            Reply::error(
                404,
                "ResourceNotFoundException",
                "authorization session not found",
            ),
            404,
            Page::UnknownLink,
        ),
        (
            Reply::error(401, "UnauthorizedException", "invalid bearer key"),
            502,
            Page::Misconfigured,
        ),
        (
            Reply::error(503, "InternalServerException", "database unavailable"),
            502,
            Page::TryAgain,
        ),
        (
            Reply::error(429, "ThrottlingException", "slow down"),
            502,
            Page::TryAgain,
        ),
        (Reply::error(500, "SomethingNew", "?"), 502, Page::TryAgain),
    ];
    for (i, (reply, status, page)) in cases.iter().enumerate() {
        identity.set_reply(reply.clone());
        let (got, _, body) = binding.bind_with(&[(HEADER, &token)]).await;
        assert_eq!(got, *status, "{reply:?}");
        assert_eq!(body, page.html(), "{reply:?}");
        assert_eq!(identity.calls(), i + 1);
    }
    // The error type may carry AWS's `:uri` suffix, or come only in the body's `__type`.
    let (status, _, _) = raw_error_answer(
        Some("AccessDeniedException:http://internal.amazon.com/coral/com.amazon.coral.service/"),
        r#"{"message":"no"}"#,
        403,
    )
    .await;
    assert_eq!(status, 403);
    let (status, _, _) = raw_error_answer(
        None,
        r#"{"__type":"com.amazonaws#ResourceNotFoundException","message":"gone"}"#,
        404,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _, _) = raw_error_answer(None, "<html>bad gateway</html>", 502).await;
    assert_eq!(status, 502);
}

/// One binding against a throwaway identity stand-in answering `status` with the given
/// error-type header and raw body.
async fn raw_error_answer(
    error_type: Option<&'static str>,
    body: &'static str,
    status: u16,
) -> (u16, HeaderMap, String) {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let router = axum::Router::new().fallback(move || async move {
        let mut response = (StatusCode::from_u16(status).unwrap(), body).into_response();
        if let Some(t) = error_type {
            response
                .headers_mut()
                .insert("x-amzn-errortype", t.parse().unwrap());
        }
        response
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let key = EcKey::generate("kid-raw");
    let keys = KeyServer::start(&[&key]).await;
    let mut config = base_config(&format!("http://{address}"));
    config.users.alb = Some(alb_config(&keys));
    let binding = Binding::start(config).await;
    binding
        .bind_with(&[(HEADER, &alb_token(&key, "alice", true))])
        .await
}

#[tokio::test]
async fn identity_unreachable_is_try_again() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let key = EcKey::generate("kid-dead");
    let keys = KeyServer::start(&[&key]).await;
    let mut config = base_config(&dead);
    config.users.alb = Some(alb_config(&keys));
    let binding = Binding::start(config).await;
    let (status, _, body) = binding
        .bind_with(&[(HEADER, &alb_token(&key, "alice", true))])
        .await;
    assert_eq!(status, 502);
    assert_eq!(body, Page::TryAgain.html());
}

fn assert_hardened(headers: &HeaderMap, what: &str) {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("{what}: missing {name}"))
    };
    let csp = get("content-security-policy");
    assert_eq!(csp, CSP.as_str(), "{what}");
    for directive in [
        "default-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.split("; ").any(|d| d == directive), "{what}: {csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{what}: {csp}");
    assert_eq!(get("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(get("referrer-policy"), "no-referrer", "{what}");
    assert_eq!(get("cache-control"), "no-store", "{what}");
    assert_eq!(get("x-frame-options"), "DENY", "{what}");
}

#[tokio::test]
async fn every_page_carries_the_csp_and_security_headers() {
    // The CSP's style hash is the hash of the inline style the pages carry.
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, STYLE.as_bytes());
    let hash = format!("style-src 'sha256-{}'", STANDARD.encode(digest.as_ref()));
    assert!(CSP.split("; ").any(|d| d == hash), "{}", *CSP);

    let key = EcKey::generate("kid-headers");
    let (binding, _keys, identity) = alb_setup(&key).await;
    let token = alb_token(&key, "alice", true);
    let mut seen = vec![];
    for (reply, page) in [
        (Reply::Ok, Page::Success),
        (
            Reply::error(403, "AccessDeniedException", "x"),
            Page::WrongUser,
        ),
        (Reply::expired(), Page::Expired),
        (Reply::cancelled(), Page::Cancelled),
        (
            Reply::error(400, "ValidationException", "used"),
            Page::InvalidLink,
        ),
        (
            Reply::error(404, "ResourceNotFoundException", "x"),
            Page::UnknownLink,
        ),
        (
            Reply::error(401, "UnauthorizedException", "x"),
            Page::Misconfigured,
        ),
        (
            Reply::error(500, "InternalServerException", "x"),
            Page::TryAgain,
        ),
    ] {
        identity.set_reply(reply);
        let (status, headers, body) = binding.bind_with(&[(HEADER, &token)]).await;
        assert_eq!(status, page.status().as_u16());
        assert_eq!(body, page.html());
        assert!(body.contains(&format!("<style>{STYLE}</style>")));
        assert_eq!(
            headers.get("content-type").unwrap(),
            "text/html; charset=utf-8"
        );
        assert_hardened(&headers, &format!("{page:?}"));
        seen.push(page);
    }
    // Not signed in, invalid link, unknown path, /ping, wrong method.
    let (_, headers, body) = binding.bind_with(&[]).await;
    assert_eq!(body, Page::NotSignedIn.html());
    assert_hardened(&headers, "not signed in");
    let (_, headers, body) = binding
        .get(&format!("{}/oauth2/session-binding", binding.base), &[])
        .await;
    assert_eq!(body, Page::InvalidLink.html());
    assert_hardened(&headers, "invalid link");
    let (status, headers, body) = binding.get(&format!("{}/nope", binding.base), &[]).await;
    assert_eq!(status, 404);
    assert_eq!(body, Page::NotFound.html());
    assert_hardened(&headers, "404");
    let (status, headers, body) = binding.get(&format!("{}/ping", binding.base), &[]).await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    assert_hardened(&headers, "/ping");
    let response = binding
        .http
        .post(binding.binding_url(SESSION))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 405);
    assert_hardened(response.headers(), "405");
}

#[tokio::test]
async fn html_special_characters_never_reflected() {
    const NASTY: &str = "<script>alert(1)</script>\"'&<img src=x onerror=alert(2)>";
    let key = EcKey::generate("kid-xss");
    let (binding, _keys, identity) = alb_setup(&key).await;
    let mut bodies = vec![];
    // In the session_id.
    let (_, _, body) = binding
        .get(&binding.binding_url(&format!("{SESSION}{NASTY}")), &[])
        .await;
    bodies.push(body);
    let (_, _, body) = binding
        .get(
            &format!(
                "{}/oauth2/session-binding?session_id={SESSION}&{}={}",
                binding.base,
                url_encode(NASTY),
                url_encode(NASTY)
            ),
            &[],
        )
        .await;
    bodies.push(body);
    // In the path.
    let (_, _, body) = binding
        .get(&format!("{}/{}", binding.base, url_encode(NASTY)), &[])
        .await;
    bodies.push(body);
    // In a verified sub, and in every error message of the identity service.
    let token = alb_token(&key, NASTY, true);
    for reply in [
        Reply::Ok,
        Reply::error(403, "AccessDeniedException", NASTY),
        Reply::error(400, "ValidationException", &format!("expired {NASTY}")),
        Reply::error(400, "ValidationException", NASTY),
        Reply::error(404, "ResourceNotFoundException", NASTY),
        Reply::error(500, "InternalServerException", NASTY),
    ] {
        identity.set_reply(reply);
        let (_, _, body) = binding.bind_with(&[(HEADER, &token)]).await;
        bodies.push(body);
    }
    // In an invalid token and in other headers.
    let (_, _, body) = binding
        .bind_with(&[(HEADER, "<b>.<i>.<u>"), ("referer", "<script>")])
        .await;
    bodies.push(body);
    for body in &bodies {
        for needle in ["<script>", "alert(", "onerror", "<img", "<b>", "&<"] {
            assert!(!body.contains(needle), "{needle} reflected in {body}");
        }
        // Only the fixed pages are ever answered.
        let fixed = [
            Page::Success,
            Page::WrongUser,
            Page::Expired,
            Page::Cancelled,
            Page::NotSignedIn,
            Page::InvalidLink,
            Page::UnknownLink,
            Page::Misconfigured,
            Page::TryAgain,
            Page::NotFound,
        ];
        assert!(fixed.iter().any(|p| p.html() == *body), "{body}");
    }
    // The sub itself was forwarded as data, in JSON.
    assert_eq!(
        identity.received()[0].body["userIdentifier"]["userId"],
        NASTY
    );
}
