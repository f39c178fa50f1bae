use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use latchkey_core::clock::ManualClock;
use secrecy::SecretString;

use super::cookies::session_id;
use super::login::is_same_origin;
use super::proxy::{ip_header, remove_hop_by_hop, route_for, strip_own_cookies};
use super::user::current_user;
use super::*;
use crate::keys::{SESSION_ID_LEN, random_bytes};
use crate::session::Session;

fn state(clock: ManualClock) -> GatewayState {
    let dir = crate::keys::test_dir("unit");
    let config = GatewayConfig::from_env(
        &[
            ("LATCHKEY_GATEWAY_PUBLIC_URL", "https://app.example.com/"),
            ("LATCHKEY_GATEWAY_OIDC_ISSUER", "https://login.example.com"),
            ("LATCHKEY_GATEWAY_OIDC_CLIENT_ID", "app"),
            ("LATCHKEY_GATEWAY_ROUTES", "/=http://127.0.0.1:9;login"),
            ("LATCHKEY_GATEWAY_SESSION_ABSOLUTE_SECONDS", "100"),
            ("LATCHKEY_GATEWAY_SESSION_IDLE_SECONDS", "30"),
            ("LATCHKEY_GATEWAY_UPSTREAM_CONNECT_TIMEOUT_MS", "1000"),
            ("LATCHKEY_GATEWAY_MAX_BODY_BYTES", "1024"),
            ("LATCHKEY_GATEWAY_REQUEST_TIMEOUT_SECONDS", "5"),
            ("LATCHKEY_GATEWAY_ACCESS_LOG", "off"),
        ],
        &dir,
    )
    .unwrap();
    GatewayState::new(config, Arc::new(clock)).unwrap()
}

/// A signed-in session for `sub`; the request headers that carry its cookie.
fn sign_in(gateway: &GatewayState, sub: &str) -> HeaderMap {
    let inner = &*gateway.inner;
    let raw = random_bytes::<SESSION_ID_LEN>().unwrap();
    let now = inner.clock.now_secs();
    inner.sessions.insert(
        raw,
        Session {
            subject: Arc::from(sub),
            claims: serde_json::Map::new(),
            id_token: None,
            access_token: SecretString::from("at"),
            refresh_token: None,
            access_expires_at: None,
            upstream_headers: None,
            created_secs: now,
            last_seen_secs: now,
            shared: None,
        },
    );
    let cookie = inner.sealer.seal(inner.cookie_name, &raw).unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(
        header::COOKIE,
        HeaderValue::from_str(&format!("a=b; {}={cookie}", inner.cookie_name)).unwrap(),
    );
    headers
}

#[tokio::test]
async fn the_health_path_is_the_gateways_own() {
    use tower::ServiceExt as _;
    let gateway = state(ManualClock::new(1_000_000));
    assert!(is_own_path(HEALTH_PATH) && !is_own_path("/ping"));
    let response = own_routes(gateway)
        .oneshot(
            axum::http::Request::get(HEALTH_PATH)
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn absolute_and_idle_timeouts() {
    let clock = ManualClock::new(1_700_000_000_000);
    let gateway = state(clock.clone());
    assert_eq!(gateway.cookie_name(), "__Host-latchkey-gw");
    let inner = &*gateway.inner;
    let headers = sign_in(&gateway, "alice");
    // Active use keeps it alive until the absolute limit.
    for _ in 0..4 {
        clock.advance_ms(20_000);
        assert_eq!(
            current_user(inner, &headers).await.map(|u| u.subject),
            Some(Arc::from("alice"))
        );
    }
    // At the limit itself it still holds (a session lasts at least its lifetime)…
    clock.advance_ms(20_000);
    assert!(
        current_user(inner, &headers).await.is_some(),
        "at the absolute limit"
    );
    // …and one second later it is gone.
    clock.advance_ms(1_000);
    assert!(current_user(inner, &headers).await.is_none(), "absolute");
    assert_eq!(gateway.session_count(), 0);
    // Idle for longer than the idle timeout.
    let headers = sign_in(&gateway, "bob");
    clock.advance_ms(31_000);
    assert!(current_user(inner, &headers).await.is_none(), "idle");
    assert_eq!(gateway.session_count(), 0);
}

#[tokio::test]
async fn expired_access_token_without_refresh_token_ends_the_session() {
    let clock = ManualClock::new(1_700_000_000_000);
    let gateway = state(clock.clone());
    let inner = &*gateway.inner;
    let headers = sign_in(&gateway, "alice");
    let id = session_id(inner, &headers).unwrap();
    inner
        .sessions
        .find(&id)
        .unwrap()
        .lock()
        .await
        .access_expires_at = Some(inner.clock.now_secs() + 5);
    // Within the refresh window but still valid: kept.
    assert!(current_user(inner, &headers).await.is_some());
    clock.advance_ms(6_000);
    assert!(current_user(inner, &headers).await.is_none());
}

#[test]
fn hop_by_hop_headers_and_those_connection_names_are_removed() {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("connection", "keep-alive, X-Private"),
        ("connection", "close,te"),
        ("x-private", "secret"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("proxy-authorization", "Basic eDp5"),
        ("proxy-authenticate", "Basic"),
        ("te", "trailers"),
        ("trailer", "x-sum"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "h2c"),
        ("accept", "text/html"),
        ("x-public", "kept"),
    ] {
        headers.append(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    remove_hop_by_hop(&mut headers);
    let left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
    assert_eq!(left, ["accept", "x-public"]);

    // Nothing hop-by-hop: untouched.
    let mut plain = HeaderMap::new();
    plain.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
    remove_hop_by_hop(&mut plain);
    assert_eq!(plain.len(), 1);
}

#[test]
fn same_origin_is_proven_by_origin_or_else_sec_fetch_site() {
    let gateway = state(ManualClock::new(1_700_000_000_000));
    let inner = &*gateway.inner;
    assert_eq!(inner.public_origin, "https://app.example.com");
    let check = |pairs: &[(&'static str, &'static str)]| {
        let mut headers = HeaderMap::new();
        for (k, v) in pairs {
            headers.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        is_same_origin(inner, &headers)
    };
    assert!(check(&[("origin", "https://app.example.com")]));
    assert!(check(&[("sec-fetch-site", "same-origin")]));
    assert!(check(&[
        ("origin", "https://app.example.com"),
        ("sec-fetch-site", "same-origin")
    ]));
    // Chromium sends `Origin: null` for a same-origin form under `no-referrer`.
    assert!(check(&[
        ("origin", "null"),
        ("sec-fetch-site", "same-origin")
    ]));
    for refused in [
        &[][..],
        &[("origin", "https://evil.example")],
        &[("origin", "https://app.example.com:8443")],
        &[("origin", "http://app.example.com")],
        &[("origin", "https://app.example.com.evil.example")],
        &[("origin", "null")],
        &[("origin", "null"), ("sec-fetch-site", "cross-site")],
        &[("origin", "null"), ("sec-fetch-site", "same-site")],
        &[("origin", "https://app.example.com/")],
        &[("sec-fetch-site", "same-site")],
        &[("sec-fetch-site", "cross-site")],
        &[("sec-fetch-site", "none")],
        // A mismatched Origin is not overruled by Sec-Fetch-Site.
        &[
            ("origin", "https://evil.example"),
            ("sec-fetch-site", "same-origin"),
        ],
        // Repeated headers prove nothing.
        &[
            ("origin", "https://app.example.com"),
            ("origin", "https://evil.example"),
        ],
        &[
            ("sec-fetch-site", "same-origin"),
            ("sec-fetch-site", "cross-site"),
        ],
    ] {
        assert!(!check(refused), "{refused:?}");
    }
}

#[test]
fn login_cookies_are_stripped_like_the_session_cookie() {
    let logins = LoginCookies::new("latchkey-gw");
    let mut headers = HeaderMap::new();
    headers.insert(
        header::COOKIE,
        HeaderValue::from_static(
            "a=1; latchkey-gw=s; latchkey-gw-login-AbCdEfGhIjKlMnOp=x; latchkey-gw-login=old; b=2",
        ),
    );
    strip_own_cookies(&mut headers, "latchkey-gw", &logins);
    assert_eq!(headers[header::COOKIE], "a=1; b=2");
    let mut only = HeaderMap::new();
    only.insert(
        header::COOKIE,
        HeaderValue::from_static("latchkey-gw-login-AbCdEfGhIjKlMnOp=x"),
    );
    strip_own_cookies(&mut only, "latchkey-gw", &logins);
    assert!(only.get(header::COOKIE).is_none());
}

#[test]
fn ip_header_follows_the_address() {
    // The per-thread cache must never answer for another address.
    for ip in ["10.0.0.1", "::1", "10.0.0.1", "10.0.0.2", "2001:db8::7"] {
        let ip: std::net::IpAddr = ip.parse().unwrap();
        assert_eq!(ip_header(ip), ip.to_string().as_str());
    }
}

#[test]
fn longest_prefix_wins() {
    let routes = route_table(&[
        RouteConfig::parse("/=http://a;login").unwrap(),
        RouteConfig::parse("/api=http://b;api").unwrap(),
    ])
    .unwrap();
    let up = |p: &str| route_for(&routes, p).map(|r| r.config.upstream.clone());
    assert_eq!(up("/api").as_deref(), Some("http://b"));
    assert_eq!(up("/api/x").as_deref(), Some("http://b"));
    assert_eq!(up("/apix").as_deref(), Some("http://a"));
    assert_eq!(up("/").as_deref(), Some("http://a"));
}
