//! The keys of the user sources (`serve binding` and `serve agent`), declared once, and the
//! one configuration error of the services ([`latchkey_config::ConfigError`]).

pub use latchkey_config::{ConfigError, http_url};
use latchkey_config::{Layers, keys};

use crate::user::{AlbConfig, OidcConfig, UserSources};

/// `inbound_issuers` (identity service): a JSON array, an array of tables in the file.
impl latchkey_config::ListItem for crate::inbound::InboundIssuerConfig {}

keys! {
    /// Who the signed-in user is (`serve binding` and `serve agent`).
    pub struct UserKeys {
        /// ALB source: the load balancer's ARN, which must sign `x-amzn-oidc-data`.
        alb_signer: String,
        /// ALB public-key URL with `{kid}` (and optionally `{region}`).
        /// Default `https://public-keys.auth.elb.{region}.amazonaws.com/{kid}`.
        alb_key_url_template: String,
        /// Region for `{region}`. Default: the region in --alb-signer.
        alb_region: String,
        /// When set, the ALB token's `iss` claim must equal it.
        alb_issuer: String,
        /// Clock skew tolerated on the ALB token's `exp`, in seconds. Default 60.
        alb_leeway_seconds: u64,
        /// OIDC source: the issuer of the users' ID tokens (discovery + JWKS).
        oidc_issuer: String,
        /// OIDC source: the audience (client id) the ID token must be issued to.
        oidc_audience: String,
    }
}

impl crate::outbound::OutboundPolicy {
    /// The default policy; `allow` lets calls reach private addresses (the services'
    /// `allow_private_addresses`).
    pub fn allowing_private(allow: bool) -> Self {
        let policy = Self::default();
        Self {
            allow_private_addresses: allow,
            ..policy
        }
    }
}

impl UserSources {
    /// The user sources of a section's [`UserKeys`]; `cookie` (the binding service's
    /// `id_token_cookie`) also reads the ID token from a cookie. Not yet validated.
    pub fn resolve(l: &Layers, u: UserKeys, cookie: Option<String>) -> anyhow::Result<Self> {
        let alb = match u.alb_signer {
            Some(signer) => Some(AlbConfig {
                key_url_template: (u.alb_key_url_template)
                    .unwrap_or(crate::user::DEFAULT_ALB_KEY_URL_TEMPLATE.into()),
                region: u.alb_region,
                issuer: u.alb_issuer,
                leeway_seconds: (u.alb_leeway_seconds)
                    .unwrap_or(crate::user::DEFAULT_ALB_LEEWAY_SECONDS),
                ..AlbConfig::new(signer)
            }),
            None => {
                let set = [
                    ("alb_key_url_template", u.alb_key_url_template.is_some()),
                    ("alb_region", u.alb_region.is_some()),
                    ("alb_issuer", u.alb_issuer.is_some()),
                    ("alb_leeway_seconds", u.alb_leeway_seconds.is_some()),
                ];
                if let Some((key, _)) = set.iter().find(|(_, set)| *set) {
                    let why = format!("has no effect without {}", l.display("alb_signer"));
                    return Err(l.error(key, why));
                }
                None
            }
        };
        let (issuer, audience) = (l.display("oidc_issuer"), l.display("oidc_audience"));
        let (key, why) = match (u.oidc_issuer, u.oidc_audience) {
            (Some(issuer), Some(audience)) => {
                let oidc = OidcConfig::new(issuer, audience);
                let oidc = Some(OidcConfig {
                    cookie_name: cookie,
                    ..oidc
                });
                return Ok(Self { alb, oidc });
            }
            (None, None) if cookie.is_none() => return Ok(Self { alb, oidc: None }),
            (Some(_), None) => (
                "oidc_audience",
                format!("missing: {issuer} needs {audience} (the ID token's audience)"),
            ),
            (None, Some(_)) => ("oidc_issuer", format!("missing: {audience} needs {issuer}")),
            (None, None) => {
                let cookie = l.display("id_token_cookie");
                (
                    "oidc_issuer",
                    format!("missing: {cookie} needs {issuer} and {audience}"),
                )
            }
        };
        Err(l.error(key, why))
    }
}
