//! Latchkey as an OAuth 2.0 client of a credential provider: the token endpoint
//! (authorization code with PKCE, refresh, client credentials) and RFC 7009 revocation,
//! through the guarded outbound client, with the vendors' quirks.

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use latchkey_core::crypto::KeyProvider;
use latchkey_core::oauth2_provider::ClientAuthMethod;

use crate::error::Result;
use crate::outbound::OutboundClient;
use crate::services::providers::ProviderRuntime;

/// A successful token response.
#[derive(Debug)]
pub(crate) struct TokenResponse {
    pub access_token: SecretString,
    pub token_type: String,
    pub refresh_token: Option<SecretString>,
    /// Seconds, when the provider said.
    pub expires_in: Option<i64>,
    /// The granted scopes, when the provider said.
    pub scope: Option<Vec<String>>,
}

/// Why a token request failed. Messages are safe to show the client: they carry the
/// provider's error code and description, never a secret we sent.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TokenError {
    /// RFC 6749 `invalid_grant`: the code or refresh token is no longer valid.
    #[error("the provider rejected the grant (invalid_grant){0}")]
    InvalidGrant(String),
    /// Any other OAuth error from the provider.
    #[error("the provider answered {error}{description}")]
    Provider { error: String, description: String },
    /// The provider could not be reached or answered something that isn't a token.
    #[error("the provider's token endpoint failed: {0}")]
    Upstream(String),
}

fn describe(body: &Value) -> String {
    body.get("error_description")
        .and_then(Value::as_str)
        .map(|d| {
            let d: String = d.chars().filter(|c| !c.is_control()).take(200).collect();
            format!(": {d}")
        })
        .unwrap_or_default()
}

/// A provider's token endpoint with the client credentials to use. Built by
/// [`TokenClient::open`], the only place the client secret is opened.
pub(crate) struct TokenClient<'a> {
    http: &'a OutboundClient,
    provider: &'a ProviderRuntime,
    secret: Option<SecretString>,
}

impl std::fmt::Debug for TokenClient<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenClient")
            .field("provider", &self.provider.name)
            .finish_non_exhaustive()
    }
}

impl<'a> TokenClient<'a> {
    /// The provider's token endpoint with its client secret opened.
    pub async fn open(
        provider: &'a ProviderRuntime,
        keys: &dyn KeyProvider,
        http: &'a OutboundClient,
    ) -> Result<Self> {
        Ok(Self {
            http,
            provider,
            secret: provider.open_secret(keys).await?,
        })
    }

    /// POST a form with client authentication; the status and body whatever the status.
    async fn post(
        &self,
        url: &str,
        mut form: Vec<(&str, String)>,
    ) -> Result<(u16, bytes::Bytes), TokenError> {
        let basic = self.client_auth(&mut form);
        let auth = basic.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.http
            .post_form(url, &pairs, auth)
            .await
            .map_err(|e| TokenError::Upstream(e.to_string()))
    }

    /// A token-endpoint request; the answer parsed with the vendor's quirks.
    pub async fn request(&self, form: Vec<(&str, String)>) -> Result<TokenResponse, TokenError> {
        let (status, body) = self
            .post(&self.provider.metadata.token_endpoint, form)
            .await?;
        let json: Value = serde_json::from_slice(&body).map_err(|_| {
            TokenError::Upstream(format!("HTTP {status} with a body that is not JSON"))
        })?;
        parse_token_response(status, &json, self.provider.config.quirks.slack_user_token)
    }

    /// RFC 7009 revocation of one token (nothing to do without an endpoint); the caller
    /// decides what a failure means.
    pub async fn revoke(&self, token: &str, hint: &str) -> Result<(), TokenError> {
        let Some(endpoint) = &self.provider.revocation_endpoint else {
            return Ok(());
        };
        let form = vec![
            ("token", token.to_string()),
            ("token_type_hint", hint.to_string()),
        ];
        let (status, body) = self.post(endpoint, form).await?;
        if (200..300).contains(&status) {
            return Ok(());
        }
        let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Err(TokenError::Provider {
            error: json
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("revocation failed")
                .to_string(),
            description: format!(" (HTTP {status})"),
        })
    }

    /// Client authentication: HTTP Basic credentials to send (RFC 6749 §2.3.1: both
    /// form-encoded first), or the client id (and secret) added to the form. A public
    /// client sends only its id.
    fn client_auth(&self, form: &mut Vec<(&str, String)>) -> Option<(String, String)> {
        let client_id = self.provider.config.client_id.as_str();
        let secret = self.secret.as_ref().map(|s| s.expose_secret());
        match (secret, self.provider.client_auth_method()) {
            (Some(secret), ClientAuthMethod::ClientSecretBasic) => {
                Some((form_encode(client_id), form_encode(secret)))
            }
            (Some(secret), ClientAuthMethod::ClientSecretPost) => {
                form.push(("client_id", client_id.to_string()));
                form.push(("client_secret", secret.to_string()));
                None
            }
            (None, _) => {
                form.push(("client_id", client_id.to_string()));
                None
            }
        }
    }
}

fn parse_token_response(
    status: u16,
    json: &Value,
    slack: bool,
) -> Result<TokenResponse, TokenError> {
    // GitHub and Slack report errors with HTTP 200.
    let slack_failed = slack && json.get("ok").and_then(Value::as_bool) == Some(false);
    if let Some(error) = json.get("error").and_then(Value::as_str)
        && (!(200..300).contains(&status) || json.get("access_token").is_none() || slack_failed)
    {
        let error: String = error
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(64)
            .collect();
        return Err(if error == "invalid_grant" {
            TokenError::InvalidGrant(describe(json))
        } else {
            TokenError::Provider {
                error,
                description: describe(json),
            }
        });
    }
    if !(200..300).contains(&status) {
        return Err(TokenError::Upstream(format!("HTTP {status}")));
    }
    // Slack v2 user tokens live under `authed_user`.
    let src = if slack {
        json.get("authed_user").unwrap_or(json)
    } else {
        json
    };
    let access = src
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| TokenError::Upstream("the response has no access_token".into()))?;
    let expires_in = match src.get("expires_in") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|s| *s > 0);
    let scope = src.get("scope").and_then(Value::as_str).map(|s| {
        s.split([' ', ','])
            .filter(|x| !x.is_empty())
            .map(str::to_string)
            .collect()
    });
    Ok(TokenResponse {
        access_token: SecretString::from(access.to_string()),
        token_type: src
            .get("token_type")
            .and_then(Value::as_str)
            .unwrap_or("Bearer")
            .to_string(),
        refresh_token: src
            .get("refresh_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(|t| SecretString::from(t.to_string())),
        expires_in,
        scope,
    })
}

fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn invalid_grant_is_typed() {
        let e = parse_token_response(400, &json!({"error": "invalid_grant"}), false).unwrap_err();
        assert!(matches!(e, TokenError::InvalidGrant(_)));
    }

    #[test]
    fn github_error_with_200() {
        let e = parse_token_response(200, &json!({"error": "bad_verification_code"}), false)
            .unwrap_err();
        assert!(matches!(e, TokenError::Provider { .. }));
    }

    #[test]
    fn missing_fields_are_none() {
        let t = parse_token_response(200, &json!({"access_token": "a"}), false).unwrap();
        assert!(t.refresh_token.is_none() && t.expires_in.is_none() && t.scope.is_none());
        assert_eq!(t.token_type, "Bearer");
    }

    #[test]
    fn slack_user_token() {
        let t = parse_token_response(
            200,
            &json!({"ok": true, "authed_user": {"access_token": "xoxp", "scope": "a,b"}}),
            true,
        )
        .unwrap();
        assert_eq!(t.access_token.expose_secret(), "xoxp");
        assert_eq!(t.scope.unwrap(), vec!["a", "b"]);
        let e = parse_token_response(200, &json!({"ok": false, "error": "invalid_code"}), true)
            .unwrap_err();
        assert!(matches!(e, TokenError::Provider { .. }));
    }
}
