//! The one call the binding service makes to the identity service:
//! `POST {identity_url}/identities/CompleteResourceTokenAuth`, authenticated with the
//! `binding` credential as a bearer key.
//!
//! The identity URL is the operator's own, usually internal, service, so this client is a
//! plain HTTP client (not the SSRF-guarded outbound client, which refuses private
//! addresses), but it still follows no redirects (a redirect would carry the credential
//! elsewhere), uses no proxy, and reads at most [`MAX_ERROR_BODY_BYTES`] of an answer.

use std::time::Duration;

use http::header;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::config::{BindingConfig, BindingCredential};

/// Largest answer body read (errors are small JSON documents).
pub const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// Who the browser user is, as sent in `userIdentifier`.
#[derive(Debug, Clone)]
pub enum UserIdentifier {
    /// `{"userId": …}`: the `sub` of a verified ALB token.
    UserId(String),
    /// `{"userToken": …}`: the verified OIDC ID token itself (a secret: redacted in `Debug`).
    UserToken(SecretString),
}

/// How the identity service answered, reduced to what decides the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// 2xx: the consent is bound to the user.
    Completed,
    /// `AccessDeniedException`: not the user who started the flow.
    WrongUser,
    /// `ValidationException` whose message mentions expiry.
    Expired,
    /// Any other `ValidationException` (already used, failed, not valid).
    InvalidLink,
    /// `ResourceNotFoundException`: no session by this completion URN (unknown, purged, or
    /// the polling `sessionUri`, which never completes).
    UnknownLink,
    /// `UnauthorizedException`: the binding credential itself was refused.
    CredentialRefused,
    /// Anything else: 5xx, other error names, no answer.
    Unavailable(String),
}

/// Calls `CompleteResourceTokenAuth`. Cheap to clone.
#[derive(Debug, Clone)]
pub struct IdentityClient {
    http: reqwest::Client,
    url: String,
    credential: BindingCredential,
}

/// Why the HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the identity service client: {0}")]
pub struct ClientBuildError(String);

impl IdentityClient {
    pub fn new(config: &BindingConfig) -> Result<Self, ClientBuildError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5).min(config.identity_timeout))
            .timeout(config.identity_timeout)
            .no_proxy()
            .user_agent(concat!("latchkey-binding/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientBuildError(e.to_string()))?;
        Ok(Self {
            http,
            url: config.complete_url(),
            credential: config.credential.clone(),
        })
    }

    /// The access key id of the credential used (not secret).
    pub fn access_key_id(&self) -> &str {
        self.credential.access_key_id()
    }

    /// Ask the identity service to bind `session_uri` to `user`.
    pub async fn complete(&self, session_uri: &str, user: &UserIdentifier) -> Completion {
        let identifier = match user {
            UserIdentifier::UserId(id) => json!({ "userId": id }),
            UserIdentifier::UserToken(token) => json!({ "userToken": token.expose_secret() }),
        };
        let body = json!({ "userIdentifier": identifier, "sessionUri": session_uri });
        let Some(authorization) = self.credential.authorization() else {
            return Completion::CredentialRefused;
        };
        let response = self
            .http
            .post(&self.url)
            .header(header::AUTHORIZATION, authorization)
            .header(header::ACCEPT, "application/json")
            .json(&body)
            .send()
            .await;
        let mut response = match response {
            Ok(r) => r,
            Err(e) => {
                let why = if e.is_timeout() {
                    "timed out"
                } else if e.is_connect() {
                    "connection failed"
                } else {
                    "request failed"
                };
                return Completion::Unavailable(format!("identity service {why}"));
            }
        };
        let status = response.status();
        if status.is_success() {
            return Completion::Completed;
        }
        let error_type = response
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(':').next().unwrap_or_default().trim().to_string());
        // Read a bounded body for the message (and `__type` when the header is missing).
        let mut bytes = Vec::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            if bytes.len() + chunk.len() > MAX_ERROR_BODY_BYTES {
                break;
            }
            bytes.extend_from_slice(&chunk);
        }
        let parsed: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let error_type = error_type.or_else(|| {
            parsed
                .get("__type")
                .and_then(Value::as_str)
                .map(|t| t.rsplit('#').next().unwrap_or(t).to_string())
        });
        let message = parsed
            .get("message")
            .or_else(|| parsed.get("Message"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        classify(status.as_u16(), error_type.as_deref(), message)
    }
}

/// The page-deciding meaning of an error answer.
pub fn classify(status: u16, error_type: Option<&str>, message: &str) -> Completion {
    match error_type {
        Some("AccessDeniedException") => Completion::WrongUser,
        Some("ValidationException") if message.to_ascii_lowercase().contains("expired") => {
            Completion::Expired
        }
        Some("ValidationException") => Completion::InvalidLink,
        Some("ResourceNotFoundException") => Completion::UnknownLink,
        Some("UnauthorizedException") => Completion::CredentialRefused,
        Some(other) => Completion::Unavailable(format!(
            "identity service answered {status} {}",
            printable(other)
        )),
        None => Completion::Unavailable(format!("identity service answered {status}")),
    }
}

/// An error name as logged: at most 64 characters of `[A-Za-z0-9._#-]`.
fn printable(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '#' | '-'))
        .take(64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert_eq!(
            classify(403, Some("AccessDeniedException"), ""),
            Completion::WrongUser
        );
        assert_eq!(
            classify(
                400,
                Some("ValidationException"),
                "authorization session expired: start again"
            ),
            Completion::Expired
        );
        assert_eq!(
            classify(400, Some("ValidationException"), "already used"),
            Completion::InvalidLink
        );
        assert_eq!(
            classify(404, Some("ResourceNotFoundException"), ""),
            Completion::UnknownLink
        );
        assert_eq!(
            classify(401, Some("UnauthorizedException"), ""),
            Completion::CredentialRefused
        );
        assert!(matches!(
            classify(503, Some("InternalServerException"), ""),
            Completion::Unavailable(_)
        ));
        assert!(matches!(
            classify(500, None, ""),
            Completion::Unavailable(_)
        ));
        let Completion::Unavailable(why) = classify(500, Some("<script>"), "") else {
            panic!("unavailable expected");
        };
        assert!(!why.contains('<'));
    }

    #[test]
    fn token_is_redacted_in_debug() {
        let user = UserIdentifier::UserToken(SecretString::from("eyJsecret.token.sig".to_string()));
        assert!(!format!("{user:?}").contains("eyJsecret"));
    }
}
