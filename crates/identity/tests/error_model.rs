//! The error model, end to end through `app()`: internal text (a crypto failure, a serde
//! failure of stored data, a transport failure) reaches the log and never the client; and
//! `CompleteResourceTokenAuth` names why it refused in `x-latchkey-reason` beside the
//! unchanged AgentCore body.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use latchkey_core::UserPrincipal;
use latchkey_core::clock::SystemClock;
use latchkey_identity::AppState;
use latchkey_identity::error::REASON_HEADER;
use latchkey_store::{EnvelopeColumn, SessionRecord, SessionStatus};
use serde_json::{Value, json};
use tower::ServiceExt;

mod common;

/// A tracing subscriber that keeps every event's fields as text.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<String>>);

struct Fields<'a>(&'a mut String);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={value:?}", field.name());
    }
}

impl tracing::Subscriber for Log {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut line = String::new();
        event.record(&mut Fields(&mut line));
        let mut log = self.0.lock().unwrap();
        log.push_str(&line);
        log.push('\n');
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

impl Log {
    fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }
}

/// The process-wide log of this test binary (a thread's own subscriber misses events when
/// tests run in parallel: callsite interest is cached process-wide).
fn log() -> Log {
    static LOG: std::sync::OnceLock<Log> = std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        let log = Log::default();
        tracing::subscriber::set_global_default(log.clone()).expect("the only subscriber");
        log
    })
    .clone()
}

struct Fixture {
    router: axum::Router,
    state: AppState,
    admin: String,
    binding: String,
    _service: common::Service,
}

async fn fixture(name: &str) -> Fixture {
    let service = common::service(
        &format!("errors-{name}"),
        &[("LKADMIN", "admin"), ("LKBINDING", "binding")],
    )
    .await;
    Fixture {
        router: service.router.clone(),
        state: service.state.clone(),
        admin: service.credentials[0].clone(),
        binding: service.credentials[1].clone(),
        _service: service,
    }
}

/// Status, the reason header, and the body as text.
async fn call(f: &Fixture, path: &str, auth: &str, body: Value) -> (StatusCode, String, String) {
    let req = Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/json")
        .header("authorization", auth)
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = f.router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let reason = resp
        .headers()
        .get(REASON_HEADER)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, reason, String::from_utf8(bytes.to_vec()).unwrap())
}

async fn create_github_provider(f: &Fixture, name: &str) {
    let (status, _, body) = call(
        f,
        "/identities/CreateOauth2CredentialProvider",
        &f.admin,
        json!({"name": name, "credentialProviderVendor": "GithubOauth2",
            "oauth2ProviderConfigInput": {"githubOauth2ProviderConfig": {"clientId": "c", "clientSecret": "s"}}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn internal_error_text_reaches_the_log_and_never_the_client() {
    let log = log();
    let f = fixture("internal").await;
    let store = &f.state.store;

    // 1. A serde failure: a stored provider configuration that does not parse.
    create_github_provider(&f, "broken-config").await;
    let mut record = store
        .find_oauth2_provider("broken-config")
        .await
        .unwrap()
        .unwrap();
    record.config = json!({"not": "a provider configuration"});
    store.update_oauth2_provider(&record).await.unwrap();
    let (status, _, body) = call(
        &f,
        "/identities/GetOauth2CredentialProvider",
        &f.admin,
        json!({"name": "broken-config"}),
    )
    .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["__type"], "InternalServerException");
    assert_eq!(body["message"], "an internal error occurred");
    assert!(
        log.text().contains("missing field"),
        "the serde detail is logged: {}",
        log.text()
    );

    // 2. A crypto failure: a client secret envelope that does not open, used by an M2M
    //    token request.
    create_github_provider(&f, "broken-secret").await;
    let rows = store
        .list_envelopes(EnvelopeColumn::Oauth2ProviderSecret, None, 100)
        .await
        .unwrap();
    let row = rows
        .iter()
        .find(|r| r.key == ["broken-secret"])
        .expect("the provider's secret envelope");
    let mut tampered = row.envelope.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x55;
    assert!(
        store
            .replace_envelope(
                EnvelopeColumn::Oauth2ProviderSecret,
                &row.key,
                &row.envelope,
                &tampered
            )
            .await
            .unwrap()
    );
    let (status, _, _) = call(
        &f,
        "/identities/CreateWorkloadIdentity",
        &f.admin,
        json!({"name": "wl-errors"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, _, wat) = call(
        &f,
        "/identities/GetWorkloadAccessToken",
        &f.admin,
        json!({"workloadName": "wl-errors"}),
    )
    .await;
    let wat: Value = serde_json::from_str(&wat).unwrap();
    let (status, _, body) = call(
        &f,
        "/identities/oauth2/token",
        &f.admin,
        json!({"workloadIdentityToken": wat["workloadAccessToken"],
            "resourceCredentialProviderName": "broken-secret", "scopes": [], "oauth2Flow": "M2M"}),
    )
    .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["message"], "an internal error occurred");
    assert!(
        log.text()
            .contains("could not open the client secret of the OAuth2 credential provider"),
        "the crypto detail is logged: {}",
        log.text()
    );

    // 3. A transport failure: a discovery URL the outbound policy refuses. The client
    //    learns the category, not the transport's text.
    let (status, _, body) = call(
        &f,
        "/identities/CreateOauth2CredentialProvider",
        &f.admin,
        json!({"name": "discovery", "credentialProviderVendor": "CustomOauth2",
            "oauth2ProviderConfigInput": {"customOauth2ProviderConfig": {
                "oauthDiscovery": {"discoveryUrl": "http://127.0.0.1:9/.well-known/openid-configuration"},
                "clientId": "c", "clientSecret": "s"}}}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body.contains("which this server's outbound policy refuses")
            && body.contains("LATCHKEY_OUTBOUND_ALLOW_PRIVATE_ADDRESSES")
            && body.contains("oauthDiscovery.discoveryUrl"),
        "{body}"
    );
    assert!(!body.contains("outbound request"), "{body}");
    assert!(
        log.text().contains("outbound request to 127.0.0.1"),
        "the transport detail is logged: {}",
        log.text()
    );

    // Nothing internal in any answer above (checked once more, on the words themselves).
    for internal in [
        "missing field",
        "CryptoError",
        "decrypt",
        "sqlx",
        "blocked:",
    ] {
        assert!(!body.contains(internal), "{internal} in {body}");
    }
}

/// A session in CALLBACK (consent received) with a known completion URN.
async fn session_at_callback(f: &Fixture, id: &str, expires_ms: i64) -> String {
    let store = &f.state.store;
    let now = latchkey_core::clock::Clock::now_ms(&SystemClock);
    store
        .create_session(&SessionRecord {
            id: id.into(),
            state_hash: format!("state-of-{id}"),
            workload: "wl-reasons".into(),
            user: UserPrincipal::user_id("alice").unwrap(),
            provider: "gh".into(),
            request: json!({"scopes": ["repo"]}),
            secrets_envelope: vec![0],
            code_envelope: None,
            status: SessionStatus::Pending,
            failure: None,
            created_ms: now - 1000,
            expires_ms,
            updated_ms: now - 1000,
        })
        .await
        .unwrap();
    let completion = format!("urn:ietf:params:oauth:request_uri:completion-{id}");
    let hash = hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        completion.as_bytes(),
    ));
    store
        .receive_callback(id, b"sealed-code", &hash, now - 500)
        .await
        .unwrap();
    completion
}

#[tokio::test]
async fn completion_refusals_carry_a_typed_reason() {
    let _ = log();
    let f = fixture("reasons").await;
    let (status, _, _) = call(
        &f,
        "/identities/CreateWorkloadIdentity",
        &f.admin,
        json!({"name": "wl-reasons"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    create_github_provider(&f, "gh").await;
    let complete = |uri: String, user: &'static str| {
        let f = &f;
        async move {
            call(
                f,
                "/identities/CompleteResourceTokenAuth",
                &f.binding,
                json!({"sessionUri": uri, "userIdentifier": {"userId": user}}),
            )
            .await
        }
    };

    // Expired (a moment ago: sessions an hour past expiry are purged): the AgentCore body
    // is unchanged; the header says why.
    let now = latchkey_core::clock::Clock::now_ms(&SystemClock);
    let expired = session_at_callback(&f, "expired", now - 100).await;
    let (status, reason, body) = complete(expired.clone(), "alice").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(reason, "session-expired");
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["__type"], "ValidationException");
    assert_eq!(
        json["message"],
        "authorization session expired: start the authorization again"
    );
    // Again: the session has failed as expired, and still says so.
    let (status, reason, _) = complete(expired, "alice").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(reason, "session-expired");

    // Another user: refused, and the session is cancelled; the owner who comes next is
    // told that it was cancelled (typed, and in plain words), not that it failed.
    let far = now + 600_000;
    let wrong = session_at_callback(&f, "wrong-user", far).await;
    let (status, reason, _) = complete(wrong.clone(), "mallory").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(reason, "user-mismatch");
    let (status, reason, body) = complete(wrong, "alice").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(reason, "session-cancelled");
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["__type"], "ValidationException");
    assert!(
        json["message"]
            .as_str()
            .unwrap()
            .contains("another account opened this authorization link"),
        "{body}"
    );

    // Unknown completion URN.
    let (status, reason, _) =
        complete("urn:ietf:params:oauth:request_uri:nobody".into(), "alice").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(reason, "session-unknown");

    // The right user, but the exchange fails (the session's secrets do not open): the
    // client sees the generic message, the header says the exchange failed.
    let broken = session_at_callback(&f, "broken", far).await;
    let (status, reason, body) = complete(broken.clone(), "alice").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(reason, "exchange-failed");
    assert!(body.contains("an internal error occurred"), "{body}");
    let (_, reason, _) = complete(broken, "alice").await;
    assert_eq!(reason, "session-failed");
}

/// Issue 14: endpoints the outbound policy would refuse once a flow calls them are refused
/// when the provider is created or updated — a `ValidationException` naming the field and
/// the setting that allows them — not with a 502/503 after a user has consented. Nothing
/// is stored, and an update leaves the provider as it was. (This service runs with the
/// opt-in off, as a production server does.)
#[tokio::test]
async fn provider_endpoints_the_outbound_policy_refuses_are_refused_up_front() {
    let _ = log();
    let f = fixture("endpoints").await;
    // One control-plane call as the admin: status and body.
    let control = |operation: &'static str, body: Value| {
        let f = &f;
        async move {
            let path = format!("/identities/{operation}");
            let (status, _, answer) = call(f, &path, &f.admin, body).await;
            (status, answer)
        }
    };
    let custom = |name: &str, authorize: &str, token: &str| {
        json!({"name": name, "credentialProviderVendor": "CustomOauth2",
            "oauth2ProviderConfigInput": {"customOauth2ProviderConfig": {
                "oauthDiscovery": {"authorizationServerMetadata": {
                    "issuer": "https://idp.example.com", "authorizationEndpoint": authorize,
                    "tokenEndpoint": token, "responseTypes": ["code"]}},
                "clientId": "c", "clientSecret": "s"}}})
    };
    let metadata = "oauth2ProviderConfigInput.customOauth2ProviderConfig.oauthDiscovery.authorizationServerMetadata";
    let public_authorize = "https://93.184.215.14/authorize";
    let public_token = "https://93.184.215.14/token";
    let cases = [
        (
            custom("private-token", public_authorize, "https://10.0.0.5/token"),
            format!("{metadata}.tokenEndpoint"),
            "10.0.0.5 is not public (private address)",
        ),
        (
            custom(
                "loopback-name",
                "https://localhost:8443/authorize",
                public_token,
            ),
            format!("{metadata}.authorizationEndpoint"),
            "localhost is not public (loopback address)",
        ),
        (
            custom("plain-http", public_authorize, "http://127.0.0.1:9/token"),
            format!("{metadata}.tokenEndpoint"),
            "plain http (to 127.0.0.1)",
        ),
        (
            json!({"name": "included", "credentialProviderVendor": "OktaOauth2",
                "oauth2ProviderConfigInput": {"includedOauth2ProviderConfig": {
                    "issuer": "https://idp.example.com", "authorizationEndpoint": public_authorize,
                    "tokenEndpoint": "https://[fd00::5]/token", "clientId": "c", "clientSecret": "s"}}}),
            "oauth2ProviderConfigInput.includedOauth2ProviderConfig.tokenEndpoint".to_string(),
            "fd00::5 is not public (unique local address)",
        ),
    ];
    for (body, field, why) in cases {
        let name = body["name"].as_str().unwrap().to_string();
        let (status, answer) = control("CreateOauth2CredentialProvider", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {answer}");
        let json: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(json["__type"], "ValidationException", "{answer}");
        assert_eq!(json["fieldList"][0]["name"], field.as_str(), "{answer}");
        let message = json["message"].as_str().unwrap();
        for needle in [
            why,
            "LATCHKEY_OUTBOUND_ALLOW_PRIVATE_ADDRESSES",
            "--outbound-allow-private-addresses",
        ] {
            assert!(
                message.contains(needle),
                "{name}: {needle} not in {message}"
            );
        }
        let (status, _) = control("GetOauth2CredentialProvider", json!({"name": name})).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{name} was stored");
    }

    // A public provider is created; updating it to a private token endpoint is refused and
    // changes nothing.
    let (status, answer) = control(
        "CreateOauth2CredentialProvider",
        custom("public", public_authorize, public_token),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let (status, answer) = control(
        "UpdateOauth2CredentialProvider",
        custom("public", public_authorize, "https://192.168.1.10/token"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer.contains(&format!("{metadata}.tokenEndpoint")),
        "{answer}"
    );
    let (_, answer) = control("GetOauth2CredentialProvider", json!({"name": "public"})).await;
    assert!(
        answer.contains(public_token) && !answer.contains("192.168.1.10"),
        "{answer}"
    );
}
