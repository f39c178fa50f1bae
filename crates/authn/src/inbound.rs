//! Verifying users' JWTs from configured inbound issuers (OIDC discovery + JWKS).
//!
//! Used by `GetWorkloadAccessTokenForJWT` and by `CompleteResourceTokenAuth` with a
//! `userToken`. Strict by default: the issuer must be configured (an unknown issuer costs
//! no network request), the algorithm must be on that issuer's allow-list (never `none` or
//! an HMAC algorithm, which would let a public key act as a shared secret), the key is
//! found by `kid` in the issuer's JWKS, and `iss`, `aud`, `exp`, `nbf`, `iat` and `sub`
//! are checked against an injected clock.
//!
//! Keys are cached per issuer for [`DEFAULT_JWKS_TTL`]. A token naming an unknown `kid`
//! triggers one refetch (key rotation), at most once per [`MIN_JWKS_REFETCH_INTERVAL`]
//! per issuer, so a stream of forged tokens cannot make Latchkey hammer the identity
//! provider. Fetches are single-flight per issuer and go through the guarded
//! [`OutboundClient`]. Errors say which check failed and never echo the token.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use latchkey_core::clock::Clock;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::Mutex;

use crate::outbound::OutboundClient;

/// Algorithms accepted when an issuer's `algorithms` key is absent.
pub const DEFAULT_ALGORITHMS: [&str; 4] = ["RS256", "ES256", "PS256", "EdDSA"];
/// Clock skew tolerated on `exp`, `nbf` and `iat` when `leeway_seconds` is absent.
pub const DEFAULT_LEEWAY_SECONDS: u64 = 60;
/// Largest `leeway_seconds` accepted by [`InboundIssuerConfig::validate`].
pub const MAX_LEEWAY_SECONDS: u64 = 600;
/// How long a fetched JWKS is used before it is fetched again.
pub const DEFAULT_JWKS_TTL: Duration = Duration::from_secs(600);
/// Least time between two JWKS fetches of one issuer caused by an unknown `kid`.
pub const MIN_JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// Least time between retries while an issuer's keys cannot be fetched at all.
pub const FAILED_FETCH_BACKOFF: Duration = Duration::from_secs(5);
/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// One trusted issuer of user JWTs (`[[inbound_issuers]]` in the service config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundIssuerConfig {
    /// The issuer identifier, compared exactly with the token's `iss` and the discovery
    /// document's `issuer`.
    pub issuer: String,
    /// Accepted audiences: the token's `aud` must contain at least one. At least one.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Accepted signing algorithms. Default `["RS256", "ES256", "PS256", "EdDSA"]`;
    /// `HS*` and `none` are refused by [`InboundIssuerConfig::validate`].
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// OIDC discovery document. Default `{issuer}/.well-known/openid-configuration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery_url: Option<String>,
    /// JWKS location; when set, discovery is skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds. Default 60.
    #[serde(default = "default_leeway_seconds")]
    pub leeway_seconds: u64,
    /// Least time between JWKS refetches caused by an unknown `kid` (key rotation), in
    /// seconds, 1..=3600. Default: the verifier's option (30 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_min_refetch_seconds: Option<u64>,
}

fn default_algorithms() -> Vec<String> {
    DEFAULT_ALGORITHMS.iter().map(|a| a.to_string()).collect()
}

fn default_leeway_seconds() -> u64 {
    DEFAULT_LEEWAY_SECONDS
}

/// A configuration key of [`InboundIssuerConfig`] that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{key}`: {reason}")]
pub struct InboundConfigError {
    /// The failing key, e.g. `audiences`.
    pub key: &'static str,
    pub reason: String,
}

impl InboundConfigError {
    fn new(key: &'static str, reason: impl Into<String>) -> Self {
        Self {
            key,
            reason: reason.into(),
        }
    }
}

impl InboundIssuerConfig {
    /// An issuer with the given audiences and every other key at its default.
    pub fn new(issuer: impl Into<String>, audiences: Vec<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audiences,
            algorithms: default_algorithms(),
            discovery_url: None,
            jwks_uri: None,
            leeway_seconds: DEFAULT_LEEWAY_SECONDS,
            jwks_min_refetch_seconds: None,
        }
    }

    /// Check every key, naming the first one that fails.
    ///
    /// `issuer`, `discovery_url` and `jwks_uri` must be absolute http(s) URLs without a
    /// fragment (whether plain http may actually be fetched is the outbound policy's call).
    pub fn validate(&self) -> Result<(), InboundConfigError> {
        check_config_url("issuer", &self.issuer)?;
        if url::Url::parse(&self.issuer).is_ok_and(|u| u.query().is_some()) {
            return Err(InboundConfigError::new(
                "issuer",
                "must not have a query component",
            ));
        }
        if self.audiences.is_empty() {
            return Err(InboundConfigError::new(
                "audiences",
                "must list at least one audience",
            ));
        }
        if self.audiences.iter().any(|a| a.trim().is_empty()) {
            return Err(InboundConfigError::new(
                "audiences",
                "must not contain an empty audience",
            ));
        }
        if self.algorithms.is_empty() {
            return Err(InboundConfigError::new(
                "algorithms",
                "must list at least one algorithm",
            ));
        }
        for name in &self.algorithms {
            parse_algorithm(name)
                .map_err(|why| InboundConfigError::new("algorithms", format!("{name:?}: {why}")))?;
        }
        if let Some(url) = &self.discovery_url {
            check_config_url("discovery_url", url)?;
        }
        if let Some(url) = &self.jwks_uri {
            check_config_url("jwks_uri", url)?;
        }
        if self
            .jwks_min_refetch_seconds
            .is_some_and(|s| !(1..=3600).contains(&s))
        {
            return Err(InboundConfigError::new(
                "jwks_min_refetch_seconds",
                "must be between 1 and 3600",
            ));
        }
        if self.leeway_seconds > MAX_LEEWAY_SECONDS {
            return Err(InboundConfigError::new(
                "leeway_seconds",
                format!("must be at most {MAX_LEEWAY_SECONDS}"),
            ));
        }
        Ok(())
    }

    /// The discovery URL used: `discovery_url`, or `{issuer}/.well-known/openid-configuration`
    /// (a trailing slash on the issuer removed first, per OIDC Discovery §4).
    pub fn effective_discovery_url(&self) -> String {
        match &self.discovery_url {
            Some(url) => url.clone(),
            None => format!(
                "{}/.well-known/openid-configuration",
                self.issuer.trim_end_matches('/')
            ),
        }
    }
}

fn check_config_url(key: &'static str, value: &str) -> Result<(), InboundConfigError> {
    let url = url::Url::parse(value)
        .map_err(|e| InboundConfigError::new(key, format!("not an absolute URL: {e}")))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(InboundConfigError::new(
            key,
            "must be an https (or, in tests and dev, http) URL",
        ));
    }
    if url.host().is_none() {
        return Err(InboundConfigError::new(key, "must have a host"));
    }
    if url.fragment().is_some() {
        return Err(InboundConfigError::new(key, "must not have a fragment"));
    }
    Ok(())
}

/// An asymmetric signing algorithm, or why the name is refused.
fn parse_algorithm(name: &str) -> Result<Algorithm, &'static str> {
    if name.eq_ignore_ascii_case("none") {
        return Err("unsigned tokens are never accepted");
    }
    if name
        .get(..2)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case("HS"))
    {
        return Err("HMAC algorithms are refused: a shared secret cannot identify an issuer");
    }
    let algorithm = Algorithm::from_str(name).map_err(|_| "not a supported JWS algorithm")?;
    match algorithm {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            Err("HMAC algorithms are refused")
        }
        other => Ok(other),
    }
}

/// A user whose JWT passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedUser {
    /// The configured issuer that vouched for the user.
    pub issuer: String,
    /// The token's `sub`.
    pub subject: String,
    /// Every claim of the verified token.
    pub claims: Value,
}

impl VerifiedUser {
    /// The user this token names: its subject in its issuer's namespace.
    pub fn principal(&self) -> Result<latchkey_core::UserPrincipal, InboundError> {
        latchkey_core::UserPrincipal::jwt(self.issuer.as_str(), self.subject.as_str())
            .map_err(|_| InboundError::Malformed("the sub claim is empty or too long"))
    }
}

/// Which check a user JWT failed. Messages never contain the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InboundError {
    #[error("the token's issuer is not a configured inbound issuer")]
    UnknownIssuer,
    #[error("the token's signing algorithm {0} is not allowed for its issuer")]
    DisallowedAlgorithm(String),
    #[error("no key in the issuer's key set matches the token")]
    UnknownKey,
    #[error("the token's signature is invalid")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token's iss claim does not match the issuer")]
    WrongIssuer,
    #[error("the token is not intended for an accepted audience")]
    WrongAudience,
    #[error("the token has no sub claim")]
    MissingSubject,
    /// A `sub` with a control, line-separator or bidirectional formatting character
    /// ([`latchkey_core::validate::is_printable_name`]): it could forge log lines.
    #[error("the token's sub claim contains control or formatting characters")]
    UnsafeSubject,
    #[error("the token is malformed: {0}")]
    Malformed(&'static str),
    #[error("the issuer's signing keys could not be loaded: {0}")]
    Discovery(String),
}

/// Cache timings of an [`InboundVerifier`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifierOptions {
    /// How long a fetched JWKS is used. Default [`DEFAULT_JWKS_TTL`].
    pub jwks_ttl: Duration,
    /// Least time between JWKS fetches caused by an unknown `kid`. Default
    /// [`MIN_JWKS_REFETCH_INTERVAL`].
    pub min_refetch_interval: Duration,
    /// Least time between retries while no key set could be fetched yet, or while an
    /// expired one cannot be refreshed (the stale set keeps being used). Default
    /// [`FAILED_FETCH_BACKOFF`].
    pub failed_fetch_backoff: Duration,
}

impl Default for VerifierOptions {
    fn default() -> Self {
        Self {
            jwks_ttl: DEFAULT_JWKS_TTL,
            min_refetch_interval: MIN_JWKS_REFETCH_INTERVAL,
            failed_fetch_backoff: FAILED_FETCH_BACKOFF,
        }
    }
}

/// Verifies user JWTs against the configured issuers. Cheap to clone.
#[derive(Debug, Clone)]
pub struct InboundVerifier {
    inner: Arc<VerifierInner>,
}

#[derive(Debug)]
struct VerifierInner {
    issuers: HashMap<String, Issuer>,
    client: OutboundClient,
    clock: Arc<dyn Clock>,
    options: VerifierOptions,
}

#[derive(Debug)]
struct Issuer {
    config: InboundIssuerConfig,
    algorithms: Vec<Algorithm>,
    keys: Mutex<KeyCache>,
}

#[derive(Debug, Default)]
struct KeyCache {
    /// From the config, or from discovery (forgotten when a fetch from it fails).
    jwks_uri: Option<String>,
    keys: Option<Vec<Jwk>>,
    fetched_at_ms: i64,
    last_attempt_ms: Option<i64>,
}

impl KeyCache {
    fn may_fetch(&self, now_ms: i64, interval: Duration) -> bool {
        self.last_attempt_ms
            .is_none_or(|at| now_ms.saturating_sub(at) >= duration_ms(interval))
    }
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[derive(Deserialize)]
struct DiscoveryDocument {
    issuer: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<Value>,
}

impl InboundVerifier {
    /// A verifier with the default cache timings.
    ///
    /// Configs are expected to have passed [`InboundIssuerConfig::validate`] at start-up;
    /// here, refused algorithm names are dropped (an issuer left with none accepts no
    /// token) and a repeated issuer replaces the earlier entry.
    pub fn new(
        issuers: Vec<InboundIssuerConfig>,
        client: OutboundClient,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self::with_options(issuers, client, clock, VerifierOptions::default())
    }

    /// A verifier with explicit cache timings.
    pub fn with_options(
        issuers: Vec<InboundIssuerConfig>,
        client: OutboundClient,
        clock: Arc<dyn Clock>,
        options: VerifierOptions,
    ) -> Self {
        let mut map = HashMap::new();
        for config in issuers {
            let algorithms: Vec<Algorithm> = config
                .algorithms
                .iter()
                .filter_map(|name| match parse_algorithm(name) {
                    Ok(a) => Some(a),
                    Err(why) => {
                        tracing::warn!(issuer = %config.issuer, algorithm = %name, why, "ignoring refused inbound algorithm");
                        None
                    }
                })
                .collect();
            let cache = KeyCache {
                jwks_uri: config.jwks_uri.clone(),
                ..KeyCache::default()
            };
            if map.contains_key(&config.issuer) {
                tracing::warn!(issuer = %config.issuer, "inbound issuer configured twice; the later entry wins");
            }
            map.insert(
                config.issuer.clone(),
                Issuer {
                    algorithms,
                    keys: Mutex::new(cache),
                    config,
                },
            );
        }
        Self {
            inner: Arc::new(VerifierInner {
                issuers: map,
                client,
                clock,
                options,
            }),
        }
    }

    /// Whether any issuer is configured.
    pub fn has_issuers(&self) -> bool {
        !self.inner.issuers.is_empty()
    }

    /// Verify a user's JWT: issuer, algorithm, key, signature, `iss`, `aud`, `exp`, `nbf`,
    /// `iat` and `sub`.
    pub async fn verify(&self, token: &str) -> Result<VerifiedUser, InboundError> {
        let inner = &*self.inner;
        if token.len() > MAX_TOKEN_BYTES {
            return Err(InboundError::Malformed("token too long"));
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(_signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(InboundError::Malformed(
                "not a compact JWS (three dot-separated parts)",
            ));
        };

        // Nothing read before the signature check is trusted: the header and the `iss` claim
        // only choose which issuer, algorithm and key to verify with.
        let header = decode_json_object(header_b64)
            .ok_or(InboundError::Malformed("header is not base64url JSON"))?;
        let alg_name = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(InboundError::Malformed("header has no alg"))?;
        let algorithm = parse_algorithm(alg_name)
            .map_err(|_| InboundError::DisallowedAlgorithm(printable_alg(alg_name)))?;
        if header.contains_key("crit") {
            return Err(InboundError::Malformed(
                "critical header extensions are not supported",
            ));
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.as_str()),
            Some(_) => return Err(InboundError::Malformed("kid is not a string")),
        };
        let unverified = decode_json_object(payload_b64)
            .ok_or(InboundError::Malformed("payload is not base64url JSON"))?;
        let claimed_issuer = match unverified.get("iss") {
            Some(Value::String(iss)) => iss.as_str(),
            Some(_) => return Err(InboundError::Malformed("iss is not a string")),
            None => return Err(InboundError::Malformed("iss claim missing")),
        };
        let issuer = inner
            .issuers
            .get(claimed_issuer)
            .ok_or(InboundError::UnknownIssuer)?;
        if !issuer.algorithms.contains(&algorithm) {
            return Err(InboundError::DisallowedAlgorithm(printable_alg(alg_name)));
        }

        let jwk = self.find_key(issuer, kid, algorithm).await?;
        let key = DecodingKey::from_jwk(&jwk).map_err(|_| InboundError::UnknownKey)?;
        let mut validation = Validation::new(algorithm);
        // Claims are checked below against the injected clock, not jsonwebtoken's.
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let data = jsonwebtoken::decode::<Value>(token, &key, &validation).map_err(|e| match e
            .kind()
        {
            ErrorKind::InvalidSignature => InboundError::BadSignature,
            ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidEddsaKey
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidKeyFormat => InboundError::UnknownKey,
            ErrorKind::InvalidToken
            | ErrorKind::Base64(_)
            | ErrorKind::Json(_)
            | ErrorKind::Utf8(_) => InboundError::Malformed("token could not be decoded"),
            _ => InboundError::BadSignature,
        })?;

        let now = inner.clock.now_secs();
        check_claims(&issuer.config, &data.claims, now)?;
        let subject = data
            .claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        Ok(VerifiedUser {
            issuer: issuer.config.issuer.clone(),
            subject,
            claims: data.claims,
        })
    }

    /// The issuer's key for this token, fetching or refetching the JWKS within the limits.
    async fn find_key(
        &self,
        issuer: &Issuer,
        kid: Option<&str>,
        algorithm: Algorithm,
    ) -> Result<Jwk, InboundError> {
        let inner = &*self.inner;
        // Held across fetches: concurrent verifications of one issuer share one fetch.
        let mut cache = issuer.keys.lock().await;
        let now = inner.clock.now_ms();
        let is_fresh = cache.keys.is_some()
            && now.saturating_sub(cache.fetched_at_ms) < duration_ms(inner.options.jwks_ttl);
        if !is_fresh {
            if cache.may_fetch(now, inner.options.failed_fetch_backoff) {
                if let Err(error) = self.refresh(issuer, &mut cache, now).await {
                    if cache.keys.is_none() {
                        return Err(error);
                    }
                    tracing::warn!(issuer = %issuer.config.issuer, %error, "keeping the expired key set: refresh failed");
                }
            } else if cache.keys.is_none() {
                return Err(InboundError::Discovery(
                    "a recent fetch failed; retrying shortly".to_string(),
                ));
            }
        }
        if let Some(jwk) = select_key(cache.keys.as_deref().unwrap_or_default(), kid, algorithm) {
            return Ok(jwk);
        }
        // Unknown key: perhaps the issuer rotated. Refetch, but rarely.
        let min_refetch = issuer
            .config
            .jwks_min_refetch_seconds
            .map_or(inner.options.min_refetch_interval, Duration::from_secs);
        if !cache.may_fetch(now, min_refetch) {
            return Err(InboundError::UnknownKey);
        }
        self.refresh(issuer, &mut cache, now).await?;
        select_key(cache.keys.as_deref().unwrap_or_default(), kid, algorithm)
            .ok_or(InboundError::UnknownKey)
    }

    /// Discover (when needed) and fetch the issuer's JWKS into `cache`.
    async fn refresh(
        &self,
        issuer: &Issuer,
        cache: &mut KeyCache,
        now: i64,
    ) -> Result<(), InboundError> {
        let client = &self.inner.client;
        cache.last_attempt_ms = Some(now);
        let jwks_uri = match &cache.jwks_uri {
            Some(uri) => uri.clone(),
            None => {
                let url = issuer.config.effective_discovery_url();
                let document: DiscoveryDocument = client.get_json(&url).await.map_err(|e| {
                    InboundError::Discovery(format!("fetching the discovery document failed: {e}"))
                })?;
                // OIDC Discovery §4.3: the document must name exactly the configured issuer.
                if document.issuer != issuer.config.issuer {
                    return Err(InboundError::Discovery(
                        "the discovery document's issuer differs from the configured issuer"
                            .to_string(),
                    ));
                }
                cache.jwks_uri = Some(document.jwks_uri.clone());
                document.jwks_uri
            }
        };
        let raw: RawJwks = match client.get_json(&jwks_uri).await {
            Ok(raw) => raw,
            Err(e) => {
                if issuer.config.jwks_uri.is_none() {
                    // Rediscover next time: the issuer may have moved its keys.
                    cache.jwks_uri = None;
                }
                return Err(InboundError::Discovery(format!(
                    "fetching the JWKS failed: {e}"
                )));
            }
        };
        // Keys this library cannot parse (other key types or curves) are skipped, not fatal.
        let keys: Vec<Jwk> = raw
            .keys
            .into_iter()
            .filter_map(|k| serde_json::from_value(k).ok())
            .collect();
        tracing::debug!(issuer = %issuer.config.issuer, keys = keys.len(), "fetched inbound issuer JWKS");
        cache.keys = Some(keys);
        cache.fetched_at_ms = now;
        Ok(())
    }
}

/// The key to verify with: the one named by `kid`, or without a `kid`, the only key of
/// the algorithm's type. Keys for encryption, other algorithms or other curves never match.
fn select_key(keys: &[Jwk], kid: Option<&str>, algorithm: Algorithm) -> Option<Jwk> {
    let mut usable = keys.iter().filter(|k| key_fits(k, algorithm));
    match kid {
        Some(kid) => usable
            .find(|k| k.common.key_id.as_deref() == Some(kid))
            .cloned(),
        None => match (usable.next(), usable.next()) {
            (Some(only), None) => Some(only.clone()),
            _ => None,
        },
    }
}

fn key_fits(key: &Jwk, algorithm: Algorithm) -> bool {
    let common = &key.common;
    if common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return false;
    }
    if common
        .key_operations
        .as_ref()
        .is_some_and(|ops| !ops.contains(&KeyOperations::Verify))
    {
        return false;
    }
    if common
        .key_algorithm
        .is_some_and(|a| a != KeyAlgorithm::from(algorithm))
    {
        return false;
    }
    match (&key.algorithm, algorithm) {
        (
            AlgorithmParameters::RSA(_),
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512,
        ) => true,
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES256) => p.curve == EllipticCurve::P256,
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES384) => p.curve == EllipticCurve::P384,
        (AlgorithmParameters::OctetKeyPair(p), Algorithm::EdDSA) => {
            p.curve == EllipticCurve::Ed25519
        }
        _ => false,
    }
}

/// Claim checks after the signature: `iss`, `aud`, `exp`, `nbf`, `iat`, `sub`.
fn check_claims(
    config: &InboundIssuerConfig,
    claims: &Value,
    now: i64,
) -> Result<(), InboundError> {
    let claims = claims
        .as_object()
        .ok_or(InboundError::Malformed("claims are not a JSON object"))?;
    if claims.get("iss").and_then(Value::as_str) != Some(config.issuer.as_str()) {
        return Err(InboundError::WrongIssuer);
    }
    let audiences: Vec<&str> = match claims.get("aud") {
        None => return Err(InboundError::WrongAudience),
        Some(Value::String(aud)) => vec![aud.as_str()],
        Some(Value::Array(items)) => items
            .iter()
            .map(Value::as_str)
            .collect::<Option<Vec<_>>>()
            .ok_or(InboundError::Malformed("aud holds a non-string"))?,
        Some(_) => {
            return Err(InboundError::Malformed(
                "aud is neither a string nor an array",
            ));
        }
    };
    if !audiences
        .iter()
        .any(|a| config.audiences.iter().any(|accepted| accepted == a))
    {
        return Err(InboundError::WrongAudience);
    }
    let leeway = i64::try_from(config.leeway_seconds).unwrap_or(i64::MAX);
    let exp = numeric_date(claims, "exp")?.ok_or(InboundError::Malformed("exp claim missing"))?;
    if now >= exp.saturating_add(leeway) {
        return Err(InboundError::Expired);
    }
    if let Some(nbf) = numeric_date(claims, "nbf")?
        && nbf > now.saturating_add(leeway)
    {
        return Err(InboundError::NotYetValid);
    }
    if let Some(iat) = numeric_date(claims, "iat")?
        && iat > now.saturating_add(leeway)
    {
        return Err(InboundError::NotYetValid);
    }
    match claims.get("sub") {
        Some(Value::String(sub)) if !sub.is_empty() => {
            if latchkey_core::validate::is_printable_name(sub) {
                Ok(())
            } else {
                Err(InboundError::UnsafeSubject)
            }
        }
        _ => Err(InboundError::MissingSubject),
    }
}

/// A NumericDate claim in whole seconds (fractions rounded down), if present.
fn numeric_date(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<i64>, InboundError> {
    let malformed = match name {
        "exp" => "exp is not a number",
        "nbf" => "nbf is not a number",
        _ => "iat is not a number",
    };
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(v) => Ok(Some(v)),
            None => match n.as_f64() {
                // Saturating float-to-int conversion; NaN cannot come from JSON.
                Some(f) if f.is_finite() => Ok(Some(f.floor() as i64)),
                _ => Err(InboundError::Malformed(malformed)),
            },
        },
        Some(_) => Err(InboundError::Malformed(malformed)),
    }
}

fn decode_json_object(segment: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// The header's `alg` for an error message: short and plain, or a placeholder.
fn printable_alg(alg: &str) -> String {
    if !alg.is_empty()
        && alg.len() <= 16
        && alg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        alg.to_string()
    } else {
        "(unrecognised)".to_string()
    }
}

#[cfg(test)]
mod tests;
