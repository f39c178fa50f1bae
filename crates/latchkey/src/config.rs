//! One typed configuration: a TOML file (`--config`), overridden per key by a
//! `LATCHKEY_*` environment variable, overridden by a command-line flag. Secrets can come
//! from files (`*_FILE`). Validated at start with the failing key named.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use clap::Args;
use latchkey_core::arn::ArnContext;
use latchkey_identity::inbound::InboundIssuerConfig;
use serde::Deserialize;

/// Flags (and their environment variables) shared by every command.
#[derive(Debug, Clone, Args)]
pub struct Overrides {
    /// TOML configuration file.
    #[arg(long, env = "LATCHKEY_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Data directory (SQLite database and generated key file). Default: the user's data dir.
    #[arg(long, env = "LATCHKEY_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// `sqlite://PATH` or `postgres://…`. Default: SQLite in the data directory.
    #[arg(
        long,
        env = "LATCHKEY_DATABASE_URL",
        global = true,
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// File holding the database URL (for URLs with passwords).
    #[arg(long, env = "LATCHKEY_DATABASE_URL_FILE", global = true)]
    pub database_url_file: Option<PathBuf>,
    /// Key-encryption key file. Default: `<data-dir>/kek.json`, generated on first start.
    #[arg(long, env = "LATCHKEY_KEY_FILE", global = true)]
    pub key_file: Option<PathBuf>,
    /// Log format: `text` or `json`.
    #[arg(long, env = "LATCHKEY_LOG_FORMAT", global = true)]
    pub log_format: Option<String>,
    /// Log filter, e.g. `info` or `latchkey=debug`.
    #[arg(long, env = "LATCHKEY_LOG_LEVEL", global = true)]
    pub log_level: Option<String>,
}

/// Flags of `serve identity`.
#[derive(Debug, Clone, Args)]
pub struct ServeOverrides {
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    #[arg(long, env = "LATCHKEY_LISTEN")]
    pub listen: Option<String>,
    /// Public base URL of this service. Default: `http://<listen address>`.
    #[arg(long, env = "LATCHKEY_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Lifetime of workload access tokens, in seconds.
    #[arg(long, env = "LATCHKEY_WAT_TTL_SECONDS")]
    pub wat_ttl_seconds: Option<i64>,
    /// How long each replica caches credentials and workload facts, in seconds.
    #[arg(long, env = "LATCHKEY_CACHE_TTL_SECONDS")]
    pub cache_ttl_seconds: Option<u64>,
    #[arg(long, env = "LATCHKEY_ARN_PARTITION")]
    pub arn_partition: Option<String>,
    #[arg(long, env = "LATCHKEY_ARN_REGION")]
    pub arn_region: Option<String>,
    #[arg(long, env = "LATCHKEY_ARN_ACCOUNT")]
    pub arn_account: Option<String>,
    /// Allow outbound calls (discovery, JWKS) to loopback and private addresses. Tests and dev only.
    #[arg(long, env = "LATCHKEY_OUTBOUND_ALLOW_PRIVATE_ADDRESSES")]
    pub outbound_allow_private_addresses: Option<bool>,
    #[arg(long, env = "LATCHKEY_OUTBOUND_TIMEOUT_MS")]
    pub outbound_timeout_ms: Option<u64>,
    #[arg(long, env = "LATCHKEY_OUTBOUND_MAX_RESPONSE_BYTES")]
    pub outbound_max_response_bytes: Option<usize>,
    /// Inbound issuers for `GetWorkloadAccessTokenForJWT`, as a JSON array of tables.
    #[arg(long, env = "LATCHKEY_INBOUND_ISSUERS")]
    pub inbound_issuers: Option<String>,
}

/// The file format. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub public_url: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub database_url_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub log_format: Option<String>,
    pub log_level: Option<String>,
    pub wat_ttl_seconds: Option<i64>,
    pub cache_ttl_seconds: Option<u64>,
    #[serde(default)]
    pub arn: FileArn,
    #[serde(default)]
    pub outbound: FileOutbound,
    #[serde(default)]
    pub inbound_issuers: Vec<InboundIssuerConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileArn {
    pub partition: Option<String>,
    pub region: Option<String>,
    pub account: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileOutbound {
    pub allow_private_addresses: Option<bool>,
    pub timeout_ms: Option<u64>,
    pub max_response_bytes: Option<usize>,
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
    pub arn: ArnContext,
    pub allow_private_addresses: bool,
    pub outbound_timeout_ms: u64,
    pub outbound_max_response_bytes: usize,
    pub inbound_issuers: Vec<InboundIssuerConfig>,
}

fn bad(key: &str, env: &str, why: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("invalid configuration key `{key}` (file key `{key}`, env {env}): {why}")
}

pub fn load_file(path: Option<&Path>) -> anyhow::Result<FileConfig> {
    let Some(path) = path else {
        return Ok(FileConfig::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow!("config file {}: {}", path.display(), e.message()))
}

impl StorageConfig {
    pub fn resolve(o: &Overrides, f: &FileConfig) -> anyhow::Result<Self> {
        let data_dir = match o.data_dir.clone().or_else(|| f.data_dir.clone()) {
            Some(d) => d,
            None => dirs::data_dir()
                .ok_or_else(|| {
                    bad(
                        "data_dir",
                        "LATCHKEY_DATA_DIR",
                        "no default data directory on this system; set --data-dir",
                    )
                })?
                .join("latchkey"),
        };
        let url_file = o
            .database_url_file
            .clone()
            .or_else(|| f.database_url_file.clone());
        let database_url = match (
            o.database_url.clone().or_else(|| f.database_url.clone()),
            url_file,
        ) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "database_url",
                    "LATCHKEY_DATABASE_URL",
                    "set either database_url or database_url_file, not both",
                ));
            }
            (Some(u), None) => u,
            (None, Some(file)) => std::fs::read_to_string(&file)
                .map_err(|e| {
                    bad(
                        "database_url_file",
                        "LATCHKEY_DATABASE_URL_FILE",
                        format!("cannot read {}: {e}", file.display()),
                    )
                })?
                .trim()
                .to_string(),
            (None, None) => format!(
                "sqlite://{}?mode=rwc",
                data_dir.join("latchkey.db").display()
            ),
        };
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            return Err(bad(
                "database_url",
                "LATCHKEY_DATABASE_URL",
                "must start with sqlite: or postgres://",
            ));
        }
        let key_file = o
            .key_file
            .clone()
            .or_else(|| f.key_file.clone())
            .unwrap_or_else(|| data_dir.join("kek.json"));
        let log_format = o
            .log_format
            .clone()
            .or_else(|| f.log_format.clone())
            .unwrap_or_else(|| "text".into());
        if log_format != "text" && log_format != "json" {
            return Err(bad(
                "log_format",
                "LATCHKEY_LOG_FORMAT",
                "must be `text` or `json`",
            ));
        }
        let log_level = o
            .log_level
            .clone()
            .or_else(|| f.log_level.clone())
            .unwrap_or_else(|| "info".into());
        Ok(Self {
            data_dir,
            database_url,
            key_file,
            log_format,
            log_level,
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
    pub fn resolve(o: &ServeOverrides, f: &FileConfig) -> anyhow::Result<Self> {
        let listen_text = o
            .listen
            .clone()
            .or_else(|| f.listen.clone())
            .unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            bad(
                "listen",
                "LATCHKEY_LISTEN",
                format!("{listen_text:?} is not an address like 127.0.0.1:8080"),
            )
        })?;
        let public_url = o.public_url.clone().or_else(|| f.public_url.clone());
        if let Some(u) = &public_url {
            let parsed =
                url::Url::parse(u).map_err(|e| bad("public_url", "LATCHKEY_PUBLIC_URL", e))?;
            if !matches!(parsed.scheme(), "http" | "https")
                || parsed.query().is_some()
                || parsed.fragment().is_some()
                || parsed.host().is_none()
            {
                return Err(bad(
                    "public_url",
                    "LATCHKEY_PUBLIC_URL",
                    "must be an http(s) URL without query or fragment",
                ));
            }
        }
        let wat_ttl_seconds = o.wat_ttl_seconds.or(f.wat_ttl_seconds).unwrap_or(900);
        if !(60..=86_400).contains(&wat_ttl_seconds) {
            return Err(bad(
                "wat_ttl_seconds",
                "LATCHKEY_WAT_TTL_SECONDS",
                "must be between 60 and 86400",
            ));
        }
        let cache_ttl_seconds = o.cache_ttl_seconds.or(f.cache_ttl_seconds).unwrap_or(5);
        if cache_ttl_seconds > 300 {
            return Err(bad(
                "cache_ttl_seconds",
                "LATCHKEY_CACHE_TTL_SECONDS",
                "must be at most 300",
            ));
        }
        let default_arn = ArnContext::default();
        let arn = ArnContext {
            partition: o
                .arn_partition
                .clone()
                .or_else(|| f.arn.partition.clone())
                .unwrap_or(default_arn.partition),
            region: o
                .arn_region
                .clone()
                .or_else(|| f.arn.region.clone())
                .unwrap_or(default_arn.region),
            account: o
                .arn_account
                .clone()
                .or_else(|| f.arn.account.clone())
                .unwrap_or(default_arn.account),
        };
        let simple = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if !simple(&arn.partition) {
            return Err(bad(
                "arn.partition",
                "LATCHKEY_ARN_PARTITION",
                "must be 1..64 of [A-Za-z0-9-]",
            ));
        }
        if !simple(&arn.region) {
            return Err(bad(
                "arn.region",
                "LATCHKEY_ARN_REGION",
                "must be 1..64 of [A-Za-z0-9-]",
            ));
        }
        if arn.account.len() != 12 || !arn.account.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad(
                "arn.account",
                "LATCHKEY_ARN_ACCOUNT",
                "must be 12 digits",
            ));
        }
        let inbound_issuers = match &o.inbound_issuers {
            Some(json) => serde_json::from_str(json).map_err(|e| {
                bad(
                    "inbound_issuers",
                    "LATCHKEY_INBOUND_ISSUERS",
                    format!("not a JSON array of issuer tables: {e}"),
                )
            })?,
            None => f.inbound_issuers.clone(),
        };
        for (i, issuer) in inbound_issuers.iter().enumerate() {
            issuer.validate().map_err(|e| {
                bad(
                    &format!("inbound_issuers[{i}]"),
                    "LATCHKEY_INBOUND_ISSUERS",
                    e,
                )
            })?;
        }
        let outbound_timeout_ms = o
            .outbound_timeout_ms
            .or(f.outbound.timeout_ms)
            .unwrap_or(10_000);
        if !(100..=120_000).contains(&outbound_timeout_ms) {
            return Err(bad(
                "outbound.timeout_ms",
                "LATCHKEY_OUTBOUND_TIMEOUT_MS",
                "must be between 100 and 120000",
            ));
        }
        let outbound_max_response_bytes = o
            .outbound_max_response_bytes
            .or(f.outbound.max_response_bytes)
            .unwrap_or(1024 * 1024);
        if !(1024..=16 * 1024 * 1024).contains(&outbound_max_response_bytes) {
            bail!(bad(
                "outbound.max_response_bytes",
                "LATCHKEY_OUTBOUND_MAX_RESPONSE_BYTES",
                "must be between 1024 and 16777216"
            ));
        }
        Ok(Self {
            listen,
            public_url,
            wat_ttl_seconds,
            cache_ttl_seconds,
            arn,
            allow_private_addresses: o
                .outbound_allow_private_addresses
                .or(f.outbound.allow_private_addresses)
                .unwrap_or(false),
            outbound_timeout_ms,
            outbound_max_response_bytes,
            inbound_issuers,
        })
    }
}
