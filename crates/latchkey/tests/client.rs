//! `latchkey-client` (the Rust data-plane client) against the real `latchkey` binary:
//! SigV4 and bearer authentication, AgentCore error names, the three-legged flow's
//! answers, and the session poller (failure, cancellation, deadline). The control plane
//! is set up with raw JSON calls, so nothing here but the binary and the client is Latchkey.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use latchkey_client::{
    Client, Error, ErrorKind, ExposeSecret, Oauth2Flow, PollOptions, Reason, ResourceToken,
    ResourceTokenRequest, SecretString, Url, UserIdentifier,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

mod common;
use common::credential;

const RETURN_URL: &str = "http://127.0.0.1:9/app/after-consent";
/// The provider's endpoints: loopback addresses that need not answer.
const AUTHZ_ENDPOINT: &str = "http://127.0.0.1:9/oauth2/authorize";

struct Server {
    child: Child,
    url: String,
    dir: PathBuf,
    admin: (String, String),
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn data_dir(name: &str) -> PathBuf {
    common::temp_dir(&format!("client-{name}"))
}

fn start(name: &str) -> Server {
    let dir = data_dir(name);
    let admin = credential(&dir, "admin");
    let (child, url) = common::spawn_identity(&dir);
    Server {
        child,
        url,
        dir,
        admin,
    }
}

/// Like [`start`], but the server may call loopback addresses: the test's provider, whose
/// loopback endpoints a server without the opt-in refuses at CreateOauth2CredentialProvider.
fn start_allowing_loopback(name: &str) -> Server {
    let dir = data_dir(name);
    let admin = credential(&dir, "admin");
    let (child, url) = common::spawn_identity_with(
        &dir,
        &[("LATCHKEY_OUTBOUND_ALLOW_PRIVATE_ADDRESSES", "true")],
    );
    Server {
        child,
        url,
        dir,
        admin,
    }
}

/// Serve `app` on a loopback port; its address.
async fn serve(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A provider token endpoint's answer: `access_token` when the request is `ok`, else
/// `invalid_grant`.
fn token_answer(ok: bool, access_token: &str) -> (axum::http::StatusCode, axum::Json<Value>) {
    use axum::{Json, http::StatusCode};
    if ok {
        (
            StatusCode::OK,
            Json(json!({"access_token": access_token, "token_type": "Bearer",
                "expires_in": 3600, "scope": "openid api:read"})),
        )
    } else {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant"})),
        )
    }
}

/// A provider token endpoint on loopback that accepts the code `good-code` once (the
/// form bodies it received are kept); returns its URL.
async fn token_endpoint(seen: Arc<Mutex<Vec<String>>>) -> String {
    use axum::{Router, routing::post};
    let app = Router::new().route(
        "/oauth2/token",
        post(move |body: String| async move {
            let ok = body.contains("code=good-code") && body.contains("code_verifier=");
            seen.lock().unwrap().push(body);
            token_answer(ok, "at-from-provider-7c1d")
        }),
    );
    let addr = serve(app).await;
    format!("http://{addr}/oauth2/token")
}

impl Server {
    fn endpoint(&self) -> Url {
        Url::parse(&self.url).unwrap()
    }

    fn sigv4(&self, (id, secret): &(String, String)) -> Client {
        Client::builder(self.endpoint())
            .sigv4(id, secret.as_str(), None, "eu-central-1")
            .timeout(Duration::from_secs(10))
            .build()
            .expect("sigv4 client")
    }

    fn bearer(&self, (id, secret): &(String, String)) -> Client {
        Client::builder(self.endpoint())
            .bearer(format!("{id}:{secret}"))
            .build()
            .expect("bearer client")
    }

    /// A control-plane operation as raw JSON with the admin's bearer key.
    async fn control(&self, operation: &str, body: Value) -> Value {
        let (id, secret) = &self.admin;
        let response = reqwest::Client::new()
            .post(format!("{}/identities/{operation}", self.url))
            .bearer_auth(format!("{id}:{secret}"))
            .json(&body)
            .send()
            .await
            .expect("control-plane call");
        let status = response.status();
        let out: Value = response.json().await.expect("control-plane json");
        assert!(status.is_success(), "{operation}: {status} {out}");
        out
    }

    async fn api_key_setup(&self, workload: &str, provider: &str, key: &str) {
        self.control(
            "CreateWorkloadIdentity",
            json!({"name": workload, "allowedResourceOauth2ReturnUrls": []}),
        )
        .await;
        self.control(
            "CreateApiKeyCredentialProvider",
            json!({"name": provider, "apiKey": key}),
        )
        .await;
    }

    /// A workload allowed to return to [`RETURN_URL`] and a `CustomOauth2` provider with
    /// explicit metadata at `token_endpoint`; returns the provider's callback URL.
    async fn oauth_setup(&self, workload: &str, provider: &str, token_endpoint: &str) -> String {
        self.control(
            "CreateWorkloadIdentity",
            json!({"name": workload, "allowedResourceOauth2ReturnUrls": [RETURN_URL]}),
        )
        .await;
        let created = self
            .control(
                "CreateOauth2CredentialProvider",
                json!({
                    "name": provider,
                    "credentialProviderVendor": "CustomOauth2",
                    "oauth2ProviderConfigInput": {"customOauth2ProviderConfig": {
                        "oauthDiscovery": {"authorizationServerMetadata": {
                            "issuer": "http://127.0.0.1:9",
                            "authorizationEndpoint": AUTHZ_ENDPOINT,
                            "tokenEndpoint": token_endpoint,
                            "responseTypes": ["code"],
                            "tokenEndpointAuthMethods": ["client_secret_post"],
                        }},
                        "clientId": "client-test",
                        "clientSecret": "client-test-secret-0123456789",
                    }},
                }),
            )
            .await;
        created["callbackUrl"].as_str().unwrap().to_string()
    }
}

fn fast_poll(deadline: Duration) -> PollOptions {
    PollOptions {
        initial_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(100),
        multiplier: 2.0,
        deadline,
    }
}

/// Act as the browser up to the provider: open the authorization URL, check where it
/// sends us, and return the provider's `state` and `redirect_uri` (the callback URL).
async fn follow_to_provider(browser: &reqwest::Client, authorization_url: &str) -> (String, Url) {
    let response = browser
        .get(authorization_url)
        .send()
        .await
        .expect("authorize");
    assert!(
        response.status().is_redirection(),
        "authorize: {}",
        response.status()
    );
    let location = response.headers()["location"].to_str().unwrap();
    assert!(location.starts_with(AUTHZ_ENDPOINT), "{location}");
    let location = Url::parse(location).unwrap();
    let param = |name: &str| {
        location
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .unwrap_or_else(|| panic!("no {name} in {location}"))
    };
    (param("state"), Url::parse(&param("redirect_uri")).unwrap())
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Start a three-legged flow for `alice`; the request to poll with and the answer's URL.
async fn start_flow(
    client: &Client,
    workload: &str,
    provider: &str,
) -> (ResourceTokenRequest, String) {
    let wat = client
        .get_workload_access_token_for_user_id(workload, "alice")
        .await
        .expect("wat");
    let request = ResourceTokenRequest::new(wat, provider, Oauth2Flow::UserFederation)
        .with_scopes(["openid", "api:read"])
        .with_return_url(RETURN_URL)
        .with_custom_state("app-state-123");
    match client
        .get_resource_oauth2_token(&request)
        .await
        .expect("token")
    {
        ResourceToken::AuthorizationRequired {
            authorization_url,
            session_uri,
        } => (request.with_session_uri(session_uri), authorization_url),
        other => panic!("expected AuthorizationRequired, got {other:?}"),
    }
}

/// The user consents at the provider: follow the authorization URL, come back to the
/// callback with `code=good-code`, and return where the callback sends the browser.
async fn consent(authorization_url: &str) -> Url {
    let browser = browser();
    let (state, redirect_uri) = follow_to_provider(&browser, authorization_url).await;
    let mut consented = redirect_uri.clone();
    consented
        .query_pairs_mut()
        .append_pair("code", "good-code")
        .append_pair("state", &state);
    let back = browser.get(consented).send().await.expect("callback");
    assert!(
        back.status().is_redirection(),
        "callback: {}",
        back.status()
    );
    Url::parse(back.headers()["location"].to_str().unwrap()).unwrap()
}

/// `poll_resource_token` for `request` (fast, 30 s deadline) in a task of its own.
fn spawn_poller(
    client: &Client,
    request: &ResourceTokenRequest,
) -> tokio::task::JoinHandle<Result<SecretString, Error>> {
    let (client, request) = (client.clone(), request.clone());
    tokio::spawn(async move {
        let options = fast_poll(Duration::from_secs(30));
        (client.poll_resource_token(&request, options, std::future::pending())).await
    })
}

/// The one-time completion URN the callback's redirect carries (`session_id`).
fn completion_in(location: &Url) -> String {
    location
        .query_pairs()
        .find(|(k, _)| k == "session_id")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no session_id in {location}"))
}

/// `CompleteResourceTokenAuth` for `user` in a task of its own.
fn spawn_completion(
    client: &Client,
    completion: &str,
    user: UserIdentifier,
) -> tokio::task::JoinHandle<Result<(), Error>> {
    let client = client.clone();
    let completion = completion.to_string();
    tokio::spawn(async move {
        client
            .complete_resource_token_auth(&completion, &user)
            .await
    })
}

/// Alice's completion in a task of its own.
fn spawn_alice_completion(
    client: &Client,
    completion: &str,
) -> tokio::task::JoinHandle<Result<(), Error>> {
    spawn_completion(client, completion, UserIdentifier::UserId("alice".into()))
}

/// The outcome of a spawned task that must end within ten seconds.
async fn ended<T>(task: tokio::task::JoinHandle<T>, what: &str) -> T {
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap_or_else(|_| panic!("{what} ends"))
        .expect("task")
}

/// The wrong user's completion is refused as such, and is not told that the session
/// (which the right user is completing) failed.
fn assert_refused_without_failing(err: &Error) {
    assert_eq!(err.kind(), Some(&ErrorKind::AccessDenied), "{err:?}");
    let told = format!("{err:?}");
    assert!(
        !told.contains("has failed"),
        "the wrong user is told the session failed, but it is being completed: {told}"
    );
}

/// A poll with `request` answers that session `session_uri` is still pending.
async fn assert_poll_pending(client: &Client, request: &ResourceTokenRequest, session_uri: &str) {
    match client
        .get_resource_oauth2_token(request)
        .await
        .expect("poll once")
    {
        ResourceToken::Pending { session_uri: s } => assert_eq!(s, session_uri),
        other => panic!("expected Pending, got {other:?}"),
    }
}

/// A poll with `request` answers the token `expected`.
async fn assert_poll_gives_token(client: &Client, request: &ResourceTokenRequest, expected: &str) {
    match client
        .get_resource_oauth2_token(request)
        .await
        .expect("poll")
    {
        ResourceToken::Token(t) => assert_eq!(t.expose_secret(), expected),
        other => panic!("expected the token, got {other:?}"),
    }
}

/// A pair of `Notify`s for a held endpoint: `(arrived, release)`.
fn hold() -> (Arc<tokio::sync::Notify>, Arc<tokio::sync::Notify>) {
    (
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(tokio::sync::Notify::new()),
    )
}

#[tokio::test]
async fn sigv4_client_gets_wat_and_api_key() {
    let server = start("sigv4");
    server
        .api_key_setup("client-agent", "client-key", "sk-live-sigv4-client-secret")
        .await;
    let client = server.sigv4(&server.admin);

    let wat = client
        .get_workload_access_token_for_user_id("client-agent", "alice")
        .await
        .expect("wat for user id");
    assert_eq!(wat.expose_secret().split('.').count(), 3);
    let key = client
        .get_resource_api_key(&wat, "client-key")
        .await
        .expect("api key");
    assert_eq!(key.expose_secret(), "sk-live-sigv4-client-secret");
    assert!(!format!("{key:?} {wat:?}").contains("sk-live"));

    // The workload's own token works too.
    let plain = client
        .get_workload_access_token("client-agent")
        .await
        .expect("plain wat");
    let key = client
        .get_resource_api_key(&plain, "client-key")
        .await
        .expect("api key");
    assert_eq!(key.expose_secret(), "sk-live-sigv4-client-secret");

    // Service errors are typed.
    let missing = client
        .get_resource_api_key(&wat, "no-such-key")
        .await
        .expect_err("unknown provider");
    assert!(
        matches!(
            missing,
            Error::Service {
                kind: ErrorKind::ResourceNotFound,
                status: 404,
                ..
            }
        ),
        "{missing:?}"
    );
    assert!(!missing.is_retryable());
    let bad = client
        .get_resource_api_key(&SecretString::from("not-a-wat"), "client-key")
        .await
        .expect_err("bad wat");
    assert!(bad.kind().is_some(), "{bad:?}");
    let invalid = client
        .get_workload_access_token("x")
        .await
        .expect_err("name too short");
    assert!(
        matches!(
            invalid,
            Error::Service {
                kind: ErrorKind::Validation,
                status: 400,
                ..
            }
        ),
        "{invalid:?}"
    );

    // A workload credential for another workload is refused.
    let other = credential(&server.dir, "workload:someone-else");
    let denied = server
        .sigv4(&other)
        .get_workload_access_token("client-agent")
        .await
        .expect_err("denied");
    assert!(
        matches!(
            denied,
            Error::Service {
                kind: ErrorKind::AccessDenied,
                status: 403,
                ..
            }
        ),
        "{denied:?}"
    );
}

#[tokio::test]
async fn bearer_client_gets_wat_and_api_key() {
    let server = start("bearer");
    server
        .api_key_setup("bearer-agent", "bearer-key", "sk-live-bearer-client-secret")
        .await;
    let client = server.bearer(&server.admin);
    let wat = client
        .get_workload_access_token_for_user_id("bearer-agent", "bob")
        .await
        .expect("wat for user id");
    let key = client
        .get_resource_api_key(&wat, "bearer-key")
        .await
        .expect("api key");
    assert_eq!(key.expose_secret(), "sk-live-bearer-client-secret");
}

#[tokio::test]
async fn wrong_secret_is_unauthorized_without_leaking_it() {
    let server = start("wrong-secret");
    let wrong_secret = "not-the-secret-but-still-secret-4f9a";
    let wrong = (server.admin.0.clone(), wrong_secret.to_string());
    for (how, client) in [
        ("sigv4", server.sigv4(&wrong)),
        ("bearer", server.bearer(&wrong)),
    ] {
        let err = client
            .get_workload_access_token("anything")
            .await
            .expect_err("wrong secret");
        assert!(
            matches!(
                err,
                Error::Service {
                    kind: ErrorKind::Unauthorized,
                    status: 401,
                    ..
                }
            ),
            "{how}: {err:?}"
        );
        let shown = format!("{err} {err:?} {client:?}");
        assert!(!shown.contains(wrong_secret), "{how}: {shown}");
        assert!(shown.contains("UnauthorizedException"), "{how}: {shown}");
    }
}

#[tokio::test]
async fn user_federation_poll_fails_when_the_user_refuses() {
    let server = start_allowing_loopback("flow-fail");
    let callback_url = server
        .oauth_setup("flow-agent", "flow-prov", "http://127.0.0.1:9/oauth2/token")
        .await;
    let client = server.sigv4(&server.admin);

    let (request, authorization_url) = start_flow(&client, "flow-agent", "flow-prov").await;
    let session_uri = request.session_uri.clone().unwrap();
    assert!(session_uri.starts_with("urn:ietf:params:oauth:request_uri:"));
    assert!(
        authorization_url.starts_with(&format!(
            "{}/identities/oauth2/authorize?request_uri=",
            server.url
        )),
        "{authorization_url}"
    );

    // Until the user does something, the session is in progress.
    assert_poll_pending(&client, &request, &session_uri).await;

    // Cancellation stops the poller promptly.
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        trigger.cancel();
    });
    let started = Instant::now();
    let err = client
        .poll_resource_token(
            &request,
            fast_poll(Duration::from_secs(60)),
            cancel.cancelled(),
        )
        .await
        .expect_err("cancelled");
    assert!(matches!(err, Error::Cancelled), "{err:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(2),
        "{took:?}"
    );

    // So does the deadline.
    let started = Instant::now();
    let err = client
        .poll_resource_token(
            &request,
            fast_poll(Duration::from_millis(300)),
            std::future::pending(),
        )
        .await
        .expect_err("deadline");
    assert!(
        matches!(err, Error::Deadline { ref session_uri } if *session_uri == request.session_uri.clone().unwrap()),
        "{err:?}"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );

    // A poller in another task; the user refuses consent at the provider.
    let poller = {
        let client = client.clone();
        let request = request.clone();
        tokio::spawn(async move {
            let out = client
                .poll_resource_token(
                    &request,
                    fast_poll(Duration::from_secs(30)),
                    std::future::pending(),
                )
                .await;
            (out, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(
        !poller.is_finished(),
        "the poller ended before the session did"
    );

    let browser = browser();
    let (state, redirect_uri) = follow_to_provider(&browser, &authorization_url).await;
    assert_eq!(redirect_uri.as_str(), callback_url);
    let mut refused = redirect_uri.clone();
    refused
        .query_pairs_mut()
        .append_pair("state", &state)
        .append_pair("error", "access_denied");
    let back = browser.get(refused).send().await.expect("callback");
    assert!(
        back.status().is_redirection(),
        "callback: {}",
        back.status()
    );
    let location = back.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with(RETURN_URL), "{location}");
    assert!(location.contains("error="), "{location}");
    let failed_at = Instant::now();

    let (out, ended_at) = tokio::time::timeout(Duration::from_secs(10), poller)
        .await
        .expect("the poller ends promptly")
        .expect("poller task");
    match out {
        Err(Error::SessionFailed {
            session_uri: s,
            reason,
        }) => {
            assert_eq!(s, session_uri);
            // A refusal at the provider is a plain failure, not a cancellation.
            assert_ne!(reason, Some(Reason::SessionCancelled));
        }
        other => panic!("expected SessionFailed, got {:?}", other.map(|_| "a token")),
    }
    assert!(
        ended_at.duration_since(failed_at) < Duration::from_secs(2),
        "the poller took {:?} after the failure",
        ended_at.duration_since(failed_at)
    );

    // A direct call says FAILED too, and the failed session cannot be completed.
    assert!(matches!(
        client
            .get_resource_oauth2_token(&request)
            .await
            .expect("after failure"),
        ResourceToken::Failed { .. }
    ));
    let err = client
        .complete_resource_token_auth(&session_uri, &UserIdentifier::UserId("alice".into()))
        .await
        .expect_err("failed session");
    assert!(err.kind().is_some(), "{err:?}");

    // A poll needs a session.
    let mut no_session = request.clone();
    no_session.session_uri = None;
    let err = client
        .poll_resource_token(&no_session, PollOptions::default(), std::future::pending())
        .await
        .expect_err("no session");
    assert!(matches!(err, Error::Config(_)), "{err:?}");
}

/// Issue 14: another account completing the session cancels it (to protect the user who
/// started it), and the owner is told so by a typed reason wherever they come next: their
/// agent's poller ends with `SessionFailed` and `Reason::SessionCancelled`, their own
/// completion is a `ValidationException` with that reason, and their authorization link
/// shows the "Link cancelled" page.
#[tokio::test]
async fn another_account_on_the_link_cancels_it_and_the_owner_is_told() {
    let server = start_allowing_loopback("flow-cancelled");
    server
        .oauth_setup(
            "cancel-agent",
            "cancel-prov",
            "http://127.0.0.1:9/oauth2/token",
        )
        .await;
    let client = server.sigv4(&server.admin);
    let (request, authorization_url) = start_flow(&client, "cancel-agent", "cancel-prov").await;
    let poller = spawn_poller(&client, &request);
    let completion = completion_in(&consent(&authorization_url).await);
    let err = client
        .complete_resource_token_auth(&completion, &UserIdentifier::UserId("mallory".into()))
        .await
        .expect_err("another account is refused");
    assert_eq!(err.kind(), Some(&ErrorKind::AccessDenied), "{err:?}");

    match ended(poller, "the owner's poller").await {
        Err(Error::SessionFailed {
            reason: Some(Reason::SessionCancelled),
            ..
        }) => {}
        other => panic!(
            "expected SessionFailed with reason session-cancelled, got {:?}",
            other.map(|_| "a token")
        ),
    }
    match client
        .get_resource_oauth2_token(&request)
        .await
        .expect("poll")
    {
        ResourceToken::Failed {
            reason: Some(Reason::SessionCancelled),
            ..
        } => {}
        other => panic!("expected FAILED with reason session-cancelled, got {other:?}"),
    }

    let err = client
        .complete_resource_token_auth(&completion, &UserIdentifier::UserId("alice".into()))
        .await
        .expect_err("the cancelled session cannot be completed");
    assert!(
        matches!(
            err,
            Error::Service {
                kind: ErrorKind::Validation,
                reason: Some(Reason::SessionCancelled),
                ..
            }
        ),
        "{err:?}"
    );

    let page = browser()
        .get(&authorization_url)
        .send()
        .await
        .expect("authorize");
    assert_eq!(page.status().as_u16(), 410);
    let text = page.text().await.expect("page");
    assert!(
        text.contains("Link cancelled") && text.contains("Another account opened"),
        "{text}"
    );
}

#[tokio::test]
async fn user_federation_poll_returns_the_token_after_binding() {
    let server = start_allowing_loopback("flow-ok");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let token_url = token_endpoint(seen.clone()).await;
    server.oauth_setup("ok-agent", "ok-prov", &token_url).await;
    let client = server.sigv4(&server.admin);
    let (request, authorization_url) = start_flow(&client, "ok-agent", "ok-prov").await;
    let session_uri = request.session_uri.clone().unwrap();

    let poller = spawn_poller(&client, &request);

    // The user consents: the provider sends the browser back with a code.
    let location = consent(&authorization_url).await;
    assert!(location.as_str().starts_with(RETURN_URL), "{location}");
    let pairs: Vec<(String, String)> = location.query_pairs().into_owned().collect();
    assert!(
        pairs.contains(&("state".into(), "app-state-123".into())),
        "{location}"
    );
    // The browser comes back with a one-time completion URN, not the polling sessionUri.
    let completion = completion_in(&location);
    assert_ne!(
        completion, session_uri,
        "the redirect carries the polling sessionUri"
    );
    let random = completion
        .strip_prefix("urn:ietf:params:oauth:request_uri:")
        .expect("a RequestUri");
    assert_eq!(random.len(), 43, "32 random bytes, base64url");
    assert!(
        random
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );

    // Not bound yet: still pending, and nothing was exchanged.
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(!poller.is_finished());
    assert!(
        seen.lock().unwrap().is_empty(),
        "the code was exchanged before the binding"
    );

    // The polling sessionUri (which the initiator knows) completes nothing: it gets the
    // answer of an unknown session, and the session is unchanged.
    let err = client
        .complete_resource_token_auth(&session_uri, &UserIdentifier::UserId("alice".into()))
        .await
        .expect_err("the polling sessionUri must not complete the session");
    assert_eq!(err.kind(), Some(&ErrorKind::ResourceNotFound), "{err:?}");
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(
        !poller.is_finished(),
        "the polling sessionUri completed the session"
    );
    assert!(seen.lock().unwrap().is_empty(), "a code was exchanged");
    assert_poll_pending(&client, &request, &session_uri).await;

    // The session binding: the same user completes it with the completion URN; only then
    // is the code exchanged.
    client
        .complete_resource_token_auth(&completion, &UserIdentifier::UserId("alice".into()))
        .await
        .expect("complete");
    let token = tokio::time::timeout(Duration::from_secs(10), poller)
        .await
        .expect("the poller ends promptly")
        .expect("poller task")
        .expect("token");
    assert_eq!(token.expose_secret(), "at-from-provider-7c1d");
    assert_eq!(seen.lock().unwrap().len(), 1);

    // The completion URN works once: a second use is refused and exchanges nothing.
    let err = client
        .complete_resource_token_auth(&completion, &UserIdentifier::UserId("alice".into()))
        .await
        .expect_err("a completion URN works once");
    assert_eq!(err.kind(), Some(&ErrorKind::Validation), "{err:?}");
    assert_eq!(seen.lock().unwrap().len(), 1);

    // Now the vault answers at once, without a session.
    let mut again = request.clone();
    again.session_uri = None;
    assert_poll_gives_token(&client, &again, "at-from-provider-7c1d").await;
}

/// A provider token endpoint that holds each request until the test releases it (a slow
/// provider): `arrived` fires when the exchange reached it; the answer is a token for
/// `good-code`. Returns its URL.
async fn held_token_endpoint(
    arrived: Arc<tokio::sync::Notify>,
    release: Arc<tokio::sync::Notify>,
) -> String {
    use axum::{Router, routing::post};
    let app = Router::new().route(
        "/oauth2/token",
        post(move |body: String| async move {
            arrived.notify_one();
            release.notified().await;
            token_answer(body.contains("code=good-code"), "at-held-5e2a")
        }),
    );
    let addr = serve(app).await;
    format!("http://{addr}/oauth2/token")
}

/// Issue 12, item 7: a wrong user's completion that arrives while the right user's code
/// exchange is in flight must not fail the session. The right user's completion stores the
/// grant, marks the session COMPLETED and answers success; the wrong user gets
/// `AccessDeniedException` without being told that the session failed.
#[tokio::test]
async fn wrong_user_completion_during_the_exchange_changes_nothing() {
    let server = start_allowing_loopback("flow-race");
    let (arrived, release) = hold();
    let token_url = held_token_endpoint(arrived.clone(), release.clone()).await;
    server
        .oauth_setup("race-agent", "race-prov", &token_url)
        .await;
    let client = server.sigv4(&server.admin);
    let (request, authorization_url) = start_flow(&client, "race-agent", "race-prov").await;

    let completion = completion_in(&consent(&authorization_url).await);

    // Alice (the session's user) completes; the exchange reaches the provider and waits.
    let right = spawn_alice_completion(&client, &completion);
    tokio::time::timeout(Duration::from_secs(10), arrived.notified())
        .await
        .expect("the exchange reached the provider");

    // Mallory completes the same session meanwhile.
    let err = client
        .complete_resource_token_auth(&completion, &UserIdentifier::UserId("mallory".into()))
        .await
        .expect_err("the wrong user is refused");
    assert_refused_without_failing(&err);

    // The provider answers: Alice's completion succeeds, and the poll gets her token.
    release.notify_one();
    let outcome = ended(right, "the right user's completion").await;
    assert!(
        outcome.is_ok(),
        "the right user's completion failed after the grant was stored: {outcome:?}"
    );
    assert_poll_gives_token(&client, &request, "at-held-5e2a").await;
}

/// An inbound issuer whose JWKS endpoint holds its first request until the test releases
/// it, then answers an empty key set (so every token of this issuer is refused); `arrived`
/// fires when the first request came. Returns the issuer URL (`/jwks` is its key set).
async fn held_jwks_issuer(
    arrived: Arc<tokio::sync::Notify>,
    release: Arc<tokio::sync::Notify>,
) -> String {
    use axum::{Json, Router, routing::get};
    use std::sync::atomic::{AtomicBool, Ordering};
    let first = Arc::new(AtomicBool::new(true));
    let app = Router::new().route(
        "/jwks",
        get(move || async move {
            if first.swap(false, Ordering::SeqCst) {
                arrived.notify_one();
                release.notified().await;
            }
            Json(json!({"keys": []}))
        }),
    );
    let addr = serve(app).await;
    format!("http://{addr}")
}

/// Issue 12, item 7, the interleaving of the report: a wrong user's completion reads the
/// session while it waits for completion, and decides (here: its user token is refused
/// after a slow key fetch) only once the right user's completion has claimed the session
/// and is exchanging the code. The wrong user must not fail that session; the right user's
/// completion stores the grant and answers success (it used to store the grant and then
/// answer `ResourceNotFoundException`, with the session FAILED).
#[tokio::test]
async fn late_wrong_user_does_not_fail_a_session_being_exchanged() {
    let (jwks_arrived, jwks_release) = hold();
    let issuer = held_jwks_issuer(jwks_arrived.clone(), jwks_release.clone()).await;
    let (token_arrived, token_release) = hold();
    let token_url = held_token_endpoint(token_arrived.clone(), token_release.clone()).await;
    let dir = data_dir("flow-late-wrong-user");
    let admin = credential(&dir, "admin");
    let issuers = json!([{"issuer": issuer, "audiences": ["latchkey-test"], "jwks_uri": format!("{issuer}/jwks")}]);
    let (child, url) = common::spawn_identity_with(
        &dir,
        &[
            ("LATCHKEY_OUTBOUND_ALLOW_PRIVATE_ADDRESSES", "true"),
            ("LATCHKEY_INBOUND_ISSUERS", &issuers.to_string()),
        ],
    );
    let server = Server {
        child,
        url,
        dir,
        admin,
    };
    server
        .oauth_setup("late-agent", "late-prov", &token_url)
        .await;
    let client = server.sigv4(&server.admin);
    let (request, authorization_url) = start_flow(&client, "late-agent", "late-prov").await;

    let completion = completion_in(&consent(&authorization_url).await);

    // Mallory's completion reads the session, then waits for his token's issuer keys.
    let b64 = |v: Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let mallory_token = format!(
        "{}.{}.{}",
        b64(json!({"alg": "ES256", "kid": "k1", "typ": "JWT"})),
        b64(
            json!({"iss": issuer, "sub": "mallory", "aud": "latchkey-test", "exp": 4_102_444_800_i64})
        ),
        "c2lnbmF0dXJl"
    );
    let wrong = spawn_completion(
        &client,
        &completion,
        UserIdentifier::UserToken(SecretString::from(mallory_token)),
    );
    tokio::time::timeout(Duration::from_secs(10), jwks_arrived.notified())
        .await
        .expect("the wrong user's token verification fetched the keys");

    // Alice's completion claims the session; its exchange waits at the provider.
    let right = spawn_alice_completion(&client, &completion);
    tokio::time::timeout(Duration::from_secs(10), token_arrived.notified())
        .await
        .expect("the right user's exchange reached the provider");

    // Mallory's verification ends (his token is refused) while Alice's exchange runs.
    jwks_release.notify_one();
    let wrong = ended(wrong, "the wrong user's completion").await;

    // The provider answers: Alice's completion stores her grant and says so.
    token_release.notify_one();
    let outcome = ended(right, "the right user's completion").await;
    assert!(
        outcome.is_ok(),
        "the right user's completion reports a failure: {outcome:?}"
    );
    let err = wrong.expect_err("the wrong user is refused");
    assert_refused_without_failing(&err);
    assert_poll_gives_token(&client, &request, "at-held-5e2a").await;
}
