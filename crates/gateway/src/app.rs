//! The gateway's router: the login callback, logout, the ALB public key, and the proxy
//! that every other path falls through to.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use latchkey_core::clock::Clock;
use latchkey_identity::outbound::OutboundClient;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;

use latchkey_edge::access_log::AccessLog;
use latchkey_edge::rate::RateLimiter;

use crate::config::{AccessLogTarget, GatewayConfig, RouteAuth, RouteConfig};
use crate::edge::{LoggedUpstream, LoggedUser, too_many_requests};
use crate::keys::{AlbSigner, CookieSealer, SESSION_ID_LEN, random_bytes, random_token};
use crate::oidc::{RelyingParty, code_challenge, user_claims};
use crate::pages::{Page, page};
use crate::session::{LoginStore, PendingLogin, Session, SessionStore, safe_return_path};

/// Refresh the provider's access token when it expires within this many seconds.
pub const REFRESH_BEFORE_EXPIRY_SECONDS: i64 = 60;
/// Lifetime of one `x-amzn-oidc-data` token, in seconds.
pub const ALB_TOKEN_LIFETIME_SECONDS: i64 = 120;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("key: {0}")]
    Key(#[from] crate::keys::KeyError),
    #[error("outbound client: {0}")]
    Outbound(String),
    #[error("access log: {0}")]
    AccessLog(std::io::Error),
}

/// Everything the handlers share. Cheap to clone.
#[derive(Debug, Clone)]
pub struct GatewayState {
    inner: Arc<Inner>,
}

struct Inner {
    config: GatewayConfig,
    /// Longest prefix first.
    routes: Vec<RouteConfig>,
    rp: RelyingParty,
    sealer: CookieSealer,
    signer: AlbSigner,
    logins: LoginStore,
    sessions: SessionStore,
    clock: Arc<dyn Clock>,
    upstream: Client<HttpConnector, Body>,
    cookie_name: &'static str,
    edge: EdgeSettings,
}

/// The `latchkey-edge` pieces in use.
#[derive(Debug)]
pub struct EdgeSettings {
    pub per_ip: Option<RateLimiter>,
    pub per_user: Option<RateLimiter>,
    pub hsts: bool,
    pub response_timeout: Duration,
    pub access_log: AccessLog,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayState")
            .field("public_url", &self.config.public_url)
            .field("routes", &self.routes)
            .field("kid", &self.signer.kid())
            .finish_non_exhaustive()
    }
}

impl GatewayState {
    /// Validate the config, load or create the keys, build the clients.
    pub fn new(mut config: GatewayConfig, clock: Arc<dyn Clock>) -> Result<Self, StartError> {
        config.public_url = config.public_url.trim_end_matches('/').to_string();
        config.validate()?;
        let sealer = CookieSealer::open_or_create(&config.data_dir)?;
        let signer = AlbSigner::load_or_generate(&config.data_dir)?;
        let client = OutboundClient::new(config.outbound.clone())
            .map_err(|e| StartError::Outbound(e.to_string()))?;
        let rp = RelyingParty::new(&config, client, clock.clone());
        let mut routes = config.routes.clone();
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.upstream_connect_timeout));
        connector.set_nodelay(true);
        let upstream = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let access_log = match &config.access_log {
            AccessLogTarget::Off => AccessLog::disabled(),
            AccessLogTarget::Stdout => AccessLog::stdout(),
            AccessLogTarget::File(path) => AccessLog::file(path).map_err(StartError::AccessLog)?,
        };
        let limiter = |rate: Option<u32>| rate.map(|r| RateLimiter::new(r, r.saturating_mul(2)));
        let edge = EdgeSettings {
            per_ip: limiter(config.rate_limit_per_ip),
            per_user: limiter(config.rate_limit_per_user),
            hsts: config.is_tls,
            response_timeout: config.response_timeout,
            access_log,
        };
        let cookie_name = if config.is_https() {
            "__Host-latchkey-gw"
        } else {
            "latchkey-gw"
        };
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                routes,
                rp,
                sealer,
                signer,
                logins: LoginStore::default(),
                sessions: SessionStore::default(),
                clock,
                upstream,
                cookie_name,
                edge,
            }),
        })
    }

    /// The key id of the ALB signing key.
    pub fn alb_kid(&self) -> &str {
        self.inner.signer.kid()
    }

    /// The session cookie's name.
    pub fn cookie_name(&self) -> &'static str {
        self.inner.cookie_name
    }

    /// The edge protections.
    pub fn edge(&self) -> &EdgeSettings {
        &self.inner.edge
    }

    /// Live sessions (for metrics and tests).
    pub fn session_count(&self) -> usize {
        self.inner.sessions.len()
    }
}

/// The gateway's router. Serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()` so `X-Forwarded-For` gets the
/// client address.
pub fn app(state: GatewayState) -> Router {
    let max_body = state.inner.config.max_body_bytes;
    Router::new()
        .route("/oauth2/idpresponse", get(callback))
        .route("/oauth2/logout", get(logout))
        .route("/.well-known/alb-keys/{kid}", get(alb_key))
        .fallback(proxy)
        .layer(tower_http::limit::RequestBodyLimitLayer::new(max_body))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::edge::protect,
        ))
        .with_state(state)
}

// ---------------------------------------------------------------------------------------
// Cookies

fn cookie_values<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

fn set_cookie(state: &Inner, value: &str, max_age: u64) -> HeaderValue {
    cookie_header(state, state.cookie_name, value, max_age)
}

fn cookie_header(state: &Inner, name: &str, value: &str, max_age: u64) -> HeaderValue {
    let secure = if state.config.is_https() {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{name}={value}; Max-Age={max_age}; Path=/; HttpOnly; SameSite=Lax{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("latchkey-gw=; Max-Age=0; Path=/"))
}

fn clear_cookie(state: &Inner) -> HeaderValue {
    set_cookie(state, "", 0)
}

/// The session id (hex) sealed in the request's cookie, when one opens.
fn session_id(state: &Inner, headers: &HeaderMap) -> Option<String> {
    cookie_values(headers, state.cookie_name).find_map(|value| {
        let id = state.sealer.open(state.cookie_name, value)?;
        (id.len() == SESSION_ID_LEN).then(|| id.iter().map(|b| format!("{b:02x}")).collect())
    })
}

// ---------------------------------------------------------------------------------------
// Sessions

/// What the proxy needs of a valid session.
struct User {
    subject: String,
    /// The signed `x-amzn-oidc-data` token (`None` if signing failed).
    alb_token: Option<String>,
    access_token: SecretString,
}

/// The request's session, after timeouts and (when due) a token refresh. An expired or
/// unrefreshable session is deleted.
async fn current_user(state: &Inner, headers: &HeaderMap) -> Option<User> {
    let id = session_id(state, headers)?;
    let slot = state.sessions.find(&id)?;
    let mut session = slot.lock().await;
    let now = state.clock.now_secs();
    let absolute = i64::try_from(state.config.session_absolute.as_secs()).unwrap_or(i64::MAX);
    let idle = i64::try_from(state.config.session_idle.as_secs()).unwrap_or(i64::MAX);
    // Whole seconds: `>` so that a session always lasts at least the configured time (with
    // `>=` a 2 s idle timeout could end a session after 1.01 s of real idleness).
    if now.saturating_sub(session.created_secs) > absolute
        || now.saturating_sub(session.last_seen_secs) > idle
    {
        drop(session);
        state.sessions.delete(&id);
        return None;
    }
    if let Some(expires_at) = session.access_expires_at
        && expires_at.saturating_sub(now) <= REFRESH_BEFORE_EXPIRY_SECONDS
    {
        let refresh_token = session.refresh_token.clone();
        let refreshed = match refresh_token {
            Some(refresh_token) => refresh(state, &mut session, refresh_token).await,
            None => expires_at > now,
        };
        if !refreshed {
            drop(session);
            state.sessions.delete(&id);
            return None;
        }
    }
    session.last_seen_secs = now;
    let alb_token = match &session.alb_token {
        Some((token, exp)) if exp.saturating_sub(now) > ALB_TOKEN_LIFETIME_SECONDS / 2 => {
            Some(token.clone())
        }
        _ => {
            let exp = now + ALB_TOKEN_LIFETIME_SECONDS;
            let token = state.signer.sign(
                &state.config.oidc_issuer,
                &state.config.oidc_client_id,
                &state.config.alb_signer,
                exp,
                session.claims.clone(),
            );
            session.alb_token = token.clone().map(|t| (t, exp));
            token
        }
    };
    Some(User {
        subject: session.subject.clone(),
        alb_token,
        access_token: session.access_token.clone(),
    })
}

/// The refresh-token grant for `session`; `false` when the session must end.
async fn refresh(state: &Inner, session: &mut Session, refresh_token: SecretString) -> bool {
    let tokens = match state.rp.refresh(&refresh_token).await {
        Ok(t) => t,
        Err(error) => {
            tracing::info!(sub = %session.subject, %error, "token refresh failed; the session ends");
            return false;
        }
    };
    if let Some(id_token) = &tokens.id_token {
        match state.rp.verify_id_token(id_token, None).await {
            Ok(id) if id.subject == session.subject => {
                session.claims = user_claims(&id.claims);
                session.alb_token = None;
                session.id_token = Some(id_token.clone());
            }
            Ok(_) => {
                tracing::warn!("a refreshed ID token names another subject; the session ends");
                return false;
            }
            Err(error) => {
                tracing::warn!(%error, "a refreshed ID token was refused; the session ends");
                return false;
            }
        }
    }
    session.access_token = tokens.access_token;
    if let Some(new_refresh) = tokens.refresh_token {
        session.refresh_token = Some(new_refresh);
    }
    session.access_expires_at = tokens.access_expires_at;
    true
}

// ---------------------------------------------------------------------------------------
// Login

async fn start_login(state: &Inner, return_path: &str) -> Response {
    let (Ok(login_state), Ok(nonce), Ok(verifier)) = (
        random_token::<32>(),
        random_token::<32>(),
        random_token::<32>(),
    ) else {
        return page(Page::Unavailable);
    };
    let challenge = code_challenge(&verifier);
    let url = match state
        .rp
        .authorization_url(&login_state, &nonce, &challenge)
        .await
    {
        Ok(url) => url,
        Err(error) => {
            tracing::warn!(%error, "cannot start a login");
            return page(Page::Unavailable);
        }
    };
    let Some(binding) = state
        .sealer
        .seal(&login_cookie_name(state), login_state.as_bytes())
    else {
        return page(Page::Unavailable);
    };
    let now = state.clock.now_secs();
    let stored = state.logins.insert(
        login_state,
        PendingLogin {
            nonce,
            code_verifier: SecretString::from(verifier),
            return_path: safe_return_path(return_path),
            created_secs: now,
        },
        now,
    );
    if !stored {
        return page(Page::Unavailable);
    }
    let mut response = redirect(&url);
    response.headers_mut().append(
        header::SET_COOKIE,
        cookie_header(
            state,
            &login_cookie_name(state),
            &binding,
            crate::session::LOGIN_TTL_SECONDS.unsigned_abs(),
        ),
    );
    response
}

/// The cookie that binds a pending login to the browser that started it (login CSRF: a
/// callback URL sent to another browser is refused there).
fn login_cookie_name(state: &Inner) -> String {
    format!("{}-login", state.cookie_name)
}

/// Whether the request carries the login cookie sealed for `login_state`.
fn is_bound_to_browser(state: &Inner, headers: &HeaderMap, login_state: &str) -> bool {
    let name = login_cookie_name(state);
    cookie_values(headers, &name).any(|value| {
        state
            .sealer
            .open(&name, value)
            .is_some_and(|sealed| sealed == login_state.as_bytes())
    })
}

fn redirect(location: &str) -> Response {
    let mut response = StatusCode::FOUND.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[derive(Deserialize)]
struct CallbackQuery {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
}

/// `GET /oauth2/idpresponse`: the provider's redirect back.
async fn callback(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    query: Result<Query<CallbackQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let state = &*state.inner;
    let Ok(Query(query)) = query else {
        return page(Page::InvalidLogin);
    };
    let now = state.clock.now_secs();
    // Another browser's callback is refused without consuming the login.
    let Some(login) = query
        .state
        .as_deref()
        .filter(|s| is_bound_to_browser(state, &headers, s))
        .and_then(|s| state.logins.take(s, now))
    else {
        return page(Page::InvalidLogin);
    };
    if query.error.is_some() {
        return page(Page::LoginRefused);
    }
    let Some(code) = query.code else {
        return page(Page::InvalidLogin);
    };
    let tokens = match state.rp.exchange_code(&code, login.code_verifier).await {
        Ok(t) => t,
        Err(error) => {
            tracing::warn!(%error, "code exchange failed");
            return page(Page::LoginFailed);
        }
    };
    let Some(id_token) = tokens.id_token else {
        tracing::warn!("the token response has no id_token");
        return page(Page::LoginFailed);
    };
    let id = match state
        .rp
        .verify_id_token(&id_token, Some(&login.nonce))
        .await
    {
        Ok(id) => id,
        Err(error) => {
            tracing::warn!(%error, "ID token refused");
            return page(Page::LoginFailed);
        }
    };
    let Ok(raw_id) = random_bytes::<SESSION_ID_LEN>() else {
        return page(Page::Unavailable);
    };
    let Some(cookie) = state.sealer.seal(state.cookie_name, &raw_id) else {
        return page(Page::Unavailable);
    };
    let session_id: String = raw_id.iter().map(|b| format!("{b:02x}")).collect();
    tracing::info!(sub = %id.subject, "signed in");
    state.sessions.insert(
        session_id,
        Session {
            subject: id.subject,
            claims: user_claims(&id.claims),
            id_token: Some(id_token),
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
            access_expires_at: tokens.access_expires_at,
            alb_token: None,
            created_secs: now,
            last_seen_secs: now,
        },
    );
    let mut response = redirect(&login.return_path);
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(state, &cookie, state.config.session_absolute.as_secs()),
    );
    response.headers_mut().append(
        header::SET_COOKIE,
        cookie_header(state, &login_cookie_name(state), "", 0),
    );
    response
}

/// `GET /oauth2/logout`: end the session here, then at the provider (RP-initiated logout)
/// when it supports it.
async fn logout(State(state): State<GatewayState>, headers: HeaderMap) -> Response {
    let state = &*state.inner;
    let mut id_token = None;
    if let Some(id) = session_id(state, &headers) {
        if let Some(slot) = state.sessions.find(&id) {
            id_token = slot.lock().await.id_token.clone();
        }
        state.sessions.delete(&id);
    }
    let location = match state.rp.metadata().await {
        Ok(metadata) => match metadata
            .end_session_endpoint
            .as_deref()
            .and_then(|e| url::Url::parse(e).ok())
        {
            Some(mut url) => {
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(t) = &id_token {
                        q.append_pair("id_token_hint", t.expose_secret());
                    }
                    q.append_pair(
                        "post_logout_redirect_uri",
                        &format!("{}/", state.config.public_url),
                    );
                    q.append_pair("client_id", &state.config.oidc_client_id);
                }
                String::from(url)
            }
            None => "/".to_string(),
        },
        Err(_) => "/".to_string(),
    };
    let mut response = redirect(&location);
    response
        .headers_mut()
        .insert(header::SET_COOKIE, clear_cookie(state));
    response
}

/// `GET /.well-known/alb-keys/{kid}`: the signing key as PEM, as the ALB key endpoint serves it.
async fn alb_key(State(state): State<GatewayState>, Path(kid): Path<String>) -> Response {
    let signer = &state.inner.signer;
    if kid != signer.kid() {
        return (StatusCode::NOT_FOUND, "unknown key id\n").into_response();
    }
    (
        [
            (header::CONTENT_TYPE, "application/x-pem-file"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        signer.public_pem().to_string(),
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------
// Proxy

fn route_for<'a>(routes: &'a [RouteConfig], path: &str) -> Option<&'a RouteConfig> {
    routes.iter().find(|r| {
        let prefix = r.prefix.as_str();
        path == prefix
            || (path.starts_with(prefix)
                && (prefix.ends_with('/') || path.as_bytes().get(prefix.len()) == Some(&b'/')))
    })
}

fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(json!({"error": code, "message": message})),
    )
        .into_response()
}

fn wants_html(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::GET
        && headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.to_ascii_lowercase().contains("text/html"))
}

/// Every other path: route, authenticate, forward.
async fn proxy(State(gateway): State<GatewayState>, request: Request) -> Response {
    let state = &*gateway.inner;
    let path = request.uri().path().to_string();
    let Some(route) = route_for(&state.routes, &path) else {
        return json_error(StatusCode::NOT_FOUND, "not_found", "no route for this path");
    };
    let user = match route.auth {
        RouteAuth::Public => None,
        RouteAuth::Login | RouteAuth::Api => match current_user(state, request.headers()).await {
            Some(user) => Some(user),
            None => {
                let had_cookie = cookie_values(request.headers(), state.cookie_name)
                    .next()
                    .is_some();
                let mut response = if route.auth == RouteAuth::Login
                    && wants_html(request.method(), request.headers())
                {
                    let return_path = request
                        .uri()
                        .path_and_query()
                        .map(|p| p.as_str().to_string())
                        .unwrap_or_else(|| "/".into());
                    start_login(state, &return_path).await
                } else {
                    json_error(StatusCode::UNAUTHORIZED, "unauthorized", "sign in first")
                };
                if had_cookie {
                    response
                        .headers_mut()
                        .append(header::SET_COOKIE, clear_cookie(state));
                }
                return response;
            }
        },
    };
    if let (Some(limiter), Some(user)) = (&state.edge.per_user, &user)
        && let Err(wait) = limiter.check(&user.subject)
    {
        let mut response = too_many_requests(wait);
        response
            .extensions_mut()
            .insert(LoggedUser(user.subject.clone()));
        return response;
    }
    let subject = user.as_ref().map(|u| u.subject.clone());
    let mut response = forward(state, route, request, user).await;
    if let Some(subject) = subject {
        response.extensions_mut().insert(LoggedUser(subject));
    }
    response
        .extensions_mut()
        .insert(LoggedUpstream(route.upstream.clone()));
    response
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) and those the `Connection` header names.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
    }
}

async fn forward(
    state: &Inner,
    route: &RouteConfig,
    request: Request,
    user: Option<User>,
) -> Response {
    let client_ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let (mut parts, body) = request.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let target = format!("{}{}", route.upstream.trim_end_matches('/'), path_and_query);
    let Ok(uri) = target.parse::<Uri>() else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "unusable request target",
        );
    };
    let headers = &mut parts.headers;
    remove_hop_by_hop(headers);

    // Nothing the client says about the user reaches the upstream.
    let forged: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("x-amzn-oidc-"))
        .cloned()
        .collect();
    for name in forged {
        headers.remove(name);
    }
    // The gateway's own cookie stays here.
    let other_cookies: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair: &&str| {
            let name = pair.split_once('=').map_or(*pair, |(k, _)| k);
            !pair.is_empty() && name != state.cookie_name && name != login_cookie_name(state)
        })
        .map(str::to_string)
        .collect();
    headers.remove(header::COOKIE);
    if !other_cookies.is_empty()
        && let Ok(v) = HeaderValue::from_str(&other_cookies.join("; "))
    {
        headers.insert(header::COOKIE, v);
    }

    // X-Forwarded-*.
    if let Some(ip) = client_ip {
        let previous: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let value = if previous.is_empty() {
            ip
        } else {
            format!("{}, {ip}", previous.join(", "))
        };
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert("x-forwarded-for", v);
        }
    }
    let proto = if state.config.is_tls || state.config.is_https() {
        "https"
    } else {
        "http"
    };
    headers.insert("x-forwarded-proto", HeaderValue::from_static(proto));
    if let Some(host) = headers.get(header::HOST).cloned() {
        headers.insert("x-forwarded-host", host);
    }

    if let Some(user) = &user {
        let token = user.alb_token.clone();
        let values = (
            token.and_then(|t| HeaderValue::from_str(&t).ok()),
            HeaderValue::from_str(&user.subject).ok(),
            HeaderValue::from_str(user.access_token.expose_secret()).ok(),
        );
        let (Some(data), Some(identity), Some(mut access)) = values else {
            return json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "cannot build the identity headers",
            );
        };
        access.set_sensitive(true);
        headers.insert("x-amzn-oidc-data", data);
        headers.insert("x-amzn-oidc-identity", identity);
        headers.insert("x-amzn-oidc-accesstoken", access);
    }

    parts.uri = uri;
    parts.version = http::Version::HTTP_11;
    let upstream_request = http::Request::from_parts(parts, body);
    match state.upstream.request(upstream_request).await {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            remove_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, Body::new(body))
        }
        Err(error) => {
            tracing::warn!(upstream = %route.upstream, %error, "upstream request failed");
            json_error(
                StatusCode::BAD_GATEWAY,
                "bad_gateway",
                "the upstream service is unavailable",
            )
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use latchkey_core::clock::ManualClock;

    fn state(clock: ManualClock) -> GatewayState {
        let dir = std::env::temp_dir().join(format!(
            "latchkey-gateway-unit-{}-{}",
            std::process::id(),
            random_token::<8>().unwrap()
        ));
        let config = GatewayConfig {
            public_url: "https://app.example.com/".into(),
            oidc_issuer: "https://login.example.com".into(),
            oidc_client_id: "app".into(),
            oidc_client_secret: SecretString::from("s"),
            oidc_scopes: crate::config::DEFAULT_SCOPES.into(),
            routes: vec![RouteConfig::parse("/=http://127.0.0.1:9;login").unwrap()],
            alb_signer: crate::config::DEFAULT_ALB_SIGNER.into(),
            session_absolute: Duration::from_secs(100),
            session_idle: Duration::from_secs(30),
            data_dir: dir,
            outbound: latchkey_identity::outbound::OutboundPolicy::default(),
            upstream_connect_timeout: Duration::from_secs(1),
            is_tls: false,
            rate_limit_per_ip: None,
            rate_limit_per_user: None,
            max_body_bytes: 1024,
            response_timeout: Duration::from_secs(5),
            access_log: AccessLogTarget::Off,
        };
        GatewayState::new(config, Arc::new(clock)).unwrap()
    }

    /// A signed-in session for `sub`; the request headers that carry its cookie.
    fn sign_in(gateway: &GatewayState, sub: &str) -> HeaderMap {
        let inner = &*gateway.inner;
        let raw = random_bytes::<SESSION_ID_LEN>().unwrap();
        let now = inner.clock.now_secs();
        inner.sessions.insert(
            raw.iter().map(|b| format!("{b:02x}")).collect(),
            Session {
                subject: sub.into(),
                claims: serde_json::Map::new(),
                id_token: None,
                access_token: SecretString::from("at"),
                refresh_token: None,
                access_expires_at: None,
                alb_token: None,
                created_secs: now,
                last_seen_secs: now,
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
                Some("alice".into())
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
    fn longest_prefix_wins() {
        let mut routes = vec![
            RouteConfig::parse("/=http://a;login").unwrap_or_else(|e| panic!("{e}")),
            RouteConfig::parse("/api=http://b;api").unwrap_or_else(|e| panic!("{e}")),
        ];
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        let up = |p: &str| route_for(&routes, p).map(|r| r.upstream.clone());
        assert_eq!(up("/api").as_deref(), Some("http://b"));
        assert_eq!(up("/api/x").as_deref(), Some("http://b"));
        assert_eq!(up("/apix").as_deref(), Some("http://a"));
        assert_eq!(up("/").as_deref(), Some("http://a"));
    }
}
