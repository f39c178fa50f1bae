//! The gateway as an OpenID Connect relying party: discovery, the authorization request
//! (code + PKCE S256 + `state` + `nonce`), the code and refresh-token grants, and ID-token
//! verification (signature, `iss`, `aud`, `exp`, `nbf`, `sub` by
//! [`latchkey_authn::inbound::InboundVerifier`]; `nonce` and a `sub` fit to name the
//! user in logs and headers here, see [`is_usable_subject`]).
//!
//! Every call to the provider goes through the guarded [`OutboundClient`].

use std::sync::Arc;

use latchkey_authn::inbound::{InboundError, InboundIssuerConfig, InboundVerifier};
use latchkey_authn::outbound::OutboundClient;
use latchkey_authn::pkce::PkceVerifier;
use latchkey_core::clock::Clock;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::GatewayConfig;

/// What the provider's discovery document says (the parts the gateway uses).
#[derive(Debug, Clone, Deserialize)]
pub struct ProviderMetadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
}

/// Why a call to the provider failed. Never carries tokens or response bodies.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("the provider's discovery document could not be used: {0}")]
    Discovery(String),
    #[error("the provider's token endpoint failed: {0}")]
    Token(String),
    #[error("the ID token was refused: {0}")]
    IdToken(String),
    /// A verified ID token whose `sub` could forge log lines ([`is_usable_subject`]).
    #[error("the ID token's subject contains control characters or line separators")]
    UnusableSubject,
}

/// Whether a provider's `sub` may name the user in the gateway's logs, the access log and
/// the `x-amzn-oidc-identity` header: no C0 or C1 control character or DEL (newline,
/// carriage return, ESC...), no Unicode line or paragraph separator, and no
/// bidirectional formatting character (a name shown reversed). The one rule of
/// [`latchkey_core::validate::is_printable_name`], which the inbound verifier applies too.
pub fn is_usable_subject(subject: &str) -> bool {
    latchkey_core::validate::is_printable_name(subject)
}

/// A token endpoint answer.
#[derive(Deserialize)]
struct RawTokens {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    id_token: Option<String>,
    #[serde(default)]
    expires_in: Option<i64>,
}

/// Tokens from the provider, held as secrets.
#[derive(Debug)]
pub struct Tokens {
    pub access_token: SecretString,
    pub refresh_token: Option<SecretString>,
    pub id_token: Option<SecretString>,
    /// Unix seconds, `None` when the provider sent no `expires_in`.
    pub access_expires_at: Option<i64>,
}

/// A verified ID token's claims.
#[derive(Debug, Clone)]
pub struct IdClaims {
    pub subject: String,
    pub claims: Map<String, Value>,
}

/// The relying party. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RelyingParty {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    issuer: String,
    client_id: String,
    client_secret: SecretString,
    redirect_uri: String,
    scopes: String,
    client: OutboundClient,
    verifier: InboundVerifier,
    clock: Arc<dyn Clock>,
    metadata: tokio::sync::OnceCell<Arc<ProviderMetadata>>,
}

impl RelyingParty {
    pub fn new(config: &GatewayConfig, client: OutboundClient, clock: Arc<dyn Clock>) -> Self {
        let verifier = InboundVerifier::new(
            vec![InboundIssuerConfig::new(
                config.keys.oidc_issuer.clone(),
                vec![config.keys.oidc_client_id.clone()],
            )],
            client.clone(),
            clock.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                issuer: config.keys.oidc_issuer.clone(),
                client_id: config.keys.oidc_client_id.clone(),
                client_secret: config.oidc_client_secret.clone(),
                redirect_uri: config.redirect_uri(),
                scopes: config.keys.oidc_scopes.clone(),
                client,
                verifier,
                clock,
                metadata: tokio::sync::OnceCell::new(),
            }),
        }
    }

    /// The provider's metadata: fetched once (a failed fetch is retried on the next call).
    pub async fn metadata(&self) -> Result<Arc<ProviderMetadata>, OidcError> {
        let inner = &*self.inner;
        inner
            .metadata
            .get_or_try_init(|| async {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    inner.issuer.trim_end_matches('/')
                );
                let document: ProviderMetadata = inner
                    .client
                    .get_json(&url)
                    .await
                    .map_err(|e| OidcError::Discovery(e.to_string()))?;
                if document.issuer != inner.issuer {
                    return Err(OidcError::Discovery(
                        "the document's issuer differs from the configured issuer".into(),
                    ));
                }
                Ok(Arc::new(document))
            })
            .await
            .cloned()
    }

    /// The authorization URL for one login attempt.
    pub async fn authorization_url(
        &self,
        state: &str,
        nonce: &str,
        code_challenge: &str,
    ) -> Result<String, OidcError> {
        let metadata = self.metadata().await?;
        let mut url = url::Url::parse(&metadata.authorization_endpoint)
            .map_err(|_| OidcError::Discovery("authorization_endpoint is not a URL".into()))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.inner.client_id)
            .append_pair("redirect_uri", &self.inner.redirect_uri)
            .append_pair("scope", &self.inner.scopes)
            .append_pair("state", state)
            .append_pair("nonce", nonce)
            .append_pair("code_challenge", code_challenge)
            .append_pair("code_challenge_method", "S256");
        Ok(url.into())
    }

    /// Exchange an authorization code (with its PKCE verifier).
    pub async fn exchange_code(
        &self,
        code: &str,
        code_verifier: PkceVerifier,
    ) -> Result<Tokens, OidcError> {
        let code_verifier = code_verifier.into_secret();
        let redirect_uri = self.inner.redirect_uri.clone();
        self.token_request(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &redirect_uri),
            ("code_verifier", code_verifier.expose_secret()),
        ])
        .await
    }

    /// The refresh-token grant.
    pub async fn refresh(&self, refresh_token: &SecretString) -> Result<Tokens, OidcError> {
        self.token_request(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose_secret()),
        ])
        .await
    }

    async fn token_request(&self, form: &[(&str, &str)]) -> Result<Tokens, OidcError> {
        let inner = &*self.inner;
        let metadata = self.metadata().await?;
        // RFC 6749 §2.3.1: form-encode the client id and secret before Basic.
        let id = form_encode(&inner.client_id);
        let secret = form_encode(inner.client_secret.expose_secret());
        let (status, body) = inner
            .client
            .post_form(&metadata.token_endpoint, form, Some((&id, &secret)))
            .await
            .map_err(|e| OidcError::Token(e.to_string()))?;
        if status != 200 {
            let error = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_default();
            let error: String = error
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(64)
                .collect();
            return Err(OidcError::Token(format!("HTTP {status} {error}")));
        }
        let raw: RawTokens = serde_json::from_slice(&body)
            .map_err(|_| OidcError::Token("the answer is not a token response".into()))?;
        let now = inner.clock.now_secs();
        Ok(Tokens {
            access_token: SecretString::from(raw.access_token),
            refresh_token: raw.refresh_token.map(SecretString::from),
            id_token: raw.id_token.map(SecretString::from),
            access_expires_at: raw
                .expires_in
                .filter(|s| *s > 0)
                .map(|s| now.saturating_add(s)),
        })
    }

    /// Verify an ID token; `nonce` must match when given.
    pub async fn verify_id_token(
        &self,
        id_token: &SecretString,
        nonce: Option<&str>,
    ) -> Result<IdClaims, OidcError> {
        let user = self
            .inner
            .verifier
            .verify(id_token.expose_secret())
            .await
            .map_err(|e| match e {
                // The verifier refuses such a subject itself; the gateway answers it with
                // its own "sign-in refused" page, not as a failed sign-in.
                InboundError::UnsafeSubject => OidcError::UnusableSubject,
                e => OidcError::IdToken(e.to_string()),
            })?;
        let Value::Object(claims) = user.claims else {
            return Err(OidcError::IdToken("claims are not an object".into()));
        };
        if !is_usable_subject(&user.subject) {
            return Err(OidcError::UnusableSubject);
        }
        if let Some(expected) = nonce {
            let got = claims.get("nonce").and_then(Value::as_str);
            let same = got.is_some_and(|g| {
                g.len() == expected.len()
                    && aws_lc_rs::constant_time::verify_slices_are_equal(
                        g.as_bytes(),
                        expected.as_bytes(),
                    )
                    .is_ok()
            });
            if !same {
                return Err(OidcError::IdToken("the nonce does not match".into()));
            }
        }
        Ok(IdClaims {
            subject: user.subject,
            claims,
        })
    }
}

fn form_encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// Claims that describe the protocol exchange rather than the user: not forwarded.
const PROTOCOL_CLAIMS: [&str; 14] = [
    "aud",
    "nonce",
    "at_hash",
    "c_hash",
    "s_hash",
    "azp",
    "iat",
    "auth_time",
    "sid",
    "exp",
    "nbf",
    "jti",
    "iss",
    "typ",
];

/// The user's claims as forwarded to upstreams.
pub fn user_claims(claims: &Map<String, Value>) -> Map<String, Value> {
    claims
        .iter()
        .filter(|(k, _)| !PROTOCOL_CLAIMS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_that_could_forge_a_log_line_are_unusable() {
        for good in [
            "alice",
            "248289761001",
            "auth0|5f1c",
            "Zoë Ünal",
            "用户",
            "a b",
        ] {
            assert!(is_usable_subject(good), "{good:?}");
        }
        for bad in [
            "alice\nINFO forged",
            "a\rb",
            "a\tb",
            "\u{1b}[31mred",
            "a\u{7f}",
            "a\u{85}b",
            "a\u{2028}b",
            "a\u{2029}b",
            "\u{202e}txt",
            "a\u{2066}b",
            "\0",
        ] {
            assert!(!is_usable_subject(bad), "{bad:?}");
        }
    }
}
