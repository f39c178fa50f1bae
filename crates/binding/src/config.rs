//! The binding service's keys (file `[binding]`, `LATCHKEY_BINDING_*`, flags of `serve
//! binding`), declared once with [`ServiceKeys`], and its validated settings.

use std::net::SocketAddr;
use std::time::Duration;

pub use latchkey_authn::ServiceCredential as BindingCredential;
use latchkey_authn::config::ServiceKeys;
use latchkey_authn::outbound::OutboundPolicy;
pub use latchkey_authn::user::{
    AlbConfig, DEFAULT_ALB_KEY_URL_TEMPLATE, DEFAULT_ALB_LEEWAY_SECONDS, MAX_ALB_LEEWAY_SECONDS,
    OidcConfig, UserSources,
};
pub use latchkey_authn::{ConfigError, CredentialError};
use latchkey_config::{Layers, keys};

/// Time allowed for one `CompleteResourceTokenAuth` call (the identity service exchanges
/// the code with the provider inside it, so this is longer than a plain API call).
pub const DEFAULT_IDENTITY_TIMEOUT: Duration = Duration::from_secs(30);

keys! {
    /// `serve binding`: file `[binding]`, `LATCHKEY_BINDING_*`.
    pub section Binding = "binding", tables ["outbound"], with ServiceKeys;
    /// Settings of `serve binding`.
    pub struct BindingKeys {
        /// Address to listen on (`127.0.0.1:0` picks a free port). Default 127.0.0.1:8081.
        listen: SocketAddr = ([127, 0, 0, 1], 8081),
        /// OIDC source: also read the ID token from this cookie (after `Authorization: Bearer`).
        id_token_cookie: String,
    }
}

/// Everything the binding service needs.
#[derive(Debug, Clone)]
pub struct BindingConfig {
    /// Base URL of the identity service (`POST {identity_url}/identities/CompleteResourceTokenAuth`).
    pub identity_url: String,
    /// The `binding` credential used on that call.
    pub credential: BindingCredential,
    /// Who the signed-in user is: the ALB source, tried first, and/or the OIDC source.
    pub users: UserSources,
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
            users: UserSources::default(),
            outbound: OutboundPolicy::default(),
            identity_timeout: DEFAULT_IDENTITY_TIMEOUT,
        }
    }

    /// The address to listen on and the settings of `serve binding`, validated.
    pub fn resolve(l: &Layers) -> anyhow::Result<(SocketAddr, Self)> {
        let (k, service): (BindingKeys, ServiceKeys) = l.read()?;
        let credential = service.credential(l, "binding")?;
        let mut config = Self::new(service.identity_url.clone(), credential);
        config.outbound.allow_private_addresses = service.outbound_allow_private_addresses;
        config.users = service.users(l, k.id_token_cookie)?;
        l.check(config.validate())?;
        Ok((k.listen, config))
    }

    /// Check every key, naming the first that fails.
    pub fn validate(&self) -> Result<(), ConfigError> {
        latchkey_authn::config::http_url("identity_url", &self.identity_url, false)?;
        self.users.validate()?;
        let positive = !self.identity_timeout.is_zero();
        latchkey_config::ensure(positive, "identity_timeout", "must be positive")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential() -> BindingCredential {
        BindingCredential::parse("LKABCDEF:s3cr3t-value\n").expect("credential")
    }

    #[test]
    fn needs_a_source() {
        let config = BindingConfig::new("http://127.0.0.1:8080", credential());
        assert_eq!(config.validate().map_err(|e| e.key), Err("alb_signer"));
    }

    #[test]
    fn identity_url_named() {
        let mut config = BindingConfig::new("ftp://x", credential());
        config.users.oidc = Some(OidcConfig::new("https://login.example.com", "app"));
        assert_eq!(config.validate().map_err(|e| e.key), Err("identity_url"));
    }
}
