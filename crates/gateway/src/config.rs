//! The gateway's settings, validated once at start-up with the failing key named.

use std::path::PathBuf;
use std::time::Duration;

use latchkey_authn::outbound::OutboundPolicy;
use secrecy::SecretString;
use serde::Deserialize;

/// The load-balancer ARN written into every `x-amzn-oidc-data` header's `signer` unless
/// configured otherwise.
pub const DEFAULT_ALB_SIGNER: &str = "arn:aws:elasticloadbalancing:us-east-1:000000000000:loadbalancer/app/latchkey-gateway/0000000000000000";
/// Default scopes asked of the identity provider.
pub const DEFAULT_SCOPES: &str = "openid email profile";
/// Default absolute session lifetime (8 hours).
pub const DEFAULT_SESSION_ABSOLUTE_SECONDS: u64 = 28_800;
/// Default idle timeout (1 hour).
pub const DEFAULT_SESSION_IDLE_SECONDS: u64 = 3_600;
/// Default time allowed to connect to an upstream.
pub const DEFAULT_UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default largest request body (10 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 10 * 1024 * 1024;
/// Default time allowed until the response head (bodies may stream for longer).
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// Where access-log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    Off,
    Stdout,
    File(PathBuf),
}

impl AccessLogTarget {
    /// `off`, `stdout` or a file path.
    pub fn parse(text: &str) -> Self {
        match text.trim() {
            "off" | "none" | "" => Self::Off,
            "stdout" | "-" => Self::Stdout,
            path => Self::File(PathBuf::from(path)),
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

impl RouteAuth {
    /// `login`, `api` or `public`.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim() {
            "login" => Some(Self::Login),
            "api" => Some(Self::Api),
            "public" => Some(Self::Public),
            _ => None,
        }
    }
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
        let (prefix, rest) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?} is not PREFIX=UPSTREAM_URL;MODE"))?;
        let (upstream, mode) = rest
            .rsplit_once(';')
            .ok_or_else(|| format!("{text:?} has no ;MODE (login, api or public)"))?;
        let auth = RouteAuth::parse(mode)
            .ok_or_else(|| format!("{mode:?} is not login, api or public"))?;
        Ok(Self {
            prefix: prefix.trim().to_string(),
            upstream: upstream.trim().to_string(),
            auth,
        })
    }

    fn validate(&self) -> Result<(), String> {
        if !self.prefix.starts_with('/')
            || self
                .prefix
                .chars()
                .any(|c| c.is_control() || c == '?' || c == '#')
        {
            return Err(format!(
                "prefix {:?} must be a path starting with /",
                self.prefix
            ));
        }
        let url = url::Url::parse(&self.upstream)
            .map_err(|e| format!("upstream {:?} is not an absolute URL: {e}", self.upstream))?;
        if url.scheme() != "http" {
            return Err(format!(
                "upstream {:?}: only http:// upstreams are supported (the gateway terminates TLS)",
                self.upstream
            ));
        }
        if url.host().is_none() || url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "upstream {:?} must be a base URL with a host and no query or fragment",
                self.upstream
            ));
        }
        Ok(())
    }
}

/// Settings of the gateway, validated by [`GatewayConfig::validate`].
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The URL browsers use to reach the gateway (no trailing slash); the redirect URI is
    /// `{public_url}/oauth2/idpresponse`.
    pub public_url: String,
    /// The OpenID Provider's issuer (discovery at `{issuer}/.well-known/openid-configuration`).
    pub oidc_issuer: String,
    pub oidc_client_id: String,
    pub oidc_client_secret: SecretString,
    /// Space-separated scopes; must contain `openid`.
    pub oidc_scopes: String,
    pub routes: Vec<RouteConfig>,
    /// The `signer` of every `x-amzn-oidc-data` header.
    pub alb_signer: String,
    pub session_absolute: Duration,
    pub session_idle: Duration,
    /// Where `gateway-cookie.key` (generated) and `gateway-alb-key.pem` (optional) live.
    pub data_dir: PathBuf,
    /// Policy of the calls to the identity provider (discovery, JWKS, token).
    pub outbound: OutboundPolicy,
    pub upstream_connect_timeout: Duration,
    /// Whether the gateway itself terminates TLS (sets `X-Forwarded-Proto: https`, HSTS).
    pub is_tls: bool,
    /// Requests per second per client IP (burst twice that); `None`: unlimited.
    pub rate_limit_per_ip: Option<u32>,
    /// Requests per second per signed-in user (burst twice that); `None`: unlimited.
    pub rate_limit_per_user: Option<u32>,
    pub max_body_bytes: usize,
    /// Time allowed until the response head.
    pub response_timeout: Duration,
    pub access_log: AccessLogTarget,
    /// Keep sessions across restarts in a sealed snapshot ([`crate::snapshot`]); off:
    /// in memory only, and an old snapshot is deleted.
    pub keep_sessions: bool,
}

pub use latchkey_authn::ConfigError;

fn err(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::new(key, reason)
}

impl GatewayConfig {
    /// Check every key, naming the first that fails.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let public = url::Url::parse(&self.public_url)
            .map_err(|e| err("public_url", format!("not an absolute URL: {e}")))?;
        if !matches!(public.scheme(), "http" | "https")
            || public.host().is_none()
            || public.query().is_some()
            || public.fragment().is_some()
            || public.path() != "/"
        {
            return Err(err(
                "public_url",
                "must be an http(s) origin such as https://app.example.com (no path, query or fragment)",
            ));
        }
        let issuer = latchkey_authn::inbound::InboundIssuerConfig::new(
            self.oidc_issuer.clone(),
            vec![self.oidc_client_id.clone()],
        );
        issuer
            .validate()
            .map_err(|e| err("oidc_issuer", e.reason))?;
        if self.oidc_client_id.trim().is_empty() {
            return Err(err("oidc_client_id", "missing"));
        }
        if !self.oidc_scopes.split_whitespace().any(|s| s == "openid") {
            return Err(err("oidc_scopes", "must contain openid"));
        }
        if self.routes.is_empty() {
            return Err(err("routes", "at least one route is required"));
        }
        for route in &self.routes {
            route.validate().map_err(|why| err("routes", why))?;
        }
        for (i, a) in self.routes.iter().enumerate() {
            if self.routes[..i].iter().any(|b| b.prefix == a.prefix) {
                return Err(err(
                    "routes",
                    format!("prefix {:?} is configured twice", a.prefix),
                ));
            }
        }
        if !self.alb_signer.starts_with("arn:") || self.alb_signer.len() > 2048 {
            return Err(err("alb_signer", "must be an ARN"));
        }
        if self.session_absolute.is_zero() {
            return Err(err("session_absolute_seconds", "must be positive"));
        }
        if self.session_idle.is_zero() {
            return Err(err("session_idle_seconds", "must be positive"));
        }
        if self.max_body_bytes == 0 {
            return Err(err("max_body_bytes", "must be positive"));
        }
        if self.response_timeout.is_zero() {
            return Err(err("request_timeout_seconds", "must be positive"));
        }
        Ok(())
    }

    /// Whether browsers reach the gateway over https (cookie `__Host-…; Secure`).
    pub fn is_https(&self) -> bool {
        self.public_url.starts_with("https://")
    }

    /// `{public_url}/oauth2/idpresponse`.
    pub fn redirect_uri(&self) -> String {
        format!(
            "{}/oauth2/idpresponse",
            self.public_url.trim_end_matches('/')
        )
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
        let mut c = GatewayConfig {
            public_url: "http://127.0.0.1:8443".into(),
            oidc_issuer: "https://login.example.com".into(),
            oidc_client_id: "app".into(),
            oidc_client_secret: SecretString::from("s"),
            oidc_scopes: DEFAULT_SCOPES.into(),
            routes: vec![RouteConfig::parse("/=http://127.0.0.1:9000;login").unwrap()],
            alb_signer: DEFAULT_ALB_SIGNER.into(),
            session_absolute: Duration::from_secs(10),
            session_idle: Duration::from_secs(5),
            data_dir: PathBuf::from("/tmp"),
            outbound: OutboundPolicy::default(),
            upstream_connect_timeout: DEFAULT_UPSTREAM_CONNECT_TIMEOUT,
            is_tls: false,
            rate_limit_per_ip: None,
            rate_limit_per_user: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            access_log: AccessLogTarget::Off,
            keep_sessions: true,
        };
        c.validate().unwrap();
        c.oidc_scopes = "email".into();
        assert_eq!(c.validate().unwrap_err().key, "oidc_scopes");
        c.oidc_scopes = DEFAULT_SCOPES.into();
        c.routes
            .push(RouteConfig::parse("/x=https://up.example;api").unwrap());
        assert_eq!(c.validate().unwrap_err().key, "routes");
        c.routes.pop();
        c.public_url = "http://127.0.0.1:8443/app".into();
        assert_eq!(c.validate().unwrap_err().key, "public_url");
    }
}
