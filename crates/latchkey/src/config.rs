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
    /// How long an authorization session (3-legged OAuth flow) stays valid, in seconds.
    #[arg(long, env = "LATCHKEY_SESSION_TTL_SECONDS")]
    pub session_ttl_seconds: Option<i64>,
    /// How long a replica holds a grant's refresh lease, in seconds (longer than the outbound timeout).
    #[arg(long, env = "LATCHKEY_REFRESH_LEASE_SECONDS")]
    pub refresh_lease_seconds: Option<i64>,
    /// Token lifetime assumed when a provider's token response has no `expires_in` and the provider has no default.
    #[arg(long, env = "LATCHKEY_DEFAULT_TOKEN_LIFETIME_SECONDS")]
    pub default_token_lifetime_seconds: Option<i64>,
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
    pub session_ttl_seconds: Option<i64>,
    pub refresh_lease_seconds: Option<i64>,
    pub default_token_lifetime_seconds: Option<i64>,
    #[serde(default)]
    pub arn: FileArn,
    #[serde(default)]
    pub outbound: FileOutbound,
    #[serde(default)]
    pub inbound_issuers: Vec<InboundIssuerConfig>,
    /// `[binding]`: settings of `serve binding`.
    #[serde(default)]
    pub binding: FileBinding,
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
    pub session_ttl_seconds: i64,
    pub refresh_lease_seconds: i64,
    pub default_token_lifetime_seconds: i64,
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
        let ranged =
            |value: Option<i64>, default: i64, key: &str, env: &str, min: i64, max: i64| {
                let v = value.unwrap_or(default);
                if (min..=max).contains(&v) {
                    Ok(v)
                } else {
                    Err(bad(key, env, format!("must be between {min} and {max}")))
                }
            };
        let session_ttl_seconds = ranged(
            o.session_ttl_seconds.or(f.session_ttl_seconds),
            600,
            "session_ttl_seconds",
            "LATCHKEY_SESSION_TTL_SECONDS",
            5,
            3600,
        )?;
        let refresh_lease_seconds = ranged(
            o.refresh_lease_seconds.or(f.refresh_lease_seconds),
            30,
            "refresh_lease_seconds",
            "LATCHKEY_REFRESH_LEASE_SECONDS",
            1,
            600,
        )?;
        let default_token_lifetime_seconds = ranged(
            o.default_token_lifetime_seconds
                .or(f.default_token_lifetime_seconds),
            3600,
            "default_token_lifetime_seconds",
            "LATCHKEY_DEFAULT_TOKEN_LIFETIME_SECONDS",
            60,
            30 * 86_400,
        )?;
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
            session_ttl_seconds,
            refresh_lease_seconds,
            default_token_lifetime_seconds,
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

// ---------------------------------------------------------------------------------------
// `serve binding`

/// Flags of `serve binding` (environment `LATCHKEY_BINDING_*`, file section `[binding]`).
#[derive(Debug, Clone, Args)]
pub struct BindingOverrides {
    /// Address to listen on (`127.0.0.1:0` picks a free port). Default 127.0.0.1:8081.
    #[arg(long, env = "LATCHKEY_BINDING_LISTEN")]
    pub listen: Option<String>,
    /// Base URL of the identity service, e.g. `http://identity.internal:8080`.
    #[arg(long, env = "LATCHKEY_BINDING_IDENTITY_URL")]
    pub identity_url: Option<String>,
    /// File holding this service's `binding` credential as `ACCESS_KEY_ID:SECRET`
    /// (`latchkey admin credentials create --role binding`). Alternatively set the
    /// credential itself in the environment variable LATCHKEY_BINDING_CREDENTIAL.
    #[arg(long, env = "LATCHKEY_BINDING_CREDENTIAL_FILE")]
    pub credential_file: Option<PathBuf>,
    /// ALB source: the load balancer's ARN, which must sign `x-amzn-oidc-data`.
    #[arg(long, env = "LATCHKEY_BINDING_ALB_SIGNER")]
    pub alb_signer: Option<String>,
    /// ALB public-key URL with `{kid}` (and optionally `{region}`).
    /// Default `https://public-keys.auth.elb.{region}.amazonaws.com/{kid}`.
    #[arg(long, env = "LATCHKEY_BINDING_ALB_KEY_URL_TEMPLATE")]
    pub alb_key_url_template: Option<String>,
    /// Region for `{region}`. Default: the region in --alb-signer.
    #[arg(long, env = "LATCHKEY_BINDING_ALB_REGION")]
    pub alb_region: Option<String>,
    /// When set, the ALB token's `iss` claim must equal it.
    #[arg(long, env = "LATCHKEY_BINDING_ALB_ISSUER")]
    pub alb_issuer: Option<String>,
    /// Clock skew tolerated on the ALB token's `exp`, in seconds. Default 60.
    #[arg(long, env = "LATCHKEY_BINDING_ALB_LEEWAY_SECONDS")]
    pub alb_leeway_seconds: Option<u64>,
    /// OIDC source: the issuer of the users' ID tokens (discovery + JWKS).
    #[arg(long, env = "LATCHKEY_BINDING_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,
    /// OIDC source: the audience (client id) the ID token must be issued to.
    #[arg(long, env = "LATCHKEY_BINDING_OIDC_AUDIENCE")]
    pub oidc_audience: Option<String>,
    /// OIDC source: also read the ID token from this cookie (after `Authorization: Bearer`).
    #[arg(long, env = "LATCHKEY_BINDING_ID_TOKEN_COOKIE")]
    pub id_token_cookie: Option<String>,
    /// Allow key, discovery and JWKS fetches to loopback/private addresses and plain http.
    /// Tests and dev only.
    #[arg(
        long,
        env = "LATCHKEY_BINDING_ALLOW_PRIVATE_ADDRESSES",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub allow_private_addresses: Option<bool>,
}

/// The `[binding]` section of the file. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBinding {
    pub listen: Option<String>,
    pub identity_url: Option<String>,
    pub credential_file: Option<PathBuf>,
    pub alb_signer: Option<String>,
    pub alb_key_url_template: Option<String>,
    pub alb_region: Option<String>,
    pub alb_issuer: Option<String>,
    pub alb_leeway_seconds: Option<u64>,
    pub oidc_issuer: Option<String>,
    pub oidc_audience: Option<String>,
    pub id_token_cookie: Option<String>,
    pub allow_private_addresses: Option<bool>,
}

/// Environment variable holding the binding credential itself (`ACCESS_KEY_ID:SECRET`).
pub const BINDING_CREDENTIAL_ENV: &str = "LATCHKEY_BINDING_CREDENTIAL";

/// Settings of `serve binding`, validated.
#[derive(Debug, Clone)]
pub struct BindingServeConfig {
    pub listen: SocketAddr,
    pub binding: latchkey_binding::BindingConfig,
}

/// The environment variable of a `[binding]` key.
fn binding_env(key: &str) -> String {
    format!("LATCHKEY_BINDING_{}", key.to_ascii_uppercase())
}

fn bad_binding(key: &str, why: impl std::fmt::Display) -> anyhow::Error {
    bad(&format!("binding.{key}"), &binding_env(key), why)
}

impl BindingServeConfig {
    /// Resolve from flags (and their environment variables) over the file; the credential
    /// from `credential_file` or [`BINDING_CREDENTIAL_ENV`].
    pub fn resolve(o: &BindingOverrides, f: &FileConfig) -> anyhow::Result<Self> {
        Self::resolve_with_env(o, f, std::env::var(BINDING_CREDENTIAL_ENV).ok())
    }

    fn resolve_with_env(
        o: &BindingOverrides,
        f: &FileConfig,
        credential_env: Option<String>,
    ) -> anyhow::Result<Self> {
        let b = &f.binding;
        let pick = |flag: &Option<String>, file: &Option<String>| {
            flag.clone()
                .or_else(|| file.clone())
                .filter(|v| !v.trim().is_empty())
        };
        let listen_text = pick(&o.listen, &b.listen).unwrap_or_else(|| "127.0.0.1:8081".into());
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            bad_binding(
                "listen",
                format!("{listen_text:?} is not an address like 127.0.0.1:8081"),
            )
        })?;
        let identity_url = pick(&o.identity_url, &b.identity_url).ok_or_else(|| {
            bad_binding(
                "identity_url",
                "missing: the identity service's base URL is required",
            )
        })?;

        let credential_file = o
            .credential_file
            .clone()
            .or_else(|| b.credential_file.clone());
        let credential_env = credential_env.filter(|v| !v.trim().is_empty());
        let from_env = credential_env.is_some();
        let credential_text = match (credential_file, credential_env) {
            (Some(_), Some(_)) => {
                return Err(bad_binding(
                    "credential_file",
                    format!(
                        "set either binding.credential_file or {BINDING_CREDENTIAL_ENV}, not both"
                    ),
                ));
            }
            (Some(file), None) => std::fs::read_to_string(&file).map_err(|e| {
                bad_binding(
                    "credential_file",
                    format!("cannot read {}: {e}", file.display()),
                )
            })?,
            (None, Some(text)) => text,
            (None, None) => {
                return Err(bad_binding(
                    "credential_file",
                    format!(
                        "missing: set binding.credential_file (a file holding ACCESS_KEY_ID:SECRET of a `binding` credential) or {BINDING_CREDENTIAL_ENV}"
                    ),
                ));
            }
        };
        let credential =
            latchkey_binding::BindingCredential::parse(&credential_text).map_err(|e| {
                if from_env {
                    anyhow!("invalid environment variable {BINDING_CREDENTIAL_ENV}: {e}")
                } else {
                    bad_binding("credential_file", e)
                }
            })?;
        drop(zeroize::Zeroizing::new(credential_text));

        let mut config = latchkey_binding::BindingConfig::new(identity_url, credential);
        if let Some(signer) = pick(&o.alb_signer, &b.alb_signer) {
            let mut alb = latchkey_binding::AlbConfig::new(signer);
            if let Some(t) = pick(&o.alb_key_url_template, &b.alb_key_url_template) {
                alb.key_url_template = t;
            }
            alb.region = pick(&o.alb_region, &b.alb_region);
            alb.issuer = pick(&o.alb_issuer, &b.alb_issuer);
            if let Some(l) = o.alb_leeway_seconds.or(b.alb_leeway_seconds) {
                alb.leeway_seconds = l;
            }
            config.alb = Some(alb);
        } else {
            for (key, set) in [
                (
                    "alb_key_url_template",
                    pick(&o.alb_key_url_template, &b.alb_key_url_template).is_some(),
                ),
                ("alb_region", pick(&o.alb_region, &b.alb_region).is_some()),
                ("alb_issuer", pick(&o.alb_issuer, &b.alb_issuer).is_some()),
                (
                    "alb_leeway_seconds",
                    o.alb_leeway_seconds.or(b.alb_leeway_seconds).is_some(),
                ),
            ] {
                if set {
                    return Err(bad_binding(key, "has no effect without binding.alb_signer"));
                }
            }
        }
        let oidc_issuer = pick(&o.oidc_issuer, &b.oidc_issuer);
        let oidc_audience = pick(&o.oidc_audience, &b.oidc_audience);
        let cookie = pick(&o.id_token_cookie, &b.id_token_cookie);
        match (oidc_issuer, oidc_audience) {
            (Some(issuer), Some(audience)) => {
                let mut oidc = latchkey_binding::OidcConfig::new(issuer, audience);
                oidc.cookie_name = cookie;
                config.oidc = Some(oidc);
            }
            (Some(_), None) => {
                return Err(bad_binding(
                    "oidc_audience",
                    "missing: binding.oidc_issuer needs binding.oidc_audience (the ID token's audience)",
                ));
            }
            (None, Some(_)) => {
                return Err(bad_binding(
                    "oidc_issuer",
                    "missing: binding.oidc_audience needs binding.oidc_issuer",
                ));
            }
            (None, None) if cookie.is_some() => {
                return Err(bad_binding(
                    "oidc_issuer",
                    "missing: binding.id_token_cookie needs binding.oidc_issuer and binding.oidc_audience",
                ));
            }
            (None, None) => {}
        }
        config.outbound.allow_private_addresses = o
            .allow_private_addresses
            .or(b.allow_private_addresses)
            .unwrap_or(false);
        config.validate().map_err(|e| match e.key {
            // No user source at all: name both ways to configure one.
            "alb_signer" if config.alb.is_none() => bad(
                "binding.alb_signer",
                "LATCHKEY_BINDING_ALB_SIGNER, or binding.oidc_issuer / LATCHKEY_BINDING_OIDC_ISSUER",
                e.reason,
            ),
            key => bad_binding(key, e.reason),
        })?;
        Ok(Self {
            listen,
            binding: config,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod binding_tests {
    use super::*;

    fn overrides() -> BindingOverrides {
        BindingOverrides {
            listen: None,
            identity_url: Some("http://127.0.0.1:8080".into()),
            credential_file: None,
            alb_signer: None,
            alb_key_url_template: None,
            alb_region: None,
            alb_issuer: None,
            alb_leeway_seconds: None,
            oidc_issuer: None,
            oidc_audience: None,
            id_token_cookie: None,
            allow_private_addresses: None,
        }
    }

    const SIGNER: &str = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/x/1";

    fn resolve(o: &BindingOverrides, f: &FileConfig) -> anyhow::Result<BindingServeConfig> {
        BindingServeConfig::resolve_with_env(o, f, Some("LKTEST:top-secret-value".into()))
    }

    #[test]
    fn needs_a_user_source() {
        let error = resolve(&overrides(), &FileConfig::default())
            .unwrap_err()
            .to_string();
        assert!(error.contains("binding.alb_signer"), "{error}");
        assert!(!error.contains("top-secret-value"));
    }

    #[test]
    fn needs_a_credential() {
        let mut o = overrides();
        o.alb_signer = Some(SIGNER.into());
        let error = BindingServeConfig::resolve_with_env(&o, &FileConfig::default(), None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("binding.credential_file"), "{error}");
        assert!(error.contains(BINDING_CREDENTIAL_ENV), "{error}");
    }

    #[test]
    fn flag_over_file_and_defaults() {
        let file: FileConfig = toml::from_str(
            r#"
            [binding]
            listen = "127.0.0.1:9000"
            identity_url = "http://identity.internal:8080"
            alb_signer = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/y/2"
            oidc_issuer = "https://login.example.com"
            oidc_audience = "app"
            id_token_cookie = "id_token"
            allow_private_addresses = true
            "#,
        )
        .unwrap();
        let mut o = overrides();
        o.alb_signer = Some(SIGNER.into());
        let c = resolve(&o, &file).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(c.binding.identity_url, "http://127.0.0.1:8080");
        let alb = c.binding.alb.as_ref().unwrap();
        assert_eq!(alb.signer_arn, SIGNER);
        assert_eq!(alb.effective_region().as_deref(), Some("eu-west-1"));
        let oidc = c.binding.oidc.as_ref().unwrap();
        assert_eq!(oidc.cookie_name.as_deref(), Some("id_token"));
        assert!(c.binding.outbound.allow_private_addresses);
        assert!(!format!("{c:?}").contains("top-secret-value"));
    }

    #[test]
    fn keys_are_named() {
        let mut o = overrides();
        o.oidc_issuer = Some("https://login.example.com".into());
        let error = resolve(&o, &FileConfig::default()).unwrap_err().to_string();
        assert!(error.contains("binding.oidc_audience"), "{error}");
        let mut o = overrides();
        o.alb_signer = Some(SIGNER.into());
        o.alb_key_url_template = Some("https://keys.example.com/".into());
        let error = resolve(&o, &FileConfig::default()).unwrap_err().to_string();
        assert!(error.contains("binding.alb_key_url_template"), "{error}");
        let mut o = overrides();
        o.alb_region = Some("eu-west-1".into());
        o.oidc_issuer = Some("https://login.example.com".into());
        o.oidc_audience = Some("app".into());
        let error = resolve(&o, &FileConfig::default()).unwrap_err().to_string();
        assert!(error.contains("binding.alb_region"), "{error}");
        let mut o = overrides();
        o.alb_signer = Some(SIGNER.into());
        o.identity_url = None;
        let error = resolve(&o, &FileConfig::default()).unwrap_err().to_string();
        assert!(error.contains("binding.identity_url"), "{error}");
        let error = BindingServeConfig::resolve_with_env(
            &{
                let mut o = overrides();
                o.alb_signer = Some(SIGNER.into());
                o
            },
            &FileConfig::default(),
            Some("no-colon-top-secret".into()),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains(BINDING_CREDENTIAL_ENV), "{error}");
        assert!(!error.contains("top-secret"), "{error}");
    }
}
