//! The development providers over HTTP on loopback, driven as a browser and a relying party
//! would: the login and consent forms, the code and refresh grants, the GitHub-shaped API,
//! and what each refuses. ID tokens are checked by Latchkey's own inbound verifier against
//! the provider's published JWKS (real ES256 signatures).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;

use latchkey_authn::inbound::{InboundIssuerConfig, InboundVerifier};
use latchkey_authn::outbound::{OutboundClient, OutboundPolicy};
use latchkey_authn::pkce::PkceVerifier;
use latchkey_core::clock::{ManualClock, SystemClock};
use latchkey_devkit::idp::{self, IdpOptions};
use latchkey_devkit::sandbox::{self, SandboxOptions};
use latchkey_devkit::{Client, SigningKey};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Response, StatusCode};
use secrecy::ExposeSecret as _;
use serde_json::Value;
use url::Url;

const REDIRECT: &str = "http://127.0.0.1:9/callback";

fn client(id: &str) -> Client {
    Client {
        id: id.into(),
        secret: format!("{id}-secret"),
        name: format!("The {id} app"),
        redirect_uris: vec![REDIRECT.into()],
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// The browser's cookie (`name=value`) from a page's `Set-Cookie`.
fn cookie_of(response: &Response) -> String {
    let set = response.headers()[SET_COOKIE].to_str().unwrap();
    set.split(';').next().unwrap().to_string()
}

/// The hidden fields of the page's form.
fn hidden_fields(page: &str) -> Vec<(String, String)> {
    page.split(r#"<input type="hidden" name=""#)
        .skip(1)
        .map(|rest| {
            let (name, rest) = rest.split_once('"').unwrap();
            let value = rest
                .split_once(r#"value=""#)
                .unwrap()
                .1
                .split_once('"')
                .unwrap()
                .0;
            (
                name.to_string(),
                value.replace("&amp;", "&").replace("&quot;", "\""),
            )
        })
        .collect()
}

fn query(location: &str) -> HashMap<String, String> {
    Url::parse(location)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

struct Page {
    cookie: String,
    fields: Vec<(String, String)>,
    html: String,
}

async fn open_page(url: &str) -> Page {
    let r = http().get(url).send().await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(r.headers()["cache-control"], "no-store");
    let cookie = cookie_of(&r);
    let html = r.text().await.unwrap();
    assert!(html.contains("Development only."), "every page says so");
    Page {
        cookie,
        fields: hidden_fields(&html),
        html,
    }
}

/// Post a page's form with `extra` fields, as the browser that loaded it.
async fn submit(
    base: &str,
    action: &str,
    page: &Page,
    cookie: &str,
    extra: &[(&str, &str)],
) -> Response {
    let mut pairs: Vec<(&str, &str)> = page
        .fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    pairs.extend_from_slice(extra);
    http()
        .post(format!("{base}{action}"))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(COOKIE, cookie)
        .body(form(&pairs))
        .send()
        .await
        .unwrap()
}

async fn token_request(
    base: &str,
    path: &str,
    id: &str,
    pairs: &[(&str, &str)],
) -> (StatusCode, Value) {
    let r = http()
        .post(format!("{base}{path}"))
        .basic_auth(id, Some(format!("{id}-secret")))
        .header("accept", "application/json")
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form(pairs))
        .send()
        .await
        .unwrap();
    let status = r.status();
    assert_eq!(r.headers()["cache-control"], "no-store");
    (status, r.json().await.unwrap())
}

async fn start_idp() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let router = idp::router(IdpOptions {
        issuer: issuer.clone(),
        clients: vec![client("gateway")],
        key: SigningKey::generate().unwrap(),
        state_file: None,
        token_lifetime_seconds: 300,
        refresh_lifetime_seconds: 3600,
        clock: Arc::new(SystemClock),
    })
    .unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    issuer
}

fn authorize_url(
    base: &str,
    path: &str,
    client_id: &str,
    scope: &str,
    challenge: Option<&str>,
) -> String {
    let mut url = Url::parse(&format!("{base}{path}")).unwrap();
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", REDIRECT)
            .append_pair("scope", scope)
            .append_pair("state", "st-1")
            .append_pair("nonce", "n-1");
        if let Some(c) = challenge {
            q.append_pair("code_challenge", c)
                .append_pair("code_challenge_method", "S256");
        }
    }
    url.into()
}

#[tokio::test]
async fn idp_sign_in_gives_an_id_token_latchkey_verifies() {
    let issuer = start_idp().await;
    let pkce = PkceVerifier::generate().unwrap();
    let page = open_page(&authorize_url(
        &issuer,
        "/authorize",
        "gateway",
        "openid profile",
        Some(&pkce.challenge()),
    ))
    .await;
    assert!(page.html.contains("Sign in as alice") && page.html.contains("Sign in as bob"));
    assert!(page.html.contains("The gateway app"));

    let r = submit(
        &issuer,
        "/authorize",
        &page,
        &page.cookie,
        &[("user", "alice")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let location = r.headers()[LOCATION].to_str().unwrap().to_string();
    assert!(location.starts_with(REDIRECT));
    let q = query(&location);
    assert_eq!(q["state"], "st-1");
    assert_eq!(q["iss"], issuer);

    let verifier = pkce.into_secret();
    let exchange = [
        ("grant_type", "authorization_code"),
        ("code", q["code"].as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", verifier.expose_secret()),
    ];
    let (status, tokens) = token_request(&issuer, "/token", "gateway", &exchange).await;
    assert_eq!(status, 200, "{tokens}");
    let id_token = tokens["id_token"].as_str().unwrap();

    // Latchkey's own verifier, fetching discovery and the JWKS from the provider.
    let outbound = OutboundClient::new(OutboundPolicy {
        allow_private_addresses: true,
        ..OutboundPolicy::default()
    })
    .unwrap();
    let verifier = InboundVerifier::new(
        vec![InboundIssuerConfig::new(
            issuer.clone(),
            vec!["gateway".into()],
        )],
        outbound,
        Arc::new(SystemClock),
    );
    let user = verifier.verify(id_token).await.expect("a valid ID token");
    assert_eq!(user.subject, "alice");
    assert_eq!(user.claims["nonce"], "n-1");
    // A token altered after signing is refused.
    let mut parts: Vec<String> = id_token.split('.').map(str::to_string).collect();
    parts[1] = parts[1].replacen('e', "f", 1);
    assert!(verifier.verify(&parts.join(".")).await.is_err());

    // The code works once.
    let (status, again) = token_request(&issuer, "/token", "gateway", &exchange).await;
    assert_eq!(
        (status, again["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );

    // Refresh rotates; the old refresh token is then worthless, and its reuse ends the grant.
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let (status, next) = token_request(
        &issuer,
        "/token",
        "gateway",
        &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
    )
    .await;
    assert_eq!(status, 200, "{next}");
    assert!(
        verifier
            .verify(next["id_token"].as_str().unwrap())
            .await
            .is_ok()
    );
    let (status, reused) = token_request(
        &issuer,
        "/token",
        "gateway",
        &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
    )
    .await;
    assert_eq!(
        (status, reused["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    let (status, _) = token_request(
        &issuer,
        "/token",
        "gateway",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", next["refresh_token"].as_str().unwrap()),
        ],
    )
    .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "the rotated token went with the grant"
    );

    let userinfo = http()
        .get(format!("{issuer}/userinfo"))
        .header(
            AUTHORIZATION,
            format!("Bearer {}", tokens["access_token"].as_str().unwrap()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(userinfo.status(), 401, "revoked with its grant");
}

#[tokio::test]
async fn idp_refuses_what_a_real_provider_refuses() {
    let issuer = start_idp().await;
    let pkce = PkceVerifier::generate().unwrap();
    let url = authorize_url(
        &issuer,
        "/authorize",
        "gateway",
        "openid",
        Some(&pkce.challenge()),
    );

    // An unregistered redirect URI or client: a page, never a redirect.
    for bad in [
        url.replace("127.0.0.1%3A9", "evil.example"),
        url.replace("client_id=gateway", "client_id=other"),
    ] {
        let r = http().get(&bad).send().await.unwrap();
        assert_eq!(r.status(), 400);
        assert!(r.headers().get(LOCATION).is_none());
    }
    // No PKCE: back to the client with invalid_request.
    let r = http()
        .get(authorize_url(
            &issuer,
            "/authorize",
            "gateway",
            "openid",
            None,
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        query(r.headers()[LOCATION].to_str().unwrap())["error"],
        "invalid_request"
    );

    let page = open_page(&url).await;
    // The form posted without the browser's cookie, or by another browser (login CSRF).
    let other = open_page(&url).await;
    for cookie in ["", other.cookie.as_str()] {
        let r = submit(&issuer, "/authorize", &page, cookie, &[("user", "alice")]).await;
        assert_eq!(r.status(), 400, "cookie {cookie:?}");
        assert!(r.headers().get(LOCATION).is_none());
    }
    // A name that is not a name.
    let r = submit(
        &issuer,
        "/authorize",
        &page,
        &page.cookie,
        &[("user", ""), ("user_name", "<script>")],
    )
    .await;
    assert_eq!(r.status(), 400);
    assert!(!r.text().await.unwrap().contains("<script>"));

    // A code with the wrong PKCE verifier, or with another client's credentials.
    let r = submit(
        &issuer,
        "/authorize",
        &page,
        &page.cookie,
        &[("user", ""), ("user_name", "carol.d")],
    )
    .await;
    let code = query(r.headers()[LOCATION].to_str().unwrap())["code"].clone();
    let wrong = PkceVerifier::generate().unwrap().into_secret();
    let (status, body) = token_request(
        &issuer,
        "/token",
        "gateway",
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", wrong.expose_secret()),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    let r = http()
        .post(format!("{issuer}/token"))
        .basic_auth("gateway", Some("not-the-secret"))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
}

struct SandboxUnderTest {
    base: String,
    clock: ManualClock,
}

async fn start_sandbox(
    state_file: Option<std::path::PathBuf>,
    clock: ManualClock,
) -> SandboxUnderTest {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = sandbox::router(SandboxOptions {
        base_url: base.clone(),
        clients: vec![client("latchkey")],
        state_file,
        access_token_lifetime_seconds: 60,
        refresh_token_lifetime_seconds: 3600,
        clock: Arc::new(clock.clone()),
    })
    .unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    SandboxUnderTest { base, clock }
}

async fn api(
    base: &str,
    path: &str,
    token: &str,
) -> (StatusCode, Value, reqwest::header::HeaderMap) {
    let r = http()
        .get(format!("{base}{path}"))
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    let (status, headers) = (r.status(), r.headers().clone());
    (status, r.json().await.unwrap(), headers)
}

/// Consent as `user` for `scope`; the token answer.
async fn consent(sb: &SandboxUnderTest, scope: &str, user: &str) -> Value {
    let page = open_page(&authorize_url(
        &sb.base,
        "/login/oauth/authorize",
        "latchkey",
        scope,
        None,
    ))
    .await;
    let r = submit(
        &sb.base,
        "/login/oauth/authorize",
        &page,
        &page.cookie,
        &[("user", user)],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let q = query(r.headers()[LOCATION].to_str().unwrap());
    let (status, tokens) = token_request(
        &sb.base,
        "/login/oauth/access_token",
        "latchkey",
        &[
            ("grant_type", "authorization_code"),
            ("code", &q["code"]),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    tokens
}

#[tokio::test]
async fn sandbox_consent_names_the_app_and_each_scope_and_the_api_enforces_them() {
    let sb = start_sandbox(None, ManualClock::new(1_000_000)).await;
    let page = open_page(&authorize_url(
        &sb.base,
        "/login/oauth/authorize",
        "latchkey",
        "read:user repo",
        None,
    ))
    .await;
    assert!(page.html.contains("The latchkey app"));
    assert!(
        page.html
            .contains("<code>read:user</code>: Read your profile")
    );
    assert!(
        page.html
            .contains("<code>repo</code>: Full access to your repositories")
    );
    assert!(page.html.contains("Authorize as alice"));

    // Deny: back to the app with access_denied, no code.
    let r = submit(
        &sb.base,
        "/login/oauth/authorize",
        &page,
        &page.cookie,
        &[("decision", "deny")],
    )
    .await;
    let q = query(r.headers()[LOCATION].to_str().unwrap());
    assert_eq!(q["error"], "access_denied");
    assert!(!q.contains_key("code"));

    let tokens = consent(&sb, "read:user", "alice").await;
    assert_eq!(tokens["scope"], "read:user");
    assert_eq!(tokens["expires_in"], 60);
    let access = tokens["access_token"].as_str().unwrap();
    let (status, me, headers) = api(&sb.base, "/user", access).await;
    assert_eq!(status, 200);
    assert_eq!(me["login"], "alice");
    assert_eq!(headers["x-oauth-scopes"], "read:user");
    // Without `repo`: 403 naming what it takes.
    let (status, body, headers) = api(&sb.base, "/user/repos", access).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(headers["x-accepted-oauth-scopes"], "repo, public_repo");

    // public_repo sees only public repositories; repo sees all.
    let public = consent(&sb, "public_repo", "bob").await;
    let (_, list, _) = api(
        &sb.base,
        "/user/repos",
        public["access_token"].as_str().unwrap(),
    )
    .await;
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|r| r["private"] == false && r["owner"]["login"] == "bob")
    );
    let full = consent(&sb, "repo", "bob").await;
    let (_, list, _) = api(
        &sb.base,
        "/user/repos",
        full["access_token"].as_str().unwrap(),
    )
    .await;
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|r| r["private"] == true)
    );
    let (status, _, _) = api(&sb.base, "/user", full["access_token"].as_str().unwrap()).await;
    assert_eq!(status, 403, "repo does not include read:user");

    // GitHub answers form-encoded unless asked for JSON.
    let code = {
        let page = open_page(&authorize_url(
            &sb.base,
            "/login/oauth/authorize",
            "latchkey",
            "user",
            None,
        ))
        .await;
        let r = submit(
            &sb.base,
            "/login/oauth/authorize",
            &page,
            &page.cookie,
            &[("user", "alice")],
        )
        .await;
        query(r.headers()[LOCATION].to_str().unwrap())["code"].clone()
    };
    let r = http()
        .post(format!("{}/login/oauth/access_token", sb.base))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", "latchkey"),
            ("client_secret", "latchkey-secret"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()[CONTENT_TYPE],
        "application/x-www-form-urlencoded"
    );
    let body: HashMap<String, String> =
        url::form_urlencoded::parse(r.text().await.unwrap().as_bytes())
            .into_owned()
            .collect();
    assert!(body["access_token"].starts_with("sbx_at_") && body["token_type"] == "bearer");

    // A forged consent (no cookie) grants nothing.
    let r = submit(
        &sb.base,
        "/login/oauth/authorize",
        &page,
        "",
        &[("user", "alice")],
    )
    .await;
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn sandbox_tokens_expire_refresh_rotate_revoke_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("sandbox-tokens.json");
    let clock = ManualClock::new(1_000_000);
    let sb = start_sandbox(Some(state.clone()), clock.clone()).await;
    let tokens = consent(&sb, "read:user", "alice").await;
    let access = tokens["access_token"].as_str().unwrap().to_string();
    assert_eq!(api(&sb.base, "/user", &access).await.0, 200);

    // Expired: GitHub's 401.
    sb.clock.advance_ms(61_000);
    let (status, body, _) = api(&sb.base, "/user", &access).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("Bad credentials"))
    );

    // Refresh: a new pair; the old refresh token is spent.
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let (status, next) = token_request(
        &sb.base,
        "/login/oauth/access_token",
        "latchkey",
        &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
    )
    .await;
    assert_eq!(status, 200, "{next}");
    let access = next["access_token"].as_str().unwrap().to_string();
    assert_eq!(api(&sb.base, "/user", &access).await.0, 200);

    // Restarted on the same state file: the tokens still work (the clock is shared).
    let sb = start_sandbox(Some(state.clone()), clock.clone()).await;
    assert_eq!(api(&sb.base, "/user", &access).await.0, 200);
    let stored = std::fs::read_to_string(&state).unwrap();
    assert!(!stored.contains(&access), "tokens are kept by hash only");

    // RFC 7009: revoking the access token ends the grant, refresh token included; an
    // unknown token is not an error.
    let (status, _) = token_request(
        &sb.base,
        "/login/oauth/revoke",
        "latchkey",
        &[("token", &access)],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(api(&sb.base, "/user", &access).await.0, 401);
    let (status, body) = token_request(
        &sb.base,
        "/login/oauth/access_token",
        "latchkey",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", next["refresh_token"].as_str().unwrap()),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    let (status, _) = token_request(
        &sb.base,
        "/login/oauth/revoke",
        "latchkey",
        &[("token", "sbx_at_unknown")],
    )
    .await;
    assert_eq!(status, 200);
}
