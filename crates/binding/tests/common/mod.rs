//! Test fixtures: real ES256 keys, a loopback ALB key server, a loopback OIDC issuer, a
//! recording stand-in for the identity service, and the binding service itself on
//! 127.0.0.1:0. Everything is real HTTP and real crypto; nothing is patched away.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use latchkey_authn::outbound::OutboundPolicy;
use latchkey_binding::{AlbConfig, BindingConfig, BindingCredential, BindingState, OidcConfig};
use latchkey_core::clock::ManualClock;
use serde_json::{Value, json};

pub const NOW_MS: i64 = 1_750_000_000_000;
pub const NOW: i64 = NOW_MS / 1000;
pub const SIGNER: &str = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/latchkey/50dc6c495c0c9188";
pub const OTHER_SIGNER: &str = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/attacker/0000000000000000";
pub const ALB_ISSUER: &str = "https://login.example.com";
pub const ACCESS_KEY_ID: &str = "LKBINDINGTESTKEY2345";
pub const SECRET: &str = "binding-secret-Zq8vN3xW7kP2mR5tY9uB4cE6";
pub const SESSION: &str = "urn:ietf:params:oauth:request_uri:Ab3-dE_f.g~HiJkLmNoP";
pub const AUDIENCE: &str = "latchkey-app";

// ---------------------------------------------------------------------------------------
// Keys and tokens

/// An ES256 key pair with its kid and its public key as PEM (SPKI), as AWS publishes it.
pub struct EcKey {
    pub kid: String,
    pub pair: EcdsaKeyPair,
    pub pem: String,
}

impl EcKey {
    pub fn generate(kid: &str) -> Self {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("generate");
        let spki: PublicKeyX509Der = pair.public_key().as_der().expect("SPKI DER");
        Self {
            kid: kid.to_string(),
            pem: pem("PUBLIC KEY", spki.as_ref()),
            pair,
        }
    }

    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair
            .sign(&SystemRandom::new(), message)
            .expect("sign")
            .as_ref()
            .to_vec()
    }

    pub fn jwk(&self) -> Value {
        let point = self.pair.public_key().as_ref();
        assert_eq!(point.len(), 65);
        json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        })
    }
}

pub fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("ascii"))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

pub fn b64(bytes: &[u8], padded: bool) -> String {
    if padded {
        URL_SAFE.encode(bytes)
    } else {
        URL_SAFE_NO_PAD.encode(bytes)
    }
}

/// A compact JWS signed with `key` over exactly `header_part.payload_part`.
pub fn sign_parts(key: &EcKey, header_part: &str, payload_part: &str, padded: bool) -> String {
    let input = format!("{header_part}.{payload_part}");
    let signature = key.sign(input.as_bytes());
    format!("{input}.{}", b64(&signature, padded))
}

pub fn jws(key: &EcKey, header: &Value, payload: &Value, padded: bool) -> String {
    let h = b64(&serde_json::to_vec(header).unwrap(), padded);
    let p = b64(&serde_json::to_vec(payload).unwrap(), padded);
    sign_parts(key, &h, &p, padded)
}

/// The header an ALB sends.
pub fn alb_header(kid: &str, signer: &str) -> Value {
    json!({
        "typ": "JWT", "kid": kid, "alg": "ES256", "iss": ALB_ISSUER,
        "client": "app-client-id", "signer": signer, "exp": NOW + 120,
    })
}

/// The payload an ALB sends.
pub fn alb_payload(sub: &str) -> Value {
    json!({
        "sub": sub, "email": "alice@example.com", "email_verified": "true",
        "exp": NOW + 120, "iss": ALB_ISSUER,
    })
}

/// A valid ALB token for `sub`, padded (as real ALBs send) or not.
pub fn alb_token(key: &EcKey, sub: &str, padded: bool) -> String {
    let mut header = alb_header(&key.kid, SIGNER);
    let mut payload = alb_payload(sub);
    if padded {
        // Make sure the header and payload parts really carry `=` padding.
        'search: for h in 0..3 {
            for p in 0..3 {
                header["client"] = json!(format!("app-client-id{}", "x".repeat(h)));
                payload["name"] = json!("x".repeat(p + 1));
                let hl = serde_json::to_vec(&header).unwrap().len();
                let pl = serde_json::to_vec(&payload).unwrap().len();
                if !hl.is_multiple_of(3) && !pl.is_multiple_of(3) {
                    break 'search;
                }
            }
        }
    }
    let token = jws(key, &header, &payload, padded);
    if padded {
        let parts: Vec<&str> = token.split('.').collect();
        assert!(parts.iter().all(|p| p.ends_with('=')), "{token}");
    } else {
        assert!(!token.contains('='));
    }
    token
}

/// An OIDC ID token for `sub`, ES256, signed by `key` of the issuer.
pub fn id_token(key: &EcKey, issuer: &str, audience: &str, sub: &str) -> String {
    let header = json!({"alg": "ES256", "typ": "JWT", "kid": key.kid});
    let payload = json!({
        "iss": issuer, "aud": audience, "sub": sub,
        "iat": NOW - 10, "exp": NOW + 300, "email": "alice@example.com",
    });
    jws(key, &header, &payload, false)
}

// ---------------------------------------------------------------------------------------
// Loopback servers

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        axum::serve(listener, router).await.expect("serve");
    });
    address
}

/// Serves PEM public keys by kid at `/keys/{kid}` (404 for unknown kids), plus any extra
/// paths, and counts every request it receives.
#[derive(Clone)]
pub struct KeyServer {
    pub address: SocketAddr,
    state: Arc<KeyServerState>,
}

#[derive(Default)]
struct KeyServerState {
    keys: Mutex<HashMap<String, String>>,
    hits: AtomicUsize,
}

impl KeyServer {
    pub async fn start(keys: &[&EcKey]) -> Self {
        let state = Arc::new(KeyServerState::default());
        for key in keys {
            state
                .keys
                .lock()
                .unwrap()
                .insert(key.kid.clone(), key.pem.clone());
        }
        let router = Router::new()
            .route("/keys/{kid}", get(key_handler))
            .fallback(any_path_handler)
            .with_state(state.clone());
        let address = serve(router).await;
        Self { address, state }
    }

    /// Serve `body` at an arbitrary path (e.g. where a path-injecting kid would point).
    pub fn put_path(&self, path: &str, body: &str) {
        self.state
            .keys
            .lock()
            .unwrap()
            .insert(format!("path:{path}"), body.to_string());
    }

    /// Publish another key (a rotation at the load balancer).
    pub fn publish(&self, key: &EcKey) {
        self.state
            .keys
            .lock()
            .unwrap()
            .insert(key.kid.clone(), key.pem.clone());
    }

    pub fn template(&self) -> String {
        format!("http://{}/keys/{{kid}}", self.address)
    }

    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }
}

async fn key_handler(
    State(state): State<Arc<KeyServerState>>,
    Path(kid): Path<String>,
) -> Response {
    state.hits.fetch_add(1, Ordering::SeqCst);
    match state.keys.lock().unwrap().get(&kid) {
        Some(pem) => pem.clone().into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn any_path_handler(
    State(state): State<Arc<KeyServerState>>,
    uri: axum::http::Uri,
) -> Response {
    state.hits.fetch_add(1, Ordering::SeqCst);
    match state
        .keys
        .lock()
        .unwrap()
        .get(&format!("path:{}", uri.path()))
    {
        Some(body) => body.clone().into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// A loopback OIDC issuer: discovery and a JWKS.
pub struct Idp {
    pub issuer: String,
    hits: Arc<AtomicUsize>,
}

impl Idp {
    pub async fn start(keys: &[&EcKey]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let issuer = format!("http://{address}");
        let jwks = json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()});
        let hits = Arc::new(AtomicUsize::new(0));
        let discovery = json!({
            "issuer": issuer,
            "jwks_uri": format!("{issuer}/jwks"),
            "authorization_endpoint": format!("{issuer}/authorize"),
            "id_token_signing_alg_values_supported": ["ES256"],
        });
        let (h1, h2) = (hits.clone(), hits.clone());
        let router = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || {
                    h1.fetch_add(1, Ordering::SeqCst);
                    let d = discovery.clone();
                    async move { Json(d) }
                }),
            )
            .route(
                "/jwks",
                get(move || {
                    h2.fetch_add(1, Ordering::SeqCst);
                    let j = jwks.clone();
                    async move { Json(j) }
                }),
            );
        tokio::spawn(async move {
            axum::serve(listener, router).await.expect("serve");
        });
        Self { issuer, hits }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// What the identity stand-in answers.
#[derive(Clone, Debug)]
pub enum Reply {
    Ok,
    Error {
        status: u16,
        error_type: &'static str,
        message: String,
        /// `x-latchkey-reason`, Latchkey's machine-readable reason.
        reason: Option<&'static str>,
    },
}

impl Reply {
    pub fn error(status: u16, error_type: &'static str, message: &str) -> Self {
        Self::Error {
            status,
            error_type,
            message: message.to_string(),
            reason: None,
        }
    }

    /// What the identity service answers when another account opened the link before.
    pub fn cancelled() -> Self {
        Self::Error {
            status: 400,
            error_type: "ValidationException",
            message:
                "authorization session cancelled: another account opened this authorization link"
                    .into(),
            reason: Some("session-cancelled"),
        }
    }

    /// What the identity service answers for an expired authorization session.
    pub fn expired() -> Self {
        Self::Error {
            status: 400,
            error_type: "ValidationException",
            message: "authorization session expired: start the authorization again".into(),
            reason: Some("session-expired"),
        }
    }
}

/// One call received by the identity stand-in.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub body: Value,
}

/// Stands in for `POST /identities/CompleteResourceTokenAuth`: answers per script and
/// records every request.
#[derive(Clone)]
pub struct IdentityStandIn {
    pub address: SocketAddr,
    state: Arc<StandInState>,
}

struct StandInState {
    reply: Mutex<Reply>,
    received: Mutex<Vec<Received>>,
}

impl IdentityStandIn {
    pub async fn start() -> Self {
        let state = Arc::new(StandInState {
            reply: Mutex::new(Reply::Ok),
            received: Mutex::new(vec![]),
        });
        let router = Router::new()
            .route(
                "/identities/CompleteResourceTokenAuth",
                post(stand_in_handler),
            )
            .fallback(stand_in_handler)
            .with_state(state.clone());
        let address = serve(router).await;
        Self { address, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn set_reply(&self, reply: Reply) {
        *self.state.reply.lock().unwrap() = reply;
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    pub fn calls(&self) -> usize {
        self.state.received.lock().unwrap().len()
    }
}

async fn stand_in_handler(
    State(state): State<Arc<StandInState>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    let text = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    state.received.lock().unwrap().push(Received {
        path: uri.path().to_string(),
        authorization: text(header::AUTHORIZATION),
        content_type: text(header::CONTENT_TYPE),
        body: serde_json::from_str(&body).unwrap_or(Value::Null),
    });
    let reply = state.reply.lock().unwrap().clone();
    match reply {
        Reply::Ok => Json(json!({})).into_response(),
        Reply::Error {
            status,
            error_type,
            message,
            reason,
        } => {
            let mut response = (
                StatusCode::from_u16(status).unwrap(),
                Json(json!({"__type": error_type, "message": message})),
            )
                .into_response();
            response.headers_mut().insert(
                "x-amzn-ErrorType",
                HeaderValue::from_str(error_type).unwrap(),
            );
            if let Some(reason) = reason {
                response
                    .headers_mut()
                    .insert("x-latchkey-reason", HeaderValue::from_static(reason));
            }
            response
        }
    }
}

// ---------------------------------------------------------------------------------------
// The binding service under test

pub struct Binding {
    pub base: String,
    pub state: BindingState,
    pub http: reqwest::Client,
    /// The service's clock (starts at [`NOW_MS`]).
    pub clock: Arc<ManualClock>,
}

pub fn credential() -> BindingCredential {
    BindingCredential::parse(&format!("{ACCESS_KEY_ID}:{SECRET}\n")).expect("credential")
}

pub fn base_config(identity_url: &str) -> BindingConfig {
    let mut config = BindingConfig::new(identity_url, credential());
    config.outbound = OutboundPolicy {
        allow_private_addresses: true,
        ..OutboundPolicy::default()
    };
    config
}

pub fn alb_config(keys: &KeyServer) -> AlbConfig {
    let mut alb = AlbConfig::new(SIGNER);
    alb.key_url_template = keys.template();
    alb.issuer = Some(ALB_ISSUER.to_string());
    alb
}

pub fn oidc_config(idp: &Idp, cookie: Option<&str>) -> OidcConfig {
    let mut oidc = OidcConfig::new(idp.issuer.clone(), AUDIENCE);
    oidc.cookie_name = cookie.map(str::to_string);
    oidc
}

/// The peers of a binding service that takes both user sources (the ALB header first,
/// then an OIDC ID token from the bearer or the `id_token` cookie), each signing with its
/// own key, and that configuration.
pub struct BothSources {
    pub alb_key: EcKey,
    pub idp_key: EcKey,
    pub keys: KeyServer,
    pub idp: Idp,
    pub identity: IdentityStandIn,
    pub config: BindingConfig,
}

impl BothSources {
    pub async fn start(alb_kid: &str, idp_kid: &str) -> Self {
        let alb_key = EcKey::generate(alb_kid);
        let idp_key = EcKey::generate(idp_kid);
        let keys = KeyServer::start(&[&alb_key]).await;
        let idp = Idp::start(&[&idp_key]).await;
        let identity = IdentityStandIn::start().await;
        let mut config = base_config(&identity.url());
        config.users.alb = Some(alb_config(&keys));
        config.users.oidc = Some(oidc_config(&idp, Some("id_token")));
        Self {
            alb_key,
            idp_key,
            keys,
            idp,
            identity,
            config,
        }
    }
}

impl Binding {
    pub async fn start(config: BindingConfig) -> Self {
        let clock = Arc::new(ManualClock::new(NOW_MS));
        let state = BindingState::new(config, clock.clone()).expect("valid config");
        let address = serve(latchkey_binding::app(state.clone())).await;
        Self {
            base: format!("http://{address}"),
            state,
            clock,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .build()
                .unwrap(),
        }
    }

    pub fn binding_url(&self, session: &str) -> String {
        format!(
            "{}/oauth2/session-binding?session_id={}",
            self.base,
            url_encode(session)
        )
    }

    /// GET the binding URL with extra headers; returns status, headers, body.
    pub async fn get(&self, url: &str, headers: &[(&str, &str)]) -> (u16, HeaderMap, String) {
        let mut request = self.http.get(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await.expect("body");
        (status, headers, body)
    }

    pub async fn bind_with(&self, headers: &[(&str, &str)]) -> (u16, HeaderMap, String) {
        self.get(&self.binding_url(SESSION), headers).await
    }
}

pub fn url_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Standard set-up: key server with `key`, identity stand-in, ALB source only.
pub async fn alb_setup(key: &EcKey) -> (Binding, KeyServer, IdentityStandIn) {
    let keys = KeyServer::start(&[key]).await;
    let identity = IdentityStandIn::start().await;
    let mut config = base_config(&identity.url());
    config.users.alb = Some(alb_config(&keys));
    let binding = Binding::start(config).await;
    (binding, keys, identity)
}
