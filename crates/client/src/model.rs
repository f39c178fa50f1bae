//! Request and response types of the data-plane operations, and their JSON wire shapes.
//!
//! The public types hold secrets as [`SecretString`] and have no `Serialize`; the wire
//! structs are `latchkey-api`'s, shared with the identity service.

use std::collections::BTreeMap;

use latchkey_api::data::{GetResourceOauth2TokenRequest, GetResourceOauth2TokenResponse};
use secrecy::{ExposeSecret, SecretString};

/// The OAuth2 flow of a [`ResourceTokenRequest`] (`oauth2Flow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Oauth2Flow {
    /// `USER_FEDERATION`: three-legged OAuth on behalf of the user the WAT was issued for.
    UserFederation,
    /// `M2M`: client credentials; no user involved.
    M2m,
    /// `ON_BEHALF_OF_TOKEN_EXCHANGE` (Latchkey answers "not yet supported").
    OnBehalfOfTokenExchange,
}

impl Oauth2Flow {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UserFederation => "USER_FEDERATION",
            Self::M2m => "M2M",
            Self::OnBehalfOfTokenExchange => "ON_BEHALF_OF_TOKEN_EXCHANGE",
        }
    }
}

/// A `GetResourceOauth2Token` request. Build it with [`ResourceTokenRequest::new`] and
/// the `with_*` methods, or set the public fields directly.
///
/// Optional members are sent only when set (and lists and maps only when non-empty),
/// as the Python SDK does; `scopes` is always sent, `[]` included.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ResourceTokenRequest {
    /// `workloadIdentityToken`: the workload access token (WAT).
    pub workload_identity_token: SecretString,
    /// `resourceCredentialProviderName`.
    pub resource_credential_provider_name: String,
    /// `scopes`.
    pub scopes: Vec<String>,
    /// `oauth2Flow`.
    pub oauth2_flow: Oauth2Flow,
    /// `sessionUri`: set when polling or continuing a three-legged session.
    pub session_uri: Option<String>,
    /// `resourceOauth2ReturnUrl`: where the browser goes after consent; must be one of the
    /// workload's `allowedResourceOauth2ReturnUrls`.
    pub resource_oauth2_return_url: Option<String>,
    /// `forceAuthentication`: start a new consent even when a token is stored.
    pub force_authentication: Option<bool>,
    /// `customState`: opaque value handed back on the redirect to the return URL.
    pub custom_state: Option<SecretString>,
    /// `customParameters`: extra authorization-request parameters (never a standard one).
    pub custom_parameters: BTreeMap<String, SecretString>,
    /// `resources` (RFC 8707).
    pub resources: Vec<String>,
    /// `audiences`.
    pub audiences: Vec<String>,
}

impl ResourceTokenRequest {
    /// A request with the required members and no scopes.
    pub fn new(
        workload_identity_token: SecretString,
        resource_credential_provider_name: impl Into<String>,
        oauth2_flow: Oauth2Flow,
    ) -> Self {
        Self {
            workload_identity_token,
            resource_credential_provider_name: resource_credential_provider_name.into(),
            scopes: Vec::new(),
            oauth2_flow,
            session_uri: None,
            resource_oauth2_return_url: None,
            force_authentication: None,
            custom_state: None,
            custom_parameters: BTreeMap::new(),
            resources: Vec::new(),
            audiences: Vec::new(),
        }
    }

    /// Sets `scopes`.
    pub fn with_scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// Sets `sessionUri`.
    pub fn with_session_uri(mut self, session_uri: impl Into<String>) -> Self {
        self.session_uri = Some(session_uri.into());
        self
    }

    /// Sets `resourceOauth2ReturnUrl`.
    pub fn with_return_url(mut self, url: impl Into<String>) -> Self {
        self.resource_oauth2_return_url = Some(url.into());
        self
    }

    /// Sets `forceAuthentication`.
    pub fn with_force_authentication(mut self, force: bool) -> Self {
        self.force_authentication = Some(force);
        self
    }

    /// Sets `customState`.
    pub fn with_custom_state(mut self, state: impl Into<SecretString>) -> Self {
        self.custom_state = Some(state.into());
        self
    }

    /// Adds one `customParameters` entry.
    pub fn with_custom_parameter(
        mut self,
        name: impl Into<String>,
        value: impl Into<SecretString>,
    ) -> Self {
        self.custom_parameters.insert(name.into(), value.into());
        self
    }

    /// Sets `resources`.
    pub fn with_resources<I, S>(mut self, resources: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.resources = resources.into_iter().map(Into::into).collect();
        self
    }

    /// Sets `audiences`.
    pub fn with_audiences<I, S>(mut self, audiences: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.audiences = audiences.into_iter().map(Into::into).collect();
        self
    }

    /// The request on the wire (the shared `latchkey-api` struct).
    pub(crate) fn wire(&self) -> GetResourceOauth2TokenRequest {
        let non_empty = |list: &Vec<String>| (!list.is_empty()).then(|| list.clone());
        GetResourceOauth2TokenRequest {
            workload_identity_token: self.workload_identity_token.clone(),
            resource_credential_provider_name: self.resource_credential_provider_name.clone(),
            scopes: Some(self.scopes.clone()),
            oauth2_flow: Some(self.oauth2_flow.as_str().to_string()),
            session_uri: self.session_uri.clone(),
            resource_oauth2_return_url: self.resource_oauth2_return_url.clone(),
            force_authentication: self.force_authentication,
            custom_state: self.custom_state.clone(),
            custom_parameters: (!self.custom_parameters.is_empty())
                .then(|| self.custom_parameters.clone()),
            resources: non_empty(&self.resources),
            audiences: non_empty(&self.audiences),
        }
    }
}

/// What `GetResourceOauth2Token` answered.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ResourceToken {
    /// `accessToken`: the token is available (M2M, or a stored user grant).
    Token(SecretString),
    /// `authorizationUrl`: the user must consent. Show them the URL, then poll
    /// `session_uri` (see [`crate::Client::poll_resource_token`]).
    AuthorizationRequired {
        /// The URL to open in the user's browser.
        authorization_url: String,
        /// The session to poll (`sessionUri`).
        session_uri: String,
    },
    /// `sessionStatus: IN_PROGRESS` without a URL: the consent or its binding is not done
    /// yet; ask again later.
    Pending {
        /// The session (`sessionUri`).
        session_uri: String,
    },
    /// `sessionStatus: FAILED`: the session failed or expired; start a new one.
    Failed {
        /// The session (`sessionUri`).
        session_uri: String,
        /// Why, when the service said so (`x-latchkey-reason`).
        reason: Option<crate::Reason>,
    },
}

/// The user for `CompleteResourceTokenAuth` (the `userIdentifier` union): the same user
/// id or user token that the workload access token was minted for.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum UserIdentifier {
    /// `userId`.
    UserId(String),
    /// `userToken`: the user's JWT from the identity provider.
    UserToken(SecretString),
}

impl UserIdentifier {
    /// The `userIdentifier` union on the wire.
    pub(crate) fn wire(&self) -> latchkey_api::data::UserIdentifier {
        match self {
            Self::UserId(id) => latchkey_api::data::UserIdentifier {
                user_token: None,
                user_id: Some(id.clone()),
            },
            Self::UserToken(token) => latchkey_api::data::UserIdentifier {
                user_token: Some(token.clone()),
                user_id: None,
            },
        }
    }
}

// ------------------------------------------------------------------------------ wire

/// `accessToken` first, then `authorizationUrl`, then `sessionStatus`.
/// `reason` is the answer's `x-latchkey-reason`, kept for a `FAILED` status only.
pub(crate) fn resource_token(
    response: GetResourceOauth2TokenResponse,
    reason: Option<crate::Reason>,
) -> Result<ResourceToken, crate::Error> {
    let invalid = |what: &str| crate::Error::InvalidResponse(what.to_string());
    if let Some(token) = response
        .access_token
        .filter(|t| !t.expose_secret().is_empty())
    {
        return Ok(ResourceToken::Token(token));
    }
    let session_uri = response.session_uri.filter(|s| !s.is_empty());
    if let Some(authorization_url) = response.authorization_url.filter(|u| !u.is_empty()) {
        let session_uri = session_uri
            .ok_or_else(|| invalid("authorizationUrl without sessionUri in the response"))?;
        return Ok(ResourceToken::AuthorizationRequired {
            authorization_url,
            session_uri,
        });
    }
    let session_uri = session_uri.ok_or_else(|| {
        invalid("the response has none of accessToken, authorizationUrl and sessionUri")
    })?;
    match response.session_status.as_deref() {
        Some("IN_PROGRESS") | None => Ok(ResourceToken::Pending { session_uri }),
        Some("FAILED") => Ok(ResourceToken::Failed {
            session_uri,
            reason,
        }),
        Some(other) => Err(crate::Error::InvalidResponse(format!(
            "unknown sessionStatus {:?}",
            other.chars().take(64).collect::<String>()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(json: &str) -> Result<ResourceToken, crate::Error> {
        response_with(json, None)
    }

    fn response_with(
        json: &str,
        reason: Option<crate::Reason>,
    ) -> Result<ResourceToken, crate::Error> {
        resource_token(
            serde_json::from_str::<GetResourceOauth2TokenResponse>(json)
                .map_err(|e| crate::Error::InvalidResponse(e.to_string()))?,
            reason,
        )
    }

    #[test]
    fn request_omits_unset_members() -> Result<(), serde_json::Error> {
        let req = ResourceTokenRequest::new("wat".into(), "p", Oauth2Flow::M2m);
        let json = serde_json::to_value(req.wire())?;
        assert_eq!(
            json,
            serde_json::json!({"workloadIdentityToken": "wat", "resourceCredentialProviderName": "p",
                "scopes": [], "oauth2Flow": "M2M"})
        );
        let req = req
            .with_scopes(["a"])
            .with_session_uri("urn:ietf:params:oauth:request_uri:x")
            .with_return_url("http://127.0.0.1/cb")
            .with_force_authentication(true)
            .with_custom_state("cs")
            .with_custom_parameter("k", "v")
            .with_resources(["https://r"])
            .with_audiences(["aud"]);
        let json = serde_json::to_value(req.wire())?;
        assert_eq!(json["sessionUri"], "urn:ietf:params:oauth:request_uri:x");
        assert_eq!(json["resourceOauth2ReturnUrl"], "http://127.0.0.1/cb");
        assert_eq!(json["forceAuthentication"], true);
        assert_eq!(json["customState"], "cs");
        assert_eq!(json["customParameters"]["k"], "v");
        assert_eq!(json["resources"][0], "https://r");
        assert_eq!(json["audiences"][0], "aud");
        let debug = format!("{req:?}");
        assert!(
            !debug.contains("wat\"") && !debug.contains("\"cs\""),
            "{debug}"
        );
        Ok(())
    }

    #[test]
    fn responses() {
        assert!(matches!(
            response(r#"{"accessToken":"t"}"#),
            Ok(ResourceToken::Token(t)) if t.expose_secret() == "t"
        ));
        assert!(matches!(
            response(
                r#"{"authorizationUrl":"https://a","sessionUri":"s","sessionStatus":"IN_PROGRESS"}"#
            ),
            Ok(ResourceToken::AuthorizationRequired { .. })
        ));
        assert!(matches!(
            response(r#"{"sessionUri":"s","sessionStatus":"IN_PROGRESS"}"#),
            Ok(ResourceToken::Pending { .. })
        ));
        assert!(matches!(
            response(r#"{"sessionUri":"s","sessionStatus":"FAILED"}"#),
            Ok(ResourceToken::Failed { reason: None, .. })
        ));
        assert!(matches!(
            response_with(
                r#"{"sessionUri":"s","sessionStatus":"FAILED"}"#,
                Some(crate::Reason::SessionCancelled)
            ),
            Ok(ResourceToken::Failed {
                reason: Some(crate::Reason::SessionCancelled),
                ..
            })
        ));
        assert!(matches!(
            response(r#"{}"#),
            Err(crate::Error::InvalidResponse(_))
        ));
    }
}
