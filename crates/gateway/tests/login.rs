//! The gateway end to end: OIDC login at the edge, ALB-format headers for the upstreams
//! (checked with the session binding service's own `AlbVerifier` against the public key
//! the gateway serves), sessions, refresh, rate limits, logout. The gateway runs
//! in-process; its peers are real (see `common`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE;
use latchkey_authn::AlbConfig;
use latchkey_authn::alb::AlbVerifier;
use latchkey_authn::outbound::{OutboundClient, OutboundPolicy};
use latchkey_core::clock::SystemClock;
use latchkey_gateway::config::{AccessLogTarget, PerSecond};
use serde_json::Value;

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_login_headers_sessions_and_logout() {
    let (_provider, issuer) = spawn_provider(&[]);
    let upstream = spawn_upstream().await;
    let gateway = start_gateway(&issuer, "gw-main", &upstream, |_| {}).await;
    let gw = gateway.url.clone();
    register_client(&issuer, "gw-main", &gw).await;

    // Without a session: api → 401 JSON; public → passed through without user headers,
    // and a forged claims header is stripped.
    let mut anon = Browser::new();
    let r = anon.api_get(&format!("{gw}/api/things")).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        serde_json::from_str::<Value>(&r.body).unwrap()["error"],
        "unauthorized"
    );
    let r = anon
        .send(
            "GET",
            &format!("{gw}/public/info?q=1"),
            None,
            &[
                ("x-amzn-oidc-data", "forged.token.here"),
                ("x-amzn-oidc-identity", "mallory"),
            ],
        )
        .await;
    let seen = echo(&r);
    assert_eq!(seen["uri"], "/public/info?q=1");
    assert!(seen["headers"].get("x-amzn-oidc-data").is_none(), "{seen}");
    assert!(
        seen["headers"].get("x-amzn-oidc-identity").is_none(),
        "{seen}"
    );
    // Streams pass through event by event: the first event arrives while the upstream
    // still holds back the second.
    let mut stream = anon
        .http
        .get(format!("{gw}/public/sse"))
        .send()
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.chunk())
        .await
        .expect("the first event was held back")
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"data: one\n\n");
    SECOND_EVENT.notify_one();
    let rest = tokio::time::timeout(Duration::from_secs(5), stream.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(&rest[..], b"data: two\n\n");

    // A login route without html in Accept is an API client: 401, not a redirect.
    let r = anon.api_get(&format!("{gw}/app")).await;
    assert_eq!(r.status, 401);
    // A callback with an unknown state: 400 page, no session.
    let r = anon
        .get(&format!(
            "{gw}/oauth2/idpresponse?state=bogus&code=whatever"
        ))
        .await;
    assert_eq!(r.status, 400);
    assert!(r.set_cookies.is_empty());

    // Log in from a deep link; the browser comes back to it with a session cookie.
    let mut alice = Browser::new();
    let location = alice
        .sign_in(&gw, &format!("{gw}/app/page?x=1"), "alice")
        .await;
    assert_eq!(location, "/app/page?x=1");
    let session_cookie = alice
        .jar
        .get("latchkey-gw")
        .cloned()
        .expect("session cookie");
    let set = alice
        .set_cookies
        .iter()
        .find(|c| c.starts_with("latchkey-gw="))
        .unwrap();
    for attribute in ["HttpOnly", "Path=/", "SameSite=Lax"] {
        assert!(set.contains(attribute), "{set}");
    }
    assert!(!set.contains("Secure"), "{set}");

    // The upstream sees the ALB headers (a forged one replaced), not the gateway's cookie.
    alice.jar.insert("other".into(), "kept".into());
    let r = alice
        .send(
            "GET",
            &format!("{gw}/app/page?x=1"),
            None,
            &[
                ("x-amzn-oidc-data", "forged.token.here"),
                ("x-amzn-oidc-identity", "mallory"),
            ],
        )
        .await;
    let seen = echo(&r);
    let h = &seen["headers"];
    assert_eq!(h["x-amzn-oidc-identity"], "alice");
    // Security headers on proxied responses (no HSTS without TLS).
    let r2 = alice
        .http
        .get(format!("{gw}/public/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r2.headers()["x-content-type-options"], "nosniff");
    assert!(r2.headers().get("strict-transport-security").is_none());
    assert!(
        h["x-amzn-oidc-accesstoken"]
            .as_str()
            .is_some_and(|t| t.len() > 10)
    );
    let cookies = h["cookie"].as_str().unwrap_or_default();
    assert!(
        cookies.contains("other=kept") && !cookies.contains("latchkey-gw"),
        "{cookies}"
    );
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], gw.trim_start_matches("http://"));
    let data = h["x-amzn-oidc-data"].as_str().unwrap();
    assert_ne!(data, "forged.token.here");
    let parts: Vec<&str> = data.split('.').collect();
    assert_eq!(parts.len(), 3);
    assert!(parts.iter().all(|p| p.len() % 4 == 0), "parts are padded");
    let header: Value = serde_json::from_slice(&URL_SAFE.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["typ"], "JWT");
    assert_eq!(header["signer"], SIGNER);
    assert_eq!(header["client"], "gw-main");
    assert_eq!(header["iss"], issuer.as_str());
    let payload: Value = serde_json::from_slice(&URL_SAFE.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(payload["email"], "alice@example.test");
    assert!(payload.get("nonce").is_none() && payload.get("aud").is_none());

    // The binding service's verifier accepts it with the gateway's key URL and signer.
    let mut alb = AlbConfig::new(SIGNER);
    alb.key_url_template = format!("{gw}/.well-known/alb-keys/{{kid}}");
    alb.issuer = Some(issuer.clone());
    let client = OutboundClient::new(OutboundPolicy {
        allow_private_addresses: true,
        ..OutboundPolicy::default()
    })
    .unwrap();
    let verifier = AlbVerifier::new(alb.clone(), client.clone(), Arc::new(SystemClock));
    assert_eq!(verifier.verify(data).await.unwrap().subject, "alice");
    // …and refuses it for another load balancer.
    let other = AlbVerifier::new(
        AlbConfig {
            signer_arn: "arn:aws:elasticloadbalancing:us-east-1:1:loadbalancer/app/x/1".into(),
            ..alb
        },
        client,
        Arc::new(SystemClock),
    );
    assert!(other.verify(data).await.is_err());

    // api routes work with the session too.
    let r = alice.api_get(&format!("{gw}/api/things")).await;
    assert_eq!(echo(&r)["headers"]["x-amzn-oidc-identity"], "alice");

    // A tampered cookie is no session: the browser is sent to the provider again.
    let mut tampered = session_cookie.clone().into_bytes();
    let i = tampered.len() / 2;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let mut mallory = Browser::new();
    mallory
        .jar
        .insert("latchkey-gw".into(), String::from_utf8(tampered).unwrap());
    let r = mallory.get(&format!("{gw}/app")).await;
    assert_eq!(r.status, 302);
    assert!(
        r.location.as_deref().unwrap().starts_with(&issuer),
        "{:?}",
        r.location
    );
    assert!(r.set_cookies.iter().any(|c| c.starts_with("latchkey-gw=;")));

    // A callback is single use: the second time it is a 400 page and no session.
    let mut bob = Browser::new();
    let Outcome::Callback(callback) = bob.login(&gw, &format!("{gw}/bob"), "bob", true).await
    else {
        panic!("no callback");
    };
    // Delivered to another browser (login CSRF), the callback is refused and nothing is used up.
    let mut replay = Browser::new();
    let elsewhere = replay.get(&callback).await;
    assert_eq!(elsewhere.status, 400);
    assert!(elsewhere.set_cookies.is_empty());
    let (login_name, login_cookie) = login_cookies(&bob).pop().expect("login cookie");
    let first = bob.get(&callback).await;
    assert_eq!(first.status, 302);
    assert_eq!(first.location.as_deref(), Some("/bob"));
    assert!(login_cookies(&bob).is_empty(), "login cookie cleared");
    // Replayed with a copy of its login cookie: single use (the copy is cleared too).
    let mut again = Browser::new();
    again.jar.insert(login_name, login_cookie);
    let second = again.get(&callback).await;
    assert_eq!(second.status, 400);
    assert!(
        !second
            .set_cookies
            .iter()
            .any(|c| c.starts_with("latchkey-gw=")),
        "{:?}",
        second.set_cookies
    );
    let r = again.api_get(&format!("{gw}/api/x")).await;
    assert_eq!(r.status, 401);

    // Open redirects in the return path end at `/` (a browser still signed in at the
    // provider, without a gateway session).
    let mut carol = Browser::new();
    carol.jar = alice.jar.clone();
    carol.jar.remove("latchkey-gw");
    let location = carol
        .sign_in(&gw, &format!("{gw}//evil.example/x"), "alice")
        .await;
    assert_eq!(location, "/");
    let gw_for_raw = gw.clone();
    for target in ["/\\evil.example/x", "//evil.example/%2e%2e"] {
        let gw_for_raw = gw_for_raw.clone();
        let (status, location) = tokio::task::spawn_blocking(move || raw_get(&gw_for_raw, target))
            .await
            .unwrap();
        if status == 400 {
            continue; // refused outright by the HTTP parser: no redirect either
        }
        assert_eq!(status, 302, "{target}");
        let provider_url = location.unwrap();
        assert!(provider_url.starts_with(&issuer), "{provider_url}");
        let back = carol.sign_in(&gw, &provider_url, "alice").await;
        assert_eq!(back, "/", "{target}");
    }

    // Logout (a same-origin POST; see `gateway_logout_is_a_same_origin_post`): the session
    // is gone, the cookie cleared, the browser sent to the provider's end-session endpoint
    // with the ID token hint.
    let before = alice.jar.get("latchkey-gw").cloned().unwrap();
    let r = alice
        .send(
            "POST",
            &format!("{gw}/oauth2/logout"),
            Some(&[]),
            &[("origin", gw.as_str())],
        )
        .await;
    assert_eq!(r.status, 303);
    let to = r.location.unwrap();
    assert!(to.starts_with(&issuer), "{to}");
    assert!(to.contains("id_token_hint="), "{to}");
    assert!(
        to.contains(&format!(
            "post_logout_redirect_uri={}",
            url::form_urlencoded::byte_serialize(format!("{gw}/").as_bytes()).collect::<String>()
        )),
        "{to}"
    );
    assert!(r.set_cookies.iter().any(|c| c.contains("Max-Age=0")));
    assert!(!alice.jar.contains_key("latchkey-gw"));
    let mut old = Browser::new();
    old.jar.insert("latchkey-gw".into(), before);
    let r = old.api_get(&format!("{gw}/api/x")).await;
    assert_eq!(r.status, 401);

    // The public key endpoint serves only the gateway's kid.
    let r = anon.get(&format!("{gw}/.well-known/alb-keys/nope")).await;
    assert_eq!(r.status, 404);

    // Baseline request rules run before routing.
    let gw_for_raw = gw.clone();
    let (status, _) =
        tokio::task::spawn_blocking(move || raw_get(&gw_for_raw, "/public/%2e%2e/secret"))
            .await
            .unwrap();
    assert_eq!(status, 400);

    // One JSON access-log line per request, with the user and without the query.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let found = gateway.access_log().iter().any(|l| {
            serde_json::from_str::<Value>(l).is_ok_and(|v| {
                v["user"] == "alice" && v["path"] == "/app/page" && v["status"] == 200
            })
        });
        if found {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no access-log line: {:?}",
            gateway.access_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        gateway
            .access_log()
            .iter()
            .all(|l| !l.contains("x=1") && !l.contains("latchkey-gw")),
        "queries and cookies stay out of the access log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_refresh_rate_limit_and_idle_timeout() {
    // Access tokens live 30 s: always within the 60 s refresh window, so every proxied
    // request refreshes them with the refresh-token grant.
    let (_provider, issuer) = spawn_provider(&["--access-token-ttl", "30"]);
    let upstream = spawn_upstream().await;
    let gateway = start_gateway(&issuer, "gw-idle", &upstream, |c| {
        c.keys.session_idle_seconds = 2;
        c.keys.rate_limit_per_user = Some(PerSecond(1));
        c.keys.access_log = AccessLogTarget::Off;
    })
    .await;
    let gw = gateway.url.clone();
    register_client(&issuer, "gw-idle", &gw).await;
    let mut alice = Browser::new();
    alice.sign_in(&gw, &format!("{gw}/"), "alice").await;
    let r = alice.api_get(&format!("{gw}/api/x")).await;
    let first = echo(&r);
    assert_eq!(first["headers"]["x-amzn-oidc-identity"], "alice");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = alice.api_get(&format!("{gw}/api/x")).await;
    let second = echo(&r);
    assert_ne!(
        first["headers"]["x-amzn-oidc-accesstoken"], second["headers"]["x-amzn-oidc-accesstoken"],
        "the provider's access token was refreshed"
    );
    let stats: Value = reqwest::get(format!("{issuer}/__test/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        stats["grants"]["refresh_token"]["success"]
            .as_u64()
            .unwrap_or(0)
            >= 2,
        "{stats}"
    );
    // Per-user rate limit (1/s, burst 2): a quick third request is refused.
    let mut statuses = vec![];
    for _ in 0..3 {
        let r = alice.api_get(&format!("{gw}/api/x")).await;
        statuses.push(r.status);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    let r = alice
        .http
        .get(format!("{gw}/api/x"))
        .header("cookie", alice.cookie_header())
        .send()
        .await
        .unwrap();
    if r.status() == 429 {
        assert!(r.headers().get("retry-after").is_some());
    }
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let r = alice.api_get(&format!("{gw}/api/x")).await;
    assert_eq!(r.status, 401);
}

/// Issue 12, item 11: a cross-site `GET /oauth2/logout` (a link, an image, a redirect)
/// used to end the session. Now `GET` shows a confirmation page, and only a `POST` from
/// the gateway's own origin signs out (then on to the provider's end-session endpoint).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_logout_is_a_same_origin_post() {
    let (_provider, issuer) = spawn_provider(&[]);
    let upstream = spawn_upstream().await;
    let gateway = start_gateway(&issuer, "gw-logout", &upstream, |_| {}).await;
    let gw = gateway.url.clone();
    register_client(&issuer, "gw-logout", &gw).await;
    let logout = format!("{gw}/oauth2/logout");
    let mut alice = Browser::new();
    alice.sign_in(&gw, &format!("{gw}/app"), "alice").await;
    async fn signed_in(browser: &mut Browser, gw: &str) -> bool {
        let r = browser.api_get(&format!("{gw}/api/x")).await;
        r.status == 200
    }
    assert!(signed_in(&mut alice, &gw).await);

    // A cross-site top-level GET, as a link or a redirect elsewhere makes it: a page with
    // a sign-out button, and nothing else happens.
    let r = alice
        .send(
            "GET",
            &logout,
            None,
            &[
                ("sec-fetch-site", "cross-site"),
                ("sec-fetch-mode", "navigate"),
                ("referer", "https://evil.example/"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body
            .contains(r#"<form method="post" action="/oauth2/logout">"#),
        "{}",
        r.body
    );
    assert!(r.set_cookies.is_empty(), "{:?}", r.set_cookies);
    assert!(
        signed_in(&mut alice, &gw).await,
        "a cross-site GET ended the session"
    );

    // POSTs that do not prove they come from the gateway's origin: 403 page, session kept.
    let same_site_other_port = "http://127.0.0.1:1";
    for headers in [
        vec![("origin", "https://evil.example")],
        vec![("origin", same_site_other_port)],
        vec![("origin", "null")],
        vec![("sec-fetch-site", "cross-site")],
        vec![("sec-fetch-site", "same-site")],
        vec![],
        vec![
            ("origin", "https://evil.example"),
            ("sec-fetch-site", "same-origin"),
        ],
    ] {
        let r = alice.send("POST", &logout, Some(&[]), &headers).await;
        assert_eq!(r.status, 403, "{headers:?}: {}", r.body);
        assert!(r.body.contains("Sign-out not confirmed"), "{}", r.body);
        assert!(r.set_cookies.is_empty(), "{headers:?}: {:?}", r.set_cookies);
        assert!(
            signed_in(&mut alice, &gw).await,
            "{headers:?} ended the session"
        );
    }

    // From the gateway's own page (the browser sends its Origin): signed out, and sent to
    // the provider's end-session endpoint, which accepts the request.
    let r = alice
        .send("POST", &logout, Some(&[]), &[("origin", gw.as_str())])
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let end_session = r.location.unwrap();
    assert!(end_session.starts_with(&issuer), "{end_session}");
    assert!(end_session.contains("id_token_hint="), "{end_session}");
    assert!(!alice.jar.contains_key("latchkey-gw"));
    assert!(!signed_in(&mut alice, &gw).await);
    let at_provider = alice.get(&end_session).await;
    assert_eq!(at_provider.status, 200, "{}", at_provider.body);

    // A browser that sends `Sec-Fetch-Site: same-origin` but no `Origin` signs out too.
    let mut bob = Browser::new();
    bob.sign_in(&gw, &format!("{gw}/app"), "bob").await;
    assert!(signed_in(&mut bob, &gw).await);
    let r = bob
        .send(
            "POST",
            &logout,
            Some(&[]),
            &[("sec-fetch-site", "same-origin")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(!signed_in(&mut bob, &gw).await);
}

/// Issue 12, item 8 (the gateway's part): a provider `sub` with a newline used to sign
/// in and write a line of its own into the gateway's log. Such a subject is refused at
/// the gateway's ID-token check with a clear page, and no session is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_refuses_a_subject_with_control_characters() {
    let (_provider, issuer) = spawn_provider(&[]);
    let upstream = spawn_upstream().await;
    let gateway = start_gateway(&issuer, "gw-subject", &upstream, |_| {}).await;
    let gw = gateway.url.clone();
    register_client(&issuer, "gw-subject", &gw).await;
    // The login form's value is the provider's `sub` (form-encoded here by hand).
    for forged in [
        "eve%0AINFO%20signed%20in%20sub%3Dadmin",
        "eve%1B%5B31m",
        "eve%E2%80%A8x",
    ] {
        let mut eve = Browser::new();
        match eve.login(&gw, &format!("{gw}/app"), forged, false).await {
            Outcome::Page(status, body) => {
                assert_eq!(status, 403, "{forged}: {body}");
                assert!(body.contains("Sign-in refused"), "{body}");
                assert!(body.contains("control characters"), "{body}");
            }
            Outcome::Done(location) => panic!("{forged}: signed in, sent to {location}"),
            Outcome::Callback(_) => unreachable!(),
        }
        assert!(!eve.jar.contains_key("latchkey-gw"), "{forged}: a session");
        assert!(
            login_cookies(&eve).is_empty(),
            "{forged}: login cookie kept"
        );
    }
    // An ordinary subject still signs in at the same provider.
    let mut alice = Browser::new();
    alice.sign_in(&gw, &format!("{gw}/app"), "alice").await;
    // Every access-log line is one JSON object.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for line in gateway.access_log().iter() {
        assert!(serde_json::from_str::<Value>(line).is_ok(), "{line:?}");
    }
}
