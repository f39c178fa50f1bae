//! One typed configuration: a TOML file (`--config`), overridden per key by a
//! `LATCHKEY_*` environment variable, overridden by a command-line flag. Secrets can come
//! from files (`*_FILE`). Validated at start with the failing key named.
//!
//! [`layers`] is the mechanism; this module and [`services`] declare each section's keys
//! once and turn them into the services' validated settings.

pub mod layers;
pub mod services;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::PathBuf;

use latchkey_authn::inbound::InboundIssuerConfig;
use latchkey_core::arn::ArnContext;
use secrecy::{ExposeSecret as _, SecretString};

pub use layers::{ConfigFile, Env, Flags, KeyGroup as _, Layers, Section};
use layers::{Value, from_toml, keys};
pub use services::{AgentServeConfig, BindingServeConfig, GatewayServeConfig};

/// A list of tables: a JSON array as text, an array of tables in the file.
macro_rules! json_lists {
    ($($ty:ty),*) => {$(
        impl Value for Vec<$ty> {
            fn parse(text: &[String]) -> Result<Self, String> {
                serde_json::from_str(&text.join(","))
                    .map_err(|e| format!("not a JSON array of tables: {e}"))
            }
            fn from_file(value: toml::Value) -> Result<Self, String> {
                from_toml(value)
            }
        }
    )*};
}
json_lists!(InboundIssuerConfig, latchkey_agent::HttpToolConfig);

/// The storage keys, flags of every command.
#[derive(Debug)]
pub enum Storage {}
impl Section for Storage {
    const NAME: &'static str = "";
    const GLOBAL: bool = true;
    type Keys = StorageKeys;
}

keys! {
    /// Storage settings (root of the file, `LATCHKEY_*`).
    pub struct StorageKeys {
        /// Data directory (SQLite database and generated key file). Default: the user's data dir.
        data_dir: PathBuf,
        /// `sqlite://PATH` or `postgres://…`. Default: SQLite in the data directory.
        database_url: SecretString,
        /// File holding the database URL (for URLs with passwords).
        database_url_file: PathBuf,
        /// Key-encryption key file. Default: `<data-dir>/kek.json`, generated on first start.
        key_file: PathBuf,
        /// Log format: `text` or `json`.
        log_format: String = "text",
        /// Log filter, e.g. `info` or `latchkey=debug`.
        log_level: String = "info",
    }
}

/// `serve identity` (root of the file, `LATCHKEY_*`).
#[derive(Debug)]
pub enum Identity {}
impl Section for Identity {
    const NAME: &'static str = "";
    const TABLES: &'static [&'static str] = &["arn", "outbound"];
    type Keys = IdentityKeys;
}

keys! {
    /// Settings of `serve identity`.
    pub struct IdentityKeys {
        /// Address to listen on (`127.0.0.1:0` picks a free port).
        listen: SocketAddr = ([127, 0, 0, 1], 8080),
        /// Public base URL of this service. Default: `http://<listen address>`.
        public_url: String,
        /// Lifetime of workload access tokens, in seconds.
        wat_ttl_seconds: i64 = 900i64,
        /// How long each replica caches credentials and workload facts, in seconds.
        cache_ttl_seconds: u64 = 5u64,
        /// How long an authorization session (3-legged OAuth flow) stays valid, in seconds.
        session_ttl_seconds: i64 = 600i64,
        /// How long a replica holds a grant's refresh lease, in seconds (longer than the outbound timeout).
        refresh_lease_seconds: i64 = 30i64,
        /// Token lifetime assumed when a provider's token response has no `expires_in` and the provider has no default.
        default_token_lifetime_seconds: i64 = 3600i64,
        /// ARN partition of this installation. Default `aws`.
        arn_partition: String = ArnContext::default().partition,
        /// ARN region. Default `us-east-1`.
        arn_region: String = ArnContext::default().region,
        /// ARN account (12 digits). Default `000000000000`.
        arn_account: String = ArnContext::default().account,
        /// Allow outbound calls (discovery, JWKS) to loopback and private addresses. Tests and dev only.
        outbound_allow_private_addresses: bool = false,
        /// Timeout of one outbound call, in milliseconds. Default 10000.
        outbound_timeout_ms: u64 = 10_000u64,
        /// Largest outbound response body, in bytes. Default 1048576.
        outbound_max_response_bytes: usize = 1024 * 1024usize,
        /// Inbound issuers for `GetWorkloadAccessTokenForJWT`, as a JSON array of tables.
        inbound_issuers: Vec<InboundIssuerConfig> = Vec::new(),
    }
}

/// Refuse a file key no section declares.
pub fn check_file(file: &ConfigFile) -> anyhow::Result<()> {
    use layers::KeyGroup;
    use services::{Agent, Binding, Gateway};
    let root = <(StorageKeys, IdentityKeys)>::keys();
    file.check(&[
        ("", Identity::TABLES, root, &["binding", "agent", "gateway"]),
        Flags::<Binding>::spec(),
        Flags::<Agent>::spec(),
        Flags::<Gateway>::spec(),
    ])
}

/// Storage settings, needed by every command.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
    pub database_url: String,
    pub key_file: PathBuf,
    pub log_format: String,
    pub log_level: String,
}

/// Settings of `serve identity`, validated.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub public_url: Option<String>,
    pub wat_ttl_seconds: i64,
    pub cache_ttl_seconds: u64,
    pub session_ttl_seconds: i64,
    pub refresh_lease_seconds: i64,
    pub default_token_lifetime_seconds: i64,
    pub arn: ArnContext,
    pub allow_private_addresses: bool,
    pub outbound_timeout_ms: u64,
    pub outbound_max_response_bytes: usize,
    pub inbound_issuers: Vec<InboundIssuerConfig>,
}

/// `value` within `min..=max`.
fn ranged<T: PartialOrd + std::fmt::Display + Copy>(
    l: &Layers,
    key: &str,
    value: T,
    (min, max): (T, T),
) -> anyhow::Result<T> {
    match (min..=max).contains(&value) {
        true => Ok(value),
        false => Err(l.error(key, format!("must be between {min} and {max}"))),
    }
}

impl StorageConfig {
    pub fn resolve(l: &Layers) -> anyhow::Result<Self> {
        let k: StorageKeys = l.read()?;
        let data_dir = match k.data_dir {
            Some(d) => d,
            None => dirs::data_dir()
                .ok_or_else(|| {
                    l.error(
                        "data_dir",
                        "no default data directory on this system; set --data-dir",
                    )
                })?
                .join("latchkey"),
        };
        let database_url = match l.secret("database_url")? {
            Some(url) => url.value.expose_secret().to_string(),
            None => format!(
                "sqlite://{}?mode=rwc",
                data_dir.join("latchkey.db").display()
            ),
        };
        if !["sqlite:", "postgres://", "postgresql://"]
            .iter()
            .any(|p| database_url.starts_with(p))
        {
            return Err(l.error("database_url", "must start with sqlite: or postgres://"));
        }
        if k.log_format != "text" && k.log_format != "json" {
            return Err(l.error("log_format", "must be `text` or `json`"));
        }
        Ok(Self {
            key_file: k.key_file.unwrap_or_else(|| data_dir.join("kek.json")),
            data_dir,
            database_url,
            log_format: k.log_format,
            log_level: k.log_level,
        })
    }

    /// The database URL without any password, for messages.
    pub fn database_url_redacted(&self) -> String {
        match url::Url::parse(&self.database_url) {
            Ok(mut u) if u.password().is_some() => {
                let _ = u.set_password(Some("****"));
                u.to_string()
            }
            _ => self.database_url.clone(),
        }
    }
}

impl ServeConfig {
    pub fn resolve(l: &Layers) -> anyhow::Result<Self> {
        let k: IdentityKeys = l.read()?;
        if let Some(u) = &k.public_url {
            let parsed = url::Url::parse(u).map_err(|e| l.error("public_url", e))?;
            if !matches!(parsed.scheme(), "http" | "https")
                || parsed.query().is_some()
                || parsed.fragment().is_some()
                || parsed.host().is_none()
            {
                let why = "must be an http(s) URL without query or fragment";
                return Err(l.error("public_url", why));
            }
        }
        if k.cache_ttl_seconds > 300 {
            return Err(l.error("cache_ttl_seconds", "must be at most 300"));
        }
        let arn = ArnContext {
            partition: k.arn_partition,
            region: k.arn_region,
            account: k.arn_account,
        };
        let simple = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        for (key, value) in [
            ("arn_partition", &arn.partition),
            ("arn_region", &arn.region),
        ] {
            if !simple(value) {
                return Err(l.error(key, "must be 1..64 of [A-Za-z0-9-]"));
            }
        }
        if arn.account.len() != 12 || !arn.account.chars().all(|c| c.is_ascii_digit()) {
            return Err(l.error("arn_account", "must be 12 digits"));
        }
        for (i, issuer) in k.inbound_issuers.iter().enumerate() {
            issuer
                .validate()
                .map_err(|e| l.error(&format!("inbound_issuers[{i}]"), e))?;
        }
        Ok(Self {
            listen: k.listen,
            public_url: k.public_url,
            wat_ttl_seconds: ranged(l, "wat_ttl_seconds", k.wat_ttl_seconds, (60, 86_400))?,
            cache_ttl_seconds: k.cache_ttl_seconds,
            session_ttl_seconds: ranged(
                l,
                "session_ttl_seconds",
                k.session_ttl_seconds,
                (5, 3600),
            )?,
            refresh_lease_seconds: ranged(
                l,
                "refresh_lease_seconds",
                k.refresh_lease_seconds,
                (1, 600),
            )?,
            default_token_lifetime_seconds: ranged(
                l,
                "default_token_lifetime_seconds",
                k.default_token_lifetime_seconds,
                (60, 30 * 86_400),
            )?,
            arn,
            allow_private_addresses: k.outbound_allow_private_addresses,
            outbound_timeout_ms: ranged(
                l,
                "outbound_timeout_ms",
                k.outbound_timeout_ms,
                (100, 120_000),
            )?,
            outbound_max_response_bytes: ranged(
                l,
                "outbound_max_response_bytes",
                k.outbound_max_response_bytes,
                (1024, 16 * 1024 * 1024),
            )?,
            inbound_issuers: k.inbound_issuers,
        })
    }
}
