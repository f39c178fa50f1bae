//! One typed configuration: a TOML file (`--config`), overridden per key by a
//! `LATCHKEY_*` environment variable, overridden by a command-line flag. Secrets can come
//! from files (`*_FILE`). Validated at start with the failing key named.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use clap::Args;
use latchkey_authn::inbound::InboundIssuerConfig;
use latchkey_core::arn::ArnContext;
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
    /// `[agent]`: settings of `serve agent`.
    #[serde(default)]
    pub agent: FileAgent,
    /// `[gateway]`: settings of `serve gateway`.
    #[serde(default)]
    pub gateway: FileGateway,
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
            let mut alb = latchkey_authn::AlbConfig::new(signer);
            if let Some(t) = pick(&o.alb_key_url_template, &b.alb_key_url_template) {
                alb.key_url_template = t;
            }
            alb.region = pick(&o.alb_region, &b.alb_region);
            alb.issuer = pick(&o.alb_issuer, &b.alb_issuer);
            if let Some(l) = o.alb_leeway_seconds.or(b.alb_leeway_seconds) {
                alb.leeway_seconds = l;
            }
            config.users.alb = Some(alb);
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
                let mut oidc = latchkey_authn::OidcConfig::new(issuer, audience);
                oidc.cookie_name = cookie;
                config.users.oidc = Some(oidc);
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
            "alb_signer" if config.users.alb.is_none() => bad(
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
        let alb = c.binding.users.alb.as_ref().unwrap();
        assert_eq!(alb.signer_arn, SIGNER);
        assert_eq!(alb.effective_region().as_deref(), Some("eu-west-1"));
        let oidc = c.binding.users.oidc.as_ref().unwrap();
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

// ---------------------------------------------------------------------------------------
// `serve agent`

/// Flags of `serve agent` (environment `LATCHKEY_AGENT_*`, file section `[agent]`).
#[derive(Debug, Clone, Args)]
pub struct AgentOverrides {
    /// Print the agent's OpenAPI document (JSON) and exit.
    #[arg(long)]
    pub print_openapi: bool,
    /// Address to listen on (`127.0.0.1:0` picks a free port). Default 127.0.0.1:8082.
    #[arg(long, env = "LATCHKEY_AGENT_LISTEN")]
    pub listen: Option<String>,
    /// Base URL of the identity service.
    #[arg(long, env = "LATCHKEY_AGENT_IDENTITY_URL")]
    pub identity_url: Option<String>,
    /// File holding this agent's `workload:<name>` credential as `ACCESS_KEY_ID:SECRET`.
    /// Alternatively set the credential itself in LATCHKEY_AGENT_CREDENTIAL.
    #[arg(long, env = "LATCHKEY_AGENT_CREDENTIAL_FILE")]
    pub credential_file: Option<PathBuf>,
    /// The workload identity name (the credential's role is `workload:<name>`).
    #[arg(long, env = "LATCHKEY_AGENT_WORKLOAD_NAME")]
    pub workload_name: Option<String>,
    /// `resourceOauth2ReturnUrl`: the session binding service's URL.
    #[arg(long, env = "LATCHKEY_AGENT_RETURN_URL")]
    pub return_url: Option<String>,
    /// ALB source: the load balancer's ARN, which must sign `x-amzn-oidc-data`.
    #[arg(long, env = "LATCHKEY_AGENT_ALB_SIGNER")]
    pub alb_signer: Option<String>,
    /// ALB public-key URL with `{kid}` (and optionally `{region}`).
    #[arg(long, env = "LATCHKEY_AGENT_ALB_KEY_URL_TEMPLATE")]
    pub alb_key_url_template: Option<String>,
    /// Region for `{region}`. Default: the region in --alb-signer.
    #[arg(long, env = "LATCHKEY_AGENT_ALB_REGION")]
    pub alb_region: Option<String>,
    /// When set, the ALB token's `iss` claim must equal it.
    #[arg(long, env = "LATCHKEY_AGENT_ALB_ISSUER")]
    pub alb_issuer: Option<String>,
    /// Clock skew tolerated on the ALB token's `exp`, in seconds. Default 60.
    #[arg(long, env = "LATCHKEY_AGENT_ALB_LEEWAY_SECONDS")]
    pub alb_leeway_seconds: Option<u64>,
    /// OIDC source: the issuer of the users' bearer ID tokens.
    #[arg(long, env = "LATCHKEY_AGENT_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,
    /// OIDC source: the audience the ID token must be issued to.
    #[arg(long, env = "LATCHKEY_AGENT_OIDC_AUDIENCE")]
    pub oidc_audience: Option<String>,
    /// Allow key, discovery and JWKS fetches to loopback/private addresses. Tests and dev only.
    #[arg(
        long,
        env = "LATCHKEY_AGENT_ALLOW_PRIVATE_ADDRESSES",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub allow_private_addresses: Option<bool>,
    /// Local conversation directory. Default `<data_dir>/agent`.
    #[arg(long, env = "LATCHKEY_AGENT_STORE_DIR")]
    pub store_dir: Option<PathBuf>,
    /// `openai`, `anthropic` or `bedrock`.
    #[arg(long, env = "LATCHKEY_AGENT_LLM_PROVIDER")]
    pub llm_provider: Option<String>,
    /// Model id.
    #[arg(long, env = "LATCHKEY_AGENT_LLM_MODEL")]
    pub llm_model: Option<String>,
    /// Model API base URL. Default: the provider's public endpoint.
    #[arg(long, env = "LATCHKEY_AGENT_LLM_BASE_URL")]
    pub llm_base_url: Option<String>,
    /// File holding the model API key (or set LATCHKEY_AGENT_LLM_API_KEY).
    #[arg(long, env = "LATCHKEY_AGENT_LLM_API_KEY_FILE")]
    pub llm_api_key_file: Option<PathBuf>,
    /// AWS region (Bedrock).
    #[arg(long, env = "LATCHKEY_AGENT_LLM_REGION")]
    pub llm_region: Option<String>,
    /// Timeout of one model call, in seconds. Default 120.
    #[arg(long, env = "LATCHKEY_AGENT_LLM_TIMEOUT_SECONDS")]
    pub llm_timeout_seconds: Option<u64>,
    /// Retries of a model call before any event streamed. Default 2.
    #[arg(long, env = "LATCHKEY_AGENT_LLM_MAX_RETRIES")]
    pub llm_max_retries: Option<u32>,
    /// System prompt.
    #[arg(long, env = "LATCHKEY_AGENT_SYSTEM_PROMPT")]
    pub system_prompt: Option<String>,
    /// Model calls ending in tool use allowed per turn. Default 8.
    #[arg(long, env = "LATCHKEY_AGENT_MAX_TOOL_ITERATIONS")]
    pub max_tool_iterations: Option<u32>,
    /// Wait this long for a user's consent inside the turn (0: end the turn). Default 0.
    #[arg(long, env = "LATCHKEY_AGENT_CONSENT_WAIT_SECONDS")]
    pub consent_wait_seconds: Option<u64>,
    /// GitHub REST API base URL. Default https://api.github.com.
    #[arg(long, env = "LATCHKEY_AGENT_GITHUB_BASE_URL")]
    pub github_base_url: Option<String>,
    /// Credential provider of the built-in GitHub tools. Default `github`.
    #[arg(long, env = "LATCHKEY_AGENT_GITHUB_PROVIDER")]
    pub github_provider: Option<String>,
    /// Time allowed for one tool HTTP call, in seconds. Default 15.
    #[arg(long, env = "LATCHKEY_AGENT_TOOL_TIMEOUT_SECONDS")]
    pub tool_timeout_seconds: Option<u64>,
    /// Largest tool HTTP response body read, in bytes. Default 262144.
    #[arg(long, env = "LATCHKEY_AGENT_TOOL_MAX_RESPONSE_BYTES")]
    pub tool_max_response_bytes: Option<usize>,
    /// Largest `POST /invocations` body, in bytes. Default 65536.
    #[arg(long, env = "LATCHKEY_AGENT_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Longest `message`, in characters. Default 16384.
    #[arg(long, env = "LATCHKEY_AGENT_MAX_MESSAGE_CHARS")]
    pub max_message_chars: Option<usize>,
    /// `max_tokens` of one model call. Default 1024.
    #[arg(long, env = "LATCHKEY_AGENT_MAX_OUTPUT_TOKENS")]
    pub max_output_tokens: Option<u32>,
    /// Time allowed for one call to the identity service, in seconds. Default 30.
    #[arg(long, env = "LATCHKEY_AGENT_IDENTITY_TIMEOUT_SECONDS")]
    pub identity_timeout_seconds: Option<u64>,
    /// Tools declared without code, as a JSON array of `[[agent.tools]]` tables (replaces
    /// the file's).
    #[arg(long, env = "LATCHKEY_AGENT_TOOLS")]
    pub tools: Option<String>,
    /// Conversation store: `local` (default) or `s3`.
    #[arg(long, env = "LATCHKEY_AGENT_STORE_KIND")]
    pub store_kind: Option<String>,
    /// S3 bucket (store kind `s3`).
    #[arg(long, env = "LATCHKEY_AGENT_STORE_BUCKET")]
    pub store_bucket: Option<String>,
    /// S3 key prefix.
    #[arg(long, env = "LATCHKEY_AGENT_STORE_PREFIX")]
    pub store_prefix: Option<String>,
    /// S3 region.
    #[arg(long, env = "LATCHKEY_AGENT_STORE_REGION")]
    pub store_region: Option<String>,
    /// S3-compatible endpoint, e.g. `http://127.0.0.1:9000`.
    #[arg(long, env = "LATCHKEY_AGENT_STORE_ENDPOINT")]
    pub store_endpoint: Option<String>,
    /// Allow a plain-http S3 endpoint (tests and dev only).
    #[arg(
        long,
        env = "LATCHKEY_AGENT_STORE_ALLOW_HTTP",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub store_allow_http: Option<bool>,
    /// S3 access key id (with the secret from a file or LATCHKEY_AGENT_STORE_SECRET_ACCESS_KEY);
    /// default: the AWS credential chain.
    #[arg(long, env = "LATCHKEY_AGENT_STORE_ACCESS_KEY_ID")]
    pub store_access_key_id: Option<String>,
    /// File holding the S3 secret access key.
    #[arg(long, env = "LATCHKEY_AGENT_STORE_SECRET_ACCESS_KEY_FILE")]
    pub store_secret_access_key_file: Option<PathBuf>,
}

/// `[agent.llm]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAgentLlm {
    pub provider: Option<String>,
    pub model: Option<String>,
    pub base_url: Option<String>,
    pub api_key: Option<String>,
    pub api_key_file: Option<PathBuf>,
    pub region: Option<String>,
    pub timeout_seconds: Option<u64>,
    pub max_retries: Option<u32>,
}

/// `[agent.store]`: `kind = "local"` (with `dir`) or `kind = "s3"`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAgentStore {
    pub kind: Option<String>,
    pub dir: Option<PathBuf>,
    pub bucket: Option<String>,
    pub prefix: Option<String>,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub allow_http: Option<bool>,
    pub access_key_id: Option<String>,
    pub secret_access_key_file: Option<PathBuf>,
}

/// The `[agent]` section of the file. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAgent {
    pub listen: Option<String>,
    pub identity_url: Option<String>,
    pub credential_file: Option<PathBuf>,
    pub workload_name: Option<String>,
    pub return_url: Option<String>,
    pub alb_signer: Option<String>,
    pub alb_key_url_template: Option<String>,
    pub alb_region: Option<String>,
    pub alb_issuer: Option<String>,
    pub alb_leeway_seconds: Option<u64>,
    pub oidc_issuer: Option<String>,
    pub oidc_audience: Option<String>,
    pub allow_private_addresses: Option<bool>,
    pub system_prompt: Option<String>,
    pub max_tool_iterations: Option<u32>,
    pub consent_wait_seconds: Option<u64>,
    pub github_base_url: Option<String>,
    pub github_provider: Option<String>,
    pub tool_timeout_seconds: Option<u64>,
    pub tool_max_response_bytes: Option<usize>,
    pub max_body_bytes: Option<usize>,
    pub max_message_chars: Option<usize>,
    pub max_output_tokens: Option<u32>,
    pub identity_timeout_seconds: Option<u64>,
    #[serde(default)]
    pub llm: FileAgentLlm,
    #[serde(default)]
    pub store: FileAgentStore,
    #[serde(default)]
    pub tools: Vec<latchkey_agent::HttpToolConfig>,
}

/// Environment variable holding the agent credential itself (`ACCESS_KEY_ID:SECRET`).
pub const AGENT_CREDENTIAL_ENV: &str = "LATCHKEY_AGENT_CREDENTIAL";
/// Environment variable holding the model API key itself.
pub const AGENT_LLM_API_KEY_ENV: &str = "LATCHKEY_AGENT_LLM_API_KEY";
/// Environment variable holding the S3 secret access key itself.
pub const AGENT_STORE_SECRET_ENV: &str = "LATCHKEY_AGENT_STORE_SECRET_ACCESS_KEY";

/// Secrets that come only from the environment (read once, passed in for tests).
#[derive(Debug, Default, Clone)]
pub struct AgentSecretsEnv {
    pub credential: Option<String>,
    pub llm_api_key: Option<String>,
    pub store_secret_access_key: Option<String>,
}

impl AgentSecretsEnv {
    pub fn from_process() -> Self {
        Self {
            credential: std::env::var(AGENT_CREDENTIAL_ENV).ok(),
            llm_api_key: std::env::var(AGENT_LLM_API_KEY_ENV).ok(),
            store_secret_access_key: std::env::var(AGENT_STORE_SECRET_ENV).ok(),
        }
    }
}

/// Settings of `serve agent`, validated.
#[derive(Debug, Clone)]
pub struct AgentServeConfig {
    pub listen: SocketAddr,
    pub agent: latchkey_agent::AgentConfig,
}

/// The environment variable of an `[agent]` key (`llm.model` → `LATCHKEY_AGENT_LLM_MODEL`).
fn agent_env(key: &str) -> String {
    format!(
        "LATCHKEY_AGENT_{}",
        key.replace('.', "_").to_ascii_uppercase()
    )
}

fn bad_agent(key: &str, why: impl std::fmt::Display) -> anyhow::Error {
    bad(&format!("agent.{key}"), &agent_env(key), why)
}

fn read_secret_file(key: &str, path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad_agent(key, format!("cannot read {}: {e}", path.display())))?;
    Ok(text.trim().to_string())
}

impl AgentServeConfig {
    pub fn resolve(
        o: &AgentOverrides,
        f: &FileConfig,
        storage: &StorageConfig,
    ) -> anyhow::Result<Self> {
        Self::resolve_with_env(o, f, storage, AgentSecretsEnv::from_process())
    }

    pub fn resolve_with_env(
        o: &AgentOverrides,
        f: &FileConfig,
        storage: &StorageConfig,
        env: AgentSecretsEnv,
    ) -> anyhow::Result<Self> {
        use latchkey_agent::config as ac;
        let a = &f.agent;
        let pick = |flag: &Option<String>, file: &Option<String>| {
            flag.clone()
                .or_else(|| file.clone())
                .filter(|v| !v.trim().is_empty())
        };
        let listen_text = pick(&o.listen, &a.listen).unwrap_or_else(|| "127.0.0.1:8082".into());
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            bad_agent(
                "listen",
                format!("{listen_text:?} is not an address like 127.0.0.1:8082"),
            )
        })?;
        let required = |flag: &Option<String>, file: &Option<String>, key: &str, what: &str| {
            pick(flag, file).ok_or_else(|| bad_agent(key, format!("missing: {what}")))
        };
        let identity_url = required(
            &o.identity_url,
            &a.identity_url,
            "identity_url",
            "the identity service's base URL is required",
        )?;
        let workload_name = required(
            &o.workload_name,
            &a.workload_name,
            "workload_name",
            "the workload identity name is required",
        )?;
        let return_url = required(
            &o.return_url,
            &a.return_url,
            "return_url",
            "the session binding service's URL (resourceOauth2ReturnUrl) is required",
        )?;

        // The credential: a file or the environment, not both.
        let credential_file = o
            .credential_file
            .clone()
            .or_else(|| a.credential_file.clone());
        let credential_env = env.credential.filter(|v| !v.trim().is_empty());
        let from_env = credential_env.is_some();
        let credential_text = match (credential_file, credential_env) {
            (Some(_), Some(_)) => {
                return Err(bad_agent(
                    "credential_file",
                    format!("set either agent.credential_file or {AGENT_CREDENTIAL_ENV}, not both"),
                ));
            }
            (Some(file), None) => std::fs::read_to_string(&file).map_err(|e| {
                bad_agent(
                    "credential_file",
                    format!("cannot read {}: {e}", file.display()),
                )
            })?,
            (None, Some(text)) => text,
            (None, None) => {
                return Err(bad_agent(
                    "credential_file",
                    format!(
                        "missing: set agent.credential_file (a file holding ACCESS_KEY_ID:SECRET of a `workload:<name>` credential) or {AGENT_CREDENTIAL_ENV}"
                    ),
                ));
            }
        };
        let credential = latchkey_agent::AgentCredential::parse(&credential_text).map_err(|e| {
            if from_env {
                anyhow!("invalid environment variable {AGENT_CREDENTIAL_ENV}: {e}")
            } else {
                bad_agent("credential_file", e)
            }
        })?;
        drop(zeroize::Zeroizing::new(credential_text));

        // User sources, as for `serve binding`.
        let alb = match pick(&o.alb_signer, &a.alb_signer) {
            Some(signer) => {
                let mut alb = latchkey_authn::AlbConfig::new(signer);
                if let Some(t) = pick(&o.alb_key_url_template, &a.alb_key_url_template) {
                    alb.key_url_template = t;
                }
                alb.region = pick(&o.alb_region, &a.alb_region);
                alb.issuer = pick(&o.alb_issuer, &a.alb_issuer);
                if let Some(l) = o.alb_leeway_seconds.or(a.alb_leeway_seconds) {
                    alb.leeway_seconds = l;
                }
                Some(alb)
            }
            None => {
                for (key, set) in [
                    (
                        "alb_key_url_template",
                        pick(&o.alb_key_url_template, &a.alb_key_url_template).is_some(),
                    ),
                    ("alb_region", pick(&o.alb_region, &a.alb_region).is_some()),
                    ("alb_issuer", pick(&o.alb_issuer, &a.alb_issuer).is_some()),
                    (
                        "alb_leeway_seconds",
                        o.alb_leeway_seconds.or(a.alb_leeway_seconds).is_some(),
                    ),
                ] {
                    if set {
                        return Err(bad_agent(key, "has no effect without agent.alb_signer"));
                    }
                }
                None
            }
        };
        let oidc = match (
            pick(&o.oidc_issuer, &a.oidc_issuer),
            pick(&o.oidc_audience, &a.oidc_audience),
        ) {
            (Some(issuer), Some(audience)) => {
                Some(latchkey_authn::OidcConfig::new(issuer, audience))
            }
            (Some(_), None) => {
                return Err(bad_agent(
                    "oidc_audience",
                    "missing: agent.oidc_issuer needs agent.oidc_audience",
                ));
            }
            (None, Some(_)) => {
                return Err(bad_agent(
                    "oidc_issuer",
                    "missing: agent.oidc_audience needs agent.oidc_issuer",
                ));
            }
            (None, None) => None,
        };

        // The model.
        let l = &a.llm;
        let provider_text = pick(&o.llm_provider, &l.provider).ok_or_else(|| {
            bad_agent(
                "llm.provider",
                "missing: openai, anthropic or bedrock is required",
            )
        })?;
        let provider = match provider_text.as_str() {
            "openai" => latchkey_llm::Provider::Openai,
            "anthropic" => latchkey_llm::Provider::Anthropic,
            "bedrock" => latchkey_llm::Provider::Bedrock,
            other => {
                return Err(bad_agent(
                    "llm.provider",
                    format!("{other:?} is not openai, anthropic or bedrock"),
                ));
            }
        };
        let model = pick(&o.llm_model, &l.model)
            .ok_or_else(|| bad_agent("llm.model", "missing: the model id is required"))?;
        let key_file = o
            .llm_api_key_file
            .clone()
            .or_else(|| l.api_key_file.clone());
        let key_env = env.llm_api_key.filter(|v| !v.trim().is_empty());
        let key_inline = l.api_key.clone().filter(|v| !v.trim().is_empty());
        let api_key = match (key_inline, key_file, key_env) {
            (None, None, None) => None,
            (Some(k), None, None) => Some(k),
            (None, Some(file), None) => Some(read_secret_file("llm.api_key_file", &file)?),
            (None, None, Some(k)) => Some(k.trim().to_string()),
            _ => {
                return Err(bad_agent(
                    "llm.api_key",
                    format!(
                        "set only one of agent.llm.api_key, agent.llm.api_key_file and {AGENT_LLM_API_KEY_ENV}"
                    ),
                ));
            }
        };
        // No key is fine: OpenAI-compatible servers such as Ollama or vLLM need none.
        let region = pick(&o.llm_region, &l.region);
        let llm = latchkey_llm::LlmConfig {
            provider,
            model,
            base_url: pick(&o.llm_base_url, &l.base_url),
            api_key: api_key.map(secrecy::SecretString::from),
            region,
            timeout: std::time::Duration::from_secs(
                o.llm_timeout_seconds.or(l.timeout_seconds).unwrap_or(120),
            ),
            max_retries: o.llm_max_retries.or(l.max_retries).unwrap_or(2),
        };

        // Conversations.
        let s = &a.store;
        let bucket = pick(&o.store_bucket, &s.bucket);
        let prefix = pick(&o.store_prefix, &s.prefix);
        let store_region = pick(&o.store_region, &s.region);
        let endpoint = pick(&o.store_endpoint, &s.endpoint);
        let access_key_id = pick(&o.store_access_key_id, &s.access_key_id);
        let secret_file = o
            .store_secret_access_key_file
            .clone()
            .or_else(|| s.secret_access_key_file.clone());
        let store = match pick(&o.store_kind, &s.kind).as_deref().unwrap_or("local") {
            "local" => {
                for (key, set) in [
                    ("store.bucket", bucket.is_some()),
                    ("store.prefix", prefix.is_some()),
                    ("store.region", store_region.is_some()),
                    ("store.endpoint", endpoint.is_some()),
                    ("store.access_key_id", access_key_id.is_some()),
                    ("store.secret_access_key_file", secret_file.is_some()),
                ] {
                    if set {
                        return Err(bad_agent(key, "only applies to agent.store.kind = \"s3\""));
                    }
                }
                latchkey_agent::StoreConfig::Local {
                    dir: o
                        .store_dir
                        .clone()
                        .or_else(|| s.dir.clone())
                        .unwrap_or_else(|| storage.data_dir.join("agent")),
                }
            }
            "s3" => {
                if o.store_dir.is_some() || s.dir.is_some() {
                    return Err(bad_agent(
                        "store.dir",
                        "only applies to agent.store.kind = \"local\"",
                    ));
                }
                let bucket = bucket.ok_or_else(|| {
                    bad_agent("store.bucket", "missing: required with kind = \"s3\"")
                })?;
                let region = store_region.ok_or_else(|| {
                    bad_agent("store.region", "missing: required with kind = \"s3\"")
                })?;
                let secret = match (&secret_file, env.store_secret_access_key) {
                    (Some(_), Some(_)) => {
                        return Err(bad_agent(
                            "store.secret_access_key_file",
                            format!(
                                "set either agent.store.secret_access_key_file or {AGENT_STORE_SECRET_ENV}, not both"
                            ),
                        ));
                    }
                    (Some(file), None) => {
                        Some(read_secret_file("store.secret_access_key_file", file)?)
                    }
                    (None, Some(k)) => Some(k.trim().to_string()),
                    (None, None) => None,
                };
                if access_key_id.is_some() != secret.is_some() {
                    return Err(bad_agent(
                        "store.access_key_id",
                        "agent.store.access_key_id and the secret access key go together",
                    ));
                }
                latchkey_agent::StoreConfig::S3 {
                    bucket,
                    prefix,
                    region,
                    endpoint,
                    allow_http: o.store_allow_http.or(s.allow_http).unwrap_or(false),
                    access_key_id,
                    secret_access_key: secret.map(secrecy::SecretString::from),
                    session_token: None,
                }
            }
            other => {
                return Err(bad_agent(
                    "store.kind",
                    format!("{other:?} is not \"local\" or \"s3\""),
                ));
            }
        };
        let tools = match &o.tools {
            Some(json) => serde_json::from_str(json)
                .map_err(|e| bad_agent("tools", format!("not a JSON array of tool tables: {e}")))?,
            None => a.tools.clone(),
        };

        let outbound = latchkey_authn::outbound::OutboundPolicy {
            allow_private_addresses: o
                .allow_private_addresses
                .or(a.allow_private_addresses)
                .unwrap_or(false),
            ..Default::default()
        };
        let config = latchkey_agent::AgentConfig {
            identity_url,
            credential,
            workload_name,
            return_url,
            users: latchkey_authn::UserSources { alb, oidc },
            outbound,
            llm,
            system_prompt: pick(&o.system_prompt, &a.system_prompt)
                .unwrap_or_else(|| ac::DEFAULT_SYSTEM_PROMPT.into()),
            max_output_tokens: o
                .max_output_tokens
                .or(a.max_output_tokens)
                .unwrap_or(ac::DEFAULT_MAX_OUTPUT_TOKENS),
            max_tool_iterations: o
                .max_tool_iterations
                .or(a.max_tool_iterations)
                .unwrap_or(ac::DEFAULT_MAX_TOOL_ITERATIONS),
            consent_wait_seconds: o
                .consent_wait_seconds
                .or(a.consent_wait_seconds)
                .unwrap_or(0),
            store,
            github_base_url: pick(&o.github_base_url, &a.github_base_url)
                .unwrap_or_else(|| ac::DEFAULT_GITHUB_BASE_URL.into()),
            github_provider: pick(&o.github_provider, &a.github_provider)
                .unwrap_or_else(|| "github".into()),
            tools,
            tool_timeout: o
                .tool_timeout_seconds
                .or(a.tool_timeout_seconds)
                .map(std::time::Duration::from_secs)
                .unwrap_or(ac::DEFAULT_TOOL_TIMEOUT),
            tool_max_response_bytes: o
                .tool_max_response_bytes
                .or(a.tool_max_response_bytes)
                .unwrap_or(ac::DEFAULT_TOOL_MAX_RESPONSE_BYTES),
            max_body_bytes: o
                .max_body_bytes
                .or(a.max_body_bytes)
                .unwrap_or(ac::DEFAULT_MAX_BODY_BYTES),
            max_message_chars: o
                .max_message_chars
                .or(a.max_message_chars)
                .unwrap_or(ac::DEFAULT_MAX_MESSAGE_CHARS),
            identity_timeout: std::time::Duration::from_secs(
                o.identity_timeout_seconds
                    .or(a.identity_timeout_seconds)
                    .unwrap_or(30),
            ),
        };
        config.validate().map_err(|e| match e.key {
            "alb_signer" if config.users.alb.is_none() => bad(
                "agent.alb_signer",
                "LATCHKEY_AGENT_ALB_SIGNER, or agent.oidc_issuer / LATCHKEY_AGENT_OIDC_ISSUER",
                e.reason,
            ),
            key => bad_agent(key, e.reason),
        })?;
        Ok(Self {
            listen,
            agent: config,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod agent_tests {
    use super::*;

    fn overrides() -> AgentOverrides {
        AgentOverrides {
            print_openapi: false,
            listen: None,
            identity_url: Some("http://127.0.0.1:8080".into()),
            credential_file: None,
            workload_name: Some("my-agent".into()),
            return_url: Some("http://127.0.0.1:8081/oauth2/session-binding".into()),
            alb_signer: Some(
                "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/x/1".into(),
            ),
            alb_key_url_template: None,
            alb_region: None,
            alb_issuer: None,
            alb_leeway_seconds: None,
            oidc_issuer: None,
            oidc_audience: None,
            allow_private_addresses: None,
            store_dir: None,
            llm_provider: Some("openai".into()),
            llm_model: Some("gpt-4o-mini".into()),
            llm_base_url: None,
            llm_api_key_file: None,
            llm_region: None,
            llm_timeout_seconds: None,
            llm_max_retries: None,
            system_prompt: None,
            max_tool_iterations: None,
            consent_wait_seconds: None,
            github_base_url: None,
            github_provider: None,
            tool_timeout_seconds: None,
            tool_max_response_bytes: None,
            max_body_bytes: None,
            max_message_chars: None,
            max_output_tokens: None,
            identity_timeout_seconds: None,
            tools: None,
            store_kind: None,
            store_bucket: None,
            store_prefix: None,
            store_region: None,
            store_endpoint: None,
            store_allow_http: None,
            store_access_key_id: None,
            store_secret_access_key_file: None,
        }
    }

    fn storage() -> StorageConfig {
        StorageConfig {
            data_dir: PathBuf::from("/tmp/latchkey-test"),
            database_url: "sqlite://x".into(),
            key_file: PathBuf::from("/tmp/latchkey-test/kek.json"),
            log_format: "text".into(),
            log_level: "info".into(),
        }
    }

    fn env() -> AgentSecretsEnv {
        AgentSecretsEnv {
            credential: Some("LKAGENT:agent-top-secret".into()),
            llm_api_key: Some("sk-llm-top-secret".into()),
            store_secret_access_key: None,
        }
    }

    fn error(o: &AgentOverrides, f: &FileConfig, env: AgentSecretsEnv) -> String {
        let e = AgentServeConfig::resolve_with_env(o, f, &storage(), env)
            .unwrap_err()
            .to_string();
        assert!(!e.contains("top-secret"), "{e}");
        e
    }

    #[test]
    fn defaults_and_file() {
        let file: FileConfig = toml::from_str(
            r#"
            [agent]
            max_tool_iterations = 3
            [agent.llm]
            timeout_seconds = 9
            [[agent.tools]]
            name = "jira_issue"
            description = "One Jira issue"
            provider = "jira"
            scopes = ["read:jira-work"]
            url = "https://jira.example.com/rest/api/3/issue/{key}"
            parameters = { type = "object", properties = { key = { type = "string" } }, required = ["key"] }
            "#,
        )
        .unwrap();
        let c = AgentServeConfig::resolve_with_env(&overrides(), &file, &storage(), env()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8082");
        assert_eq!(c.agent.max_tool_iterations, 3);
        assert_eq!(c.agent.llm.timeout.as_secs(), 9);
        assert_eq!(c.agent.tools.len(), 1);
        assert_eq!(c.agent.github_base_url, "https://api.github.com");
        assert!(matches!(
            &c.agent.store,
            latchkey_agent::StoreConfig::Local { dir } if dir.ends_with("agent")
        ));
        assert!(!format!("{c:?}").contains("top-secret"));
    }

    #[test]
    fn keys_are_named() {
        let f = FileConfig::default();
        let mut o = overrides();
        o.workload_name = None;
        assert!(error(&o, &f, env()).contains("agent.workload_name"));
        let mut o = overrides();
        o.llm_provider = Some("cohere".into());
        assert!(error(&o, &f, env()).contains("agent.llm.provider"));
        assert!(
            error(&overrides(), &f, AgentSecretsEnv::default()).contains("agent.credential_file")
        );
        let mut e = env();
        e.llm_api_key = Some("k1".into());
        let mut o = overrides();
        o.llm_api_key_file = Some(PathBuf::from("/nonexistent"));
        assert!(error(&o, &f, e).contains("agent.llm.api_key"));
        let mut o = overrides();
        o.alb_signer = None;
        assert!(error(&o, &f, env()).contains("agent.alb_signer"));
        let mut o = overrides();
        o.return_url = Some("not a url".into());
        assert!(error(&o, &f, env()).contains("agent.return_url"));
        let mut o = overrides();
        o.max_tool_iterations = Some(0);
        assert!(error(&o, &f, env()).contains("agent.max_tool_iterations"));
        let mut e = env();
        e.credential = Some("no-colon-top-secret".into());
        assert!(error(&overrides(), &f, e).contains(AGENT_CREDENTIAL_ENV));
        let bad_tool: FileConfig = toml::from_str(
            r#"
            [[agent.tools]]
            name = "github_profile"
            description = "dup"
            provider = "github"
            url = "https://x/{a"
            "#,
        )
        .unwrap();
        assert!(error(&overrides(), &bad_tool, env()).contains("agent.tools.url"));
        let mut o = overrides();
        o.store_kind = Some("s3".into());
        assert!(error(&o, &f, env()).contains("agent.store.bucket"));
        let mut o = overrides();
        o.store_bucket = Some("b".into());
        assert!(error(&o, &f, env()).contains("agent.store.bucket"));
        let mut o = overrides();
        o.tools = Some("not json".into());
        assert!(error(&o, &f, env()).contains("LATCHKEY_AGENT_TOOLS"));
    }

    #[test]
    fn s3_store_and_tools_from_the_environment() {
        let mut o = overrides();
        o.store_kind = Some("s3".into());
        o.store_bucket = Some("conversations".into());
        o.store_region = Some("us-east-1".into());
        o.store_endpoint = Some("http://127.0.0.1:9000".into());
        o.store_allow_http = Some(true);
        o.store_access_key_id = Some("AKID".into());
        o.tools = Some(
            r#"[{"name": "t1", "description": "d", "provider": "p", "url": "https://x/{a}"}]"#
                .into(),
        );
        let mut e = env();
        e.store_secret_access_key = Some("s3-top-secret".into());
        let c =
            AgentServeConfig::resolve_with_env(&o, &FileConfig::default(), &storage(), e).unwrap();
        assert!(matches!(
            &c.agent.store,
            latchkey_agent::StoreConfig::S3 { bucket, allow_http: true, .. } if bucket == "conversations"
        ));
        assert_eq!(c.agent.tools[0].name, "t1");
        assert!(!format!("{c:?}").contains("top-secret"));
    }
}

// ---------------------------------------------------------------------------------------
// `serve gateway`

/// Flags of `serve gateway` (environment `LATCHKEY_GATEWAY_*`, file section `[gateway]`).
#[derive(Debug, Clone, Args)]
pub struct GatewayOverrides {
    /// Address to listen on (`127.0.0.1:0` picks a free port). Default 127.0.0.1:8443.
    #[arg(long, env = "LATCHKEY_GATEWAY_LISTEN")]
    pub listen: Option<String>,
    /// The URL browsers use to reach the gateway, e.g. https://app.example.com. Default
    /// `http://<listen address>`.
    #[arg(long, env = "LATCHKEY_GATEWAY_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// The OpenID Provider's issuer.
    #[arg(long, env = "LATCHKEY_GATEWAY_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,
    /// The gateway's client id at the provider.
    #[arg(long, env = "LATCHKEY_GATEWAY_OIDC_CLIENT_ID")]
    pub oidc_client_id: Option<String>,
    /// File holding the client secret (or set LATCHKEY_GATEWAY_OIDC_CLIENT_SECRET).
    #[arg(long, env = "LATCHKEY_GATEWAY_OIDC_CLIENT_SECRET_FILE")]
    pub oidc_client_secret_file: Option<PathBuf>,
    /// Space-separated scopes. Default "openid email profile".
    #[arg(long, env = "LATCHKEY_GATEWAY_OIDC_SCOPES")]
    pub oidc_scopes: Option<String>,
    /// A route `PREFIX=UPSTREAM_URL;MODE` (MODE login, api or public); repeatable. The
    /// environment variable takes several, comma-separated. Replaces the file's routes.
    #[arg(long = "route", env = "LATCHKEY_GATEWAY_ROUTES", value_delimiter = ',')]
    pub routes: Vec<String>,
    /// The ARN written as `signer` into every `x-amzn-oidc-data` header.
    #[arg(long, env = "LATCHKEY_GATEWAY_ALB_SIGNER")]
    pub alb_signer: Option<String>,
    /// Absolute session lifetime, in seconds. Default 28800.
    #[arg(long, env = "LATCHKEY_GATEWAY_SESSION_ABSOLUTE_SECONDS")]
    pub session_absolute_seconds: Option<u64>,
    /// Idle session timeout, in seconds. Default 3600.
    #[arg(long, env = "LATCHKEY_GATEWAY_SESSION_IDLE_SECONDS")]
    pub session_idle_seconds: Option<u64>,
    /// Allow calls to the provider at loopback/private addresses and over plain http. Tests and dev only.
    #[arg(
        long,
        env = "LATCHKEY_GATEWAY_ALLOW_PRIVATE_ADDRESSES",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub allow_private_addresses: Option<bool>,
    /// Time allowed to connect to an upstream, in milliseconds. Default 5000.
    #[arg(long, env = "LATCHKEY_GATEWAY_UPSTREAM_CONNECT_TIMEOUT_MS")]
    pub upstream_connect_timeout_ms: Option<u64>,
    /// TLS certificate chain (PEM). With --tls-key, the gateway serves https.
    #[arg(long, env = "LATCHKEY_GATEWAY_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "LATCHKEY_GATEWAY_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Also listen for plain HTTP here (e.g. 0.0.0.0:80) and redirect GET/HEAD to the https
    /// public URL (308); other methods get 400. Needs --tls-cert and --tls-key.
    #[arg(long, env = "LATCHKEY_GATEWAY_HTTP_REDIRECT_LISTEN")]
    pub http_redirect_listen: Option<String>,
    /// Requests per second per client IP, e.g. `20/s` (burst: twice the rate).
    #[arg(long, env = "LATCHKEY_GATEWAY_RATE_LIMIT_PER_IP")]
    pub rate_limit_per_ip: Option<String>,
    /// Requests per second per signed-in user, e.g. `10/s` (burst: twice the rate).
    #[arg(long, env = "LATCHKEY_GATEWAY_RATE_LIMIT_PER_USER")]
    pub rate_limit_per_user: Option<String>,
    /// Largest request body, in bytes. Default 10485760.
    #[arg(long, env = "LATCHKEY_GATEWAY_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Time allowed until the response head, in seconds (bodies may stream longer). Default 60.
    #[arg(long, env = "LATCHKEY_GATEWAY_REQUEST_TIMEOUT_SECONDS")]
    pub request_timeout_seconds: Option<u64>,
    /// Access log: `stdout` (default), `off`, or a file path (JSON lines).
    #[arg(long, env = "LATCHKEY_GATEWAY_ACCESS_LOG")]
    pub access_log: Option<String>,
    /// Worker threads serving connections (1-256). Default: one per CPU.
    #[arg(long, env = "LATCHKEY_GATEWAY_WORKERS")]
    pub workers: Option<usize>,
    /// Keep sessions across restarts, sealed in the data directory (default true); false:
    /// in memory only, and a snapshot left from before is deleted.
    #[arg(long, env = "LATCHKEY_GATEWAY_KEEP_SESSIONS")]
    pub keep_sessions: Option<bool>,
}

/// The `[gateway]` section of the file. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileGateway {
    pub listen: Option<String>,
    pub public_url: Option<String>,
    pub oidc_issuer: Option<String>,
    pub oidc_client_id: Option<String>,
    pub oidc_client_secret_file: Option<PathBuf>,
    pub oidc_scopes: Option<String>,
    #[serde(default)]
    pub routes: Vec<latchkey_gateway::RouteConfig>,
    pub alb_signer: Option<String>,
    pub session_absolute_seconds: Option<u64>,
    pub session_idle_seconds: Option<u64>,
    pub allow_private_addresses: Option<bool>,
    pub upstream_connect_timeout_ms: Option<u64>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub http_redirect_listen: Option<String>,
    pub rate_limit_per_ip: Option<String>,
    pub rate_limit_per_user: Option<String>,
    pub max_body_bytes: Option<usize>,
    pub request_timeout_seconds: Option<u64>,
    pub access_log: Option<String>,
    pub workers: Option<usize>,
    pub keep_sessions: Option<bool>,
}

/// Environment variable holding the OIDC client secret itself.
pub const GATEWAY_CLIENT_SECRET_ENV: &str = "LATCHKEY_GATEWAY_OIDC_CLIENT_SECRET";

/// Settings of `serve gateway`, validated (except `public_url`, which may depend on the
/// bound address).
#[derive(Debug, Clone)]
pub struct GatewayServeConfig {
    pub listen: SocketAddr,
    pub public_url: Option<String>,
    pub gateway: latchkey_gateway::GatewayConfig,
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Plain-HTTP listener that redirects to the https public URL (only with `tls`).
    pub http_redirect_listen: Option<SocketAddr>,
    /// Worker threads serving connections.
    pub workers: usize,
}

fn gateway_env(key: &str) -> String {
    format!("LATCHKEY_GATEWAY_{}", key.to_ascii_uppercase())
}

fn bad_gateway(key: &str, why: impl std::fmt::Display) -> anyhow::Error {
    bad(&format!("gateway.{key}"), &gateway_env(key), why)
}

/// `N/s` (or `N`) as requests per second, at least 1.
fn parse_rate(key: &str, text: &str) -> anyhow::Result<u32> {
    let number = text.trim().trim_end_matches("/s").trim();
    match number.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(bad_gateway(
            key,
            format!("{text:?} is not a rate like 20/s"),
        )),
    }
}

impl GatewayServeConfig {
    pub fn resolve(
        o: &GatewayOverrides,
        f: &FileConfig,
        storage: &StorageConfig,
    ) -> anyhow::Result<Self> {
        Self::resolve_with_env(o, f, storage, std::env::var(GATEWAY_CLIENT_SECRET_ENV).ok())
    }

    pub fn resolve_with_env(
        o: &GatewayOverrides,
        f: &FileConfig,
        storage: &StorageConfig,
        secret_env: Option<String>,
    ) -> anyhow::Result<Self> {
        let g = &f.gateway;
        let pick = |flag: &Option<String>, file: &Option<String>| {
            flag.clone()
                .or_else(|| file.clone())
                .filter(|v| !v.trim().is_empty())
        };
        let listen_text = pick(&o.listen, &g.listen).unwrap_or_else(|| "127.0.0.1:8443".into());
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            bad_gateway(
                "listen",
                format!("{listen_text:?} is not an address like 127.0.0.1:8443"),
            )
        })?;
        let required = |flag: &Option<String>, file: &Option<String>, key: &str| {
            pick(flag, file).ok_or_else(|| bad_gateway(key, "missing"))
        };
        let oidc_issuer = required(&o.oidc_issuer, &g.oidc_issuer, "oidc_issuer")?;
        let oidc_client_id = required(&o.oidc_client_id, &g.oidc_client_id, "oidc_client_id")?;
        let secret_file = o
            .oidc_client_secret_file
            .clone()
            .or_else(|| g.oidc_client_secret_file.clone());
        let secret_env = secret_env.filter(|v| !v.trim().is_empty());
        let secret = match (secret_file, secret_env) {
            (Some(_), Some(_)) => {
                return Err(bad_gateway(
                    "oidc_client_secret_file",
                    format!(
                        "set either gateway.oidc_client_secret_file or {GATEWAY_CLIENT_SECRET_ENV}, not both"
                    ),
                ));
            }
            (Some(file), None) => std::fs::read_to_string(&file)
                .map_err(|e| {
                    bad_gateway(
                        "oidc_client_secret_file",
                        format!("cannot read {}: {e}", file.display()),
                    )
                })?
                .trim()
                .to_string(),
            (None, Some(text)) => text.trim().to_string(),
            (None, None) => {
                return Err(bad_gateway(
                    "oidc_client_secret_file",
                    format!("missing: set it or {GATEWAY_CLIENT_SECRET_ENV}"),
                ));
            }
        };
        let routes = if o.routes.is_empty() {
            g.routes.clone()
        } else {
            o.routes
                .iter()
                .map(|r| {
                    latchkey_gateway::RouteConfig::parse(r).map_err(|e| bad_gateway("routes", e))
                })
                .collect::<anyhow::Result<Vec<_>>>()?
        };
        let tls = match (
            o.tls_cert.clone().or_else(|| g.tls_cert.clone()),
            o.tls_key.clone().or_else(|| g.tls_key.clone()),
        ) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(bad_gateway("tls_key", "missing: tls_cert needs tls_key"));
            }
            (None, Some(_)) => {
                return Err(bad_gateway("tls_cert", "missing: tls_key needs tls_cert"));
            }
        };
        let public_url = pick(&o.public_url, &g.public_url);
        let http_redirect_listen = pick(&o.http_redirect_listen, &g.http_redirect_listen)
            .map(|text| {
                let addr: SocketAddr = text.parse().map_err(|_| {
                    bad_gateway(
                        "http_redirect_listen",
                        format!("{text:?} is not an address like 0.0.0.0:80"),
                    )
                })?;
                if tls.is_none() {
                    return Err(bad_gateway(
                        "http_redirect_listen",
                        "needs TLS: set gateway.tls_cert and gateway.tls_key, or remove it",
                    ));
                }
                if public_url
                    .as_deref()
                    .is_some_and(|u| !u.starts_with("https://"))
                {
                    return Err(bad_gateway(
                        "http_redirect_listen",
                        "needs an https gateway.public_url to redirect to",
                    ));
                }
                if addr == listen && addr.port() != 0 {
                    return Err(bad_gateway(
                        "http_redirect_listen",
                        format!("{addr} is already gateway.listen"),
                    ));
                }
                Ok(addr)
            })
            .transpose()?;
        let rate_limit_per_ip = pick(&o.rate_limit_per_ip, &g.rate_limit_per_ip)
            .map(|t| parse_rate("rate_limit_per_ip", &t))
            .transpose()?;
        let rate_limit_per_user = pick(&o.rate_limit_per_user, &g.rate_limit_per_user)
            .map(|t| parse_rate("rate_limit_per_user", &t))
            .transpose()?;
        let gateway = latchkey_gateway::GatewayConfig {
            // Replaced by the bound address when not configured.
            public_url: public_url
                .clone()
                .unwrap_or_else(|| format!("http://{listen}")),
            oidc_issuer,
            oidc_client_id,
            oidc_client_secret: secrecy::SecretString::from(secret),
            oidc_scopes: pick(&o.oidc_scopes, &g.oidc_scopes)
                .unwrap_or_else(|| latchkey_gateway::config::DEFAULT_SCOPES.into()),
            routes,
            alb_signer: pick(&o.alb_signer, &g.alb_signer)
                .unwrap_or_else(|| latchkey_gateway::config::DEFAULT_ALB_SIGNER.into()),
            session_absolute: std::time::Duration::from_secs(
                o.session_absolute_seconds
                    .or(g.session_absolute_seconds)
                    .unwrap_or(latchkey_gateway::config::DEFAULT_SESSION_ABSOLUTE_SECONDS),
            ),
            session_idle: std::time::Duration::from_secs(
                o.session_idle_seconds
                    .or(g.session_idle_seconds)
                    .unwrap_or(latchkey_gateway::config::DEFAULT_SESSION_IDLE_SECONDS),
            ),
            data_dir: storage.data_dir.clone(),
            outbound: latchkey_authn::outbound::OutboundPolicy {
                allow_private_addresses: o
                    .allow_private_addresses
                    .or(g.allow_private_addresses)
                    .unwrap_or(false),
                ..Default::default()
            },
            upstream_connect_timeout: o
                .upstream_connect_timeout_ms
                .or(g.upstream_connect_timeout_ms)
                .map(std::time::Duration::from_millis)
                .unwrap_or(latchkey_gateway::config::DEFAULT_UPSTREAM_CONNECT_TIMEOUT),
            is_tls: tls.is_some(),
            rate_limit_per_ip,
            rate_limit_per_user,
            max_body_bytes: o
                .max_body_bytes
                .or(g.max_body_bytes)
                .unwrap_or(latchkey_gateway::config::DEFAULT_MAX_BODY_BYTES),
            response_timeout: o
                .request_timeout_seconds
                .or(g.request_timeout_seconds)
                .map(std::time::Duration::from_secs)
                .unwrap_or(latchkey_gateway::config::DEFAULT_RESPONSE_TIMEOUT),
            access_log: latchkey_gateway::config::AccessLogTarget::parse(
                &pick(&o.access_log, &g.access_log).unwrap_or_else(|| "stdout".into()),
            ),
            keep_sessions: o.keep_sessions.or(g.keep_sessions).unwrap_or(true),
        };
        gateway
            .validate()
            .map_err(|e| bad_gateway(e.key, e.reason))?;
        let workers = o
            .workers
            .or(g.workers)
            .unwrap_or_else(latchkey_gateway::server::default_workers);
        if !(1..=256).contains(&workers) {
            return Err(bad_gateway("workers", "must be between 1 and 256"));
        }
        Ok(Self {
            listen,
            public_url,
            gateway,
            tls,
            http_redirect_listen,
            workers,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod gateway_tests {
    use super::*;

    fn overrides() -> GatewayOverrides {
        GatewayOverrides {
            listen: Some("127.0.0.1:0".into()),
            public_url: None,
            oidc_issuer: Some("https://login.example.com".into()),
            oidc_client_id: Some("app".into()),
            oidc_client_secret_file: None,
            oidc_scopes: None,
            routes: vec!["/=http://127.0.0.1:9000;login".into()],
            alb_signer: None,
            session_absolute_seconds: None,
            session_idle_seconds: None,
            allow_private_addresses: None,
            upstream_connect_timeout_ms: None,
            tls_cert: None,
            tls_key: None,
            http_redirect_listen: None,
            rate_limit_per_ip: None,
            rate_limit_per_user: None,
            max_body_bytes: None,
            request_timeout_seconds: None,
            access_log: None,
            workers: None,
            keep_sessions: None,
        }
    }

    fn storage() -> StorageConfig {
        StorageConfig {
            data_dir: PathBuf::from("/tmp/latchkey-test"),
            database_url: "sqlite://x".into(),
            key_file: PathBuf::from("/tmp/latchkey-test/kek.json"),
            log_format: "text".into(),
            log_level: "info".into(),
        }
    }

    fn error(o: &GatewayOverrides, f: &FileConfig, secret: Option<&str>) -> String {
        let e = GatewayServeConfig::resolve_with_env(o, f, &storage(), secret.map(String::from))
            .unwrap_err()
            .to_string();
        assert!(!e.contains("top-secret"), "{e}");
        e
    }

    #[test]
    fn sessions_are_kept_unless_turned_off() {
        let resolve = |o: &GatewayOverrides, f: &FileConfig| {
            GatewayServeConfig::resolve_with_env(o, f, &storage(), Some("top-secret".into()))
                .unwrap()
                .gateway
                .keep_sessions
        };
        let none = FileConfig::default();
        assert!(resolve(&overrides(), &none));
        let off: FileConfig = toml::from_str("[gateway]\nkeep_sessions = false\n").unwrap();
        assert!(!resolve(&overrides(), &off));
        // The flag wins over the file.
        let mut o = overrides();
        o.keep_sessions = Some(true);
        assert!(resolve(&o, &off));
    }

    #[test]
    fn defaults_file_and_flags() {
        let file: FileConfig = toml::from_str(
            r#"
            [gateway]
            session_idle_seconds = 2
            [[gateway.routes]]
            prefix = "/api"
            upstream = "http://127.0.0.1:9001"
            auth = "api"
            "#,
        )
        .unwrap();
        let mut o = overrides();
        o.routes.clear();
        o.rate_limit_per_ip = Some("20/s".into());
        let c =
            GatewayServeConfig::resolve_with_env(&o, &file, &storage(), Some("top-secret".into()))
                .unwrap();
        assert_eq!(c.gateway.session_idle.as_secs(), 2);
        assert_eq!(c.gateway.session_absolute.as_secs(), 28_800);
        assert_eq!(c.gateway.routes.len(), 1);
        assert_eq!(c.gateway.routes[0].auth, latchkey_gateway::RouteAuth::Api);
        assert_eq!(
            c.gateway.alb_signer,
            latchkey_gateway::config::DEFAULT_ALB_SIGNER
        );
        assert_eq!(c.gateway.rate_limit_per_ip, Some(20));
        assert_eq!(
            c.gateway.access_log,
            latchkey_gateway::config::AccessLogTarget::Stdout
        );
        // Flags replace the file's routes.
        let c = GatewayServeConfig::resolve_with_env(
            &overrides(),
            &file,
            &storage(),
            Some("top-secret".into()),
        )
        .unwrap();
        assert_eq!(c.gateway.routes[0].prefix, "/");
    }

    #[test]
    fn keys_are_named() {
        let f = FileConfig::default();
        assert!(error(&overrides(), &f, None).contains("gateway.oidc_client_secret_file"));
        let mut o = overrides();
        o.oidc_issuer = None;
        assert!(error(&o, &f, Some("top-secret")).contains("gateway.oidc_issuer"));
        let mut o = overrides();
        o.routes = vec!["/x=http://a".into()];
        assert!(error(&o, &f, Some("top-secret")).contains("gateway.routes"));
        let mut o = overrides();
        o.routes.clear();
        assert!(error(&o, &f, Some("top-secret")).contains("gateway.routes"));
        let mut o = overrides();
        o.rate_limit_per_user = Some("fast".into());
        assert!(error(&o, &f, Some("top-secret")).contains("gateway.rate_limit_per_user"));
        let mut o = overrides();
        o.tls_cert = Some("/c.pem".into());
        assert!(error(&o, &f, Some("top-secret")).contains("gateway.tls_key"));
        let mut o = overrides();
        o.oidc_scopes = Some("email".into());
        assert!(error(&o, &f, Some("top-secret")).contains("gateway.oidc_scopes"));
    }

    #[test]
    fn workers_default_to_the_cpus_and_are_bounded() {
        let f = FileConfig::default();
        let resolve = |o: &GatewayOverrides| {
            GatewayServeConfig::resolve_with_env(o, &f, &storage(), Some("top-secret".into()))
        };
        assert_eq!(
            resolve(&overrides()).unwrap().workers,
            latchkey_gateway::server::default_workers()
        );
        let mut o = overrides();
        o.workers = Some(3);
        assert_eq!(resolve(&o).unwrap().workers, 3);
        for bad in [0, 257] {
            o.workers = Some(bad);
            assert!(error(&o, &f, Some("top-secret")).contains("gateway.workers"));
        }
    }

    #[test]
    fn http_redirect_listen_needs_tls() {
        let tls = |o: &mut GatewayOverrides| {
            o.tls_cert = Some("/c.pem".into());
            o.tls_key = Some("/k.pem".into());
        };
        let resolve = |o: &GatewayOverrides, f: &FileConfig| {
            GatewayServeConfig::resolve_with_env(o, f, &storage(), Some("top-secret".into()))
        };
        // Not set: nothing to redirect.
        let mut o = overrides();
        tls(&mut o);
        assert_eq!(
            resolve(&o, &FileConfig::default())
                .unwrap()
                .http_redirect_listen,
            None
        );
        // From the file; the flag overrides it.
        let file: FileConfig = toml::from_str(
            r#"
            [gateway]
            tls_cert = "/c.pem"
            tls_key = "/k.pem"
            http_redirect_listen = "0.0.0.0:80"
            "#,
        )
        .unwrap();
        let c = resolve(&overrides(), &file).unwrap();
        assert_eq!(c.http_redirect_listen, Some("0.0.0.0:80".parse().unwrap()));
        assert!(c.tls.is_some());
        let mut o = overrides();
        o.http_redirect_listen = Some("127.0.0.1:8080".into());
        let c = resolve(&o, &file).unwrap();
        assert_eq!(
            c.http_redirect_listen,
            Some("127.0.0.1:8080".parse().unwrap())
        );
        // Without TLS, from the flag or the file.
        let f = FileConfig::default();
        let mut o = overrides();
        o.http_redirect_listen = Some("127.0.0.1:0".into());
        let e = error(&o, &f, Some("top-secret"));
        assert!(e.contains("gateway.http_redirect_listen"), "{e}");
        assert!(e.contains("needs TLS"), "{e}");
        let file: FileConfig =
            toml::from_str("[gateway]\nhttp_redirect_listen = \"0.0.0.0:80\"\n").unwrap();
        let e = error(&overrides(), &file, Some("top-secret"));
        assert!(e.contains("gateway.http_redirect_listen"), "{e}");
        // Not an address.
        let mut o = overrides();
        tls(&mut o);
        o.http_redirect_listen = Some("port 80".into());
        assert!(error(&o, &f, Some("top-secret")).contains("gateway.http_redirect_listen"));
        // An http public URL has nothing to redirect to.
        let mut o = overrides();
        tls(&mut o);
        o.http_redirect_listen = Some("127.0.0.1:0".into());
        o.public_url = Some("http://app.example.com".into());
        assert!(error(&o, &f, Some("top-secret")).contains("gateway.http_redirect_listen"));
        o.public_url = Some("https://app.example.com".into());
        assert!(resolve(&o, &f).is_ok());
        // The same address as the https listener.
        let mut o = overrides();
        tls(&mut o);
        o.listen = Some("127.0.0.1:8443".into());
        o.http_redirect_listen = Some("127.0.0.1:8443".into());
        assert!(error(&o, &f, Some("top-secret")).contains("gateway.http_redirect_listen"));
    }
}
