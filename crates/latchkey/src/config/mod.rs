//! One typed configuration: a TOML file (`--config`), overridden per key by a
//! `LATCHKEY_*` environment variable, overridden by a command-line flag. Secrets can come
//! from files (`*_FILE`). Validated at start with the failing key named.
//!
//! The mechanism is [`latchkey_config`]; each service crate declares its own keys
//! (`latchkey_binding::config::Binding`, …). This module declares the root sections
//! (storage and `serve identity`) and checks the file against every section.

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use latchkey_agent::config::Agent;
use latchkey_authn::inbound::InboundIssuerConfig;
use latchkey_authn::outbound::OutboundPolicy;
use latchkey_binding::config::Binding;
use latchkey_config::{ConfigError, KeyGroup as _, at_most, ensure, keys, within};
pub use latchkey_config::{ConfigFile, Env, Flags, Layers, Section};
use latchkey_core::arn::ArnContext;
use latchkey_gateway::config::Gateway;
use secrecy::{ExposeSecret as _, SecretString};

keys! {
    /// The storage keys, flags of every command.
    pub section Storage = "", global = true;
    /// Storage settings (root of the file, `LATCHKEY_*`).
    pub struct StorageKeys {
        /// Data directory: the identity service's SQLite database and key file, the gateway's
        /// cookie key and sessions, the agent's conversations. Default: the user's data dir.
        data_dir: PathBuf,
        /// `sqlite://PATH` or `postgres://…`. Default: SQLite in the data directory.
        database_url: SecretString,
        /// File holding the database URL (for URLs with passwords).
        database_url_file: PathBuf,
        /// Key-encryption key file. Default: `<data-dir>/kek.json`, generated on first start.
        key_file: PathBuf,
        /// Where the key-encryption keys come from: `file` (the key file) or `aws-kms` (kept
        /// in the database, wrapped by the KMS key `kms_key_id`; no key on disk).
        key_provider: String = "file",
        /// The KMS key for `key_provider = "aws-kms"`: key id, ARN or `alias/…`.
        kms_key_id: String,
        /// The KMS endpoint, when not AWS's own for the region (e.g. a test server).
        kms_endpoint_url: String,
        /// The KMS region. Default: the AWS configuration's (`AWS_REGION`, profile).
        kms_region: String,
        /// Timeout of one KMS call, in milliseconds.
        kms_timeout_ms: u64 = 10_000u64,
        /// This deployment's name: the KMS encryption context of its key-encryption keys.
        deployment_name: String = "latchkey",
        /// Log format: `text` or `json`.
        log_format: String = "text",
        /// Log filter, e.g. `info` or `latchkey=debug`.
        log_level: String = "info",
        /// OpenTelemetry traces: the OTLP/HTTP (protobuf) base URL of a collector, e.g.
        /// `http://collector:4318` (spans go to `/v1/traces`). Unset: no traces.
        otlp_endpoint: String,
    }
}

keys! {
    /// `serve identity` (root of the file, `LATCHKEY_*`).
    pub section Identity = "", tables ["arn", "outbound"];
    /// Settings of `serve identity`, validated by [`IdentityConfig::resolve`].
    pub struct IdentityConfig {
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
        /// Allow the outbound calls (providers' discovery, token and revocation endpoints, inbound
        /// issuers' discovery and JWKS) to loopback and private addresses and over plain http.
        /// Tests and dev only.
        outbound_allow_private_addresses: bool = false,
        /// Timeout of one outbound call, in milliseconds. Default 10000.
        outbound_timeout_ms: u64 = 10_000u64,
        /// Largest outbound response body, in bytes. Default 1048576.
        outbound_max_response_bytes: usize = 1024 * 1024usize,
        /// Inbound issuers for `GetWorkloadAccessTokenForJWT`, as a JSON array of tables.
        inbound_issuers: Vec<InboundIssuerConfig> = Vec::new(),
    }
}

/// Environment variables of keys that were renamed: (old, new). A start that still sets
/// one is refused, naming the new name (an ignored old name would silently turn a setting
/// off).
pub const RENAMED_VARIABLES: &[(&str, &str)] = &[
    (
        "LATCHKEY_BINDING_ALLOW_PRIVATE_ADDRESSES",
        "LATCHKEY_BINDING_OUTBOUND_ALLOW_PRIVATE_ADDRESSES",
    ),
    (
        "LATCHKEY_AGENT_ALLOW_PRIVATE_ADDRESSES",
        "LATCHKEY_AGENT_OUTBOUND_ALLOW_PRIVATE_ADDRESSES",
    ),
    (
        "LATCHKEY_GATEWAY_ALLOW_PRIVATE_ADDRESSES",
        "LATCHKEY_GATEWAY_OUTBOUND_ALLOW_PRIVATE_ADDRESSES",
    ),
];

/// Refuse a file key no section declares.
pub fn check_file(file: &ConfigFile) -> anyhow::Result<()> {
    let root = <(StorageKeys, IdentityConfig)>::keys();
    file.check(&[
        (
            "",
            Identity::TABLES,
            root,
            &["binding", "agent", "gateway", "dev"],
        ),
        Flags::<Binding>::spec(),
        Flags::<Agent>::spec(),
        Flags::<Gateway>::spec(),
        Flags::<crate::dev::github::Dev>::spec(),
    ])
}

/// Where the key-encryption keys come from (`key_provider`).
#[derive(Debug, Clone)]
pub enum KeyRoot {
    /// The key file (`key_file`).
    File,
    /// AWS KMS: the keys live in the database, wrapped by a KMS key.
    Kms(latchkey_kms::KmsSettings),
}

/// Storage settings, needed by every command.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
    pub database_url: String,
    pub key_file: PathBuf,
    pub key_root: KeyRoot,
    pub log_format: String,
    pub log_level: String,
    /// Where spans are exported (`otlp_endpoint`); `None`: traces are off.
    pub otlp_endpoint: Option<String>,
}

impl StorageConfig {
    /// `default_dir`: the data directory's name under the user's data dir when none is set
    /// (`latchkey`; `latchkey-dev` for `latchkey dev`).
    pub fn resolve(l: &Layers, default_dir: &str) -> anyhow::Result<Self> {
        let k: StorageKeys = l.read()?;
        let key_root = Self::key_root(l, &k)?;
        let no_default = "no default data directory on this system; set --data-dir";
        let data_dir = (k.data_dir).or_else(|| Some(dirs::data_dir()?.join(default_dir)));
        let data_dir = data_dir.ok_or_else(|| l.error("data_dir", no_default))?;
        let sqlite = data_dir.join("latchkey.db");
        let database_url = match l.secret("database_url")? {
            Some(url) => url.value.expose_secret().to_string(),
            None => format!("sqlite://{}?mode=rwc", sqlite.display()),
        };
        let schemes = ["sqlite:", "postgres://", "postgresql://"];
        let known = schemes.iter().any(|p| database_url.starts_with(p));
        let why = "must start with sqlite: or postgres://";
        l.check(ensure(known, "database_url", why))?;
        let format = ["text", "json"].contains(&k.log_format.as_str());
        l.check(ensure(format, "log_format", "must be `text` or `json`"))?;
        let otlp_endpoint = k.otlp_endpoint.filter(|url| !url.trim().is_empty());
        if let Some(url) = &otlp_endpoint {
            l.check(latchkey_config::http_url("otlp_endpoint", url, false).map(|_| ()))?;
        }
        Ok(Self {
            otlp_endpoint,
            key_root,
            key_file: k.key_file.unwrap_or_else(|| data_dir.join("kek.json")),
            data_dir,
            database_url,
            log_format: k.log_format,
            log_level: k.log_level,
        })
    }

    fn key_root(l: &Layers, k: &StorageKeys) -> anyhow::Result<KeyRoot> {
        let kms_keys = [
            ("kms_key_id", k.kms_key_id.is_some()),
            ("kms_endpoint_url", k.kms_endpoint_url.is_some()),
            ("kms_region", k.kms_region.is_some()),
        ];
        match k.key_provider.as_str() {
            "file" => {
                for (key, set) in kms_keys {
                    let why = "is only used with key_provider = \"aws-kms\"";
                    l.check(ensure(!set, key, why))?;
                }
                Ok(KeyRoot::File)
            }
            "aws-kms" => {
                let why = "is not used with key_provider = \"aws-kms\" (the keys live in the database, wrapped by KMS)";
                l.check(ensure(k.key_file.is_none(), "key_file", why))?;
                let Some(key_id) = k.kms_key_id.clone().filter(|s| !s.trim().is_empty()) else {
                    return Err(l.error("kms_key_id", "is required with key_provider = \"aws-kms\" (a KMS key id, ARN or alias/…)"));
                };
                if let Some(url) = &k.kms_endpoint_url {
                    l.check(latchkey_config::http_url("kms_endpoint_url", url, false).map(|_| ()))?;
                }
                let name = &k.deployment_name;
                let ok = (1..=64).contains(&name.len())
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
                l.check(ensure(
                    ok,
                    "deployment_name",
                    "must be 1..64 of [A-Za-z0-9._-]",
                ))?;
                l.check(within(&[(
                    "kms_timeout_ms",
                    k.kms_timeout_ms as i64,
                    (100, 120_000),
                )]))?;
                Ok(KeyRoot::Kms(latchkey_kms::KmsSettings {
                    key_id,
                    endpoint_url: k.kms_endpoint_url.clone(),
                    region: k.kms_region.clone(),
                    deployment: name.clone(),
                    timeout: Duration::from_millis(k.kms_timeout_ms),
                }))
            }
            _ => Err(l.error("key_provider", "must be `file` or `aws-kms`")),
        }
    }

    /// Where the keys are, for messages: the key file, or the KMS key.
    pub fn key_source(&self) -> String {
        match &self.key_root {
            KeyRoot::File => format!("the key file {}", self.key_file.display()),
            KeyRoot::Kms(k) => format!(
                "the key-encryption keys in the database (KMS key {}, deployment {:?})",
                k.key_id, k.deployment
            ),
        }
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

impl IdentityConfig {
    pub fn resolve(l: &Layers) -> anyhow::Result<Self> {
        let k: Self = l.read()?;
        if let Some(u) = &k.public_url {
            let url = url::Url::parse(u).map_err(|e| l.error("public_url", e))?;
            let ok = matches!(url.scheme(), "http" | "https")
                && url.query().is_none()
                && url.fragment().is_none()
                && url.host().is_some();
            let why = "must be an http(s) URL without query or fragment";
            l.check(ensure(ok, "public_url", why))?;
        }
        l.check(k.validate_arn())?;
        for (i, issuer) in k.inbound_issuers.iter().enumerate() {
            (issuer.validate()).map_err(|e| l.error(&format!("inbound_issuers[{i}]"), e))?;
        }
        l.check(k.validate_ranges())?;
        Ok(k)
    }

    fn validate_arn(&self) -> Result<(), ConfigError> {
        at_most("cache_ttl_seconds", self.cache_ttl_seconds, 300)?;
        let simple = |s: &str| s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        for (key, value) in [
            ("arn_partition", &self.arn_partition),
            ("arn_region", &self.arn_region),
        ] {
            let ok = (1..=64).contains(&value.len()) && simple(value);
            ensure(ok, key, "must be 1..64 of [A-Za-z0-9-]")?;
        }
        let account = &self.arn_account;
        let digits = account.len() == 12 && account.chars().all(|c| c.is_ascii_digit());
        ensure(digits, "arn_account", "must be 12 digits")
    }

    fn validate_ranges(&self) -> Result<(), ConfigError> {
        let (k, life) = (self, self.default_token_lifetime_seconds);
        let timeout = k.outbound_timeout_ms as i64;
        let bytes = k.outbound_max_response_bytes as i64;
        within(&[
            ("wat_ttl_seconds", k.wat_ttl_seconds, (60, 86_400)),
            ("session_ttl_seconds", k.session_ttl_seconds, (5, 3600)),
            ("refresh_lease_seconds", k.refresh_lease_seconds, (1, 600)),
            ("default_token_lifetime_seconds", life, (60, 30 * 86_400)),
            ("outbound_timeout_ms", timeout, (100, 120_000)),
            ("outbound_max_response_bytes", bytes, (1024, 16 << 20)),
        ])
    }

    /// The ARN context of this installation.
    pub fn arn(&self) -> ArnContext {
        let (partition, region) = (self.arn_partition.clone(), self.arn_region.clone());
        let account = self.arn_account.clone();
        ArnContext {
            partition,
            region,
            account,
        }
    }

    /// Policy of the guarded client for discovery, JWKS and token calls.
    pub fn outbound(&self) -> OutboundPolicy {
        OutboundPolicy {
            allow_private_addresses: self.outbound_allow_private_addresses,
            request_timeout: Duration::from_millis(self.outbound_timeout_ms),
            max_response_bytes: self.outbound_max_response_bytes,
            ..OutboundPolicy::default()
        }
    }

    /// The configured URLs the guarded client calls: each inbound issuer's discovery
    /// (from its issuer, or its `discovery_url`) and `jwks_uri`, as `inbound_issuers`.
    pub fn outbound_urls(&self) -> Vec<(&'static str, String)> {
        let issuer = |i: &InboundIssuerConfig| {
            let urls = [
                Some(&i.issuer),
                i.discovery_url.as_ref(),
                i.jwks_uri.as_ref(),
            ];
            urls.into_iter().flatten().cloned().collect::<Vec<_>>()
        };
        let urls = self.inbound_issuers.iter().flat_map(issuer);
        urls.map(|url| ("inbound_issuers", url)).collect()
    }
}
