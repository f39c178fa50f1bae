//! Verifying the AWS Application Load Balancer's `x-amzn-oidc-data` header.
//!
//! The ALB signs the user's claims as a compact JWS with ES256 and publishes the public
//! key (a PEM `PUBLIC KEY`, P-256) per key id at a regional URL. Checks, in this order,
//! so that no key is fetched for a token that is already known to be bad:
//!
//! 1. at most [`MAX_ALB_TOKEN_BYTES`], exactly three dot-separated base64url parts, each
//!    with or without `=` padding (ALBs send padded parts; both forms are decoded);
//! 2. header: `alg` exactly `ES256` (never `none` or an HMAC algorithm: with HMAC the
//!    published public key would act as a shared secret), no `crit`, `signer` exactly the
//!    configured load-balancer ARN, `kid` matching `[A-Za-z0-9-]{1,128}` (it becomes part
//!    of a URL, so it cannot carry a path, query or host);
//! 3. the signature is 64 bytes (`r || s`, as in JWS);
//! 4. the key for `kid`, from the cache or fetched through the guarded outbound client;
//! 5. ECDSA P-256 SHA-256 over the exact received bytes `header "." payload` (padding
//!    included, as received);
//! 6. payload: `exp` (required) and `nbf`/header `exp` (when present) with a small leeway,
//!    `iss` when configured, and `sub` (1 to 128 characters, no control, line-separator or
//!    bidirectional formatting characters: it is logged and shown).
//!
//! Keys are cached per `kid` (at most [`KEY_CACHE_CAPACITY`] kids, least recently used
//! evicted first; only a key the endpoint published gets there, and a key id's key never
//! changes, so good keys do not expire). Fetches are single-flight per kid. Forged tokens
//! may name any kid (only the signer ARN is needed to get that far), so the fetch budget is
//! shaped so that they cannot lock out a genuine, newly rotated key:
//!
//! - per kid: a kid the endpoint does not know (4xx) is refused without a fetch for
//!   [`UNKNOWN_KID_TTL`]; any other failure is remembered for [`FAILED_KEY_FETCH_BACKOFF`];
//! - open budget: at most [`OPEN_KEY_FETCHES_PER_MINUTE`] fetches per rolling minute for
//!   any kid, first come, first served;
//! - reserve: when the open budget is spent, one fetch every [`RESERVED_KEY_FETCH_INTERVAL`]
//!   goes to the kid asked for most often among those waiting (at least twice). A flood of
//!   distinct kids, each asked for once, cannot spend it; the real key, asked for by every
//!   user and every retry, gets it (an attacker would have to ask for one fresh kid more
//!   often than all genuine users ask for the real one, again every interval).
//!
//! Kids waiting for a fetch are remembered (at most [`WAITING_KID_CAPACITY`], the least
//! asked for evicted first), so a flood cannot push the real kid out either. In all, at most
//! [`MAX_KEY_FETCHES_PER_MINUTE`] fetches happen per minute. Errors never contain the token.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::outbound::{OutboundClient, OutboundError};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, ParsedPublicKey};
use base64::Engine;
use base64::alphabet;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use latchkey_core::clock::Clock;
use serde_json::{Map, Value};

use crate::user::AlbConfig;

/// Tokens longer than this are refused before any parsing.
pub const MAX_ALB_TOKEN_BYTES: usize = 16 * 1024;
/// Most key ids whose (published, valid) keys are cached.
pub const KEY_CACHE_CAPACITY: usize = 32;
/// Most key ids remembered as refused (unknown to the endpoint, or a failed fetch).
pub const REFUSED_KID_CAPACITY: usize = 4096;
/// Most key ids remembered while they wait for a fetch (with how often they were asked for).
pub const WAITING_KID_CAPACITY: usize = 4096;
/// How long a kid the key endpoint does not know (4xx) is refused without a fetch.
pub const UNKNOWN_KID_TTL: Duration = Duration::from_secs(600);
/// How long any other failed key fetch is remembered before the kid may be fetched again.
pub const FAILED_KEY_FETCH_BACKOFF: Duration = Duration::from_secs(5);
/// Fetches per rolling minute open to any kid, first come, first served.
pub const OPEN_KEY_FETCHES_PER_MINUTE: usize = 20;
/// Least time between two reserved fetches (each for the most-asked-for waiting kid).
pub const RESERVED_KEY_FETCH_INTERVAL: Duration = Duration::from_secs(6);
/// Most key fetches per rolling minute, over all kids: the open budget plus the reserve.
pub const MAX_KEY_FETCHES_PER_MINUTE: usize = OPEN_KEY_FETCHES_PER_MINUTE + 10;
/// Largest accepted PEM document.
const MAX_PEM_BYTES: usize = 4096;

/// base64url without padding (padding is checked and removed by [`decode_part`]).
const B64URL_NO_PAD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::RequireNone),
);

/// DER prefix of a P-256 SubjectPublicKeyInfo with an uncompressed point: SEQUENCE {
/// SEQUENCE { OID id-ecPublicKey, OID prime256v1 }, BIT STRING (0 unused bits) }; the 65
/// point bytes follow.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// Why an ALB token was refused. Messages never contain the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlbError {
    #[error("the ALB token is malformed: {0}")]
    Malformed(&'static str),
    #[error("the ALB token's alg is not ES256")]
    Algorithm,
    #[error("the ALB token was signed by another load balancer")]
    WrongSigner,
    #[error("the ALB token's kid is not a safe key id")]
    BadKid,
    #[error("the ALB signing key for this kid does not exist")]
    UnknownKey,
    #[error("the ALB signing key could not be loaded: {0}")]
    KeyUnavailable(String),
    #[error("the ALB token's signature is invalid")]
    BadSignature,
    #[error("the ALB token has expired")]
    Expired,
    #[error("the ALB token is not valid yet")]
    NotYetValid,
    #[error("the ALB token's iss claim is not the configured issuer")]
    WrongIssuer,
    #[error("the ALB token has no usable sub claim")]
    MissingSubject,
}

impl AlbError {
    /// Whether the failure is the service's (key endpoint unreachable), not the token's.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::KeyUnavailable(_))
    }
}

/// The user vouched for by a valid ALB token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlbUser {
    /// The payload's `sub`.
    pub subject: String,
}

/// Verifies `x-amzn-oidc-data`. Cheap to clone (the key cache is shared).
#[derive(Debug, Clone)]
pub struct AlbVerifier {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: AlbConfig,
    region: String,
    client: OutboundClient,
    clock: Arc<dyn Clock>,
    table: Mutex<KeyTable>,
    fetch_count: std::sync::atomic::AtomicU64,
}

/// What the verifier knows about key ids, and the fetch budget (see the module docs).
#[derive(Debug, Default)]
struct KeyTable {
    /// Published keys, with the last use (for least-recently-used eviction).
    ready: HashMap<String, (ParsedPublicKey, i64)>,
    /// Kids refused without a fetch until the time given, with the error to answer.
    refused: HashMap<String, (i64, AlbError)>,
    /// Insertion order of `refused` (eviction when full).
    refused_order: VecDeque<String>,
    /// Kids waiting for a fetch: how often each was asked for, and its place in `by_demand`.
    waiting: HashMap<String, (u32, u64)>,
    /// `(demand, arrival, kid)` of every waiting kid, least asked for and oldest first.
    by_demand: BTreeSet<(u32, u64, String)>,
    arrivals: u64,
    /// One lock per kid being fetched (single flight).
    flights: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
    /// Times of the fetches from the open budget in the last minute.
    open_fetches_ms: VecDeque<i64>,
    /// Times of the reserved fetches in the last minute.
    reserved_fetches_ms: VecDeque<i64>,
}

impl KeyTable {
    fn ready_key(&mut self, kid: &str, now_ms: i64) -> Option<ParsedPublicKey> {
        let (key, used) = self.ready.get_mut(kid)?;
        *used = now_ms;
        Some(key.clone())
    }

    /// What the table already answers for `kid` without a fetch: its key while cached, or
    /// its refusal while that holds; `None` when neither does.
    fn settled(&mut self, kid: &str, now_ms: i64) -> Option<Result<ParsedPublicKey, AlbError>> {
        if let Some(key) = self.ready_key(kid, now_ms) {
            return Some(Ok(key));
        }
        self.refusal(kid, now_ms).map(Err)
    }

    fn refusal(&self, kid: &str, now_ms: i64) -> Option<AlbError> {
        self.refused
            .get(kid)
            .filter(|(until, _)| now_ms < *until)
            .map(|(_, error)| error.clone())
    }

    fn store_key(&mut self, kid: &str, key: ParsedPublicKey, now_ms: i64) {
        if !self.ready.contains_key(kid) && self.ready.len() >= KEY_CACHE_CAPACITY {
            let oldest = self
                .ready
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(kid, _)| kid.clone());
            if let Some(oldest) = oldest {
                self.ready.remove(&oldest);
            }
        }
        self.refused.remove(kid);
        self.ready.insert(kid.to_string(), (key, now_ms));
    }

    fn refuse(&mut self, kid: &str, until_ms: i64, error: AlbError, now_ms: i64) {
        if !self.refused.contains_key(kid) {
            if self.refused.len() >= REFUSED_KID_CAPACITY {
                self.refused.retain(|_, (until, _)| now_ms < *until);
                let refused = &self.refused;
                self.refused_order.retain(|k| refused.contains_key(k));
            }
            while self.refused.len() >= REFUSED_KID_CAPACITY {
                let Some(oldest) = self.refused_order.pop_front() else {
                    break;
                };
                self.refused.remove(&oldest);
            }
            self.refused_order.push_back(kid.to_string());
        }
        self.refused.insert(kid.to_string(), (until_ms, error));
    }

    /// Count one more request for a kid waiting for a fetch; its demand so far.
    fn ask(&mut self, kid: &str) -> u32 {
        if let Some((demand, arrival)) = self.waiting.get_mut(kid) {
            self.by_demand.remove(&(*demand, *arrival, kid.to_string()));
            *demand = demand.saturating_add(1);
            self.by_demand.insert((*demand, *arrival, kid.to_string()));
            return *demand;
        }
        if self.waiting.len() >= WAITING_KID_CAPACITY
            && let Some(least) = self.by_demand.pop_first()
        {
            self.waiting.remove(&least.2);
        }
        self.arrivals += 1;
        self.waiting.insert(kid.to_string(), (1, self.arrivals));
        self.by_demand.insert((1, self.arrivals, kid.to_string()));
        1
    }

    fn stop_waiting(&mut self, kid: &str) {
        if let Some((demand, arrival)) = self.waiting.remove(kid) {
            self.by_demand.remove(&(demand, arrival, kid.to_string()));
        }
    }

    /// Take a fetch from the open budget, or else the reserve when `kid` (asked for
    /// `demand` times) is the most-asked-for waiting kid.
    fn take_budget(&mut self, demand: u32, now_ms: i64) -> bool {
        for times in [&mut self.open_fetches_ms, &mut self.reserved_fetches_ms] {
            while times
                .front()
                .is_some_and(|at| now_ms.saturating_sub(*at) >= 60_000)
            {
                times.pop_front();
            }
        }
        if self.open_fetches_ms.len() < OPEN_KEY_FETCHES_PER_MINUTE {
            self.open_fetches_ms.push_back(now_ms);
            return true;
        }
        let most_asked = self.by_demand.last().map_or(0, |(d, _, _)| *d);
        let reserve_free = self.reserved_fetches_ms.back().is_none_or(|at| {
            now_ms.saturating_sub(*at) >= duration_ms(RESERVED_KEY_FETCH_INTERVAL)
        }) && self.reserved_fetches_ms.len()
            < MAX_KEY_FETCHES_PER_MINUTE - OPEN_KEY_FETCHES_PER_MINUTE;
        if demand >= 2 && demand >= most_asked && reserve_free {
            self.reserved_fetches_ms.push_back(now_ms);
            return true;
        }
        false
    }

    /// Forget the flight lock of `kid` when nobody else holds it.
    fn end_flight(&mut self, kid: &str, flight: &Arc<tokio::sync::Mutex<()>>) {
        if Arc::strong_count(flight) <= 2 {
            self.flights.remove(kid);
        }
    }
}

impl AlbVerifier {
    /// A verifier for a validated [`AlbConfig`].
    pub fn new(config: AlbConfig, client: OutboundClient, clock: Arc<dyn Clock>) -> Self {
        let region = config.effective_region().unwrap_or_default();
        Self {
            inner: Arc::new(Inner {
                config,
                region,
                client,
                clock,
                table: Mutex::new(KeyTable::default()),
                fetch_count: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    /// How many key fetches were attempted so far (for tests and metrics).
    pub fn key_fetches(&self) -> u64 {
        self.inner
            .fetch_count
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Verify the header value and return the user.
    pub async fn verify(&self, token: &str) -> Result<AlbUser, AlbError> {
        let inner = &*self.inner;
        if token.len() > MAX_ALB_TOKEN_BYTES {
            return Err(AlbError::Malformed("token too long"));
        }
        let mut parts = token.split('.');
        let (Some(header_part), Some(payload_part), Some(signature_part), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AlbError::Malformed("not three dot-separated parts"));
        };
        for part in [header_part, payload_part, signature_part] {
            if !is_b64url_part(part) {
                return Err(AlbError::Malformed("a part is not base64url"));
            }
        }
        let header = decode_object(header_part)
            .ok_or(AlbError::Malformed("header is not base64url JSON"))?;
        if header.get("alg").and_then(Value::as_str) != Some("ES256") {
            return Err(AlbError::Algorithm);
        }
        if header.contains_key("crit") {
            return Err(AlbError::Malformed(
                "critical header extensions are not supported",
            ));
        }
        if header.get("signer").and_then(Value::as_str) != Some(inner.config.signer_arn.as_str()) {
            return Err(AlbError::WrongSigner);
        }
        let kid = header
            .get("kid")
            .and_then(Value::as_str)
            .filter(|k| is_safe_kid(k))
            .ok_or(AlbError::BadKid)?;
        let payload = decode_object(payload_part)
            .ok_or(AlbError::Malformed("payload is not base64url JSON"))?;
        let signature =
            decode_part(signature_part).ok_or(AlbError::Malformed("signature is not base64url"))?;
        if signature.len() != 64 {
            return Err(AlbError::Malformed("signature is not 64 bytes (r || s)"));
        }

        let key = self.key(kid).await?;
        let signed = &token.as_bytes()[..header_part.len() + 1 + payload_part.len()];
        key.verify_sig(signed, &signature)
            .map_err(|_| AlbError::BadSignature)?;

        // Verified from here on.
        let now = inner.clock.now_secs();
        let leeway = i64::try_from(inner.config.leeway_seconds).unwrap_or(0);
        let exp = numeric(&payload, "exp")?.ok_or(AlbError::Malformed("exp claim missing"))?;
        if now >= exp.saturating_add(leeway) {
            return Err(AlbError::Expired);
        }
        if let Some(header_exp) = numeric(&header, "exp")?
            && now >= header_exp.saturating_add(leeway)
        {
            return Err(AlbError::Expired);
        }
        if let Some(nbf) = numeric(&payload, "nbf")?
            && now.saturating_add(leeway) < nbf
        {
            return Err(AlbError::NotYetValid);
        }
        if let Some(issuer) = &inner.config.issuer
            && payload.get("iss").and_then(Value::as_str) != Some(issuer.as_str())
        {
            return Err(AlbError::WrongIssuer);
        }
        let subject = payload
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| is_usable_subject(s))
            .ok_or(AlbError::MissingSubject)?;
        Ok(AlbUser {
            subject: subject.to_string(),
        })
    }

    /// The key of `kid`: cached, or fetched (single-flight per kid, within the budget).
    async fn key(&self, kid: &str) -> Result<ParsedPublicKey, AlbError> {
        let inner = &*self.inner;
        let flight = {
            let mut table = inner.table()?;
            if let Some(settled) = table.settled(kid, inner.clock.now_ms()) {
                return settled;
            }
            table.flights.entry(kid.to_string()).or_default().clone()
        };
        let outcome = self.key_in_flight(kid, &flight).await;
        if let Ok(mut table) = inner.table() {
            table.end_flight(kid, &flight);
        }
        outcome
    }

    /// [`Self::key`] while holding nothing: takes the kid's flight lock, then decides.
    async fn key_in_flight(
        &self,
        kid: &str,
        flight: &Arc<tokio::sync::Mutex<()>>,
    ) -> Result<ParsedPublicKey, AlbError> {
        let inner = &*self.inner;
        let _flight = flight.lock().await;
        let now = {
            let mut table = inner.table()?;
            let now = inner.clock.now_ms();
            // Another request may have fetched it while this one waited.
            if let Some(settled) = table.settled(kid, now) {
                return settled;
            }
            let demand = table.ask(kid);
            if !table.take_budget(demand, now) {
                tracing::debug!(kid, demand, "ALB key fetch deferred: fetch budget spent");
                return Err(AlbError::KeyUnavailable(
                    "too many key fetches in the last minute".into(),
                ));
            }
            table.stop_waiting(kid);
            now
        };
        let fetched = self.fetch(kid).await;
        let mut table = inner.table()?;
        match fetched {
            Ok(key) => {
                tracing::debug!(kid, "fetched ALB signing key");
                table.store_key(kid, key.clone(), inner.clock.now_ms());
                Ok(key)
            }
            Err(error) => {
                let hold = if error == AlbError::UnknownKey {
                    tracing::info!(kid, "the ALB key endpoint does not know this kid");
                    UNKNOWN_KID_TTL
                } else {
                    tracing::warn!(kid, %error, "ALB signing key fetch failed");
                    FAILED_KEY_FETCH_BACKOFF
                };
                table.refuse(
                    kid,
                    now.saturating_add(duration_ms(hold)),
                    error.clone(),
                    now,
                );
                Err(error)
            }
        }
    }

    async fn fetch(&self, kid: &str) -> Result<ParsedPublicKey, AlbError> {
        let inner = &*self.inner;
        inner
            .fetch_count
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // `kid` is [A-Za-z0-9-] and the region [a-z0-9-]: neither can change the URL's
        // structure.
        let url = inner
            .config
            .key_url_template
            .replace("{region}", &inner.region)
            .replace("{kid}", kid);
        let (_, body) = inner.client.get_bytes(&url).await.map_err(|e| match e {
            OutboundError::Status(s) if (400..500).contains(&s) => AlbError::UnknownKey,
            other => AlbError::KeyUnavailable(other.to_string()),
        })?;
        let point = p256_point_from_pem(&body).map_err(|why| {
            AlbError::KeyUnavailable(format!("the published key is unusable: {why}"))
        })?;
        ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point).map_err(|_| {
            AlbError::KeyUnavailable("the published key is not a valid P-256 point".into())
        })
    }
}

impl Inner {
    fn table(&self) -> Result<std::sync::MutexGuard<'_, KeyTable>, AlbError> {
        self.table
            .lock()
            .map_err(|_| AlbError::KeyUnavailable("key cache poisoned".into()))
    }
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// `[A-Za-z0-9_-]+`, unpadded or with canonical `=` padding (a multiple of 4 in all).
fn is_b64url_part(part: &str) -> bool {
    let data = part.trim_end_matches('=');
    let padding = part.len() - data.len();
    !data.is_empty()
        && padding <= 2
        && (padding == 0 || part.len().is_multiple_of(4))
        && data
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Decode a part, padded or not (see [`is_b64url_part`]).
fn decode_part(part: &str) -> Option<Vec<u8>> {
    if !is_b64url_part(part) {
        return None;
    }
    B64URL_NO_PAD.decode(part.trim_end_matches('=')).ok()
}

/// `[A-Za-z0-9-]{1,128}`.
pub fn is_safe_kid(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= 128
        && kid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// 1 to 128 characters, none a control, line-separator or bidirectional formatting
/// character ([`latchkey_core::validate::is_printable_name`]).
fn is_usable_subject(sub: &str) -> bool {
    !sub.is_empty() && sub.chars().count() <= 128 && latchkey_core::validate::is_printable_name(sub)
}

fn decode_object(part: &str) -> Option<Map<String, Value>> {
    let bytes = decode_part(part)?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// A NumericDate claim as whole seconds, `None` when absent.
fn numeric(map: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, AlbError> {
    match map.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .map(Some)
            .ok_or(AlbError::Malformed("a time claim is not a number")),
        Some(_) => Err(AlbError::Malformed("a time claim is not a number")),
    }
}

/// The uncompressed P-256 point of a PEM `PUBLIC KEY` (SubjectPublicKeyInfo) document.
pub fn p256_point_from_pem(pem: &[u8]) -> Result<Vec<u8>, &'static str> {
    if pem.len() > MAX_PEM_BYTES {
        return Err("the PEM document is too large");
    }
    let text = std::str::from_utf8(pem).map_err(|_| "not UTF-8 text")?;
    let body = text
        .trim()
        .strip_prefix("-----BEGIN PUBLIC KEY-----")
        .and_then(|rest| rest.strip_suffix("-----END PUBLIC KEY-----"))
        .ok_or("not one PEM PUBLIC KEY block")?;
    let b64: String = body.split_ascii_whitespace().collect();
    let der = STANDARD
        .decode(b64.as_bytes())
        .map_err(|_| "the PEM body is not base64")?;
    p256_point_from_spki(&der)
}

/// The uncompressed point of a DER P-256 SubjectPublicKeyInfo.
pub fn p256_point_from_spki(der: &[u8]) -> Result<Vec<u8>, &'static str> {
    match der.strip_prefix(&P256_SPKI_PREFIX[..]) {
        Some(point) if point.len() == 65 && point[0] == 0x04 => Ok(point.to_vec()),
        _ => Err("not a P-256 public key with an uncompressed point"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_parts() {
        assert!(is_b64url_part("abc-_9"));
        assert!(is_b64url_part("YQ=="));
        assert!(!is_b64url_part("YQ==="));
        assert!(!is_b64url_part(""));
        assert!(!is_b64url_part("=="));
        assert!(!is_b64url_part("a+b/"));
        assert_eq!(decode_part("YQ==").as_deref(), Some(&b"a"[..]));
        assert_eq!(decode_part("YQ").as_deref(), Some(&b"a"[..]));
        assert_eq!(decode_part("YWI=").as_deref(), Some(&b"ab"[..]));
        assert!(decode_part("YQ=").is_none());
        assert!(decode_part("YWI==").is_none());
        // Non-zero trailing bits are not canonical.
        assert!(decode_part("YR").is_none());
    }

    #[test]
    fn kids() {
        assert!(is_safe_kid("3f6c0b4e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"));
        for bad in ["", "../x", "a/b", "a?b", "a#b", "a%2fb", "a.b", "a b", "é"] {
            assert!(!is_safe_kid(bad), "{bad}");
        }
        assert!(!is_safe_kid(&"a".repeat(129)));
    }

    #[test]
    fn pem_parsing_is_strict() {
        assert!(
            p256_point_from_pem(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----")
                .is_err()
        );
        assert!(p256_point_from_pem(b"hello").is_err());
        let mut der = P256_SPKI_PREFIX.to_vec();
        der.push(0x04);
        der.extend_from_slice(&[7u8; 64]);
        assert_eq!(p256_point_from_spki(&der).map(|p| p.len()), Ok(65));
        der[26] = 0x02;
        assert!(p256_point_from_spki(&der).is_err());
    }
}
