//! The gateway's router: the login callback, logout, the ALB public key, and the proxy
//! that every other path falls through to.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::response::Response;
use axum::routing::get;
use http::uri::{Authority, PathAndQuery, Scheme};
use hyper::body::Incoming;
use latchkey_authn::alb::AlbSigner;
use latchkey_authn::outbound::OutboundClient;
use latchkey_core::clock::Clock;
use latchkey_edge::access_log::AccessLog;
use latchkey_edge::rate::RateLimiter;

use crate::config::{AccessLogTarget, GatewayConfig, PerSecond, RouteConfig};
use crate::keys::CookieSealer;
use crate::login::{LoginCookies, UsedLogins};
use crate::oidc::{RelyingParty, is_usable_subject};
use crate::session::SessionStore;
use crate::shared::SharedSessions;
use crate::snapshot::Snapshots;
use crate::upstream::UpstreamPool;

mod cookies;
mod login;
mod proxy;
mod user;

pub(crate) use cookies::{cookie_pairs, cookie_values};
use login::{alb_key, callback, logout, logout_page};
pub(crate) use proxy::{Proxied, json_error, proxy};

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
    /// This process's sessions; with `session_store = "database"`, copies of the rows.
    sessions: SessionStore,
    /// With `session_store = "database"`: the rows every replica shares.
    shared: Option<SharedSessions>,
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
            Duration::from_millis(self.inner.config.keys.upstream_connect_timeout_ms),
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
    /// Validate the config, load or create the keys, build the clients; sessions in this
    /// process.
    pub fn new(config: GatewayConfig, clock: Arc<dyn Clock>) -> Result<Self, StartError> {
        Self::with_sessions(config, clock, None)
    }

    /// [`Self::new`], with `shared`: sessions in the database, shared by every replica.
    pub fn with_sessions(
        mut config: GatewayConfig,
        clock: Arc<dyn Clock>,
        shared: Option<SharedSessions>,
    ) -> Result<Self, StartError> {
        config.public_url = config.public_url.trim_end_matches('/').to_string();
        config.validate()?;
        let sealer = CookieSealer::open_or_create(&config.data_dir)?;
        let signer = crate::keys::alb_signer(&config.data_dir)?;
        let client = OutboundClient::new(config.outbound())
            .map_err(|e| StartError::Outbound(e.to_string()))?;
        let rp = RelyingParty::new(&config, client, clock.clone());
        let routes = route_table(&config.keys.routes)?;
        let access_log = match &config.keys.access_log {
            AccessLogTarget::Off => AccessLog::disabled(),
            AccessLogTarget::Stdout => AccessLog::stdout(),
            AccessLogTarget::File(path) => AccessLog::file(path).map_err(StartError::AccessLog)?,
        };
        let limiter = |rate: Option<PerSecond>| {
            rate.map(|PerSecond(r)| RateLimiter::new(r, r.saturating_mul(2)))
        };
        let edge = EdgeSettings {
            per_ip: limiter(config.keys.rate_limit_per_ip),
            per_user: limiter(config.keys.rate_limit_per_user),
            hsts: config.is_tls(),
            response_timeout: Duration::from_secs(config.keys.request_timeout_seconds),
            access_log,
        };
        let cookie_name = if config.is_https() {
            "__Host-latchkey-gw"
        } else {
            "latchkey-gw"
        };
        let forwarded_proto = HeaderValue::from_static(if config.is_tls() || config.is_https() {
            "https"
        } else {
            "http"
        });
        let sessions = SessionStore::default();
        // Shared sessions need no snapshot: the rows outlive every replica.
        let snapshots = if config.keys.keep_sessions && shared.is_none() {
            Snapshots::new(&config.data_dir)
        } else {
            Snapshots::off(&config.data_dir)
        };
        let seconds = |s: u64| i64::try_from(s).unwrap_or(i64::MAX);
        match snapshots.load(
            &sealer,
            clock.now_secs(),
            seconds(config.keys.session_absolute_seconds),
            seconds(config.keys.session_idle_seconds),
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
                shared,
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
        self.inner.config.keys.max_body_bytes
    }

    /// The shared sessions, when they are in the database.
    pub fn shared_sessions(&self) -> Option<&SharedSessions> {
        self.inner.shared.as_ref()
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
/// The gateway's own liveness check (no login, no upstream): `200 ok`. Under `/oauth2/`,
/// the gateway's own namespace, so it never hides an upstream's `/ping`.
pub const HEALTH_PATH: &str = "/oauth2/health";
/// The gateway's readiness check: 200 once the identity provider's discovery document is
/// loaded (fetched within two seconds when it is not yet), else 503 with the reason.
pub const READY_PATH: &str = "/oauth2/ready";

/// Whether the gateway answers `path` itself (every other path is proxied).
pub fn is_own_path(path: &str) -> bool {
    path == CALLBACK_PATH
        || path == LOGOUT_PATH
        || path == HEALTH_PATH
        || path == READY_PATH
        || path.starts_with(ALB_KEYS_PREFIX)
}

/// The metrics operation of a request path: the gateway's own paths by their route,
/// everything else `proxy` (never the path itself).
pub fn operation_of(path: &str) -> &'static str {
    match path {
        CALLBACK_PATH => CALLBACK_PATH,
        LOGOUT_PATH => LOGOUT_PATH,
        HEALTH_PATH => HEALTH_PATH,
        READY_PATH => READY_PATH,
        _ if path.starts_with(ALB_KEYS_PREFIX) => "/.well-known/alb-keys/{kid}",
        _ => "proxy",
    }
}

/// `GET /oauth2/ready`.
async fn ready(State(state): State<GatewayState>) -> Response {
    let oidc = latchkey_telemetry::within(Duration::from_secs(2), async {
        state
            .inner
            .rp
            .metadata()
            .await
            .map(|_| ())
            .map_err(|error| {
                tracing::warn!(%error, "readiness: identity provider discovery unavailable");
                "identity provider discovery unavailable"
            })
    })
    .await;
    let Some(shared) = &state.inner.shared else {
        return latchkey_telemetry::ready(&[("oidc_discovery", oidc)]);
    };
    let database = latchkey_telemetry::within(Duration::from_secs(2), async {
        shared.ping().await.map_err(|error| {
            tracing::warn!(%error, "readiness: the session database does not answer");
            "session database unavailable"
        })
    })
    .await;
    latchkey_telemetry::ready(&[("oidc_discovery", oidc), ("session_database", database)])
}

/// The routes of the optional metrics listener (`metrics_listen`): `GET /metrics`, with
/// the number of sessions this process holds read at each scrape.
pub fn metrics_routes(state: GatewayState) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let state = state.clone();
            async move {
                latchkey_telemetry::gateway_sessions(state.inner.sessions.len());
                latchkey_telemetry::metrics().await
            }
        }),
    )
}

/// The routes for the paths the gateway answers itself ([`is_own_path`]). The edge
/// protections and the body limit are applied before, by [`crate::edge::handle`].
fn own_routes(state: GatewayState) -> Router {
    Router::new()
        .route(CALLBACK_PATH, get(callback))
        .route(LOGOUT_PATH, get(logout_page).post(logout))
        .route("/.well-known/alb-keys/{kid}", get(alb_key))
        .route(READY_PATH, get(ready))
        .route(
            HEALTH_PATH,
            get(|| async {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; charset=utf-8",
                    )],
                    "ok",
                )
            }),
        )
        .fallback(|| async { json_error(StatusCode::NOT_FOUND, "not_found", "no such path") })
        .with_state(state)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
