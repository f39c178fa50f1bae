//! The binding service's validated settings and its `binding` credential.
//!
//! The binary assembles a [`BindingConfig`] from its TOML file, environment and flags and
//! calls [`BindingConfig::validate`], which names the first failing key (`identity_url`,
//! `alb_signer`, …; the binary prefixes them with `binding.`).

use std::fmt;
use std::time::Duration;

use http::HeaderValue;
use latchkey_identity::inbound::InboundIssuerConfig;
use latchkey_identity::outbound::OutboundPolicy;
use secrecy::{ExposeSecret, SecretString};

/// Where AWS publishes the ALB signing keys, by region and key id.
pub const DEFAULT_ALB_KEY_URL_TEMPLATE: &str =
    "https://public-keys.auth.elb.{region}.amazonaws.com/{kid}";
/// Clock skew tolerated on the ALB token's `exp`, in seconds.
pub const DEFAULT_ALB_LEEWAY_SECONDS: u64 = 60;
/// Largest accepted `alb_leeway_seconds`.
pub const MAX_ALB_LEEWAY_SECONDS: u64 = 600;
/// Time allowed for one `CompleteResourceTokenAuth` call (the identity service exchanges
/// the code with the provider inside it, so this is longer than a plain API call).
pub const DEFAULT_IDENTITY_TIMEOUT: Duration = Duration::from_secs(30);

/// A configuration key that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{key}`: {reason}")]
pub struct ConfigError {
    /// The key without the `binding.` prefix, e.g. `alb_signer`.
    pub key: &'static str,
    pub reason: String,
}

impl ConfigError {
    pub fn new(key: &'static str, reason: impl Into<String>) -> Self {
        Self {
            key,
            reason: reason.into(),
        }
    }
}

/// The binding service's own Latchkey credential (role `binding`): `ACCESS_KEY_ID:SECRET`.
///
/// `Debug` shows the access key id only; the secret is a [`SecretString`] and leaves this
/// type only as a sensitive `Authorization` header value.
#[derive(Clone)]
pub struct BindingCredential {
    access_key_id: String,
    secret: SecretString,
}

impl fmt::Debug for BindingCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BindingCredential")
            .field("access_key_id", &self.access_key_id)
            .field("secret", &"[REDACTED]")
            .finish()
    }
}

/// Why a credential text was refused. Never contains the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("the credential must have the form ACCESS_KEY_ID:SECRET")]
    Shape,
    #[error("the access key id must be 1 to 128 ASCII letters and digits")]
    AccessKeyId,
    #[error("the secret must be 1 to 1024 printable ASCII characters without spaces")]
    Secret,
}

impl BindingCredential {
    /// Parse `ACCESS_KEY_ID:SECRET` (surrounding whitespace, such as a file's final
    /// newline, is ignored).
    pub fn parse(text: &str) -> Result<Self, CredentialError> {
        let (id, secret) = text.trim().split_once(':').ok_or(CredentialError::Shape)?;
        if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(CredentialError::AccessKeyId);
        }
        if secret.is_empty() || secret.len() > 1024 || !secret.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(CredentialError::Secret);
        }
        Ok(Self {
            access_key_id: id.to_string(),
            secret: SecretString::from(secret.to_string()),
        })
    }

    /// The access key id (not secret; fine to log).
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// `Bearer ACCESS_KEY_ID:SECRET`, marked sensitive.
    pub(crate) fn authorization(&self) -> Option<HeaderValue> {
        let mut value = HeaderValue::from_str(&format!(
            "Bearer {}:{}",
            self.access_key_id,
            self.secret.expose_secret()
        ))
        .ok()?;
        value.set_sensitive(true);
        Some(value)
    }
}

/// The ALB `x-amzn-oidc-data` source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlbConfig {
    /// The load balancer's ARN; the token header's `signer` must equal it exactly.
    pub signer_arn: String,
    /// Where the public key of a `kid` is fetched: `{kid}` and (optionally) `{region}` are
    /// substituted. Default [`DEFAULT_ALB_KEY_URL_TEMPLATE`].
    pub key_url_template: String,
    /// Region for `{region}`. Default: the region field of `signer_arn`.
    pub region: Option<String>,
    /// When set, the payload's `iss` must equal it (the IdP's issuer).
    pub issuer: Option<String>,
    /// Clock skew tolerated on `exp`, in seconds.
    pub leeway_seconds: u64,
}

impl AlbConfig {
    /// An ALB source for `signer_arn` with every other key at its default.
    pub fn new(signer_arn: impl Into<String>) -> Self {
        Self {
            signer_arn: signer_arn.into(),
            key_url_template: DEFAULT_ALB_KEY_URL_TEMPLATE.to_string(),
            region: None,
            issuer: None,
            leeway_seconds: DEFAULT_ALB_LEEWAY_SECONDS,
        }
    }

    /// The region substituted for `{region}`: the configured one, or the ARN's.
    pub fn effective_region(&self) -> Option<String> {
        self.region.clone().or_else(|| {
            let mut fields = self.signer_arn.split(':');
            match (fields.next(), fields.nth(2)) {
                (Some("arn"), Some(region)) if !region.is_empty() => Some(region.to_string()),
                _ => None,
            }
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let arn = &self.signer_arn;
        if !arn.starts_with("arn:")
            || arn.len() > 2048
            || arn.split(':').count() < 6
            || !arn.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(ConfigError::new(
                "alb_signer",
                "must be the load balancer's ARN (arn:aws:elasticloadbalancing:REGION:ACCOUNT:loadbalancer/app/NAME/ID)",
            ));
        }
        if let Some(region) = &self.region
            && !is_region(region)
        {
            return Err(ConfigError::new(
                "alb_region",
                "must be 1 to 32 of [a-z0-9-]",
            ));
        }
        let template = &self.key_url_template;
        if template.matches("{kid}").count() != 1 {
            return Err(ConfigError::new(
                "alb_key_url_template",
                "must contain `{kid}` exactly once",
            ));
        }
        let region = if template.contains("{region}") {
            match self.effective_region() {
                Some(r) if is_region(&r) => r,
                Some(_) => {
                    return Err(ConfigError::new(
                        "alb_region",
                        "the region taken from alb_signer is not 1 to 32 of [a-z0-9-]; set alb_region",
                    ));
                }
                None => {
                    return Err(ConfigError::new(
                        "alb_region",
                        "the key URL template uses {region} and alb_signer names no region; set alb_region",
                    ));
                }
            }
        } else {
            String::new()
        };
        let sample = template
            .replace("{region}", &region)
            .replace("{kid}", "kid");
        let url = url::Url::parse(&sample).map_err(|e| {
            ConfigError::new("alb_key_url_template", format!("not an absolute URL: {e}"))
        })?;
        if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
            return Err(ConfigError::new(
                "alb_key_url_template",
                "must be an https (or, in tests and dev, http) URL with a host",
            ));
        }
        if url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
            return Err(ConfigError::new(
                "alb_key_url_template",
                "must not carry credentials or a fragment",
            ));
        }
        if let Some(issuer) = &self.issuer
            && issuer.trim().is_empty()
        {
            return Err(ConfigError::new("alb_issuer", "must not be empty"));
        }
        if self.leeway_seconds > MAX_ALB_LEEWAY_SECONDS {
            return Err(ConfigError::new(
                "alb_leeway_seconds",
                format!("must be at most {MAX_ALB_LEEWAY_SECONDS}"),
            ));
        }
        Ok(())
    }
}

fn is_region(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The OIDC ID-token source (`Authorization: Bearer` or a cookie).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcConfig {
    /// The issuer and audience the ID token must carry (verified by discovery + JWKS).
    pub issuer: InboundIssuerConfig,
    /// When set, the ID token is also read from this cookie (after the `Authorization`
    /// header).
    pub cookie_name: Option<String>,
}

impl OidcConfig {
    /// An OIDC source for one issuer and one audience, bearer only.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: InboundIssuerConfig::new(issuer, vec![audience.into()]),
            cookie_name: None,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.issuer.validate().map_err(|e| {
            let key = match e.key {
                "audiences" => "oidc_audience",
                _ => "oidc_issuer",
            };
            ConfigError::new(key, e.reason)
        })?;
        if let Some(name) = &self.cookie_name
            && !is_cookie_name(name)
        {
            return Err(ConfigError::new(
                "id_token_cookie",
                "must be 1 to 128 characters of a cookie name token (letters, digits, !#$%&'*+-.^_`|~)",
            ));
        }
        Ok(())
    }
}

/// RFC 6265 cookie-name: an RFC 7230 token.
fn is_cookie_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Everything the binding service needs.
#[derive(Debug, Clone)]
pub struct BindingConfig {
    /// Base URL of the identity service (`POST {identity_url}/identities/CompleteResourceTokenAuth`).
    pub identity_url: String,
    /// The `binding` credential used on that call.
    pub credential: BindingCredential,
    /// The ALB source, tried first.
    pub alb: Option<AlbConfig>,
    /// The OIDC source, tried when there is no ALB source or no ALB header.
    pub oidc: Option<OidcConfig>,
    /// Policy of the guarded client used for ALB keys, OIDC discovery and JWKS.
    pub outbound: OutboundPolicy,
    /// Time allowed for one call to the identity service.
    pub identity_timeout: Duration,
}

impl BindingConfig {
    /// Settings with no user source yet (add `alb` and/or `oidc`).
    pub fn new(identity_url: impl Into<String>, credential: BindingCredential) -> Self {
        Self {
            identity_url: identity_url.into(),
            credential,
            alb: None,
            oidc: None,
            outbound: OutboundPolicy::default(),
            identity_timeout: DEFAULT_IDENTITY_TIMEOUT,
        }
    }

    /// Check every key, naming the first that fails.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let url = url::Url::parse(&self.identity_url)
            .map_err(|e| ConfigError::new("identity_url", format!("not an absolute URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https")
            || url.host().is_none()
            || url.query().is_some()
            || url.fragment().is_some()
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return Err(ConfigError::new(
                "identity_url",
                "must be an http(s) URL with a host and without credentials, query or fragment",
            ));
        }
        if self.alb.is_none() && self.oidc.is_none() {
            return Err(ConfigError::new(
                "alb_signer",
                "no user source is configured: set alb_signer (ALB x-amzn-oidc-data) and/or oidc_issuer with oidc_audience (OIDC ID token)",
            ));
        }
        if let Some(alb) = &self.alb {
            alb.validate()?;
        }
        if let Some(oidc) = &self.oidc {
            oidc.validate()?;
        }
        if self.identity_timeout.is_zero() {
            return Err(ConfigError::new("identity_timeout", "must be positive"));
        }
        Ok(())
    }

    /// The endpoint called for each binding.
    pub fn complete_url(&self) -> String {
        format!(
            "{}/identities/CompleteResourceTokenAuth",
            self.identity_url.trim_end_matches('/')
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential() -> BindingCredential {
        BindingCredential::parse("LKABCDEF:s3cr3t-value\n").expect("credential")
    }

    #[test]
    fn credential_parses_and_redacts() {
        let c = credential();
        assert_eq!(c.access_key_id(), "LKABCDEF");
        let debug = format!("{c:?}");
        assert!(!debug.contains("s3cr3t"), "{debug}");
        assert!(c.authorization().is_some_and(|v| v.is_sensitive()));
        assert_eq!(
            BindingCredential::parse("nocolon").err(),
            Some(CredentialError::Shape)
        );
        assert_eq!(
            BindingCredential::parse(":x").err(),
            Some(CredentialError::AccessKeyId)
        );
        assert_eq!(
            BindingCredential::parse("LK:").err(),
            Some(CredentialError::Secret)
        );
        assert_eq!(
            BindingCredential::parse("LK:a b").err(),
            Some(CredentialError::Secret)
        );
    }

    #[test]
    fn needs_a_source() {
        let config = BindingConfig::new("http://127.0.0.1:8080", credential());
        assert_eq!(config.validate().map_err(|e| e.key), Err("alb_signer"));
    }

    #[test]
    fn region_from_arn() {
        let alb = AlbConfig::new(
            "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/x/1",
        );
        assert_eq!(alb.effective_region().as_deref(), Some("eu-west-1"));
        assert!(alb.validate().is_ok());
        let no_region = AlbConfig::new("arn:aws:elasticloadbalancing::123:loadbalancer/app/x/1");
        assert_eq!(no_region.validate().map_err(|e| e.key), Err("alb_region"));
        let mut bad_template = alb.clone();
        bad_template.key_url_template = "https://keys.example.com/".into();
        assert_eq!(
            bad_template.validate().map_err(|e| e.key),
            Err("alb_key_url_template")
        );
    }

    #[test]
    fn oidc_keys_named() {
        let mut config = BindingConfig::new("http://127.0.0.1:8080", credential());
        config.oidc = Some(OidcConfig::new("https://login.example.com", ""));
        assert_eq!(config.validate().map_err(|e| e.key), Err("oidc_audience"));
        config.oidc = Some(OidcConfig::new("not a url", "app"));
        assert_eq!(config.validate().map_err(|e| e.key), Err("oidc_issuer"));
        let mut oidc = OidcConfig::new("https://login.example.com", "app");
        oidc.cookie_name = Some("bad name;".into());
        config.oidc = Some(oidc);
        assert_eq!(config.validate().map_err(|e| e.key), Err("id_token_cookie"));
    }
}
