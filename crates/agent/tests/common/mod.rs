//! Shared by the agent's integration tests: the agent itself in-process (its router from an
//! [`AgentConfig`], served on a loopback port) against real peers: the identity service
//! in-process on a temporary SQLite store, the scripted LLM server
//! (`tests/llm/scripted_llm.py`, speaking the providers' wire protocols), a loopback
//! "GitHub" resource API that checks bearer tokens, a loopback OAuth token endpoint and a
//! loopback ALB key server. ALB headers are signed with a real P-256 key. Nothing is mocked
//! inside the agent.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use axum::serve::ListenerExt as _;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use latchkey_agent::config::Agent as AgentSection;
use latchkey_agent::{AgentConfig, AgentState, HttpToolConfig};
use latchkey_authn::inbound::InboundIssuerConfig;
use latchkey_authn::outbound::OutboundPolicy;
use latchkey_client::{Client, Url, UserIdentifier};
use latchkey_config::{ConfigFile, Env, Flags, Layers};
use latchkey_core::clock::SystemClock;
use latchkey_core::crypto::{FileKeyProvider, KeyProvider};
use latchkey_identity::admin::Admin;
use latchkey_identity::auth::Role;
use latchkey_identity::{AppState, ServiceConfig};
use latchkey_llm::{LlmConfig, Provider};
use latchkey_store::testing::TempStore;
use serde_json::{Value, json};

pub const SIGNER: &str =
    "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/agent/50dc6c495c0c9188";
pub const ALB_ISSUER: &str = "https://login.example.com";
pub const WORKLOAD: &str = "gh-agent";
pub const PROVIDER: &str = "github";
pub const RETURN_URL: &str = "http://127.0.0.1:9/oauth2/session-binding";
pub const AUTHZ_ENDPOINT: &str = "http://127.0.0.1:9/login/oauth/authorize";
/// The model API key the agent is configured with; it must never reach its log.
pub const LLM_API_KEY: &str = "sk-scripted-llm-key";

// ---------------------------------------------------------------------------------------
// Processes and servers

/// A child process killed on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The scripted LLM server on a free loopback port; its base URL.
pub fn spawn_llm() -> (Proc, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/llm/scripted_llm.py");
    let mut child = Command::new("python3")
        .arg(script)
        .args(["--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn python3 scripted_llm.py");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read listening line");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("did not start: {line:?}"))
        .trim_end_matches('/')
        .to_string();
    (Proc(child), url)
}

/// Serve `app` on a free loopback port (every connection with `TCP_NODELAY`, as the
/// binary serves); its `http://ADDR`.
pub async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    serve_on(listener, app)
}

fn serve_on(listener: tokio::net::TcpListener, app: axum::Router) -> String {
    let addr = listener.local_addr().unwrap();
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// The identity service in-process on a fresh SQLite store, with an admin credential and
/// the agent's `workload:` credential, created as `latchkey admin credentials create` does.
pub struct Identity {
    pub url: String,
    /// (access key id, secret)
    pub admin: (String, String),
    pub workload: (String, String),
    _store: TempStore,
}

impl Identity {
    pub async fn start(inbound_issuers: Vec<InboundIssuerConfig>) -> Self {
        let temp = TempStore::new("agent-identity").await;
        let keys: Arc<dyn KeyProvider> = Arc::new(FileKeyProvider::generate().unwrap());
        let admin = Admin::new(
            temp.store.clone(),
            keys.clone(),
            Arc::new(SystemClock),
            OutboundPolicy::default(),
        )
        .unwrap();
        let mut created = vec![];
        for role in ["admin".to_string(), format!("workload:{WORKLOAD}")] {
            let c = admin
                .create_credential(Role::parse(&role).unwrap(), None)
                .await
                .unwrap();
            created.push((c.access_key_id, c.secret.as_str().to_string()));
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut config = ServiceConfig::new(format!("http://{}", listener.local_addr().unwrap()));
        config.inbound_issuers = inbound_issuers;
        config.outbound.allow_private_addresses = true;
        let state = AppState::start(config, temp.store.clone(), keys, Arc::new(SystemClock))
            .await
            .unwrap();
        let url = serve_on(listener, latchkey_identity::app(state));
        let workload = created.pop().unwrap();
        let admin = created.pop().unwrap();
        Self {
            url,
            admin,
            workload,
            _store: temp,
        }
    }

    /// A control-plane call with the admin credential; its JSON answer.
    pub async fn control(&self, operation: &str, body: Value) -> Value {
        let response = reqwest::Client::new()
            .post(format!("{}/identities/{operation}", self.url))
            .bearer_auth(format!("{}:{}", self.admin.0, self.admin.1))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let out: Value = response.json().await.unwrap();
        assert!(status.is_success(), "{operation}: {status} {out}");
        out
    }
}

// ---------------------------------------------------------------------------------------
// Loopback peers

/// Tokens the token endpoint issued, and the calls the resource API saw.
#[derive(Default)]
pub struct Recorder {
    pub issued: Vec<String>,
    pub exchanges: usize,
    /// (path, bearer token) of every resource call.
    pub calls: Vec<(String, String)>,
}

/// A provider token endpoint: every `code=good-code…` gets a fresh, unique access token.
pub async fn token_endpoint(recorder: Arc<Mutex<Recorder>>) -> String {
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
pub async fn github_api(recorder: Arc<Mutex<Recorder>>) -> String {
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
pub fn urlencoding(text: &str) -> String {
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
pub struct AlbKey {
    pub kid: String,
    pair: EcdsaKeyPair,
}

impl AlbKey {
    pub fn generate(kid: &str) -> Self {
        Self {
            kid: kid.into(),
            pair: EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
        }
    }

    pub fn pem(&self) -> String {
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

    pub fn sign_raw(&self, header: &Value, payload: &Value) -> String {
        let h = URL_SAFE_NO_PAD.encode(serde_json::to_vec(header).unwrap());
        let p = URL_SAFE_NO_PAD.encode(serde_json::to_vec(payload).unwrap());
        let input = format!("{h}.{p}");
        let sig = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    pub fn jwk(&self) -> Value {
        let point = self.pair.public_key().as_ref();
        json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        })
    }

    /// An OIDC ID token of `issuer` for `sub` and `audience`.
    pub fn id_token(&self, issuer: &str, audience: &str, sub: &str) -> String {
        let now = now();
        self.sign_raw(
            &json!({"typ": "JWT", "kid": self.kid, "alg": "ES256"}),
            &json!({"iss": issuer, "aud": audience, "sub": sub, "iat": now, "exp": now + 300}),
        )
    }

    /// A header as an ALB sends it for `sub`, expiring in `ttl` seconds (may be negative).
    pub fn token(&self, sub: &str, ttl: i64) -> String {
        let now = now();
        self.sign_raw(
            &json!({"typ": "JWT", "kid": self.kid, "alg": "ES256", "iss": ALB_ISSUER,
                    "client": "app", "signer": SIGNER, "exp": now + ttl}),
            &json!({"sub": sub, "email": format!("{sub}@example.com"), "exp": now + ttl, "iss": ALB_ISSUER}),
        )
    }
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub async fn alb_key_server(keys: Vec<(String, String)>) -> String {
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
pub async fn oidc_issuer(key: &AlbKey) -> String {
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
    serve_on(listener, app);
    issuer
}

// ---------------------------------------------------------------------------------------
// The agent's log

/// What the agent logs during one test (debug and up, the binary's text format), captured
/// on the test's thread: `#[tokio::test]` runs the agent's tasks on that thread.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<u8>>>);

impl Log {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'w> tracing_subscriber::fmt::MakeWriter<'w> for Log {
    type Writer = Log;
    fn make_writer(&'w self) -> Log {
        self.clone()
    }
}

// ---------------------------------------------------------------------------------------
// The stack

pub struct Stack {
    pub identity: Identity,
    pub llm_url: String,
    pub agent_url: String,
    pub log: Log,
    pub store_dir: PathBuf,
    pub key: AlbKey,
    pub recorder: Arc<Mutex<Recorder>>,
    pub http: reqwest::Client,
    dir: PathBuf,
    _llm: Proc,
    _log_guard: tracing::subscriber::DefaultGuard,
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What a test changes in the standard stack.
#[derive(Default)]
pub struct Options {
    /// `consent_wait_seconds`.
    pub consent_wait_seconds: u64,
    /// `[[tools]]` tables in TOML; `{GITHUB}` is replaced by the loopback GitHub API's URL.
    pub tools_toml: Option<&'static str>,
    /// Replaces the default system prompt.
    pub system_prompt: Option<&'static str>,
    /// `max_tool_iterations` (default: the agent's default).
    pub max_tool_iterations: Option<u32>,
    /// An OIDC source (issuer, audience) beside the ALB one; the identity service trusts
    /// the issuer too.
    pub oidc: Option<(String, String)>,
    /// Create the workload without the `latchkey:allow-user-id` tag.
    pub without_user_id_trust: bool,
}

pub async fn start(name: &str, llm_provider: &str) -> Stack {
    start_with(name, llm_provider, Options::default()).await
}

pub async fn start_with(name: &str, llm_provider: &str, options: Options) -> Stack {
    let log = Log::default();
    let log_guard = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(log.clone())
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .finish(),
    );
    let dir = std::env::temp_dir().join(format!(
        "latchkey-agent-test-{name}-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let inbound = match &options.oidc {
        Some((issuer, audience)) => vec![InboundIssuerConfig::new(
            issuer.clone(),
            vec![audience.clone()],
        )],
        None => vec![],
    };
    let identity = Identity::start(inbound).await;
    let (llm_server, llm_url) = spawn_llm();
    let recorder = Arc::new(Mutex::new(Recorder::default()));
    let token_url = token_endpoint(recorder.clone()).await;
    let github_url = github_api(recorder.clone()).await;
    let key = AlbKey::generate("agent-key-1");
    let key_url = alb_key_server(vec![(key.kid.clone(), key.pem())]).await;

    identity
        .control(
            "CreateWorkloadIdentity",
            json!({"name": WORKLOAD, "allowedResourceOauth2ReturnUrls": [RETURN_URL],
                   "tags": {"latchkey:allow-user-id": (!options.without_user_id_trust).to_string()}}),
        )
        .await;
    identity
        .control(
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
    let (provider, llm_base, model) = match llm_provider {
        "openai" => (Provider::Openai, format!("{llm_url}/v1"), "gpt-4o-mini"),
        "anthropic" => (Provider::Anthropic, llm_url.clone(), "claude-sonnet-4-5"),
        _ => (
            Provider::Bedrock,
            llm_url.clone(),
            "anthropic.claude-3-haiku-20240307-v1:0",
        ),
    };
    let llm = LlmConfig {
        provider,
        model: model.into(),
        base_url: Some(llm_base),
        api_key: Some(LLM_API_KEY.to_string().into()),
        region: Some("us-east-1".into()),
        timeout: Duration::from_secs(120),
        max_retries: 2,
    };
    let chat_model = match provider {
        Provider::Bedrock => latchkey_llm::bedrock_with_credentials(
            &llm,
            latchkey_llm::Credentials::new(
                "AKIDSCRIPTEDLLM",
                "scripted-llm-aws-secret",
                None,
                None,
                "test",
            ),
        ),
        _ => latchkey_llm::build(&llm),
    }
    .unwrap();
    let tools: Vec<HttpToolConfig> = match options.tools_toml {
        Some(text) => {
            #[derive(serde::Deserialize)]
            struct File {
                tools: Vec<HttpToolConfig>,
            }
            toml::from_str::<File>(&text.replace("{GITHUB}", &github_url))
                .unwrap()
                .tools
        }
        None => vec![],
    };
    // Resolved as `serve agent` resolves its environment; the model is built above (the
    // scripted server's Bedrock needs explicit credentials).
    let credential = format!("{}:{}", identity.workload.0, identity.workload.1);
    let consent_wait = options.consent_wait_seconds.to_string();
    let store = store_dir.display().to_string();
    let mut pairs = vec![
        ("LATCHKEY_AGENT_IDENTITY_URL", identity.url.as_str()),
        ("LATCHKEY_AGENT_CREDENTIAL", credential.as_str()),
        ("LATCHKEY_AGENT_WORKLOAD_NAME", WORKLOAD),
        ("LATCHKEY_AGENT_RETURN_URL", RETURN_URL),
        ("LATCHKEY_AGENT_ALB_SIGNER", SIGNER),
        ("LATCHKEY_AGENT_ALB_KEY_URL_TEMPLATE", key_url.as_str()),
        ("LATCHKEY_AGENT_ALB_ISSUER", ALB_ISSUER),
        ("LATCHKEY_AGENT_OUTBOUND_ALLOW_PRIVATE_ADDRESSES", "true"),
        ("LATCHKEY_AGENT_LLM_PROVIDER", llm_provider),
        ("LATCHKEY_AGENT_LLM_MODEL", model),
        ("LATCHKEY_AGENT_CONSENT_WAIT_SECONDS", consent_wait.as_str()),
        ("LATCHKEY_AGENT_GITHUB_BASE_URL", github_url.as_str()),
        ("LATCHKEY_AGENT_GITHUB_PROVIDER", PROVIDER),
        ("LATCHKEY_AGENT_STORE_DIR", store.as_str()),
    ];
    if let Some((issuer, audience)) = &options.oidc {
        pairs.push(("LATCHKEY_AGENT_OIDC_ISSUER", issuer));
        pairs.push(("LATCHKEY_AGENT_OIDC_AUDIENCE", audience));
    }
    let env = Env::fixed(&pairs);
    let (flags, file) = (Flags::<AgentSection>::default(), ConfigFile::default());
    let layers = Layers::new(&flags, &file, &env).unwrap();
    let mut config = AgentConfig::resolve(&layers, &dir).unwrap();
    config.llm = llm;
    config.keys.tools = tools;
    if let Some(prompt) = options.system_prompt {
        config.keys.system_prompt = prompt.into();
    }
    if let Some(n) = options.max_tool_iterations {
        config.keys.max_tool_iterations = n;
    }
    let state = AgentState::new(config, chat_model, Arc::new(SystemClock)).unwrap();
    let agent_url = serve(latchkey_agent::app(state)).await;
    Stack {
        identity,
        llm_url,
        agent_url,
        log,
        store_dir,
        key,
        recorder,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        dir,
        _llm: llm_server,
        _log_guard: log_guard,
    }
}

/// One parsed Server-Sent Event.
#[derive(Debug, Clone)]
pub struct Sse {
    pub event: String,
    pub data: Value,
}

impl Stack {
    pub async fn invoke_raw(&self, alb: Option<&str>, body: Value) -> reqwest::Response {
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
    pub async fn invoke(&self, sub: &str, session: &str, message: &str) -> (Vec<Sse>, String) {
        let response = self
            .invoke_raw(
                Some(&self.key.token(sub, 120)),
                json!({"sessionId": session, "message": message}),
            )
            .await;
        Self::events(response).await
    }

    /// A message with `Authorization: Bearer <token>`.
    pub async fn invoke_bearer(
        &self,
        token: &str,
        session: &str,
        message: &str,
    ) -> (Vec<Sse>, String) {
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

    pub async fn events(response: reqwest::Response) -> (Vec<Sse>, String) {
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

    pub async fn llm_requests(&self) -> Vec<Value> {
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
    pub async fn consent(&self, auth: &Value, sub: &str) {
        self.consent_as(auth, UserIdentifier::UserId(sub.into()))
            .await
    }

    pub async fn consent_as(&self, auth: &Value, user: UserIdentifier) {
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
        let (id, secret) = &self.identity.admin;
        let admin = Client::builder(Url::parse(&self.identity.url).unwrap())
            .bearer(format!("{id}:{secret}"))
            .build()
            .unwrap();
        admin
            .complete_resource_token_auth(&completion, &user)
            .await
            .expect("complete");
    }

    pub fn stored_files(&self) -> Vec<PathBuf> {
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
pub fn parse_blocks(buffer: &mut String) -> Vec<Sse> {
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
pub async fn read_until(
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

pub fn of<'a>(events: &'a [Sse], name: &str) -> Vec<&'a Sse> {
    events.iter().filter(|e| e.event == name).collect()
}

pub fn names(events: &[Sse]) -> Vec<&str> {
    events.iter().map(|e| e.event.as_str()).collect()
}
