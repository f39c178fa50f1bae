//! The gateway's router: the login callback, logout, the ALB public key, and the proxy
//! that every other path falls through to.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::upstream::UpstreamPool;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Scheme};
use hyper::body::Incoming;
use latchkey_authn::outbound::OutboundClient;
use latchkey_core::clock::Clock;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;

use latchkey_edge::access_log::AccessLog;
use latchkey_edge::rate::RateLimiter;

use crate::config::{AccessLogTarget, GatewayConfig, RouteAuth, RouteConfig};
use crate::edge::too_many_requests;
use crate::keys::{CookieSealer, SESSION_ID_LEN, random_bytes, random_token};
use crate::login::{LOGIN_TTL_SECONDS, LoginCookies, LoginState, PendingLogin, UsedLogins};
use crate::oidc::{OidcError, RelyingParty, code_challenge, is_usable_subject, user_claims};
use crate::pages::{Page, page};
use crate::session::{Session, SessionId, SessionStore, UpstreamHeaders, safe_return_path};
use crate::snapshot::Snapshots;
use latchkey_authn::alb::AlbSigner;

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
    #[error("ALB signing key: {0}")]
    Signer(#[from] latchkey_authn::alb::SignerError),
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
    routes: Vec<Route>,
    rp: RelyingParty,
    sealer: CookieSealer,
    signer: AlbSigner,
    /// Logins in progress live in the browser, sealed in cookies ([`crate::login`]).
    login_cookies: LoginCookies,
    /// The `state`s of completed logins, until they expire (replay refusal).
    used_logins: UsedLogins,
    sessions: SessionStore,
    snapshots: Snapshots,
    clock: Arc<dyn Clock>,
    cookie_name: &'static str,
    /// The public URL's origin as browsers send it in `Origin` (`https://app.example.com`).
    public_origin: String,
    /// `X-Forwarded-Proto`.
    forwarded_proto: HeaderValue,
    edge: EdgeSettings,
}

/// A route, with its upstream's URL split up front.
#[derive(Debug)]
struct Route {
    config: RouteConfig,
    /// The upstream URL, as the access log names it.
    name: Arc<str>,
    /// Its place in the route table (the upstream pools are indexed by it).
    index: usize,
    authority: Authority,
    /// `Host` for requests that arrive without one (HTTP/1.0).
    host: HeaderValue,
    /// The upstream URL's path without its trailing `/` (often empty).
    base_path: String,
}

impl Route {
    fn new(config: RouteConfig) -> Result<Self, crate::config::ConfigError> {
        let invalid = |reason: &str| crate::config::ConfigError {
            key: "routes",
            reason: format!("{}: {reason}", config.upstream),
        };
        let uri: Uri = config.upstream.parse().map_err(|_| invalid("not a URL"))?;
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority().cloned()) else {
            return Err(invalid("not an absolute http:// URL"));
        };
        if *scheme != Scheme::HTTP {
            return Err(invalid("only http:// upstreams are supported"));
        }
        let host =
            HeaderValue::from_str(authority.as_str()).map_err(|_| invalid("not a usable host"))?;
        if uri.query().is_some() {
            return Err(invalid("an upstream URL cannot have a query"));
        }
        Ok(Self {
            name: Arc::from(config.upstream.as_str()),
            index: 0,
            authority,
            host,
            base_path: uri.path().trim_end_matches('/').to_string(),
            config,
        })
    }

    /// The upstream request target (origin form) for a request to `path_and_query`.
    fn target(&self, path_and_query: Option<&PathAndQuery>) -> Option<Uri> {
        let path_and_query = if self.base_path.is_empty() {
            path_and_query
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"))
        } else {
            let rest = path_and_query.map_or("/", PathAndQuery::as_str);
            PathAndQuery::try_from(format!("{}{rest}", self.base_path)).ok()?
        };
        Some(Uri::from(path_and_query))
    }
}

/// The routes, longest prefix first, each knowing its place.
fn route_table(configs: &[RouteConfig]) -> Result<Vec<Route>, crate::config::ConfigError> {
    let mut routes = configs
        .iter()
        .cloned()
        .map(Route::new)
        .collect::<Result<Vec<_>, _>>()?;
    routes.sort_by_key(|r| std::cmp::Reverse(r.config.prefix.len()));
    for (index, route) in routes.iter_mut().enumerate() {
        route.index = index;
    }
    Ok(routes)
}

pub use crate::upstream::UpstreamBody;

/// What one worker thread keeps to itself: the gateway, its routes for the paths the
/// gateway answers itself, and its own pool of upstream connections (so a request, its
/// upstream connection and that connection's task stay on one thread).
pub struct Worker {
    gateway: GatewayState,
    own_routes: Router,
    upstream: UpstreamPool,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("gateway", &self.gateway)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// The gateway.
    pub(crate) fn gateway(&self) -> &GatewayState {
        &self.gateway
    }

    /// The routes for the paths the gateway answers itself.
    pub(crate) fn own_routes(&self) -> &Router {
        &self.own_routes
    }
}

impl crate::server::Handler for GatewayState {
    type Worker = Worker;

    fn worker(&self) -> Worker {
        let upstream = UpstreamPool::new(
            self.inner.routes.len(),
            self.inner.config.upstream_connect_timeout,
        );
        Worker {
            gateway: self.clone(),
            own_routes: own_routes(self.clone()),
            upstream,
        }
    }

    fn call(
        worker: Arc<Worker>,
        request: hyper::Request<Incoming>,
        peer: SocketAddr,
    ) -> impl std::future::Future<Output = Response> + Send + 'static {
        crate::edge::handle(worker, request, peer)
    }
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
        let signer = AlbSigner::load_or_generate(&config.data_dir.join(crate::keys::ALB_KEY_FILE))?;
        let client = OutboundClient::new(config.outbound.clone())
            .map_err(|e| StartError::Outbound(e.to_string()))?;
        let rp = RelyingParty::new(&config, client, clock.clone());
        let routes = route_table(&config.routes)?;
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
        let forwarded_proto = HeaderValue::from_static(if config.is_tls || config.is_https() {
            "https"
        } else {
            "http"
        });
        let sessions = SessionStore::default();
        let snapshots = if config.keep_sessions {
            Snapshots::new(&config.data_dir)
        } else {
            Snapshots::off(&config.data_dir)
        };
        let seconds = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        match snapshots.load(
            &sealer,
            clock.now_secs(),
            seconds(config.session_absolute),
            seconds(config.session_idle),
        ) {
            Ok(restored) => {
                let mut count = 0;
                for (id, session) in restored {
                    // A session from before subjects were checked (issue 12, item 8) does
                    // not come back if its subject could forge a log line.
                    if is_usable_subject(&session.subject) {
                        sessions.insert(id, session);
                        count += 1;
                    }
                }
                if count > 0 {
                    tracing::info!(sessions = count, "sessions restored from the snapshot");
                }
            }
            Err(error) => {
                tracing::warn!(%error, "session snapshot ignored: starting with no sessions");
            }
        }
        let public_origin = url::Url::parse(&config.public_url)
            .map(|u| u.origin().ascii_serialization())
            .map_err(|_| crate::config::ConfigError {
                key: "public_url",
                reason: "not an absolute URL".into(),
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                routes,
                rp,
                sealer,
                signer,
                login_cookies: LoginCookies::new(cookie_name),
                used_logins: UsedLogins::default(),
                sessions,
                snapshots,
                clock,
                cookie_name,
                public_origin,
                forwarded_proto,
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

    /// The largest request body forwarded, in bytes.
    pub fn max_body_bytes(&self) -> usize {
        self.inner.config.max_body_bytes
    }

    /// Live sessions (for metrics and tests).
    pub fn session_count(&self) -> usize {
        self.inner.sessions.len()
    }

    /// Writes the session snapshot ([`crate::snapshot`]) now.
    pub async fn save_sessions(&self) -> Result<(), crate::snapshot::SnapshotError> {
        self.save_sessions_covering(0).await
    }

    /// Writes the session snapshot unless one written since covers `generation`.
    async fn save_sessions_covering(
        &self,
        generation: u64,
    ) -> Result<(), crate::snapshot::SnapshotError> {
        let state = self.clone();
        tokio::task::spawn_blocking(move || {
            let inner = &*state.inner;
            inner
                .snapshots
                .save(&inner.sessions, &inner.sealer, generation)
        })
        .await
        .unwrap_or(Err(crate::snapshot::SnapshotError::Interrupted))
    }

    /// Writes the session snapshot every `interval` (while there are sessions, or when
    /// the last one has just gone); runs until dropped.
    pub async fn save_sessions_every(self, interval: Duration) {
        let mut written = self.inner.sessions.generation();
        loop {
            tokio::time::sleep(interval).await;
            let generation = self.inner.sessions.generation();
            if self.inner.sessions.is_empty() && generation == written {
                continue;
            }
            match self.save_sessions().await {
                Ok(()) => written = generation,
                Err(error) => tracing::error!(%error, "cannot write the session snapshot"),
            }
        }
    }
}

/// The login callback path (the redirect URI is `{public_url}` followed by it).
pub const CALLBACK_PATH: &str = "/oauth2/idpresponse";
/// The logout path.
pub const LOGOUT_PATH: &str = "/oauth2/logout";
/// The prefix of the ALB-style key endpoint.
pub const ALB_KEYS_PREFIX: &str = "/.well-known/alb-keys/";

/// Whether the gateway answers `path` itself (every other path is proxied).
pub fn is_own_path(path: &str) -> bool {
    path == CALLBACK_PATH || path == LOGOUT_PATH || path.starts_with(ALB_KEYS_PREFIX)
}

/// The routes for the paths the gateway answers itself ([`is_own_path`]). The edge
/// protections and the body limit are applied before, by [`crate::edge::handle`].
fn own_routes(state: GatewayState) -> Router {
    Router::new()
        .route(CALLBACK_PATH, get(callback))
        .route(LOGOUT_PATH, get(logout_page).post(logout))
        .route("/.well-known/alb-keys/{kid}", get(alb_key))
        .fallback(|| async { json_error(StatusCode::NOT_FOUND, "not_found", "no such path") })
        .with_state(state)
}

// ---------------------------------------------------------------------------------------
// Cookies

/// Every `name=value` pair of the request's `Cookie` headers.
pub(crate) fn cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
}

/// The values of the request's cookies named `name`.
pub(crate) fn cookie_values<'a>(
    headers: &'a HeaderMap,
    name: &'a str,
) -> impl Iterator<Item = &'a str> {
    cookie_pairs(headers).filter_map(move |(k, v)| (k == name).then_some(v))
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

/// The session id sealed in the request's cookie, when one opens.
fn session_id(state: &Inner, headers: &HeaderMap) -> Option<SessionId> {
    cookie_values(headers, state.cookie_name).find_map(|value| {
        let id = state.sealer.open(state.cookie_name, value)?;
        SessionId::try_from(id.as_slice()).ok()
    })
}

// ---------------------------------------------------------------------------------------
// Sessions

/// What the proxy needs of a valid session.
struct User {
    subject: Arc<str>,
    /// `None` when the identity headers could not be built (signing failed).
    headers: Option<UpstreamHeaders>,
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
            // Boxed, as every rare path here: an `async fn` is as large as its largest
            // await, and the request's future is moved a few times on its way to hyper.
            Some(refresh_token) => Box::pin(refresh(state, &mut session, refresh_token)).await,
            None => expires_at > now,
        };
        if !refreshed {
            drop(session);
            state.sessions.delete(&id);
            return None;
        }
    }
    session.last_seen_secs = now;
    let headers = match &session.upstream_headers {
        Some(h) if h.data_expires_secs.saturating_sub(now) > ALB_TOKEN_LIFETIME_SECONDS / 2 => {
            Some(h.clone())
        }
        _ => {
            let headers = upstream_headers(state, &session, now);
            session.upstream_headers.clone_from(&headers);
            headers
        }
    };
    Some(User {
        subject: session.subject.clone(),
        headers,
    })
}

/// A freshly signed `x-amzn-oidc-data` and the other identity headers for `session`.
fn upstream_headers(state: &Inner, session: &Session, now: i64) -> Option<UpstreamHeaders> {
    let exp = now + ALB_TOKEN_LIFETIME_SECONDS;
    let token = state.signer.sign(
        &state.config.oidc_issuer,
        &state.config.oidc_client_id,
        &state.config.alb_signer,
        exp,
        session.claims.clone(),
    )?;
    let mut access_token = HeaderValue::from_str(session.access_token.expose_secret()).ok()?;
    access_token.set_sensitive(true);
    Some(UpstreamHeaders {
        data: HeaderValue::from_str(&token).ok()?,
        data_expires_secs: exp,
        identity: HeaderValue::from_str(&session.subject).ok()?,
        access_token,
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
            Ok(id) if *id.subject == *session.subject => {
                session.claims = user_claims(&id.claims);
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
    session.upstream_headers = None;
    if let Some(new_refresh) = tokens.refresh_token {
        session.refresh_token = Some(new_refresh);
    }
    session.access_expires_at = tokens.access_expires_at;
    true
}

// ---------------------------------------------------------------------------------------
// Login

/// A login for this browser: a redirect to the provider, with everything the callback
/// needs sealed in a login cookie of its own ([`crate::login`]; nothing is kept here).
async fn start_login(state: &Inner, headers: &HeaderMap, return_path: &str) -> Response {
    let (Ok(login_state), Ok(nonce), Ok(verifier)) = (
        LoginState::generate(),
        random_token::<32>(),
        random_token::<32>(),
    ) else {
        return page(Page::Unavailable);
    };
    let challenge = code_challenge(&verifier);
    let url = match state
        .rp
        .authorization_url(login_state.as_str(), &nonce, &challenge)
        .await
    {
        Ok(url) => url,
        Err(error) => {
            tracing::warn!(%error, "cannot start a login");
            return page(Page::Unavailable);
        }
    };
    let now = state.clock.now_secs();
    let login = PendingLogin {
        state: login_state,
        nonce,
        code_verifier: SecretString::from(verifier),
        return_path: safe_return_path(return_path),
        created_secs: now,
    };
    let Some((name, value)) = state.login_cookies.seal(&state.sealer, &login) else {
        return page(Page::Unavailable);
    };
    let mut response = redirect(&url);
    let set = response.headers_mut();
    for stale in state.login_cookies.to_clear(&state.sealer, headers, now) {
        set.append(header::SET_COOKIE, cookie_header(state, &stale, "", 0));
    }
    set.append(
        header::SET_COOKIE,
        cookie_header(state, &name, &value, LOGIN_TTL_SECONDS.unsigned_abs()),
    );
    response
}

fn redirect(location: &str) -> Response {
    redirect_with(StatusCode::FOUND, location)
}

fn redirect_with(status: StatusCode, location: &str) -> Response {
    let mut response = status.into_response();
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
    // Only the browser that started the login has its cookie: another browser's callback
    // (login CSRF) is refused here, and nothing of the login is used up.
    let Some(login) = query
        .state
        .as_deref()
        .and_then(LoginState::parse)
        .and_then(|s| state.login_cookies.open(&state.sealer, &headers, &s, now))
    else {
        return page(Page::InvalidLogin);
    };
    // From here on the login is spent: every answer clears its cookie.
    let (mut response, spent) = Box::pin(finish_login(state, query, login, now)).await;
    if let Some(name) = spent {
        response
            .headers_mut()
            .append(header::SET_COOKIE, cookie_header(state, &name, "", 0));
    }
    response
}

/// The callback of a login this browser started; the response, and the name of the
/// login cookie to clear.
async fn finish_login(
    state: &Inner,
    query: CallbackQuery,
    login: PendingLogin,
    now: i64,
) -> (Response, Option<String>) {
    let cookie = Some(state.login_cookies.name(&login.state));
    // A copy of the cookie replayed after the login completed.
    if state.used_logins.was_used(&login.state, now) {
        return (page(Page::InvalidLogin), cookie);
    }
    if query.error.is_some() {
        return (page(Page::LoginRefused), cookie);
    }
    let Some(code) = query.code else {
        return (page(Page::InvalidLogin), cookie);
    };
    let tokens = match state
        .rp
        .exchange_code(&code, login.code_verifier.clone())
        .await
    {
        Ok(t) => t,
        Err(error) => {
            tracing::warn!(%error, "code exchange failed");
            return (page(Page::LoginFailed), cookie);
        }
    };
    let Some(id_token) = tokens.id_token else {
        tracing::warn!("the token response has no id_token");
        return (page(Page::LoginFailed), cookie);
    };
    let id = match state
        .rp
        .verify_id_token(&id_token, Some(&login.nonce))
        .await
    {
        Ok(id) => id,
        Err(OidcError::UnusableSubject) => {
            // The subject itself stays out of the log: it is what could forge a line.
            tracing::warn!(
                "ID token refused: its subject contains control characters or line separators"
            );
            return (page(Page::UnusableSubject), cookie);
        }
        Err(error) => {
            tracing::warn!(%error, "ID token refused");
            return (page(Page::LoginFailed), cookie);
        }
    };
    state.used_logins.mark_used(&login, now);
    let Ok(raw_id) = random_bytes::<SESSION_ID_LEN>() else {
        return (page(Page::Unavailable), cookie);
    };
    let Some(session_cookie) = state.sealer.seal(state.cookie_name, &raw_id) else {
        return (page(Page::Unavailable), cookie);
    };
    tracing::info!(sub = %id.subject, "signed in");
    state.sessions.insert(
        raw_id,
        Session {
            subject: Arc::from(id.subject),
            claims: user_claims(&id.claims),
            id_token: Some(id_token),
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
            access_expires_at: tokens.access_expires_at,
            upstream_headers: None,
            created_secs: now,
            last_seen_secs: now,
        },
    );
    let mut response = redirect(&login.return_path);
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(
            state,
            &session_cookie,
            state.config.session_absolute.as_secs(),
        ),
    );
    (response, cookie)
}

/// Whether a request provably comes from a page of the gateway's own origin: its
/// `Origin` is the public URL's origin, or (a browser that sends no `Origin`, or `null`
/// under a `no-referrer` policy) its `Sec-Fetch-Site` is `same-origin`. Both headers are
/// set by the browser, never by a page. A request that proves neither is refused: a
/// cross-site form, and also a same-site one from another origin (a sibling subdomain,
/// another port), which carries the `SameSite=Lax` session cookie.
fn is_same_origin(state: &Inner, headers: &HeaderMap) -> bool {
    const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");
    let only = |name: &HeaderName| {
        let mut values = headers.get_all(name).iter();
        match (values.next(), values.next()) {
            (Some(value), None) => Some(value),
            _ => None,
        }
    };
    if headers.contains_key(header::ORIGIN) {
        match only(&header::ORIGIN).map(HeaderValue::as_bytes) {
            Some(origin) if origin == state.public_origin.as_bytes() => return true,
            // The opaque origin: the browser withheld it; Sec-Fetch-Site decides.
            Some(b"null") => {}
            _ => return false,
        }
    }
    only(&SEC_FETCH_SITE).is_some_and(|site| site.as_bytes() == b"same-origin")
}

/// The most of a sign-out `POST`'s body read (it carries nothing the gateway uses).
const LOGOUT_BODY_LIMIT: usize = 64 * 1024;

/// `GET /oauth2/logout`: a page whose button signs out (a `POST`); nothing changes, so a
/// link or a cross-site navigation here cannot end a session (issue 12, item 11).
async fn logout_page() -> Response {
    page(Page::LogoutConfirm)
}

/// `POST /oauth2/logout` from the gateway's own origin: end the session here, then at the
/// provider (RP-initiated logout) when it supports it. From anywhere else: 403.
async fn logout(State(gateway): State<GatewayState>, headers: HeaderMap, body: Body) -> Response {
    let state = &*gateway.inner;
    // The form's body means nothing, but is read (up to a small limit), so the connection
    // stays usable for the browser's next request.
    let _ = axum::body::to_bytes(body, LOGOUT_BODY_LIMIT).await;
    if !is_same_origin(state, &headers) {
        tracing::debug!("a sign-out that did not come from the gateway's origin was refused");
        return page(Page::LogoutRefused);
    }
    let mut id_token = None;
    if let Some(id) = session_id(state, &headers)
        && let Some(slot) = state.sessions.find(&id)
    {
        id_token = slot.lock().await.id_token.clone();
        let generation = state.sessions.delete(&id);
        // Answered once the snapshot on disk no longer has it (see `crate::snapshot`).
        if let Err(error) = gateway.save_sessions_covering(generation).await {
            tracing::error!(%error, "cannot write the session snapshot after a logout");
        }
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
    // 303: the browser follows with a GET.
    let mut response = redirect_with(StatusCode::SEE_OTHER, &location);
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

fn route_for<'a>(routes: &'a [Route], path: &str) -> Option<&'a Route> {
    routes.iter().find(|r| {
        let prefix = r.config.prefix.as_str();
        path == prefix
            || (path.starts_with(prefix)
                && (prefix.ends_with('/') || path.as_bytes().get(prefix.len()) == Some(&b'/')))
    })
}

pub(crate) fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
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

/// A response and what the access log says of it.
pub(crate) struct Proxied {
    pub response: Response,
    /// The signed-in user, when the request had one.
    pub user: Option<Arc<str>>,
    /// The upstream the request went to.
    pub upstream: Option<Arc<str>>,
}

impl From<Response> for Proxied {
    fn from(response: Response) -> Self {
        Self {
            response,
            user: None,
            upstream: None,
        }
    }
}

/// Every path the gateway does not answer itself: route, authenticate, forward.
pub(crate) async fn proxy(
    worker: &Worker,
    parts: Parts,
    body: UpstreamBody,
    peer: SocketAddr,
) -> Proxied {
    let state = &*worker.gateway.inner;
    let Some(route) = route_for(&state.routes, parts.uri.path()) else {
        return json_error(StatusCode::NOT_FOUND, "not_found", "no route for this path").into();
    };
    let user = match route.config.auth {
        RouteAuth::Public => None,
        RouteAuth::Login | RouteAuth::Api => match current_user(state, &parts.headers).await {
            Some(user) => Some(user),
            None => return Box::pin(unauthenticated(state, route, &parts)).await.into(),
        },
    };
    if let (Some(limiter), Some(user)) = (&state.edge.per_user, &user)
        && let Err(wait) = limiter.check(&user.subject)
    {
        return Proxied {
            response: too_many_requests(wait),
            user: Some(user.subject.clone()),
            upstream: None,
        };
    }
    let subject = user.as_ref().map(|u| u.subject.clone());
    Proxied {
        response: forward(worker, route, parts, body, peer, user).await,
        user: subject,
        upstream: Some(route.name.clone()),
    }
}

/// No valid session: browsers go to the login, API clients get 401; a dead session
/// cookie is cleared.
async fn unauthenticated(state: &Inner, route: &Route, parts: &Parts) -> Response {
    let had_cookie = cookie_values(&parts.headers, state.cookie_name)
        .next()
        .is_some();
    let mut response =
        if route.config.auth == RouteAuth::Login && wants_html(&parts.method, &parts.headers) {
            let return_path = parts.uri.path_and_query().map_or("/", PathAndQuery::as_str);
            start_login(state, &parts.headers, return_path).await
        } else {
            json_error(StatusCode::UNAUTHORIZED, "unauthorized", "sign in first")
        };
    if had_cookie {
        response
            .headers_mut()
            .append(header::SET_COOKIE, clear_cookie(state));
    }
    response
}

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_AMZN_OIDC_DATA: HeaderName = HeaderName::from_static("x-amzn-oidc-data");
const X_AMZN_OIDC_IDENTITY: HeaderName = HeaderName::from_static("x-amzn-oidc-identity");
const X_AMZN_OIDC_ACCESSTOKEN: HeaderName = HeaderName::from_static("x-amzn-oidc-accesstoken");

/// The hop-by-hop headers of RFC 9110 §7.6.1 (besides those `Connection` names).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Hop-by-hop headers (RFC 9110 §7.6.1) and those the `Connection` header names.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none, or only `Connection` (`keep-alive` from an upstream): one
    // pass notes which are present (bit i: `HOP_BY_HOP[i]`), and only those are removed.
    let mut present = 0u16;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    // Bit 0: `Connection`.
    if present & 1 != 0 {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            // Connection options, not header names.
            .filter(|token| {
                !token.eq_ignore_ascii_case("keep-alive") && !token.eq_ignore_ascii_case("close")
            })
            .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// Removes the session cookie `ours` and every login cookie from the `Cookie` headers,
/// keeping the others (in one `Cookie` header).
fn strip_own_cookies(headers: &mut HeaderMap, ours: &str, logins: &LoginCookies) {
    let is_ours = |pair: &str| {
        let name = pair.split_once('=').map_or(pair, |(k, _)| k).trim();
        name == ours || logins.is_login_cookie(name)
    };
    let values = headers.get_all(header::COOKIE);
    let mut iter = values.iter();
    // The usual case: one Cookie header holding only the session cookie.
    if let (Some(only), None) = (iter.next(), iter.next())
        && only.to_str().is_ok_and(|v| !v.contains(';') && is_ours(v))
    {
        headers.remove(header::COOKIE);
        return;
    }
    let others: Vec<&str> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && !is_ours(pair))
        .collect();
    let joined = (!others.is_empty())
        .then(|| HeaderValue::from_str(&others.join("; ")).ok())
        .flatten();
    headers.remove(header::COOKIE);
    if let Some(value) = joined {
        headers.insert(header::COOKIE, value);
    }
}

/// An IP address as a header value. The last one is kept per thread: a connection's
/// requests all come from one address, and formatting it was a measurable part of a
/// proxied request.
fn ip_header(ip: std::net::IpAddr) -> HeaderValue {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(std::net::IpAddr, HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some((cached, value)) if *cached == ip => value.clone(),
            _ => {
                let value = format_ip_header(ip);
                *last = Some((ip, value.clone()));
                value
            }
        }
    })
}

/// An IP address as a header value, without a heap-allocated intermediate string.
fn format_ip_header(ip: std::net::IpAddr) -> HeaderValue {
    use std::io::Write as _;
    // The longest IPv6 text form is 45 bytes.
    let mut buffer = [0u8; 64];
    let mut cursor = std::io::Cursor::new(&mut buffer[..]);
    let _ = write!(cursor, "{ip}");
    let end = usize::try_from(cursor.position()).unwrap_or(0);
    HeaderValue::from_bytes(&buffer[..end]).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

async fn forward(
    worker: &Worker,
    route: &Route,
    mut parts: Parts,
    body: UpstreamBody,
    peer: SocketAddr,
    user: Option<User>,
) -> Response {
    let state = &*worker.gateway.inner;
    let Some(uri) = route.target(parts.uri.path_and_query()) else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "unusable request target",
        );
    };
    // A WebSocket handshake keeps its `Upgrade` (the one hop-by-hop header that must go on).
    let websocket = websocket_upgrade(&parts.method, &parts.headers);
    let client_upgrade = websocket
        .is_some()
        .then(|| parts.extensions.remove::<hyper::upgrade::OnUpgrade>())
        .flatten();
    let headers = &mut parts.headers;
    remove_hop_by_hop(headers);
    if let Some(upgrade) = websocket {
        keep_upgrade(headers, upgrade);
    }

    // Nothing the client says about the user reaches the upstream.
    let forged: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("x-amzn-oidc-"))
        .cloned()
        .collect();
    for name in forged {
        headers.remove(name);
    }
    // The gateway's own cookies stay here.
    if headers.contains_key(header::COOKIE) {
        strip_own_cookies(headers, state.cookie_name, &state.login_cookies);
    }

    // X-Forwarded-*.
    let client_ip = peer.ip();
    // (An empty Vec does not allocate: the usual request, with none, costs nothing here.)
    let previous: Vec<&str> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let forwarded_for = if previous.is_empty() {
        Some(ip_header(client_ip))
    } else {
        HeaderValue::from_str(&format!("{}, {client_ip}", previous.join(", "))).ok()
    };
    if let Some(value) = forwarded_for {
        headers.insert(X_FORWARDED_FOR, value);
    }
    headers.insert(X_FORWARDED_PROTO, state.forwarded_proto.clone());
    match headers.get(header::HOST).cloned() {
        Some(host) => {
            headers.insert(X_FORWARDED_HOST, host);
        }
        None => {
            headers.insert(header::HOST, route.host.clone());
        }
    }

    if let Some(user) = user {
        let Some(identity) = user.headers else {
            return json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "cannot build the identity headers",
            );
        };
        headers.insert(X_AMZN_OIDC_DATA, identity.data);
        headers.insert(X_AMZN_OIDC_IDENTITY, identity.identity);
        headers.insert(X_AMZN_OIDC_ACCESSTOKEN, identity.access_token);
    }

    parts.uri = uri;
    parts.version = http::Version::HTTP_11;
    let upstream_request = http::Request::from_parts(parts, body);
    if let Some(client_upgrade) = client_upgrade {
        return Box::pin(forward_websocket(
            worker,
            route,
            upstream_request,
            client_upgrade,
        ))
        .await;
    }
    match worker
        .upstream
        .send(route.index, &route.authority, upstream_request)
        .await
    {
        Ok(response) => to_client(response),
        Err(error) if error.is_body_too_large() => json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is too large",
        ),
        Err(error) => {
            tracing::warn!(upstream = %route.name, %error, "upstream request failed");
            json_error(
                StatusCode::BAD_GATEWAY,
                "bad_gateway",
                "the upstream service is unavailable",
            )
        }
    }
}

/// The `Upgrade` value of a WebSocket handshake (RFC 6455 §4.1: `GET`, `Connection`
/// naming `upgrade`, `Upgrade: websocket`); `None` for anything else, whose `Upgrade` is
/// dropped like any hop-by-hop header (no `h2c` or other protocol switch goes through).
fn websocket_upgrade(method: &Method, headers: &HeaderMap) -> Option<HeaderValue> {
    if method != Method::GET {
        return None;
    }
    let upgrade = headers.get(header::UPGRADE)?;
    let is_websocket = upgrade.as_bytes().eq_ignore_ascii_case(b"websocket");
    let connection_says_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    (is_websocket && connection_says_upgrade).then(|| upgrade.clone())
}

/// A WebSocket handshake, on a connection of its own: the upstream's answer goes back to
/// the client, and after a `101` the two connections are joined byte for byte until either
/// side closes. (The session was checked for the handshake; like an ALB, the gateway does
/// not cut an open WebSocket when the session later ends.)
async fn forward_websocket(
    worker: &Worker,
    route: &Route,
    request: http::Request<UpstreamBody>,
    client_upgrade: hyper::upgrade::OnUpgrade,
) -> Response {
    let mut response = match worker.upstream.upgrade(&route.authority, request).await {
        Ok(response) => response,
        Err(error) => {
            tracing::warn!(upstream = %route.name, %error, "upstream WebSocket handshake failed");
            return json_error(
                StatusCode::BAD_GATEWAY,
                "bad_gateway",
                "the upstream service is unavailable",
            );
        }
    };
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        // Refused upstream: an ordinary answer (its connection is not reused).
        return to_client(response);
    }
    let upstream_upgrade = hyper::upgrade::on(&mut response);
    let upstream = route.name.clone();
    tokio::spawn(async move {
        let (client, upstream_io) = match tokio::join!(client_upgrade, upstream_upgrade) {
            (Ok(client), Ok(upstream_io)) => (client, upstream_io),
            (client, upstream_io) => {
                tracing::debug!(
                    client = client.is_ok(),
                    upstream = upstream_io.is_ok(),
                    "a WebSocket upgrade did not complete"
                );
                return;
            }
        };
        let mut client = hyper_util::rt::TokioIo::new(client);
        let mut upstream_io = hyper_util::rt::TokioIo::new(upstream_io);
        if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut upstream_io).await {
            tracing::debug!(%upstream, %error, "WebSocket connection ended with an error");
        }
    });
    // Keep the handshake's `Upgrade` and `Connection: upgrade`; drop other hop-by-hop headers.
    let upgrade = response.headers().get(header::UPGRADE).cloned();
    let mut response = to_client(response.map(|_| Body::empty()));
    if let Some(upgrade) = upgrade {
        keep_upgrade(response.headers_mut(), upgrade);
    }
    response
}

/// An upstream response as it goes to the client: without hop-by-hop headers, and without
/// the `Content-Length` of a chunked response (meaningless, RFC 9112 §6.3, and it would
/// frame the body wrongly once `Transfer-Encoding` is gone).
fn to_client<B>(response: http::Response<B>) -> Response
where
    B: hyper::body::Body<Data = hyper::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let (mut parts, body) = response.into_parts();
    if parts.headers.contains_key(header::TRANSFER_ENCODING) {
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    remove_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, Body::new(body))
}

/// Puts back the two hop-by-hop headers a WebSocket handshake needs.
fn keep_upgrade(headers: &mut HeaderMap, upgrade: HeaderValue) {
    headers.insert(header::UPGRADE, upgrade);
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use latchkey_core::clock::ManualClock;

    fn state(clock: ManualClock) -> GatewayState {
        let dir = crate::keys::test_dir("unit");
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
            outbound: latchkey_authn::outbound::OutboundPolicy::default(),
            upstream_connect_timeout: Duration::from_secs(1),
            is_tls: false,
            rate_limit_per_ip: None,
            rate_limit_per_user: None,
            max_body_bytes: 1024,
            response_timeout: Duration::from_secs(5),
            access_log: AccessLogTarget::Off,
            keep_sessions: true,
        };
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
}
