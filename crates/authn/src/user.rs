//! Who the signed-in user is: the ALB's `x-amzn-oidc-data` header or an OIDC ID token
//! (`Authorization: Bearer`, or a cookie where a service allows it).
//!
//! One resolver for every service that serves a signed-in user (the session binding
//! service, the agent), with one policy:
//!
//! - the ALB source is tried first, when configured and its header is present; then the
//!   OIDC source: the `Authorization` header, then (only when configured) the cookie;
//! - a header sent more than once is refused (`several … headers`), as is an
//!   `Authorization` header that is not one bearer token: a present but invalid
//!   credential is refused, and no other source is tried after it;
//! - an ID token longer than [`MAX_ID_TOKEN_BYTES`] is refused before any parsing;
//! - a failure of the service's own (key endpoint, discovery) is [`ResolveError::Unavailable`],
//!   distinct from a refused credential.
//!
//! The reasons in [`ResolveError`] are for the service's log; they never contain a token.

use std::sync::Arc;

use http::{HeaderMap, header};
use latchkey_core::clock::Clock;
use secrecy::SecretString;

use crate::alb::AlbVerifier;
use crate::config::ConfigError;
use crate::inbound::{InboundError, InboundIssuerConfig, InboundVerifier};
use crate::outbound::OutboundClient;

/// The ALB's signed-claims header.
pub const ALB_HEADER: &str = "x-amzn-oidc-data";
/// Longest accepted OIDC ID token (bearer or cookie).
pub const MAX_ID_TOKEN_BYTES: usize = 16 * 1024;

/// Where AWS publishes the ALB signing keys, by region and key id.
pub const DEFAULT_ALB_KEY_URL_TEMPLATE: &str =
    "https://public-keys.auth.elb.{region}.amazonaws.com/{kid}";
/// Clock skew tolerated on the ALB token's `exp`, in seconds.
pub const DEFAULT_ALB_LEEWAY_SECONDS: u64 = 60;
/// Largest accepted `alb_leeway_seconds`.
pub const MAX_ALB_LEEWAY_SECONDS: u64 = 600;
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

    /// Check every key, naming the first that fails.
    pub fn validate(&self) -> Result<(), ConfigError> {
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
        let sample = sample_key_url(template, &region);
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

/// The key URL template with `{region}` and a sample `{kid}` filled in.
fn sample_key_url(template: &str, region: &str) -> String {
    template.replace("{region}", region).replace("{kid}", "kid")
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

    /// Check every key, naming the first that fails.
    pub fn validate(&self) -> Result<(), ConfigError> {
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

/// The user sources a service is configured with: at least one of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserSources {
    /// The ALB source, tried first.
    pub alb: Option<AlbConfig>,
    /// The OIDC source, tried when there is no ALB source or no ALB header.
    pub oidc: Option<OidcConfig>,
}

impl UserSources {
    /// Check every key, naming the first that fails (`alb_signer` when no source is set).
    pub fn validate(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    /// The configured URLs the guarded outbound client will call, each with its key: the
    /// ALB key URL (a sample `kid`) and the OIDC issuer (its discovery and JWKS). For
    /// [`crate::config::check_outbound_urls`] at start.
    pub fn outbound_urls(&self) -> Vec<(&'static str, String)> {
        let alb = self.alb.iter().map(|alb| {
            let region = alb.effective_region().unwrap_or_default();
            let url = sample_key_url(&alb.key_url_template, &region);
            ("alb_key_url_template", url)
        });
        let oidc = (self.oidc.iter()).map(|oidc| ("oidc_issuer", oidc.issuer.issuer.clone()));
        alb.chain(oidc).collect()
    }
}

/// Which source vouched for the user (for logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The ALB's `x-amzn-oidc-data` header.
    Alb,
    /// An ID token in `Authorization: Bearer`.
    OidcBearer,
    /// An ID token in the configured cookie.
    OidcCookie,
}

impl Source {
    /// `alb`, `oidc-bearer` or `oidc-cookie`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alb => "alb",
            Self::OidcBearer => "oidc-bearer",
            Self::OidcCookie => "oidc-cookie",
        }
    }
}

/// The signed-in user, as the identity service is to be told.
#[derive(Debug, Clone)]
pub enum SignedInUser {
    /// Vouched for by the ALB header: the payload's `sub`, a user id.
    UserId(String),
    /// A verified OIDC ID token (a secret: redacted in `Debug`) and its `sub`.
    IdToken {
        /// The token's `sub`.
        subject: String,
        /// The verified token itself.
        token: SecretString,
    },
}

impl SignedInUser {
    /// The user's subject (the ALB payload's or the ID token's `sub`).
    pub fn subject(&self) -> &str {
        match self {
            Self::UserId(sub) => sub,
            Self::IdToken { subject, .. } => subject,
        }
    }
}

/// Why no user was resolved. The reasons are for the log; they never contain a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// No credential was sent, or the one sent was refused.
    #[error("not signed in: {reason}")]
    NotSignedIn {
        /// The source whose credential was refused; `None` when none was sent.
        via: Option<Source>,
        /// Why, for the log.
        reason: String,
    },
    /// The credential cannot be verified right now (key endpoint or discovery unreachable).
    #[error("the user's credential cannot be verified right now: {reason}")]
    Unavailable {
        /// The source whose verification failed.
        via: Source,
        /// Why, for the log.
        reason: String,
    },
}

impl ResolveError {
    fn refused(source: Source, reason: impl Into<String>) -> Self {
        Self::NotSignedIn {
            via: Some(source),
            reason: reason.into(),
        }
    }

    /// The source concerned, for logs (`none` when no credential was sent).
    pub fn source_str(&self) -> &'static str {
        match self {
            Self::NotSignedIn { via: None, .. } => "none",
            Self::NotSignedIn { via: Some(via), .. } | Self::Unavailable { via, .. } => {
                via.as_str()
            }
        }
    }
}

/// Resolves the signed-in user of a request. Cheap to clone (the key caches are shared).
#[derive(Debug, Clone)]
pub struct UserResolver {
    alb: Option<AlbVerifier>,
    oidc: Option<Arc<OidcSource>>,
}

#[derive(Debug)]
struct OidcSource {
    verifier: InboundVerifier,
    cookie_name: Option<String>,
}

/// Whether a resolver reads the OIDC cookie. Only a service whose user-facing routes are
/// safe to reach cross-site (GET pages that change nothing without another proof, like the
/// binding page) may: a cookie rides along on every cross-site request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cookies {
    /// Read the ID token from the configured cookie after `Authorization`.
    Allowed,
    /// Never read a cookie, whatever the configuration says.
    Ignored,
}

impl UserResolver {
    /// Build the verifiers of `sources` (no network access yet). `client` fetches ALB keys,
    /// OIDC discovery and JWKS.
    pub fn new(
        sources: &UserSources,
        cookies: Cookies,
        client: OutboundClient,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let alb = sources
            .alb
            .clone()
            .map(|alb| AlbVerifier::new(alb, client.clone(), clock.clone()));
        let oidc = sources.oidc.clone().map(|oidc| {
            Arc::new(OidcSource {
                verifier: InboundVerifier::new(vec![oidc.issuer], client.clone(), clock.clone()),
                cookie_name: oidc.cookie_name.filter(|_| cookies == Cookies::Allowed),
            })
        });
        Self { alb, oidc }
    }

    /// The ALB verifier, when that source is configured.
    pub fn alb(&self) -> Option<&AlbVerifier> {
        self.alb.as_ref()
    }

    /// The signed-in user of a request with these headers.
    pub async fn resolve(
        &self,
        headers: &HeaderMap,
    ) -> Result<(Source, SignedInUser), ResolveError> {
        if let Some(alb) = &self.alb
            && let Some(token) = one_header(headers, ALB_HEADER, Source::Alb)?
        {
            return match alb.verify(token.trim()).await {
                Ok(user) => Ok((Source::Alb, SignedInUser::UserId(user.subject))),
                Err(error) if error.is_unavailable() => Err(ResolveError::Unavailable {
                    via: Source::Alb,
                    reason: error.to_string(),
                }),
                Err(error) => Err(ResolveError::refused(Source::Alb, error.to_string())),
            };
        }
        if let Some(oidc) = &self.oidc {
            let found =
                match one_header(headers, header::AUTHORIZATION.as_str(), Source::OidcBearer)? {
                    Some(value) => Some((Source::OidcBearer, bearer_token(value)?)),
                    None => oidc
                        .cookie_name
                        .as_deref()
                        .and_then(|name| cookie(headers, name))
                        .map(|token| (Source::OidcCookie, token)),
                };
            if let Some((source, token)) = found {
                if token.len() > MAX_ID_TOKEN_BYTES {
                    return Err(ResolveError::refused(source, "ID token too long"));
                }
                return match oidc.verifier.verify(&token).await {
                    Ok(user) => Ok((
                        source,
                        SignedInUser::IdToken {
                            subject: user.subject,
                            token: SecretString::from(token),
                        },
                    )),
                    Err(error @ InboundError::Discovery(_)) => Err(ResolveError::Unavailable {
                        via: source,
                        reason: error.to_string(),
                    }),
                    Err(error) => Err(ResolveError::refused(source, error.to_string())),
                };
            }
        }
        Err(ResolveError::NotSignedIn {
            via: None,
            reason: "no signed-in user".into(),
        })
    }
}

/// The one value of header `name`, as text; `None` when absent. Sent twice, or not
/// visible ASCII: refused.
fn one_header<'h>(
    headers: &'h HeaderMap,
    name: &str,
    source: Source,
) -> Result<Option<&'h str>, ResolveError> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ResolveError::refused(
            source,
            format!("several {name} headers"),
        ));
    }
    value
        .to_str()
        .map(Some)
        .map_err(|_| ResolveError::refused(source, format!("{name} is not ASCII")))
}

/// The token of `Bearer <token>` (scheme case-insensitive); anything else is refused.
fn bearer_token(value: &str) -> Result<String, ResolveError> {
    value
        .trim()
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_string())
        .filter(|token| !token.is_empty())
        .ok_or_else(|| {
            ResolveError::refused(Source::OidcBearer, "Authorization is not a bearer token")
        })
}

/// Every `name=value` pair of the request's `Cookie` headers, in order.
pub fn cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
}

/// The first value of cookie `name` (quotes removed).
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    cookie_pairs(headers)
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use latchkey_core::clock::ManualClock;

    #[test]
    fn cookies_and_bearer() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "a=1; id_token=\"x.y.z\"; id_token=other".parse().unwrap(),
        );
        assert_eq!(cookie(&headers, "id_token").as_deref(), Some("x.y.z"));
        assert_eq!(cookie(&headers, "missing"), None);
        assert_eq!(bearer_token("bearer  t.o.k ").unwrap(), "t.o.k");
        assert!(bearer_token("Basic abc").is_err());
        assert!(bearer_token("Bearer ").is_err());
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
    fn user_source_keys_named() {
        assert_eq!(
            UserSources::default().validate().map_err(|e| e.key),
            Err("alb_signer")
        );
        let with = |oidc: OidcConfig| UserSources {
            alb: None,
            oidc: Some(oidc),
        };
        assert_eq!(
            with(OidcConfig::new("https://login.example.com", ""))
                .validate()
                .map_err(|e| e.key),
            Err("oidc_audience")
        );
        assert_eq!(
            with(OidcConfig::new("not a url", "app"))
                .validate()
                .map_err(|e| e.key),
            Err("oidc_issuer")
        );
        let mut oidc = OidcConfig::new("https://login.example.com", "app");
        oidc.cookie_name = Some("bad name;".into());
        assert_eq!(
            with(oidc).validate().map_err(|e| e.key),
            Err("id_token_cookie")
        );
    }

    fn resolver(cookies: Cookies) -> UserResolver {
        let mut oidc = OidcConfig::new("https://login.example.com", "app");
        oidc.cookie_name = Some("id_token".into());
        let sources = UserSources {
            alb: Some(AlbConfig::new(
                "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/x/1",
            )),
            oidc: Some(oidc),
        };
        let client = OutboundClient::new(Default::default()).unwrap();
        UserResolver::new(&sources, cookies, client, Arc::new(ManualClock::new(0)))
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    async fn refusal(
        resolver: &UserResolver,
        pairs: &[(&'static str, &str)],
    ) -> (Option<Source>, String) {
        match resolver.resolve(&headers(pairs)).await {
            Err(ResolveError::NotSignedIn { via, reason }) => (via, reason),
            other => panic!("expected a refusal for {pairs:?}, got {other:?}"),
        }
    }

    /// The one duplicate-header policy, decided before any key or discovery fetch (these
    /// resolvers point at hosts that do not exist: a fetch would be `Unavailable`).
    #[tokio::test]
    async fn one_policy_for_duplicates_and_malformed_credentials() {
        let r = resolver(Cookies::Allowed);
        let (via, reason) = refusal(&r, &[(ALB_HEADER, "a.b.c"), (ALB_HEADER, "d.e.f")]).await;
        assert_eq!(
            (via, reason.as_str()),
            (Some(Source::Alb), "several x-amzn-oidc-data headers")
        );
        let (via, reason) = refusal(
            &r,
            &[
                ("authorization", "Bearer a.b.c"),
                ("authorization", "Bearer d.e.f"),
            ],
        )
        .await;
        assert_eq!(
            (via, reason.as_str()),
            (Some(Source::OidcBearer), "several authorization headers")
        );
        // A present but malformed Authorization is refused; the cookie is not tried after it.
        let (via, reason) = refusal(
            &r,
            &[
                ("authorization", "Basic YTpi"),
                ("cookie", "id_token=a.b.c"),
            ],
        )
        .await;
        assert_eq!(
            (via, reason.as_str()),
            (
                Some(Source::OidcBearer),
                "Authorization is not a bearer token"
            )
        );
        let long = format!("Bearer {}", "a".repeat(MAX_ID_TOKEN_BYTES + 1));
        let (via, reason) = refusal(&r, &[("authorization", long.as_str())]).await;
        assert_eq!(
            (via, reason.as_str()),
            (Some(Source::OidcBearer), "ID token too long")
        );
        let (via, reason) = refusal(&r, &[]).await;
        assert_eq!((via, reason.as_str()), (None, "no signed-in user"));
    }

    #[tokio::test]
    async fn cookies_are_read_only_where_allowed() {
        let long = format!("id_token={}", "a".repeat(MAX_ID_TOKEN_BYTES + 1));
        let cookie = [("cookie", long.as_str())];
        // Allowed: the cookie is the credential (refused here for its length).
        let (via, _) = refusal(&resolver(Cookies::Allowed), &cookie).await;
        assert_eq!(via, Some(Source::OidcCookie));
        // Ignored (the agent): as if no credential was sent.
        let (via, reason) = refusal(&resolver(Cookies::Ignored), &cookie).await;
        assert_eq!((via, reason.as_str()), (None, "no signed-in user"));
    }
}
