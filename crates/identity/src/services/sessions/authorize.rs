//! `GET /identities/oauth2/authorize?request_uri=…`: the browser is sent on to the
//! provider's authorization endpoint with the session's state and PKCE challenge.

use latchkey_core::audit::Outcome;
use latchkey_core::protocol::SessionUri;
use serde_json::json;

use super::state::Session;
use super::{
    BrowserError, SESSION_URI_PREFIX, SessionRequest, SessionSecrets, Sessions, browser_error,
    failure_reason, session_request,
};
use crate::error::Reason;
use crate::services::providers::ProviderRuntime;

impl Sessions {
    /// The provider URL to redirect the browser to.
    pub(crate) async fn authorize(
        &self,
        request_uri: Option<String>,
    ) -> Result<String, BrowserError> {
        let uri = request_uri
            .filter(|u| SessionUri::parse(u).is_ok())
            .ok_or(BrowserError::BadRequest)?;
        let id = uri.trim_start_matches(SESSION_URI_PREFIX);
        let session = self
            .store
            .find_session(id)
            .await
            .map_err(browser_error)?
            .ok_or(BrowserError::UnknownSession)?;
        let session = match Session::from(session) {
            Session::Pending(session) => session,
            Session::Failed(failed)
                if failure_reason(failed.record()) == Reason::SessionCancelled =>
            {
                return Err(BrowserError::Cancelled);
            }
            _ => return Err(BrowserError::AlreadyUsed),
        };
        let session = session.record();
        if session.expires_ms <= self.clock.now_ms() {
            return Err(BrowserError::Expired);
        }
        let provider = self
            .providers
            .runtime(crate::services::providers::ProviderLookup::Name(
                &session.provider,
            ))
            .await
            .map_err(browser_error)?
            .ok_or(BrowserError::UnknownSession)?;
        let secrets = self.open_secrets(session).await.map_err(browser_error)?;
        let request = session_request(session).map_err(browser_error)?;
        let url = authorization_url(&provider, &request, &secrets).ok_or_else(|| {
            tracing::error!(provider = %provider.name, "the provider's authorization endpoint is not a URL");
            BrowserError::Unavailable
        })?;
        self.record_session(
            None,
            "OAuth2Authorize",
            session,
            Outcome::Success,
            json!({"provider": session.provider, "scopes": request.scopes}),
        )
        .await;
        Ok(url)
    }
}

/// The provider's authorization URL for a session: vendor defaults, then the caller's
/// custom parameters, then the standard parameters (which nothing can override).
fn authorization_url(
    provider: &ProviderRuntime,
    request: &SessionRequest,
    secrets: &SessionSecrets,
) -> Option<String> {
    let mut url = url::Url::parse(&provider.metadata.authorization_endpoint).ok()?;
    let quirks = &provider.config.quirks;
    let mut scopes = request.scopes.clone();
    if let Some(offline) = &quirks.offline_scope
        && !scopes.contains(offline)
    {
        scopes.push(offline.clone());
    }
    let scope = scopes.join(&quirks.scope_separator);
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in &quirks.authorize_params {
            if !secrets.custom_parameters.contains_key(k) {
                q.append_pair(k, v);
            }
        }
        for (k, v) in &secrets.custom_parameters {
            q.append_pair(k, v);
        }
        q.append_pair("response_type", "code");
        q.append_pair("client_id", &provider.config.client_id);
        q.append_pair("redirect_uri", &provider.callback_url);
        if !scope.is_empty() {
            q.append_pair(
                if quirks.slack_user_token {
                    "user_scope"
                } else {
                    "scope"
                },
                &scope,
            );
        }
        q.append_pair("state", &secrets.state);
        q.append_pair("code_challenge", &secrets.verifier.challenge());
        q.append_pair("code_challenge_method", "S256");
        for r in &request.resources {
            q.append_pair("resource", r);
        }
    }
    Some(url.into())
}
