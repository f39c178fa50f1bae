//! `latchkey serve agent` against real peers: the real identity service, the scripted LLM
//! server (`tests/llm/scripted_llm.py`, speaking the providers' wire protocols), a loopback
//! "GitHub" resource API that checks bearer tokens, a loopback OAuth token endpoint, and a
//! loopback ALB key server. ALB headers are signed with a real P-256 key. Nothing is mocked
//! inside the agent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use latchkey_client::{Client, Url, UserIdentifier};
use serde_json::{Value, json};

mod common;
use common::{Proc, bin, credential, temp_dir};

const SIGNER: &str =
    "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/agent/50dc6c495c0c9188";
const ALB_ISSUER: &str = "https://login.example.com";
const WORKLOAD: &str = "gh-agent";
const PROVIDER: &str = "github";
const RETURN_URL: &str = "http://127.0.0.1:9/oauth2/session-binding";
const AUTHZ_ENDPOINT: &str = "http://127.0.0.1:9/login/oauth/authorize";

// ---------------------------------------------------------------------------------------
// Processes

/// Read the first stdout line of `child` and return the `http://…` URL in it.
fn listening_url(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read listening line");
    line.split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("did not start: {line:?}"))
        .trim_end_matches('/')
        .to_string()
}

fn spawn_identity(dir: &Path, env: &[(&str, String)]) -> (Proc, String) {
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("LATCHKEY_OUTBOUND_ALLOW_PRIVATE_ADDRESSES", "true"));
    let (child, url) = common::spawn_identity_with(dir, &env);
    (Proc(child), url.trim_end_matches('/').to_string())
}

fn spawn_llm() -> (Proc, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/llm/scripted_llm.py");
    let mut child = Command::new("python3")
        .arg(script)
        .args(["--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn python3 scripted_llm.py");
    let url = listening_url(&mut child);
    (Proc(child), url)
}

// ---------------------------------------------------------------------------------------
// Loopback peers

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// Tokens the token endpoint issued, and the calls the resource API saw.
#[derive(Default)]
struct Recorder {
    issued: Vec<String>,
    exchanges: usize,
    /// (path, bearer token) of every resource call.
    calls: Vec<(String, String)>,
}

/// A provider token endpoint: every `code=good-code…` gets a fresh, unique access token.
async fn token_endpoint(recorder: Arc<Mutex<Recorder>>) -> String {
    use axum::{Json, http::StatusCode, routing::post};
    let app = axum::Router::new().route(
        "/token",
        post(move |body: String| async move {
            let mut r = recorder.lock().unwrap();
            if !(body.contains("code=good-code") && body.contains("code_verifier=")) {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(json!({"error": "invalid_grant"})),
                );
            }
            r.exchanges += 1;
            let mut raw = [0u8; 12];
            aws_lc_rs::rand::fill(&mut raw).unwrap();
            let token = format!("gho_SECRET{}", URL_SAFE_NO_PAD.encode(raw));
            r.issued.push(token.clone());
            (
                StatusCode::OK,
                Json(json!({"access_token": token, "token_type": "bearer", "expires_in": 3600})),
            )
        }),
    );
    format!("{}/token", serve(app).await)
}

/// "GitHub": `/user` and `/user/repos`, only with an issued bearer token.
async fn github_api(recorder: Arc<Mutex<Recorder>>) -> String {
    use axum::http::{HeaderMap, StatusCode, Uri};
    use axum::{Json, routing::get};
    let echo_recorder = recorder.clone();
    let handler = move |uri: Uri, headers: HeaderMap| {
        let recorder = recorder.clone();
        async move {
            let token = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or_default()
                .to_string();
            let good_headers = headers.get("accept").map(|v| v.as_bytes())
                == Some(b"application/vnd.github+json".as_slice())
                && headers.get("x-github-api-version").map(|v| v.as_bytes())
                    == Some(b"2022-11-28".as_slice())
                && headers.contains_key("user-agent");
            let mut r = recorder.lock().unwrap();
            r.calls.push((uri.to_string(), token.clone()));
            if uri.path().starts_with("/user") && !good_headers {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(json!({"message": "bad headers"})),
                );
            }
            if !r.issued.contains(&token) {
                return (
                    StatusCode::UNAUTHORIZED,
                    Json(json!({"message": "Bad credentials"})),
                );
            }
            if uri.path() == "/user" {
                (
                    StatusCode::OK,
                    Json(json!({"login": "octo-alice", "id": 7})),
                )
            } else {
                (
                    StatusCode::OK,
                    Json(json!([{"name": "private-repo", "private": true}])),
                )
            }
        }
    };
    // `/echo/…`: a resource that reflects the request's credential back, raw and encoded.
    let echo = move |uri: Uri, headers: HeaderMap| {
        let recorder = echo_recorder.clone();
        async move {
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let token = auth.strip_prefix("Bearer ").unwrap_or_default().to_string();
            recorder
                .lock()
                .unwrap()
                .calls
                .push((uri.to_string(), token.clone()));
            Json(json!({
                "path": uri.path(),
                "headers": {"authorization": auth},
                "basic": STANDARD.encode(format!("user:{token}")),
                "encoded": STANDARD.encode(&auth),
                "callback": format!("https://x.test/cb?access_token={}", urlencoding(&token)),
            }))
        }
    };
    let app = axum::Router::new()
        .route("/user", get(handler.clone()))
        .route("/user/repos", get(handler.clone()))
        .route("/repos/{owner}/{repo}", get(handler.clone()))
        .route("/echo/{id}", get(echo))
        // Anything else is recorded too: a request outside a tool's template shows.
        .fallback(handler);
    serve(app).await
}

/// Every byte but letters and digits percent-encoded.
fn urlencoding(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// An ALB signing key, served as PEM by kid.
struct AlbKey {
    kid: String,
    pair: EcdsaKeyPair,
}

impl AlbKey {
    fn generate(kid: &str) -> Self {
        Self {
            kid: kid.into(),
            pair: EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
        }
    }

    fn pem(&self) -> String {
        let spki: PublicKeyX509Der = self.pair.public_key().as_der().unwrap();
        let body = STANDARD.encode(spki.as_ref());
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            lines.join("\n")
        )
    }

    fn sign_raw(&self, header: &Value, payload: &Value) -> String {
        let h = URL_SAFE_NO_PAD.encode(serde_json::to_vec(header).unwrap());
        let p = URL_SAFE_NO_PAD.encode(serde_json::to_vec(payload).unwrap());
        let input = format!("{h}.{p}");
        let sig = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    fn jwk(&self) -> Value {
        let point = self.pair.public_key().as_ref();
        json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        })
    }

    /// An OIDC ID token of `issuer` for `sub` and `audience`.
    fn id_token(&self, issuer: &str, audience: &str, sub: &str) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        self.sign_raw(
            &json!({"typ": "JWT", "kid": self.kid, "alg": "ES256"}),
            &json!({"iss": issuer, "aud": audience, "sub": sub, "iat": now, "exp": now + 300}),
        )
    }

    /// A header as an ALB sends it for `sub`, expiring in `ttl` seconds (may be negative).
    fn token(&self, sub: &str, ttl: i64) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        self.sign_raw(
            &json!({"typ": "JWT", "kid": self.kid, "alg": "ES256", "iss": ALB_ISSUER,
                    "client": "app", "signer": SIGNER, "exp": now + ttl}),
            &json!({"sub": sub, "email": format!("{sub}@example.com"), "exp": now + ttl, "iss": ALB_ISSUER}),
        )
    }
}

async fn alb_key_server(keys: Vec<(String, String)>) -> String {
    use axum::extract::Path as UrlPath;
    let keys: Arc<HashMap<String, String>> = Arc::new(keys.into_iter().collect());
    let app = axum::Router::new().route(
        "/keys/{kid}",
        axum::routing::get(move |UrlPath(kid): UrlPath<String>| {
            let keys = keys.clone();
            async move {
                match keys.get(&kid) {
                    Some(pem) => (axum::http::StatusCode::OK, pem.clone()),
                    None => (axum::http::StatusCode::NOT_FOUND, String::new()),
                }
            }
        }),
    );
    format!("{}/keys/{{kid}}", serve(app).await)
}

/// An OIDC issuer on loopback: discovery and JWKS for `key`.
async fn oidc_issuer(key: &AlbKey) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let discovery = json!({
        "issuer": issuer, "jwks_uri": format!("{issuer}/jwks"),
        "authorization_endpoint": format!("{issuer}/auth"), "response_types_supported": ["code"],
        "subject_types_supported": ["public"], "id_token_signing_alg_values_supported": ["ES256"],
    });
    let jwks = json!({"keys": [key.jwk()]});
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || async move { axum::Json(discovery) }),
        )
        .route(
            "/jwks",
            axum::routing::get(move || async move { axum::Json(jwks) }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    issuer
}

// ---------------------------------------------------------------------------------------
// The stack

struct Stack {
    dir: PathBuf,
    identity_url: String,
    admin: (String, String),
    llm_url: String,
    agent_url: String,
    agent_log: PathBuf,
    store_dir: PathBuf,
    key: AlbKey,
    recorder: Arc<Mutex<Recorder>>,
    http: reqwest::Client,
    _procs: Vec<Proc>,
}

impl Drop for Stack {
    fn drop(&mut self) {
        self._procs.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn control(
    identity_url: &str,
    admin: &(String, String),
    operation: &str,
    body: Value,
) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{identity_url}/identities/{operation}"))
        .bearer_auth(format!("{}:{}", admin.0, admin.1))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let out: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{operation}: {status} {out}");
    out
}

async fn start(name: &str, llm_provider: &str) -> Stack {
    start_with(name, llm_provider, Options::default()).await
}

#[derive(Default)]
struct Options<'a> {
    /// More flags for `serve agent`.
    agent_args: Vec<String>,
    /// Written to a file passed with `--config`; `{GITHUB}` is replaced by the loopback
    /// GitHub API's URL.
    config_toml: Option<&'a str>,
    /// More environment for `serve identity`.
    identity_env: Vec<(&'a str, String)>,
}

async fn start_with(name: &str, llm_provider: &str, options: Options<'_>) -> Stack {
    let extra_args = &options.agent_args;
    let config_toml = options.config_toml;
    let dir = temp_dir(name);
    let identity_dir = dir.join("identity");
    let admin = credential(&identity_dir, "admin");
    let workload = credential(&identity_dir, &format!("workload:{WORKLOAD}"));
    let (identity, identity_url) = spawn_identity(&identity_dir, &options.identity_env);
    let (llm, llm_url) = spawn_llm();
    let recorder = Arc::new(Mutex::new(Recorder::default()));
    let token_url = token_endpoint(recorder.clone()).await;
    let github_url = github_api(recorder.clone()).await;
    let key = AlbKey::generate("agent-key-1");
    let key_url = alb_key_server(vec![(key.kid.clone(), key.pem())]).await;

    control(
        &identity_url,
        &admin,
        "CreateWorkloadIdentity",
        json!({"name": WORKLOAD, "allowedResourceOauth2ReturnUrls": [RETURN_URL],
               "tags": {"latchkey:allow-user-id": "true"}}),
    )
    .await;
    control(
        &identity_url,
        &admin,
        "CreateOauth2CredentialProvider",
        json!({
            "name": PROVIDER,
            "credentialProviderVendor": "CustomOauth2",
            "oauth2ProviderConfigInput": {"customOauth2ProviderConfig": {
                "oauthDiscovery": {"authorizationServerMetadata": {
                    "issuer": "http://127.0.0.1:9",
                    "authorizationEndpoint": AUTHZ_ENDPOINT,
                    "tokenEndpoint": token_url,
                    "responseTypes": ["code"],
                    "tokenEndpointAuthMethods": ["client_secret_post"],
                }},
                "clientId": "gh-client",
                "clientSecret": "gh-client-secret-0123456789",
            }},
        }),
    )
    .await;

    let store_dir = dir.join("conversations");
    let agent_log = dir.join("agent.log");
    let (llm_base, model) = match llm_provider {
        "openai" => (format!("{llm_url}/v1"), "gpt-4o-mini"),
        "anthropic" => (llm_url.clone(), "claude-sonnet-4-5"),
        _ => (llm_url.clone(), "anthropic.claude-3-haiku-20240307-v1:0"),
    };
    let mut config_args = vec![];
    if let Some(toml) = config_toml {
        let path = dir.join("agent.toml");
        std::fs::write(&path, toml.replace("{GITHUB}", &github_url)).unwrap();
        config_args = vec!["--config".to_string(), path.display().to_string()];
    }
    let mut child = Command::new(bin())
        .args(["serve", "agent", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("agent-data"))
        .args(["--identity-url", &identity_url])
        .args(["--workload-name", WORKLOAD])
        .args(["--return-url", RETURN_URL])
        .args(["--alb-signer", SIGNER, "--alb-key-url-template", &key_url])
        .args(["--alb-issuer", ALB_ISSUER, "--allow-private-addresses"])
        .arg("--store-dir")
        .arg(&store_dir)
        .args(["--llm-provider", llm_provider, "--llm-model", model])
        .args(["--llm-base-url", &llm_base, "--llm-region", "us-east-1"])
        .args(["--github-base-url", &github_url])
        .args(extra_args)
        .args(&config_args)
        .env(
            "LATCHKEY_AGENT_CREDENTIAL",
            format!("{}:{}", workload.0, workload.1),
        )
        .env("LATCHKEY_AGENT_LLM_API_KEY", "sk-scripted-llm-key")
        .env("AWS_ACCESS_KEY_ID", "AKIDSCRIPTEDLLM")
        .env("AWS_SECRET_ACCESS_KEY", "scripted-llm-aws-secret")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("LATCHKEY_LOG_LEVEL", "debug")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&agent_log).unwrap())
        .spawn()
        .expect("spawn agent");
    let agent_url = listening_url(&mut child);
    Stack {
        dir,
        identity_url,
        admin,
        llm_url,
        agent_url,
        agent_log,
        store_dir,
        key,
        recorder,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        _procs: vec![Proc(child), llm, identity],
    }
}

/// One parsed Server-Sent Event.
#[derive(Debug, Clone)]
struct Sse {
    event: String,
    data: Value,
}

impl Stack {
    async fn invoke_raw(&self, alb: Option<&str>, body: Value) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!("{}/invocations", self.agent_url))
            .json(&body);
        if let Some(alb) = alb {
            request = request.header("x-amzn-oidc-data", alb);
        }
        request.send().await.unwrap()
    }

    /// A message as `sub`; every event of the stream, and the raw stream text.
    async fn invoke(&self, sub: &str, session: &str, message: &str) -> (Vec<Sse>, String) {
        let response = self
            .invoke_raw(
                Some(&self.key.token(sub, 120)),
                json!({"sessionId": session, "message": message}),
            )
            .await;
        Self::events(response).await
    }

    /// A message with `Authorization: Bearer <token>`.
    async fn invoke_bearer(&self, token: &str, session: &str, message: &str) -> (Vec<Sse>, String) {
        let response = self
            .http
            .post(format!("{}/invocations", self.agent_url))
            .bearer_auth(token)
            .json(&json!({"sessionId": session, "message": message}))
            .send()
            .await
            .unwrap();
        Self::events(response).await
    }

    async fn events(response: reqwest::Response) -> (Vec<Sse>, String) {
        assert_eq!(response.status(), 200);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        let text = response.text().await.unwrap();
        let events = parse_blocks(&mut text.clone());
        let last = events.last().expect("events");
        assert_eq!(last.event, "done", "{events:?}");
        (events, text)
    }

    async fn llm_requests(&self) -> Vec<Value> {
        self.http
            .get(format!("{}/__test/requests", self.llm_url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The user consents at the provider and the binding service completes the session
    /// for `sub` (driven by hand, with the admin credential).
    async fn consent(&self, auth: &Value, sub: &str) {
        self.consent_as(auth, UserIdentifier::UserId(sub.into()))
            .await
    }

    async fn consent_as(&self, auth: &Value, user: UserIdentifier) {
        let browser = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let url = auth["authorizationUrl"].as_str().unwrap();
        let response = browser.get(url).send().await.unwrap();
        assert!(response.status().is_redirection(), "{}", response.status());
        let location = Url::parse(response.headers()["location"].to_str().unwrap()).unwrap();
        assert!(location.as_str().starts_with(AUTHZ_ENDPOINT), "{location}");
        let param = |name: &str| {
            location
                .query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
                .unwrap()
        };
        let mut callback = Url::parse(&param("redirect_uri")).unwrap();
        callback
            .query_pairs_mut()
            .append_pair("code", "good-code")
            .append_pair("state", &param("state"));
        let back = browser.get(callback).send().await.unwrap();
        assert!(back.status().is_redirection(), "{}", back.status());
        // The binding URL gets the one-time completion URN (not the agent's sessionUri).
        let back = Url::parse(back.headers()["location"].to_str().unwrap()).unwrap();
        let completion = back
            .query_pairs()
            .find(|(k, _)| k == "session_id")
            .map(|(_, v)| v.into_owned())
            .unwrap();
        assert_ne!(completion, auth["sessionUri"].as_str().unwrap());
        let admin = Client::builder(Url::parse(&self.identity_url).unwrap())
            .bearer(format!("{}:{}", self.admin.0, self.admin.1))
            .build()
            .unwrap();
        admin
            .complete_resource_token_auth(&completion, &user)
            .await
            .expect("complete");
    }

    fn stored_files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    let p = e.path();
                    if p.is_dir() {
                        walk(&p, out);
                    } else {
                        out.push(p);
                    }
                }
            }
        }
        let mut out = vec![];
        walk(&self.store_dir, &mut out);
        out
    }
}

/// Parse the complete `event:`/`data:` blocks at the front of `buffer`, leaving the rest.
fn parse_blocks(buffer: &mut String) -> Vec<Sse> {
    let mut events = vec![];
    while let Some(end) = buffer.find("\n\n") {
        let block: String = buffer.drain(..end + 2).collect();
        let mut event = None;
        let mut data = String::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                event = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
        if let Some(event) = event {
            events.push(Sse {
                event,
                data: serde_json::from_str(&data).unwrap(),
            });
        }
    }
    events
}

/// Read the stream until an event named `until` (included) or its end.
async fn read_until(
    response: &mut reqwest::Response,
    buffer: &mut String,
    until: &str,
) -> Vec<Sse> {
    let mut events = vec![];
    loop {
        let chunk = tokio::time::timeout(Duration::from_secs(30), response.chunk())
            .await
            .expect("the stream stalled")
            .expect("stream");
        let Some(chunk) = chunk else { return events };
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        for event in parse_blocks(buffer) {
            let stop = event.event == until;
            events.push(event);
            if stop {
                return events;
            }
        }
    }
}

fn of<'a>(events: &'a [Sse], name: &str) -> Vec<&'a Sse> {
    events.iter().filter(|e| e.event == name).collect()
}

fn names(events: &[Sse]) -> Vec<&str> {
    events.iter().map(|e| e.event.as_str()).collect()
}

// ---------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn no_verified_user_no_model_call_no_tool() {
    let stack = start("unauth", "openai").await;
    let body = json!({"sessionId": "s1", "message": "use:github_profile {}"});
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let forger = AlbKey::generate(&stack.key.kid);
    let good = stack.key.token("alice", 120);
    let (h, p, _) = {
        let mut parts = good.split('.');
        (
            parts.next().unwrap().to_string(),
            parts.next().unwrap().to_string(),
            parts.next().unwrap().to_string(),
        )
    };
    let alg_none = format!(
        "{}.{p}.",
        URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&json!({"alg": "none", "kid": stack.key.kid, "signer": SIGNER}))
                .unwrap()
        )
    );
    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("unsigned", Some(format!("{h}.{p}."))),
        ("forged", Some(forger.token("alice", 120))),
        ("expired", Some(stack.key.token("alice", -600))),
        ("alg-none", Some(alg_none)),
        ("garbage", Some("not-a-token".into())),
        (
            "wrong-signer",
            Some(stack.key.sign_raw(
                &json!({"kid": stack.key.kid, "alg": "ES256", "signer": "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/other/1", "exp": now + 60}),
                &json!({"sub": "alice", "exp": now + 60}),
            )),
        ),
    ];
    for (case, header) in cases {
        let response = stack.invoke_raw(header.as_deref(), body.clone()).await;
        assert_eq!(response.status(), 401, "{case}");
        let out: Value = response.json().await.unwrap();
        assert_eq!(out["code"], "unauthorized", "{case}");
    }
    // Two headers, even two valid ones.
    let response = stack
        .http
        .post(format!("{}/invocations", stack.agent_url))
        .header("x-amzn-oidc-data", &good)
        .header("x-amzn-oidc-data", &good)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    // A bearer token is not accepted when no OIDC source is configured.
    let response = stack
        .http
        .post(format!("{}/invocations", stack.agent_url))
        .bearer_auth("x.y.z")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    assert!(
        stack.llm_requests().await.is_empty(),
        "the model was called"
    );
    assert!(
        stack.recorder.lock().unwrap().calls.is_empty(),
        "a tool ran"
    );
    assert!(stack.stored_files().is_empty(), "a conversation was stored");

    // Bad bodies from a signed-in user: 400 JSON before any stream.
    for bad in [
        json!({"sessionId": "s1"}),
        json!({"sessionId": "../etc", "message": "hi"}),
        json!({"sessionId": "", "message": "hi"}),
        json!({"sessionId": "s1", "message": ""}),
        json!({"sessionId": "s1", "message": "hi", "extra": 1}),
        json!({"sessionId": "s1", "message": "x".repeat(20_000)}),
    ] {
        let response = stack.invoke_raw(Some(&good), bad.clone()).await;
        assert_eq!(response.status(), 400, "{bad}");
        let out: Value = response.json().await.unwrap();
        assert_eq!(out["code"], "invalid_request", "{bad}");
    }
    let response = stack
        .invoke_raw(
            Some(&good),
            json!({"sessionId": "s1", "message": "x".repeat(100_000)}),
        )
        .await;
    assert_eq!(response.status(), 413);
    assert!(stack.llm_requests().await.is_empty());

    // The runtime contract and the docs.
    let ping: Value = stack
        .http
        .get(format!("{}/ping", stack.agent_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ping, json!({"status": "Healthy"}));
    let openapi: Value = stack
        .http
        .get(format!("{}/openapi.json", stack.agent_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(openapi["paths"]["/invocations"]["post"].is_object());
    let docs = stack
        .http
        .get(format!("{}/docs/", stack.agent_url))
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status(), 200);
    let html = docs.text().await.unwrap();
    assert!(html.contains("swagger"), "{html}");
    assert!(
        !html.contains("https://"),
        "the docs page loads remote assets"
    );
}

#[tokio::test]
async fn consent_flow_least_privilege_and_isolation() {
    let stack = start("flow", "openai").await;

    // (2) A plain message: text, usage, done; the conversation is stored.
    let (events, _) = stack.invoke("alice", "chat-1", "hello there").await;
    let text: String = of(&events, "text_delta")
        .iter()
        .map(|e| e.data["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, "echo: hello there");
    let usage = of(&events, "usage");
    assert_eq!(usage.len(), 1);
    assert!(usage[0].data["inputTokens"].as_u64().unwrap() > 0);
    assert!(usage[0].data["outputTokens"].as_u64().unwrap() > 0);
    assert_eq!(events.last().unwrap().data["stopReason"], "end_turn");
    assert_eq!(stack.stored_files().len(), 1);

    // (3) A tool without a grant: authorization_required, no resource call.
    let (events, _) = stack
        .invoke("alice", "chat-1", "use:github_profile {}")
        .await;
    assert_eq!(
        names(&events),
        vec![
            "tool_call",
            "authorization_required",
            "text_delta",
            "usage",
            "done"
        ],
        "{events:?}"
    );
    let auth = of(&events, "authorization_required")[0].data.clone();
    assert_eq!(auth["tool"], "github_profile");
    assert_eq!(auth["provider"], PROVIDER);
    assert_eq!(auth["scopes"], json!(["read:user"]));
    assert!(
        auth["authorizationUrl"]
            .as_str()
            .unwrap()
            .starts_with(&format!(
                "{}/identities/oauth2/authorize",
                stack.identity_url
            ))
    );
    assert!(
        auth["sessionUri"]
            .as_str()
            .unwrap()
            .starts_with("urn:ietf:params:oauth:request_uri:")
    );
    assert_eq!(
        events.last().unwrap().data["stopReason"],
        "authorization_required"
    );
    assert!(stack.recorder.lock().unwrap().calls.is_empty());

    // (6) Bob with Alice's session id: a fresh conversation (no pending tool call).
    let (events, _) = stack.invoke("bob", "chat-1", "who am i").await;
    assert!(of(&events, "tool_call").is_empty(), "{events:?}");
    let text: String = of(&events, "text_delta")
        .iter()
        .map(|e| e.data["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, "echo: who am i");
    let requests = stack.llm_requests().await;
    let bob_request = requests.last().unwrap().to_string();
    assert!(
        !bob_request.contains("hello there"),
        "bob saw alice's conversation"
    );
    assert_eq!(stack.stored_files().len(), 2);

    // (4) Alice consents; her next message runs the pending tool with the token.
    stack.consent(&auth, "alice").await;
    let (events, stream_a) = stack.invoke("alice", "chat-1", "done, go on").await;
    let call = of(&events, "tool_call");
    assert_eq!(call.len(), 1, "{events:?}");
    assert_eq!(call[0].data["name"], "github_profile");
    let result = of(&events, "tool_result");
    assert_eq!(result.len(), 1, "{events:?}");
    assert_eq!(result[0].data["ok"], true, "{events:?}");
    assert!(
        result[0].data["content"]
            .as_str()
            .unwrap()
            .contains("octo-alice")
    );
    assert!(!of(&events, "text_delta").is_empty());
    assert_eq!(events.last().unwrap().data["stopReason"], "end_turn");
    let token = {
        let r = stack.recorder.lock().unwrap();
        assert_eq!(r.issued.len(), 1);
        assert_eq!(r.calls.len(), 1);
        assert_eq!(r.calls[0].0, "/user");
        assert_eq!(
            r.calls[0].1, r.issued[0],
            "the resource API did not see the token"
        );
        r.issued[0].clone()
    };
    // The model got the tool result, never the token.
    let requests = stack.llm_requests().await;
    let all_requests = serde_json::to_string(&requests).unwrap();
    assert!(all_requests.contains("octo-alice"));
    assert!(!all_requests.contains(&token));

    // A new conversation uses the vaulted token without consent.
    let (events, stream_b) = stack
        .invoke("alice", "chat-2", "use:github_profile {}")
        .await;
    assert!(
        of(&events, "authorization_required").is_empty(),
        "{events:?}"
    );
    assert_eq!(of(&events, "tool_result")[0].data["ok"], true);
    let text: String = of(&events, "text_delta")
        .iter()
        .map(|e| e.data["text"].as_str().unwrap())
        .collect();
    assert!(text.starts_with("tool github_profile returned:"), "{text}");
    assert_eq!(stack.recorder.lock().unwrap().calls.len(), 2);

    // (5) The `repo` tool still needs its own consent.
    let (events, stream_c) = stack
        .invoke(
            "alice",
            "chat-2",
            "use:github_repositories {\"per_page\": 5}",
        )
        .await;
    let auth = of(&events, "authorization_required");
    assert_eq!(auth.len(), 1, "{events:?}");
    assert_eq!(auth[0].data["tool"], "github_repositories");
    assert_eq!(auth[0].data["scopes"], json!(["repo"]));
    assert_eq!(stack.recorder.lock().unwrap().calls.len(), 2);
    assert_eq!(stack.recorder.lock().unwrap().exchanges, 1);

    // (8) The token never appears in the streams, the agent's log or the stored files.
    for stream in [&stream_a, &stream_b, &stream_c] {
        assert!(!stream.contains(&token), "token in the SSE stream");
    }
    let log = std::fs::read_to_string(&stack.agent_log).unwrap();
    // The log names the user, the tool, the provider and the scopes of each call.
    assert!(
        log.lines().any(|l| l.contains("tool ran")
            && l.contains("alice")
            && l.contains("github_profile")
            && l.contains("read:user")),
        "{log}"
    );
    assert!(!log.contains(&token), "token in the agent's log");
    assert!(
        !log.contains("sk-scripted-llm-key"),
        "LLM key in the agent's log"
    );
    let files = stack.stored_files();
    assert_eq!(files.len(), 3);
    for file in files {
        let stored = std::fs::read_to_string(&file).unwrap();
        assert!(!stored.contains(&token), "token in {}", file.display());
    }
}

/// A tool round trip through each provider's wire protocol.
async fn provider_round_trip(provider: &str) {
    let stack = start(&format!("rt-{provider}"), provider).await;
    let (events, _) = stack.invoke("carol", "rt", "use:github_profile {}").await;
    let auth = of(&events, "authorization_required")[0].data.clone();
    stack.consent(&auth, "carol").await;
    let (events, _) = stack.invoke("carol", "rt-2", "use:github_profile {}").await;
    assert_eq!(
        names(&events)[..3],
        ["tool_call", "tool_result", "text_delta"],
        "{events:?}"
    );
    assert_eq!(of(&events, "tool_result")[0].data["ok"], true);
    let text: String = of(&events, "text_delta")
        .iter()
        .map(|e| e.data["text"].as_str().unwrap())
        .collect();
    assert!(text.starts_with("tool github_profile returned:"), "{text}");
    assert!(text.contains("octo-alice"), "{text}");
    let usage = of(&events, "usage")[0].data.clone();
    assert!(usage["inputTokens"].as_u64().unwrap() > 0, "{usage}");
    assert_eq!(events.last().unwrap().data["stopReason"], "end_turn");
    let requests = stack.llm_requests().await;
    assert!(requests.len() >= 3, "{requests:?}");
}

#[tokio::test]
async fn openai_tool_round_trip() {
    provider_round_trip("openai").await;
}

#[tokio::test]
async fn anthropic_tool_round_trip() {
    provider_round_trip("anthropic").await;
}

#[tokio::test]
async fn bedrock_tool_round_trip() {
    provider_round_trip("bedrock").await;
}

#[tokio::test]
async fn consent_wait_continues_the_turn_and_stops_when_the_client_leaves() {
    let stack = start_with(
        "wait",
        "openai",
        Options {
            agent_args: vec!["--consent-wait-seconds".into(), "30".into()],
            ..Options::default()
        },
    )
    .await;

    // The turn waits for the consent and then runs the tool, in one stream.
    let mut response = stack
        .invoke_raw(
            Some(&stack.key.token("dave", 120)),
            json!({"sessionId": "w1", "message": "use:github_profile {}"}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let mut buffer = String::new();
    let first = read_until(&mut response, &mut buffer, "authorization_required").await;
    let auth = first.last().unwrap().data.clone();
    assert_eq!(auth["tool"], "github_profile");
    assert!(
        auth["message"]
            .as_str()
            .unwrap()
            .contains("waits up to 30 seconds")
    );
    stack.consent(&auth, "dave").await;
    let rest = read_until(&mut response, &mut buffer, "done").await;
    let rest_names = names(&rest);
    assert_eq!(rest_names.first(), Some(&"tool_result"), "{rest:?}");
    assert!(rest_names.contains(&"text_delta"), "{rest:?}");
    assert_eq!(
        rest_names[rest_names.len() - 2..],
        ["usage", "done"],
        "{rest:?}"
    );
    assert_eq!(of(&rest, "tool_result")[0].data["ok"], true, "{rest:?}");
    assert_eq!(rest.last().unwrap().data["stopReason"], "end_turn");
    assert_eq!(stack.recorder.lock().unwrap().calls.len(), 1);

    // A client that leaves while the agent waits: the wait stops, the call stays pending.
    let mut response = stack
        .invoke_raw(
            Some(&stack.key.token("dave", 120)),
            json!({"sessionId": "w2", "message": "use:github_repositories {}"}),
        )
        .await;
    let mut buffer = String::new();
    let first = read_until(&mut response, &mut buffer, "authorization_required").await;
    let auth = first.last().unwrap().data.clone();
    assert_eq!(auth["scopes"], json!(["repo"]));
    drop(response);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(&stack.agent_log).unwrap();
        if log.contains("the client went away while waiting for consent") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the consent wait did not stop"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // After consent, the next message runs the pending call.
    stack.consent(&auth, "dave").await;
    let (events, _) = stack.invoke("dave", "w2", "approved").await;
    assert_eq!(
        names(&events)[..2],
        ["tool_call", "tool_result"],
        "{events:?}"
    );
    assert_eq!(of(&events, "tool_result")[0].data["ok"], true);
    assert_eq!(
        stack.recorder.lock().unwrap().calls.last().unwrap().0,
        "/user/repos?per_page=10&sort=updated"
    );
}

#[tokio::test]
async fn consent_wait_ends_the_turn_at_its_deadline() {
    let stack = start_with(
        "wait-deadline",
        "anthropic",
        Options {
            agent_args: vec!["--consent-wait-seconds".into(), "1".into()],
            ..Options::default()
        },
    )
    .await;
    let started = std::time::Instant::now();
    let (events, _) = stack.invoke("gina", "d1", "use:github_profile {}").await;
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(
        names(&events),
        vec![
            "tool_call",
            "authorization_required",
            "text_delta",
            "usage",
            "done"
        ],
        "{events:?}"
    );
    assert_eq!(
        events.last().unwrap().data["stopReason"],
        "authorization_required"
    );
    // The call is pending: after the consent, the next message runs it.
    let auth = of(&events, "authorization_required")[0].data.clone();
    stack.consent(&auth, "gina").await;
    let (events, _) = stack.invoke("gina", "d1", "ok").await;
    assert_eq!(of(&events, "tool_result")[0].data["ok"], true, "{events:?}");
}

#[tokio::test]
async fn a_tool_declared_in_the_config_file_runs_with_its_own_scopes() {
    let stack = start_with(
        "config-tool",
        "openai",
        Options {
            config_toml: Some(
            r#"
            [agent]
            max_tool_iterations = 4
            system_prompt = "You are a test agent."

            [[agent.tools]]
            name = "repo_info"
            description = "One repository's facts"
            provider = "github"
            scopes = ["repo:status"]
            method = "GET"
            url = "{GITHUB}/repos/{owner}/{repo}"
            parameters = { type = "object", properties = { owner = { type = "string" }, repo = { type = "string" } }, required = ["owner", "repo"] }
            "#,
            ),
            ..Options::default()
        },
    )
    .await;
    let (events, _) = stack
        .invoke(
            "erin",
            "c1",
            r#"use:repo_info {"owner": "a b", "repo": "x/y"}"#,
        )
        .await;
    let auth = of(&events, "authorization_required");
    assert_eq!(auth.len(), 1, "{events:?}");
    assert_eq!(auth[0].data["tool"], "repo_info");
    assert_eq!(auth[0].data["scopes"], json!(["repo:status"]));
    let auth = auth[0].data.clone();
    stack.consent(&auth, "erin").await;
    let (events, _) = stack.invoke("erin", "c1", "ok").await;
    assert_eq!(of(&events, "tool_result")[0].data["ok"], true, "{events:?}");
    {
        let r = stack.recorder.lock().unwrap();
        assert_eq!(r.calls.len(), 1);
        assert_eq!(r.calls[0].0, "/repos/a%20b/x%2Fy");
        assert_eq!(r.calls[0].1, r.issued[0]);
    }
    // The model saw the tool's schema and the system prompt from the file.
    let requests = stack.llm_requests().await;
    let first = &requests[0]["body"];
    assert!(
        first.to_string().contains("You are a test agent."),
        "{first}"
    );
    assert!(first.to_string().contains("repo_info"), "{first}");
}

/// Two tools with the same scopes: `repo_issues` and `echo` (reflects the credential).
const CONFINEMENT_TOOLS: &str = r#"
            [[agent.tools]]
            name = "repo_issues"
            description = "A repository's issues"
            provider = "github"
            scopes = ["repo"]
            url = "{GITHUB}/repos/{owner}/{repo}/issues"
            parameters = { type = "object", properties = { owner = { type = "string" }, repo = { type = "string" } }, required = ["owner", "repo"] }

            [[agent.tools]]
            name = "echo"
            description = "A resource that reflects the request"
            provider = "github"
            scopes = ["repo"]
            url = "{GITHUB}/echo/{id}"
            parameters = { type = "object", properties = { id = { type = "string" } }, required = ["id"] }
            "#;

#[tokio::test]
async fn tool_arguments_stay_in_their_template() {
    let stack = start_with(
        "tool-confinement",
        "openai",
        Options {
            config_toml: Some(CONFINEMENT_TOOLS),
            ..Options::default()
        },
    )
    .await;
    // Consent once (both tools have the same scopes), with a plain call.
    let (events, _) = stack
        .invoke(
            "ivan",
            "t1",
            r#"use:repo_issues {"owner": "o", "repo": "r"}"#,
        )
        .await;
    let auth = of(&events, "authorization_required")[0].data.clone();
    stack.consent(&auth, "ivan").await;
    let (events, _) = stack.invoke("ivan", "t1", "ok").await;
    assert_eq!(of(&events, "tool_result")[0].data["ok"], true, "{events:?}");

    // Hostile arguments, one call per line.
    let hostile = [
        r#"{"owner": "..", "repo": "r"}"#,
        r#"{"owner": "%2e%2e", "repo": "r"}"#,
        r#"{"owner": ".", "repo": "r"}"#,
        r#"{"owner": "", "repo": "r"}"#,
        r#"{"owner": "a/b", "repo": "r"}"#,
        r#"{"owner": "a?x=1", "repo": "r"}"#,
        r#"{"owner": "a#f", "repo": "r"}"#,
        r#"{"owner": "../../user", "repo": "r"}"#,
        r#"{"owner": "é😀", "repo": "r"}"#,
    ];
    let message: Vec<String> = hostile
        .iter()
        .map(|args| format!("use:repo_issues {args}"))
        .collect();
    let (events, _) = stack.invoke("ivan", "t2", &message.join("\n")).await;
    let results = of(&events, "tool_result");
    assert_eq!(results.len(), hostile.len(), "{events:?}");
    for (i, result) in results.iter().enumerate() {
        let refused = i < 4;
        assert_eq!(result.data["ok"], !refused, "{}: {result:?}", hostile[i]);
        if refused {
            let content = result.data["content"].as_str().unwrap();
            assert!(
                content.contains("argument `owner` must not be empty, `.` or `..`"),
                "{content}"
            );
        }
    }
    let paths: Vec<String> = {
        let r = stack.recorder.lock().unwrap();
        r.calls.iter().map(|(path, _)| path.clone()).collect()
    };
    assert_eq!(
        paths,
        [
            "/repos/o/r/issues",
            "/repos/a%2Fb/r/issues",
            "/repos/a%3Fx%3D1/r/issues",
            "/repos/a%23f/r/issues",
            "/repos/..%2F..%2Fuser/r/issues",
            "/repos/%C3%A9%F0%9F%98%80/r/issues",
        ]
    );
}

#[tokio::test]
async fn a_token_reflected_by_the_resource_is_redacted() {
    let stack = start_with(
        "tool-echo",
        "openai",
        Options {
            config_toml: Some(CONFINEMENT_TOOLS),
            ..Options::default()
        },
    )
    .await;
    let (events, stream_a) = stack.invoke("ivan", "t3", r#"use:echo {"id": "1"}"#).await;
    let auth = of(&events, "authorization_required")[0].data.clone();
    stack.consent(&auth, "ivan").await;
    // A resource that reflects the token: redacted before the model, the stream and the
    // stored conversation see the result.
    let (events, stream_c) = stack.invoke("ivan", "t3", "ok").await;
    let result = of(&events, "tool_result")[0].data.clone();
    assert_eq!(result["ok"], true, "{events:?}");
    let content = result["content"].as_str().unwrap();
    assert!(content.contains("Bearer [REDACTED]"), "{content}");
    let token = {
        let r = stack.recorder.lock().unwrap();
        assert_eq!(r.calls.last().unwrap().0, "/echo/1");
        assert_eq!(r.calls.len(), 1, "{:?}", r.calls);
        r.issued[0].clone()
    };
    let forms = [
        token.clone(),
        STANDARD.encode(format!("user:{token}")),
        STANDARD.encode(format!("Bearer {token}")),
        urlencoding(&token),
    ];
    let model_saw = serde_json::to_string(&stack.llm_requests().await).unwrap();
    assert!(
        model_saw.contains("[REDACTED]"),
        "the model did not get the result"
    );
    let stored: String = stack
        .stored_files()
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    assert!(stored.contains("[REDACTED]"));
    for form in &forms {
        for (where_, text) in [
            ("stream", &stream_a),
            ("stream", &stream_c),
            ("model requests", &model_saw),
            ("stored conversations", &stored),
        ] {
            assert!(!text.contains(form.as_str()), "{form} in the {where_}");
        }
    }
}

#[test]
fn a_tool_url_whose_host_is_a_placeholder_stops_the_start() {
    let dir = temp_dir("tool-host");
    std::fs::create_dir_all(&dir).unwrap();
    for (url, part) in [
        ("https://{host}/repos/{owner}", "host"),
        ("https://api.github.com:{port}/repos/{owner}", "port"),
        ("{base}/repos/{owner}", "scheme"),
    ] {
        let path = dir.join("agent.toml");
        std::fs::write(
            &path,
            format!(
                "[[agent.tools]]\nname = \"anywhere\"\ndescription = \"d\"\nprovider = \"github\"\nurl = \"{url}\"\n"
            ),
        )
        .unwrap();
        let mut child = Command::new(bin())
            .args(["serve", "agent", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.join("agent-data"))
            .args(["--identity-url", "http://127.0.0.1:9"])
            .args(["--workload-name", WORKLOAD, "--return-url", RETURN_URL])
            .args([
                "--alb-signer",
                SIGNER,
                "--alb-key-url-template",
                "http://127.0.0.1:9/{kid}",
            ])
            .args(["--llm-provider", "openai", "--llm-model", "m"])
            .arg("--config")
            .arg(&path)
            .env("LATCHKEY_AGENT_CREDENTIAL", "LKTESTAGENT:secret-0123456789")
            .env("LATCHKEY_AGENT_LLM_API_KEY", "sk-x")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let stderr = std::fs::read_to_string(dir.join("stderr")).unwrap();
        assert!(
            status.is_some_and(|s| !s.success()),
            "{url}: the agent started; {stderr}"
        );
        assert!(
            stderr.contains("agent.tools.url")
                && stderr.contains("\"anywhere\"")
                && stderr.contains(&format!("placeholder in the {part}")),
            "{url}: {stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_bearer_id_token_user_gets_a_wat_for_jwt() {
    let user_key = AlbKey::generate("oidc-key-1");
    let issuer = oidc_issuer(&user_key).await;
    let stack = start_with(
        "oidc",
        "openai",
        Options {
            agent_args: vec![
                "--oidc-issuer".into(),
                issuer.clone(),
                "--oidc-audience".into(),
                "agent-app".into(),
            ],
            identity_env: vec![(
                "LATCHKEY_INBOUND_ISSUERS",
                json!([{"issuer": issuer, "audiences": ["agent-app"]}]).to_string(),
            )],
            ..Options::default()
        },
    )
    .await;
    // Wrong audience, wrong key: 401 and no model call.
    for bad in [
        user_key.id_token(&issuer, "other-app", "frank"),
        AlbKey::generate("oidc-key-1").id_token(&issuer, "agent-app", "frank"),
    ] {
        let response = stack
            .http
            .post(format!("{}/invocations", stack.agent_url))
            .bearer_auth(&bad)
            .json(&json!({"sessionId": "o1", "message": "hi"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
    }
    assert!(stack.llm_requests().await.is_empty());

    let token = user_key.id_token(&issuer, "agent-app", "frank");
    let (events, _) = stack
        .invoke_bearer(&token, "o1", "use:github_profile {}")
        .await;
    let auth = of(&events, "authorization_required");
    assert_eq!(auth.len(), 1, "{events:?}");
    let auth = auth[0].data.clone();
    // The binding service would complete with the user's own token.
    stack
        .consent_as(
            &auth,
            UserIdentifier::UserToken(latchkey_client::SecretString::from(token.clone())),
        )
        .await;
    let (events, _) = stack.invoke_bearer(&token, "o1", "ok").await;
    assert_eq!(of(&events, "tool_result")[0].data["ok"], true, "{events:?}");
    assert_eq!(stack.recorder.lock().unwrap().calls.len(), 1);
    // Via the ALB header the agent asks for a WAT for the *user id* frank: for the token
    // vault that is another user than frank at the OIDC issuer (issue 12 item 2), so it
    // is asked for its own consent and never handed the token user's grant.
    let (events, _) = stack.invoke("frank", "o1", "use:github_profile {}").await;
    assert_eq!(of(&events, "authorization_required").len(), 1, "{events:?}");
    assert!(
        of(&events, "tool_result")
            .iter()
            .all(|e| e.data["ok"] != true),
        "{events:?}"
    );
    assert_eq!(stack.recorder.lock().unwrap().calls.len(), 1);
}

#[test]
fn openapi_document_is_current() {
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi/agent.json");
    let out = Command::new(bin())
        .args(["serve", "agent", "--print-openapi"])
        .output()
        .expect("print openapi");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let generated = String::from_utf8(out.stdout).unwrap();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&committed, &generated).unwrap();
        return;
    }
    let current = std::fs::read_to_string(&committed).unwrap_or_default();
    assert!(
        current == generated,
        "docs/openapi/agent.json is out of date with the code. Regenerate it with\n  latchkey serve agent --print-openapi > docs/openapi/agent.json\nor\n  UPDATE_OPENAPI=1 cargo test -p latchkey --test agent openapi_document_is_current"
    );
}
