//! The gateway's keys (file `[gateway]`, `LATCHKEY_GATEWAY_*`, flags of `serve gateway`),
//! declared once: its settings, validated at start-up with the failing key named.

use std::net::SocketAddr;
use std::path::PathBuf;

use latchkey_authn::inbound::InboundIssuerConfig;
use latchkey_authn::outbound::OutboundPolicy;
pub use latchkey_config::ConfigError;
use latchkey_config::{Layers, ListItem, Value, ensure, keys, positive, within};
use secrecy::SecretString;
use serde::Deserialize;

/// The ARN written as `signer` into every `x-amzn-oidc-data` header unless configured.
pub const DEFAULT_ALB_SIGNER: &str = "arn:aws:elasticloadbalancing:us-east-1:000000000000:loadbalancer/app/latchkey-gateway/0000000000000000";
/// Default scopes asked of the identity provider.
pub const DEFAULT_SCOPES: &str = "openid email profile";
const URL: &str = "not an absolute URL";
const NEEDS_TLS: &str = "needs TLS: set gateway.tls_cert and gateway.tls_key, or remove it";
const ORIGIN: &str =
    "must be an http(s) origin such as https://app.example.com (no path, query or fragment)";

/// Where access-log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    Off,
    Stdout,
    File(PathBuf),
}

impl Value for AccessLogTarget {
    /// `off`, `stdout` or a file path.
    fn parse(text: &[String]) -> Result<Self, String> {
        Ok(match text.join(",").trim() {
            "off" | "none" | "" => Self::Off,
            "stdout" | "-" => Self::Stdout,
            path => Self::File(PathBuf::from(path)),
        })
    }
}

/// Where sessions live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStoreKind {
    /// In this process (kept across restarts by the sealed snapshot, `keep_sessions`).
    Memory,
    /// In the database (`database_url`), shared by every gateway replica.
    Database,
}

impl Value for SessionStoreKind {
    fn parse(text: &[String]) -> Result<Self, String> {
        match text.join(",").trim() {
            "memory" => Ok(Self::Memory),
            "database" => Ok(Self::Database),
            other => Err(format!("{other:?} is not `memory` or `database`")),
        }
    }
}

/// A rate `N/s` (or `N`), at least 1 request per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerSecond(pub u32);

impl Value for PerSecond {
    fn parse(text: &[String]) -> Result<Self, String> {
        let text = text.join(",");
        match text.trim().trim_end_matches("/s").trim().parse::<u32>() {
            Ok(n) if n > 0 => Ok(Self(n)),
            _ => Err(format!("{text:?} is not a rate like 20/s")),
        }
    }
}

/// What a route asks of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteAuth {
    /// A signed-in user is required; browsers without a session are sent to the login.
    Login,
    /// A signed-in user is required; without a session the answer is 401 JSON.
    Api,
    /// Passed through without user headers.
    Public,
}

/// One `[[gateway.routes]]` table: requests whose path starts with `prefix` go to
/// `upstream` (the full original path and query are appended to the upstream base URL).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub prefix: String,
    pub upstream: String,
    pub auth: RouteAuth,
}

impl RouteConfig {
    /// `PREFIX=UPSTREAM_URL;MODE` (MODE `login`, `api` or `public`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let syntax = || format!("{text:?} is not PREFIX=UPSTREAM_URL;MODE");
        let (prefix, rest) = text.split_once('=').ok_or_else(syntax)?;
        let no_mode = || format!("{text:?} has no ;MODE (login, api or public)");
        let (upstream, mode) = rest.rsplit_once(';').ok_or_else(no_mode)?;
        let auth = latchkey_config::from_toml(mode.trim().into())
            .map_err(|_| format!("{mode:?} is not login, api or public"))?;
        let (prefix, upstream) = (prefix.trim().into(), upstream.trim().into());
        Ok(Self {
            prefix,
            upstream,
            auth,
        })
    }

    fn validate(&self) -> Result<(), String> {
        let (prefix, upstream) = (&self.prefix, &self.upstream);
        let bad = |c: char| c.is_control() || c == '?' || c == '#';
        if !prefix.starts_with('/') || prefix.chars().any(bad) {
            return Err(format!("prefix {prefix:?} must be a path starting with /"));
        }
        let url = url::Url::parse(upstream)
            .map_err(|e| format!("upstream {upstream:?} is not an absolute URL: {e}"))?;
        if url.scheme() != "http" {
            let why = "only http:// upstreams are supported (the gateway terminates TLS)";
            return Err(format!("upstream {upstream:?}: {why}"));
        }
        if url.host().is_none() || url.query().is_some() || url.fragment().is_some() {
            let why = "must be a base URL with a host and no query or fragment";
            return Err(format!("upstream {upstream:?} {why}"));
        }
        Ok(())
    }
}

impl ListItem for RouteConfig {
    const MANY: bool = true;
    fn parse_one(text: &str) -> Result<Self, String> {
        Self::parse(text)
    }
}

keys! {
    /// `serve gateway`: file `[gateway]`, `LATCHKEY_GATEWAY_*`.
    pub section Gateway = "gateway", tables ["outbound"];
    /// Settings of `serve gateway`.
    pub struct GatewayKeys {
        /// Address to listen on (`127.0.0.1:0` picks a free port). Default 127.0.0.1:8443.
        listen: SocketAddr = ([127, 0, 0, 1], 8443),
        /// The URL browsers use to reach the gateway, e.g. https://app.example.com. Default
        /// `http://<listen address>`.
        public_url: String,
        /// The OpenID Provider's issuer.
        oidc_issuer: String => "the OpenID Provider's issuer is required",
        /// The gateway's client id at the provider.
        oidc_client_id: String => "the gateway's client id is required",
        /// File holding the client secret (or set LATCHKEY_GATEWAY_OIDC_CLIENT_SECRET).
        oidc_client_secret_file: PathBuf,
        /// Space-separated scopes. Default "openid email profile".
        oidc_scopes: String = DEFAULT_SCOPES,
        /// A route `PREFIX=UPSTREAM_URL;MODE` (MODE login, api or public); repeatable. The
        /// environment variable takes several, comma-separated. Replaces the file's routes.
        routes as "route": Vec<RouteConfig> = Vec::new(),
        /// The ARN written as `signer` into every `x-amzn-oidc-data` header.
        alb_signer: String = DEFAULT_ALB_SIGNER,
        /// Absolute session lifetime, in seconds. Default 28800.
        session_absolute_seconds: u64 = 28_800u64,
        /// Idle session timeout, in seconds. Default 3600.
        session_idle_seconds: u64 = 3_600u64,
        /// Allow the outbound calls (the OpenID Provider's discovery, JWKS and token endpoint) to
        /// loopback and private addresses and over plain http. Tests and dev only.
        outbound_allow_private_addresses: bool = false,
        /// Time allowed to connect to an upstream, in milliseconds. Default 5000.
        upstream_connect_timeout_ms: u64 = 5_000u64,
        /// TLS certificate chain (PEM). With --tls-key, the gateway serves https.
        tls_cert: PathBuf,
        /// TLS private key (PEM).
        tls_key: PathBuf,
        /// Also listen for plain HTTP here (e.g. 0.0.0.0:80) and redirect GET/HEAD to the https
        /// public URL (308); other methods get 400. Needs --tls-cert and --tls-key.
        http_redirect_listen: SocketAddr,
        /// Also listen here (e.g. 127.0.0.1:9464) for `GET /metrics` (Prometheus text format),
        /// kept off the public port, where every other path is proxied. Default: no metrics.
        metrics_listen: SocketAddr,
        /// Requests per second per client IP, e.g. `20/s` (burst: twice the rate).
        rate_limit_per_ip: PerSecond,
        /// Requests per second per signed-in user, e.g. `10/s` (burst: twice the rate).
        rate_limit_per_user: PerSecond,
        /// Largest request body, in bytes. Default 10485760.
        max_body_bytes: usize = 10 * 1024 * 1024usize,
        /// Time allowed until the response head, in seconds (bodies may stream longer). Default 60.
        request_timeout_seconds: u64 = 60u64,
        /// Access log: `stdout` (default), `off`, or a file path (JSON lines).
        access_log: AccessLogTarget = AccessLogTarget::Stdout,
        /// Worker threads serving connections (1-256). Default: one per CPU.
        workers: usize,
        /// Keep sessions across restarts, sealed in the data directory (default true); false:
        /// in memory only, and a snapshot left from before is deleted.
        keep_sessions: bool = true,
        /// Where sessions live: `memory` (this process; default) or `database` (the database
        /// of `database_url`, shared by every replica: any replica serves any browser).
        session_store: SessionStoreKind = SessionStoreKind::Memory,
        /// With `session_store = "database"`: how long a replica uses its copy of a session
        /// before looking at the database again, in seconds (0-60; a logout on another
        /// replica holds here within it). Default 2.
        session_cache_seconds: u64 = 2u64,
    }
}

/// Settings of the gateway: its keys, validated by [`GatewayConfig::validate`].
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub keys: GatewayKeys,
    /// The URL browsers use to reach the gateway (no trailing slash; the configured
    /// `public_url`, else the listen address); the redirect URI is
    /// `{public_url}/oauth2/idpresponse`.
    pub public_url: String,
    pub oidc_client_secret: SecretString,
    /// Where `gateway-cookie.key` (generated) and `gateway-alb-key.pem` (optional) live.
    pub data_dir: PathBuf,
    /// The database of `session_store = "database"` (the storage's `database_url`).
    pub database_url: Option<SecretString>,
}

impl GatewayConfig {
    /// The settings of `serve gateway`, validated.
    pub fn resolve(l: &Layers, data_dir: &std::path::Path) -> anyhow::Result<Self> {
        let keys: GatewayKeys = l.read()?;
        let secret = l.required_secret("oidc_client_secret", "the OIDC client secret")?;
        match (&keys.tls_cert, &keys.tls_key) {
            (Some(_), None) => return Err(l.error("tls_key", "missing: tls_cert needs tls_key")),
            (None, Some(_)) => return Err(l.error("tls_cert", "missing: tls_key needs tls_cert")),
            _ => {}
        }
        if let Some(addr) = keys.http_redirect_listen {
            let https = (keys.public_url.as_deref()).is_none_or(|u| u.starts_with("https://"));
            let same = addr == keys.listen && addr.port() != 0;
            let why = match () {
                _ if keys.tls_cert.is_none() => NEEDS_TLS.to_string(),
                _ if !https => "needs an https gateway.public_url to redirect to".into(),
                _ if same => format!("{addr} is already gateway.listen"),
                _ => String::new(),
            };
            l.check(ensure(why.is_empty(), "http_redirect_listen", why))?;
        }
        let config = Self {
            // Replaced by the bound address when not configured.
            public_url: (keys.public_url.clone())
                .unwrap_or_else(|| format!("http://{}", keys.listen)),
            oidc_client_secret: secret.value,
            data_dir: data_dir.to_path_buf(),
            database_url: None,
            keys,
        };
        l.check(config.validate())?;
        l.check(within(&[("workers", config.workers() as i64, (1, 256))]))?;
        let cache = config.keys.session_cache_seconds as i64;
        l.check(within(&[("session_cache_seconds", cache, (0, 60))]))?;
        Ok(config)
    }

    /// Check every key, naming the first that fails.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let (k, public) = (&self.keys, url::Url::parse(&self.public_url));
        let public = public.map_err(|e| ConfigError::new("public_url", format!("{URL}: {e}")))?;
        let origin = matches!(public.scheme(), "http" | "https")
            && public.host().is_some()
            && public.query().is_none()
            && public.fragment().is_none()
            && public.path() == "/";
        ensure(origin, "public_url", ORIGIN)?;
        let issuer = vec![k.oidc_client_id.clone()];
        let issuer = InboundIssuerConfig::new(k.oidc_issuer.clone(), issuer).validate();
        issuer.map_err(|e| ConfigError::new("oidc_issuer", e.reason))?;
        let client_id = !k.oidc_client_id.trim().is_empty();
        ensure(client_id, "oidc_client_id", "missing")?;
        let openid = k.oidc_scopes.split_whitespace().any(|s| s == "openid");
        ensure(openid, "oidc_scopes", "must contain openid")?;
        let (routes, one) = (&k.routes, "at least one route is required");
        ensure(!routes.is_empty(), "routes", one)?;
        for (i, route) in routes.iter().enumerate() {
            (route.validate()).map_err(|why| ConfigError::new("routes", why))?;
            let twice = format!("prefix {:?} is configured twice", route.prefix);
            let first = routes[..i].iter().all(|r| r.prefix != route.prefix);
            ensure(first, "routes", twice)?;
        }
        let arn = k.alb_signer.starts_with("arn:") && k.alb_signer.len() <= 2048;
        ensure(arn, "alb_signer", "must be an ARN")?;
        positive(&[
            ("session_absolute_seconds", k.session_absolute_seconds),
            ("session_idle_seconds", k.session_idle_seconds),
            ("max_body_bytes", k.max_body_bytes as u64),
            ("request_timeout_seconds", k.request_timeout_seconds),
        ])
    }

    /// Worker threads serving connections: configured, or one per CPU.
    pub fn workers(&self) -> usize {
        (self.keys.workers).unwrap_or_else(crate::server::default_workers)
    }

    /// Whether the gateway itself terminates TLS (sets `X-Forwarded-Proto: https`, HSTS).
    pub fn is_tls(&self) -> bool {
        self.keys.tls_cert.is_some()
    }

    /// Policy of the calls to the identity provider (discovery, JWKS, token).
    pub fn outbound(&self) -> OutboundPolicy {
        OutboundPolicy {
            allow_private_addresses: self.keys.outbound_allow_private_addresses,
            ..Default::default()
        }
    }

    /// Whether browsers reach the gateway over https (cookie `__Host-…; Secure`).
    pub fn is_https(&self) -> bool {
        self.public_url.starts_with("https://")
    }

    /// `{public_url}/oauth2/idpresponse`.
    pub fn redirect_uri(&self) -> String {
        let base = self.public_url.trim_end_matches('/');
        format!("{base}/oauth2/idpresponse")
    }
}

#[cfg(test)]
impl GatewayConfig {
    /// Settings from a fixed environment (`LATCHKEY_GATEWAY_*`), with the client secret.
    pub(crate) fn from_env(
        pairs: &[(&str, &str)],
        data_dir: &std::path::Path,
    ) -> anyhow::Result<Self> {
        use latchkey_config::{ConfigFile, Env, Flags};
        let secret = [("LATCHKEY_GATEWAY_OIDC_CLIENT_SECRET", "s")];
        let (flags, file) = (Flags::<Gateway>::default(), ConfigFile::default());
        let env = Env::fixed(&[&secret[..], pairs].concat());
        Self::resolve(&Layers::new(&flags, &file, &env)?, data_dir)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn route_syntax() {
        let r = RouteConfig::parse("/api=http://127.0.0.1:9000;api").unwrap();
        assert_eq!(r.prefix, "/api");
        assert_eq!(r.upstream, "http://127.0.0.1:9000");
        assert_eq!(r.auth, RouteAuth::Api);
        assert!(RouteConfig::parse("/api=http://x").is_err());
        assert!(RouteConfig::parse("/api=http://x;admin").is_err());
        assert!(RouteConfig::parse("http://x;login").is_err());
    }

    #[test]
    fn validation_names_keys() {
        let mut c = GatewayConfig::from_env(
            &[
                ("LATCHKEY_GATEWAY_PUBLIC_URL", "http://127.0.0.1:8443"),
                ("LATCHKEY_GATEWAY_OIDC_ISSUER", "https://login.example.com"),
                ("LATCHKEY_GATEWAY_OIDC_CLIENT_ID", "app"),
                ("LATCHKEY_GATEWAY_ROUTES", "/=http://127.0.0.1:9000;login"),
            ],
            std::path::Path::new("/tmp"),
        )
        .unwrap();
        c.validate().unwrap();
        c.keys.oidc_scopes = "email".into();
        assert_eq!(c.validate().unwrap_err().key, "oidc_scopes");
        c.keys.oidc_scopes = DEFAULT_SCOPES.into();
        c.keys
            .routes
            .push(RouteConfig::parse("/x=https://up.example;api").unwrap());
        assert_eq!(c.validate().unwrap_err().key, "routes");
        c.keys.routes.pop();
        c.public_url = "http://127.0.0.1:8443/app".into();
        assert_eq!(c.validate().unwrap_err().key, "public_url");
        c.public_url = "http://127.0.0.1:8443".into();
        c.keys.session_idle_seconds = 0;
        assert_eq!(c.validate().unwrap_err().key, "session_idle_seconds");
    }
}
