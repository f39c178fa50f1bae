//! Inbound user-JWT verification against a real (local) OIDC issuer with real keys.
//!
//! Each test starts its own issuer on 127.0.0.1:0 serving discovery and a JWKS that can be
//! swapped at runtime, and counts the requests it receives.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RsaKeyPair};
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use latchkey_authn::inbound::{InboundError, InboundIssuerConfig, InboundVerifier, VerifiedUser};
use latchkey_authn::outbound::{OutboundClient, OutboundPolicy};
use latchkey_core::clock::ManualClock;
use serde_json::{Value, json};
use tokio::sync::RwLock;

const AUDIENCE: &str = "latchkey-test";
const START_MS: i64 = 1_750_000_000_000;

// ---------------------------------------------------------------------------------------
// Keys

struct SigningKey {
    kid: String,
    algorithm: Algorithm,
    encoding: EncodingKey,
    public_jwk: Value,
    /// PEM of the public key (RSA only): the "secret" of the key-confusion attack.
    public_pem: Option<String>,
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("base64 is ascii"))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

fn rsa_key(kid: &str) -> SigningKey {
    let pair = RsaKeyPair::generate(KeySize::Rsa2048).expect("generate RSA key");
    let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair).expect("PKCS#8");
    // jsonwebtoken's RSA signer wants PKCS#1; its PEM loader unwraps PKCS#8 for us.
    let encoding = EncodingKey::from_rsa_pem(pem("PRIVATE KEY", pkcs8.as_ref()).as_bytes())
        .expect("RSA encoding key");
    let public = pair.public_key();
    let n = public.modulus().big_endian_without_leading_zero().to_vec();
    let e = public.exponent().big_endian_without_leading_zero().to_vec();
    let spki = AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(public).expect("SPKI");
    SigningKey {
        kid: kid.to_string(),
        algorithm: Algorithm::RS256,
        encoding,
        public_jwk: json!({
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
            "n": URL_SAFE_NO_PAD.encode(n), "e": URL_SAFE_NO_PAD.encode(e),
        }),
        public_pem: Some(pem("PUBLIC KEY", spki.as_ref())),
    }
}

fn ec_key(kid: &str) -> SigningKey {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .expect("generate EC key");
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
        .expect("parse EC key");
    let point = pair.public_key().as_ref();
    assert_eq!(point.len(), 65, "uncompressed P-256 point");
    assert_eq!(point[0], 0x04);
    SigningKey {
        kid: kid.to_string(),
        algorithm: Algorithm::ES256,
        encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
        public_jwk: json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        }),
        public_pem: None,
    }
}

fn sign(key: &SigningKey, claims: &Value) -> String {
    let mut header = Header::new(key.algorithm);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.encoding).expect("sign")
}

fn sign_without_kid(key: &SigningKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(key.algorithm), claims, &key.encoding).expect("sign")
}

fn b64_json(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).expect("json"))
}

// ---------------------------------------------------------------------------------------
// A local issuer

#[derive(Default)]
struct IdpState {
    issuer: String,
    /// When set, discovery claims this issuer instead of the real one.
    discovery_issuer: RwLock<Option<String>>,
    jwks: RwLock<Value>,
    discovery_hits: AtomicUsize,
    jwks_hits: AtomicUsize,
}

struct Idp {
    issuer: String,
    state: Arc<IdpState>,
}

impl Idp {
    async fn start(keys: &[&SigningKey]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address: SocketAddr = listener.local_addr().expect("address");
        let issuer = format!("http://{address}");
        let state = Arc::new(IdpState {
            issuer: issuer.clone(),
            ..IdpState::default()
        });
        *state.jwks.write().await = jwks(keys);
        let router = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks_handler))
            .with_state(state.clone());
        tokio::spawn(async move {
            axum::serve(listener, router).await.expect("serve");
        });
        Self { issuer, state }
    }

    async fn set_keys(&self, keys: &[&SigningKey]) {
        *self.state.jwks.write().await = jwks(keys);
    }

    fn discovery_hits(&self) -> usize {
        self.state.discovery_hits.load(Ordering::SeqCst)
    }

    fn jwks_hits(&self) -> usize {
        self.state.jwks_hits.load(Ordering::SeqCst)
    }

    fn requests(&self) -> usize {
        self.discovery_hits() + self.jwks_hits()
    }

    fn config(&self) -> InboundIssuerConfig {
        InboundIssuerConfig::new(self.issuer.clone(), vec![AUDIENCE.to_string()])
    }
}

fn jwks(keys: &[&SigningKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.public_jwk.clone()).collect::<Vec<_>>() })
}

async fn discovery(State(state): State<Arc<IdpState>>) -> Json<Value> {
    state.discovery_hits.fetch_add(1, Ordering::SeqCst);
    let claimed = state
        .discovery_issuer
        .read()
        .await
        .clone()
        .unwrap_or_else(|| state.issuer.clone());
    Json(json!({
        "issuer": claimed,
        "jwks_uri": format!("{}/jwks", state.issuer),
        "authorization_endpoint": format!("{}/authorize", state.issuer),
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
    }))
}

async fn jwks_handler(State(state): State<Arc<IdpState>>) -> Json<Value> {
    state.jwks_hits.fetch_add(1, Ordering::SeqCst);
    Json(state.jwks.read().await.clone())
}

// ---------------------------------------------------------------------------------------
// Verifier and claims

fn client() -> OutboundClient {
    OutboundClient::new(OutboundPolicy {
        allow_private_addresses: true,
        ..OutboundPolicy::default()
    })
    .expect("client")
}

fn verifier(configs: Vec<InboundIssuerConfig>) -> (InboundVerifier, ManualClock) {
    let clock = ManualClock::new(START_MS);
    (
        InboundVerifier::new(configs, client(), Arc::new(clock.clone())),
        clock,
    )
}

fn now(clock: &ManualClock) -> i64 {
    use latchkey_core::clock::Clock;
    clock.now_secs()
}

fn claims(issuer: &str, clock: &ManualClock) -> Value {
    let now = now(clock);
    json!({
        "iss": issuer,
        "aud": AUDIENCE,
        "sub": "user-123",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "email": "user@example.com",
    })
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

// ---------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn valid_rs256_and_es256_tokens_are_accepted() {
    let rsa = rsa_key("rsa-1");
    let ec = ec_key("ec-1");
    let idp = Idp::start(&[&rsa, &ec]).await;
    let (verifier, clock) = verifier(vec![idp.config()]);

    let user: VerifiedUser = verifier
        .verify(&sign(&rsa, &claims(&idp.issuer, &clock)))
        .await
        .expect("RS256 accepted");
    assert_eq!(user.issuer, idp.issuer);
    assert_eq!(user.subject, "user-123");
    assert_eq!(user.claims["email"], "user@example.com");

    let user = verifier
        .verify(&sign(&ec, &claims(&idp.issuer, &clock)))
        .await
        .expect("ES256 accepted");
    assert_eq!(user.subject, "user-123");

    // An audience array containing ours is accepted.
    let token = sign(
        &ec,
        &with(
            claims(&idp.issuer, &clock),
            "aud",
            json!(["other", AUDIENCE]),
        ),
    );
    verifier.verify(&token).await.expect("aud array accepted");

    // Discovery and JWKS were fetched once, then served from the cache.
    assert_eq!(idp.discovery_hits(), 1);
    assert_eq!(idp.jwks_hits(), 1);
}

#[tokio::test]
async fn expired_token_is_rejected() {
    let rsa = rsa_key("rsa-1");
    let idp = Idp::start(&[&rsa]).await;
    let (verifier, clock) = verifier(vec![idp.config()]);
    let now = now(&clock);
    let base = claims(&idp.issuer, &clock);

    let expired = sign(
        &rsa,
        &with(
            with(base.clone(), "exp", json!(now - 120)),
            "iat",
            json!(now - 600),
        ),
    );
    assert_eq!(verifier.verify(&expired).await, Err(InboundError::Expired));

    // Within the 60 s leeway it is still accepted...
    let recent = sign(
        &rsa,
        &with(
            with(base.clone(), "exp", json!(now - 30)),
            "iat",
            json!(now - 600),
        ),
    );
    verifier.verify(&recent).await.expect("within leeway");
    // ...until the injected clock moves on.
    clock.advance_ms(31_000);
    assert_eq!(verifier.verify(&recent).await, Err(InboundError::Expired));

    // exp is required.
    let mut no_exp = base;
    no_exp.as_object_mut().expect("object").remove("exp");
    assert!(matches!(
        verifier.verify(&sign(&rsa, &no_exp)).await,
        Err(InboundError::Malformed(_))
    ));
}

#[tokio::test]
async fn token_not_yet_valid_is_rejected() {
    let rsa = rsa_key("rsa-1");
    let idp = Idp::start(&[&rsa]).await;
    let (verifier, clock) = verifier(vec![idp.config()]);
    let now = now(&clock);

    let future_nbf = sign(
        &rsa,
        &with(
            with(claims(&idp.issuer, &clock), "nbf", json!(now + 600)),
            "exp",
            json!(now + 3600),
        ),
    );
    assert_eq!(
        verifier.verify(&future_nbf).await,
        Err(InboundError::NotYetValid)
    );
    let future_iat = sign(
        &rsa,
        &with(claims(&idp.issuer, &clock), "iat", json!(now + 600)),
    );
    assert_eq!(
        verifier.verify(&future_iat).await,
        Err(InboundError::NotYetValid)
    );

    clock.advance_ms(600_000);
    verifier
        .verify(&future_nbf)
        .await
        .expect("valid once the clock reaches nbf");
}

#[tokio::test]
async fn wrong_audience_is_rejected() {
    let rsa = rsa_key("rsa-1");
    let idp = Idp::start(&[&rsa]).await;
    let (verifier, clock) = verifier(vec![idp.config()]);

    let token = sign(
        &rsa,
        &with(claims(&idp.issuer, &clock), "aud", json!("someone-else")),
    );
    assert_eq!(
        verifier.verify(&token).await,
        Err(InboundError::WrongAudience)
    );
    let token = sign(
        &rsa,
        &with(claims(&idp.issuer, &clock), "aud", json!(["a", "b"])),
    );
    assert_eq!(
        verifier.verify(&token).await,
        Err(InboundError::WrongAudience)
    );
    let mut no_aud = claims(&idp.issuer, &clock);
    no_aud.as_object_mut().expect("object").remove("aud");
    assert_eq!(
        verifier.verify(&sign(&rsa, &no_aud)).await,
        Err(InboundError::WrongAudience)
    );
}

#[tokio::test]
async fn subject_with_control_characters_is_rejected() {
    let rsa = rsa_key("rsa-1");
    let idp = Idp::start(&[&rsa]).await;
    let (verifier, clock) = verifier(vec![idp.config()]);
    for sub in [
        "alice\n2026-01-01T00:00:00Z  INFO forged line user=admin",
        "alice\r\n",
        "\u{1b}[31malice\u{1b}[0m",
        "alice\u{7f}",
        "alice\u{9b}",
        "alice\u{2028}admin",
        "alice\u{2029}",
        "\u{202e}nimda",
        "alice\u{2067}",
    ] {
        let token = sign(&rsa, &with(claims(&idp.issuer, &clock), "sub", json!(sub)));
        assert_eq!(
            verifier.verify(&token).await,
            Err(InboundError::UnsafeSubject),
            "{sub:?}"
        );
    }
    // Ordinary names, also non-ASCII ones, are fine.
    for sub in ["alice", "auth0|5f1d", "Zoë", "用户 1"] {
        let token = sign(&rsa, &with(claims(&idp.issuer, &clock), "sub", json!(sub)));
        assert_eq!(
            verifier.verify(&token).await.map(|u| u.subject),
            Ok(sub.to_string())
        );
    }
}

#[tokio::test]
async fn missing_subject_is_rejected() {
    let rsa = rsa_key("rsa-1");
    let idp = Idp::start(&[&rsa]).await;
    let (verifier, clock) = verifier(vec![idp.config()]);
    let token = sign(&rsa, &with(claims(&idp.issuer, &clock), "sub", json!("")));
    assert_eq!(
        verifier.verify(&token).await,
        Err(InboundError::MissingSubject)
    );
}

#[tokio::test]
async fn token_claiming_another_issuer_is_rejected() {
    // Two configured issuers whose keys share a kid; a token signed by A claiming to be
    // from B is checked against B's key and fails.
    let key_a = rsa_key("key-1");
    let key_b = rsa_key("key-1");
    let idp_a = Idp::start(&[&key_a]).await;
    let idp_b = Idp::start(&[&key_b]).await;
    let (verifier, clock) = verifier(vec![idp_a.config(), idp_b.config()]);

    verifier
        .verify(&sign(&key_a, &claims(&idp_a.issuer, &clock)))
        .await
        .expect("A's own token");
    verifier
        .verify(&sign(&key_b, &claims(&idp_b.issuer, &clock)))
        .await
        .expect("B's own token");
    let forged = sign(&key_a, &claims(&idp_b.issuer, &clock));
    assert_eq!(
        verifier.verify(&forged).await,
        Err(InboundError::BadSignature)
    );

    // A configured issuer's key with an unconfigured iss: refused before any fetch.
    let before = idp_a.requests() + idp_b.requests();
    let other = sign(&key_a, &claims("https://evil.example", &clock));
    assert_eq!(
        verifier.verify(&other).await,
        Err(InboundError::UnknownIssuer)
    );
    assert_eq!(idp_a.requests() + idp_b.requests(), before);
}

#[tokio::test]
async fn unknown_issuer_makes_no_network_request() {
    let rsa = rsa_key("rsa-1");
    let idp = Idp::start(&[&rsa]).await;
    let (verifier, clock) = verifier(vec![idp.config()]);
    // The token names the real server, with a different path, as its issuer.
    let token = sign(&rsa, &claims(&format!("{}/other", idp.issuer), &clock));
    assert_eq!(
        verifier.verify(&token).await,
        Err(InboundError::UnknownIssuer)
    );
    assert_eq!(idp.requests(), 0);
}

#[tokio::test]
async fn alg_none_is_rejected() {
    let rsa = rsa_key("rsa-1");
    let idp = Idp::start(&[&rsa]).await;
    let (verifier, clock) = verifier(vec![idp.config()]);
    let body = b64_json(&claims(&idp.issuer, &clock));
    for alg in ["none", "None", "NONE"] {
        let header = b64_json(&json!({"alg": alg, "typ": "JWT", "kid": "rsa-1"}));
        let token = format!("{header}.{body}.");
        assert!(
            matches!(
                verifier.verify(&token).await,
                Err(InboundError::DisallowedAlgorithm(_))
            ),
            "{alg}"
        );
    }
    assert_eq!(idp.requests(), 0);
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_rejected() {
    let rsa = rsa_key("rsa-1");
    let idp = Idp::start(&[&rsa]).await;
    let (verifier, clock) = verifier(vec![idp.config()]);
    // The classic key-confusion attack: HMAC with the issuer's public key as the secret.
    let secret = rsa.public_pem.as_deref().expect("RSA public PEM");
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rsa-1".to_string());
    let token = jsonwebtoken::encode(
        &header,
        &claims(&idp.issuer, &clock),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign HS256");
    assert_eq!(
        verifier.verify(&token).await,
        Err(InboundError::DisallowedAlgorithm("HS256".to_string()))
    );
    assert_eq!(idp.requests(), 0);
}

#[tokio::test]
async fn algorithm_outside_the_issuer_allow_list_is_rejected() {
    let rsa = rsa_key("rsa-1");
    let ec = ec_key("ec-1");
    let idp = Idp::start(&[&rsa, &ec]).await;
    let config = InboundIssuerConfig {
        algorithms: vec!["ES256".to_string()],
        ..idp.config()
    };
    let (verifier, clock) = verifier(vec![config]);
    verifier
        .verify(&sign(&ec, &claims(&idp.issuer, &clock)))
        .await
        .expect("ES256 allowed");
    let token = sign(&rsa, &claims(&idp.issuer, &clock));
    assert_eq!(
        verifier.verify(&token).await,
        Err(InboundError::DisallowedAlgorithm("RS256".to_string()))
    );
}

#[tokio::test]
async fn tampered_payload_is_rejected() {
    let rsa = rsa_key("rsa-1");
    let ec = ec_key("ec-1");
    let idp = Idp::start(&[&rsa, &ec]).await;
    let (verifier, clock) = verifier(vec![idp.config()]);
    for key in [&rsa, &ec] {
        let token = sign(key, &claims(&idp.issuer, &clock));
        verifier
            .verify(&token)
            .await
            .expect("untampered token accepted");
        let parts: Vec<&str> = token.split('.').collect();
        let forged_body = b64_json(&with(claims(&idp.issuer, &clock), "sub", json!("admin")));
        let tampered = format!("{}.{}.{}", parts[0], forged_body, parts[2]);
        assert_eq!(
            verifier.verify(&tampered).await,
            Err(InboundError::BadSignature)
        );
    }
}

#[tokio::test]
async fn key_rotation_refetches_and_drops_removed_keys() {
    let old = rsa_key("old");
    let new = ec_key("new");
    let idp = Idp::start(&[&old]).await;
    let (verifier, clock) = verifier(vec![idp.config()]);
    verifier
        .verify(&sign(&old, &claims(&idp.issuer, &clock)))
        .await
        .expect("old key valid before rotation");
    assert_eq!(idp.jwks_hits(), 1);

    idp.set_keys(&[&new]).await;
    clock.advance_ms(31_000);
    // Cached keys are still fresh, but the unknown kid triggers a refetch.
    verifier
        .verify(&sign(&new, &claims(&idp.issuer, &clock)))
        .await
        .expect("new key valid after refetch");
    assert_eq!(idp.jwks_hits(), 2);
    // The removed key no longer verifies anything.
    let stale = sign(&old, &claims(&idp.issuer, &clock));
    assert_eq!(verifier.verify(&stale).await, Err(InboundError::UnknownKey));
}

#[tokio::test]
async fn unknown_kid_refetch_is_rate_limited() {
    let rsa = rsa_key("rsa-1");
    let stranger = rsa_key("stranger");
    let idp = Idp::start(&[&rsa]).await;
    let (verifier, clock) = verifier(vec![idp.config()]);
    verifier
        .verify(&sign(&rsa, &claims(&idp.issuer, &clock)))
        .await
        .expect("valid");
    assert_eq!(idp.jwks_hits(), 1);

    // Right after a fetch, an unknown kid causes no refetch at all.
    let bad = sign(&stranger, &claims(&idp.issuer, &clock));
    assert_eq!(verifier.verify(&bad).await, Err(InboundError::UnknownKey));
    assert_eq!(idp.jwks_hits(), 1);

    // Later, two bad tokens in a row cause at most one refetch.
    clock.advance_ms(31_000);
    assert_eq!(verifier.verify(&bad).await, Err(InboundError::UnknownKey));
    assert_eq!(verifier.verify(&bad).await, Err(InboundError::UnknownKey));
    assert_eq!(idp.jwks_hits(), 2);
    assert_eq!(idp.discovery_hits(), 1);
}

#[tokio::test]
async fn discovery_with_a_different_issuer_is_rejected() {
    let rsa = rsa_key("rsa-1");
    let idp = Idp::start(&[&rsa]).await;
    *idp.state.discovery_issuer.write().await = Some(format!("{}/", idp.issuer));
    let (verifier, clock) = verifier(vec![idp.config()]);
    let token = sign(&rsa, &claims(&idp.issuer, &clock));
    assert!(matches!(
        verifier.verify(&token).await,
        Err(InboundError::Discovery(_))
    ));
    assert_eq!(idp.discovery_hits(), 1);
    assert_eq!(
        idp.jwks_hits(),
        0,
        "keys must not be fetched from an unverified document"
    );

    // Failed discovery is not retried on every request.
    assert!(matches!(
        verifier.verify(&token).await,
        Err(InboundError::Discovery(_))
    ));
    assert_eq!(idp.discovery_hits(), 1);
}

#[tokio::test]
async fn configured_jwks_uri_skips_discovery() {
    let ec = ec_key("ec-1");
    let idp = Idp::start(&[&ec]).await;
    let config = InboundIssuerConfig {
        jwks_uri: Some(format!("{}/jwks", idp.issuer)),
        ..idp.config()
    };
    let (verifier, clock) = verifier(vec![config]);
    verifier
        .verify(&sign(&ec, &claims(&idp.issuer, &clock)))
        .await
        .expect("valid");
    assert_eq!(idp.discovery_hits(), 0);
    assert_eq!(idp.jwks_hits(), 1);
}

#[tokio::test]
async fn concurrent_first_requests_fetch_once() {
    let ec = ec_key("ec-1");
    let idp = Idp::start(&[&ec]).await;
    let (verifier, clock) = verifier(vec![idp.config()]);
    let token = sign(&ec, &claims(&idp.issuer, &clock));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let verifier = verifier.clone();
            let token = token.clone();
            tokio::spawn(async move { verifier.verify(&token).await })
        })
        .collect();
    for task in tasks {
        task.await.expect("task").expect("valid");
    }
    assert_eq!(idp.discovery_hits(), 1);
    assert_eq!(idp.jwks_hits(), 1);
}

#[tokio::test]
async fn jwks_is_refetched_after_its_ttl() {
    let ec = ec_key("ec-1");
    let idp = Idp::start(&[&ec]).await;
    let (verifier, clock) = verifier(vec![idp.config()]);
    verifier
        .verify(&sign(&ec, &claims(&idp.issuer, &clock)))
        .await
        .expect("valid");
    clock.advance_ms(9 * 60_000);
    verifier
        .verify(&sign(&ec, &claims(&idp.issuer, &clock)))
        .await
        .expect("valid");
    assert_eq!(idp.jwks_hits(), 1);
    clock.advance_ms(2 * 60_000);
    verifier
        .verify(&sign(&ec, &claims(&idp.issuer, &clock)))
        .await
        .expect("valid");
    assert_eq!(idp.jwks_hits(), 2);
}

#[tokio::test]
async fn token_without_kid_uses_the_only_key_of_its_type() {
    let rsa = rsa_key("rsa-1");
    let ec = ec_key("ec-1");
    let idp = Idp::start(&[&rsa, &ec]).await;
    let (verifier, clock) = verifier(vec![idp.config()]);
    verifier
        .verify(&sign_without_kid(&ec, &claims(&idp.issuer, &clock)))
        .await
        .expect("only EC key");
    verifier
        .verify(&sign_without_kid(&rsa, &claims(&idp.issuer, &clock)))
        .await
        .expect("only RSA key");

    // With two RSA keys, a kid-less RS256 token is ambiguous.
    let second = rsa_key("rsa-2");
    idp.set_keys(&[&rsa, &second, &ec]).await;
    clock.advance_ms(11 * 60_000);
    let token = sign_without_kid(&rsa, &claims(&idp.issuer, &clock));
    assert_eq!(verifier.verify(&token).await, Err(InboundError::UnknownKey));
}

#[tokio::test]
async fn errors_never_echo_the_token() {
    let rsa = rsa_key("rsa-1");
    let idp = Idp::start(&[&rsa]).await;
    let (verifier, clock) = verifier(vec![idp.config()]);
    let token = sign(
        &rsa,
        &with(claims(&idp.issuer, &clock), "aud", json!("nope")),
    );
    let error = verifier.verify(&token).await.expect_err("wrong audience");
    let message = error.to_string();
    for part in token.split('.') {
        assert!(!message.contains(part), "{message}");
    }
    let header = b64_json(&json!({"alg": "<script>alert(1)</script>"}));
    let error = verifier
        .verify(&format!("{header}.e30."))
        .await
        .expect_err("bad alg");
    assert!(!error.to_string().contains("script"), "{error}");
    assert!(matches!(
        verifier.verify("not-a-jwt").await,
        Err(InboundError::Malformed(_))
    ));
}
