//! The keys shared by the services that call the identity service for their signed-in
//! users (`serve binding` and `serve agent`), declared once, and the one configuration
//! error of the services ([`latchkey_config::ConfigError`]).

use std::path::PathBuf;

pub use latchkey_config::{ConfigError, http_url};
use latchkey_config::{Layers, keys};
use secrecy::ExposeSecret as _;

use crate::ServiceCredential;
use crate::user::{AlbConfig, OidcConfig, UserSources};

/// `inbound_issuers` (identity service): a JSON array, an array of tables in the file.
impl latchkey_config::ListItem for crate::inbound::InboundIssuerConfig {}

keys! {
    /// The identity service, this service's credential and who the signed-in user is
    /// (`serve binding` and `serve agent`).
    pub struct ServiceKeys {
        /// Base URL of the identity service, e.g. `http://identity.internal:8080`.
        identity_url: String => "the identity service's base URL is required",
        /// File holding this service's credential (`latchkey admin credentials create`, role
        /// `binding` or `workload:<name>`) as `ACCESS_KEY_ID:SECRET`; or set the credential
        /// itself in the environment variable named as this key's without `_FILE`.
        credential_file: PathBuf,
        /// Allow the outbound calls (ALB keys, OIDC discovery and JWKS) to loopback and private
        /// addresses and over plain http. Tests and dev only.
        outbound_allow_private_addresses: bool = false,
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

/// Refuse to start when a configured URL that this service calls through the guarded
/// outbound client is one its `policy` refuses (plain http, or a loopback or private
/// address — literal, or what the name resolves to now — without the opt-in): said now,
/// naming the key and the opt-in `outbound_allow_private_addresses`, rather than as a 502
/// once a user is mid-flow. `urls`: `(key, url)`. The rule is the one every request gets
/// ([`crate::outbound::OutboundPolicy::check_destination`]).
pub async fn check_outbound_urls(
    l: &Layers<'_>,
    policy: &crate::outbound::OutboundPolicy,
    urls: &[(&str, String)],
) -> anyhow::Result<()> {
    for (key, url) in urls {
        if let Err(e) = policy.check_destination(url).await {
            let setting = l.describe("outbound_allow_private_addresses");
            let why = format!(
                "{e}: this service would fail when it calls it. Use a public https URL, or allow loopback and private addresses and plain http (tests and development only) with {setting}"
            );
            return Err(l.error(key, why));
        }
    }
    Ok(())
}

impl ServiceKeys {
    /// This service's credential, of role `role`.
    pub fn credential(&self, l: &Layers, role: &str) -> anyhow::Result<ServiceCredential> {
        let what = format!("ACCESS_KEY_ID:SECRET of a `{role}` credential");
        let secret = l.required_secret("credential", &what)?;
        let credential = ServiceCredential::parse(secret.value.expose_secret());
        credential.map_err(|e| l.error(&secret.key, e))
    }

    /// The user sources; `cookie` (the binding service's `id_token_cookie`) also reads the
    /// ID token from a cookie. Not yet validated.
    pub fn users(self, l: &Layers, cookie: Option<String>) -> anyhow::Result<UserSources> {
        let alb = match self.alb_signer {
            Some(signer) => {
                let mut alb = AlbConfig::new(signer);
                (alb.region, alb.issuer) = (self.alb_region, self.alb_issuer);
                let template = self.alb_key_url_template;
                alb.key_url_template = template.unwrap_or(alb.key_url_template);
                alb.leeway_seconds = self.alb_leeway_seconds.unwrap_or(alb.leeway_seconds);
                Some(alb)
            }
            None => {
                let why = format!("has no effect without {}", l.display("alb_signer"));
                let keys = [
                    "alb_key_url_template",
                    "alb_region",
                    "alb_issuer",
                    "alb_leeway_seconds",
                ];
                l.refuse(&keys, why)?;
                None
            }
        };
        let (issuer, audience) = (l.display("oidc_issuer"), l.display("oidc_audience"));
        let (key, why) = match (self.oidc_issuer, self.oidc_audience) {
            (Some(issuer), Some(audience)) => {
                let mut oidc = OidcConfig::new(issuer, audience);
                oidc.cookie_name = cookie;
                return Ok(UserSources {
                    alb,
                    oidc: Some(oidc),
                });
            }
            (None, None) if cookie.is_none() => return Ok(UserSources { alb, oidc: None }),
            (Some(_), None) => (
                "oidc_audience",
                format!("missing: {issuer} needs {audience} (the ID token's audience)"),
            ),
            (None, Some(_)) => ("oidc_issuer", format!("missing: {audience} needs {issuer}")),
            (None, None) => {
                let cookie = l.display("id_token_cookie");
                let why = format!("missing: {cookie} needs {issuer} and {audience}");
                ("oidc_issuer", why)
            }
        };
        Err(l.error(key, why))
    }
}
