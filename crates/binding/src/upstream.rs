//! The one call the binding service makes to the identity service:
//! `POST {identity_url}/identities/CompleteResourceTokenAuth`, authenticated with the
//! `binding` credential as a bearer key.
//!
//! The call goes through `latchkey-client` (the same client the agent and users' code
//! use). The identity URL is the operator's own, usually internal, service, so its HTTP
//! client is a plain one (not the SSRF-guarded outbound client, which refuses private
//! addresses), but it follows no redirects (a redirect would carry the credential
//! elsewhere) and uses no proxy; `latchkey-client` bounds the answer it reads.

use std::time::Duration;

use latchkey_authn::SignedInUser;
use latchkey_client::{Error, ErrorKind, ProviderRevocation, Reason, UserGrant, UserIdentifier};
use latchkey_core::protocol::SessionUri;

use crate::config::BindingConfig;

/// How the identity service answered, reduced to what decides the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// 2xx: the consent is bound to the user.
    Completed,
    /// `AccessDeniedException`: not the user who started the flow.
    WrongUser,
    /// `ValidationException` with reason `session-expired` (`x-latchkey-reason`).
    Expired,
    /// `ValidationException` with reason `session-cancelled`: another account opened the
    /// link, so the session was cancelled.
    Cancelled,
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

/// Calls `CompleteResourceTokenAuth` through `latchkey-client`. Cheap to clone.
#[derive(Debug, Clone)]
pub struct IdentityClient {
    client: latchkey_client::Client,
    access_key_id: String,
}

/// Why the client could not be built.
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
        let endpoint = latchkey_client::Url::parse(&config.identity_url)
            .map_err(|e| ClientBuildError(e.to_string()))?;
        let client = latchkey_client::Client::builder(endpoint)
            .bearer(config.credential.bearer())
            .timeout(config.identity_timeout)
            .http_client(http)
            .build()
            .map_err(|e| ClientBuildError(e.to_string()))?;
        Ok(Self {
            client,
            access_key_id: config.credential.access_key_id().to_string(),
        })
    }

    /// Whether the identity service answers its liveness check within `timeout`.
    pub async fn ping(&self, timeout: Duration) -> Result<(), Error> {
        self.client.ping(timeout).await
    }

    /// The access key id of the credential used (not secret).
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// Ask the identity service to bind `session_uri` to `user`.
    pub async fn complete(&self, session_uri: &SessionUri, user: &SignedInUser) -> Completion {
        match self
            .client
            .complete_resource_token_auth(session_uri.as_str(), &identifier(user))
            .await
        {
            Ok(()) => Completion::Completed,
            Err(Error::Service {
                kind,
                status,
                reason,
                ..
            }) => classify(status, &kind, reason.as_ref()),
            Err(other) => Completion::Unavailable(transport_failure(&other)),
        }
    }

    /// Every grant held for `user` (the connections page).
    pub async fn grants(&self, user: &SignedInUser) -> Result<Vec<UserGrant>, GrantsFailure> {
        self.client
            .list_user_grants(&identifier(user))
            .await
            .map_err(grants_failure)
    }

    /// Revoke `user`'s grant for `workload` and `provider`.
    pub async fn revoke(
        &self,
        user: &SignedInUser,
        workload: &str,
        provider: &str,
    ) -> Result<ProviderRevocation, GrantsFailure> {
        self.client
            .revoke_user_grant(&identifier(user), workload, provider)
            .await
            .map_err(grants_failure)
    }
}

/// The signed-in user as the identity service's `userIdentifier` names them.
fn identifier(user: &SignedInUser) -> UserIdentifier {
    match user {
        SignedInUser::UserId(id) => UserIdentifier::UserId(id.clone()),
        SignedInUser::IdToken { token, .. } => UserIdentifier::UserToken(token.clone()),
    }
}

/// A call that got no usable answer, for the log (never the transport's own text).
fn transport_failure(e: &Error) -> String {
    match e {
        Error::Timeout => "identity service timed out".into(),
        Error::Transport(e) if e.is_connect() => "identity service connection failed".into(),
        Error::Transport(_) => "identity service request failed".into(),
        _ => "identity service answered unexpectedly".into(),
    }
}

/// Why a grants call failed, reduced to what decides the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantsFailure {
    /// `ResourceNotFoundException`: this user holds no such grant (already revoked).
    NotFound,
    /// `AccessDeniedException`: the user's token was refused.
    NotSignedIn,
    /// `UnauthorizedException`: the binding credential itself was refused.
    CredentialRefused,
    /// Anything else.
    Unavailable(String),
}

/// The page-deciding meaning of a failed `ListUserGrants` / `RevokeUserGrant`.
fn grants_failure(e: Error) -> GrantsFailure {
    match e {
        Error::Service { kind, status, .. } => match kind {
            ErrorKind::ResourceNotFound => GrantsFailure::NotFound,
            ErrorKind::AccessDenied => GrantsFailure::NotSignedIn,
            ErrorKind::Unauthorized => GrantsFailure::CredentialRefused,
            other => GrantsFailure::Unavailable(unexpected_answer(status, &other)),
        },
        other => GrantsFailure::Unavailable(transport_failure(&other)),
    }
}

/// The page-deciding meaning of an error answer.
pub fn classify(status: u16, kind: &ErrorKind, reason: Option<&Reason>) -> Completion {
    match kind {
        ErrorKind::AccessDenied => Completion::WrongUser,
        ErrorKind::Validation if reason == Some(&Reason::SessionExpired) => Completion::Expired,
        ErrorKind::Validation if reason == Some(&Reason::SessionCancelled) => Completion::Cancelled,
        ErrorKind::Validation => Completion::InvalidLink,
        ErrorKind::ResourceNotFound => Completion::UnknownLink,
        ErrorKind::Unauthorized => Completion::CredentialRefused,
        other => Completion::Unavailable(unexpected_answer(status, other)),
    }
}

/// An error answer no page is made for, as logged (the error name made printable).
fn unexpected_answer(status: u16, kind: &ErrorKind) -> String {
    format!(
        "identity service answered {status} {}",
        printable(kind.as_str())
    )
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
    fn grants_failures() {
        let answer = |kind: ErrorKind, status: u16| Error::Service {
            kind,
            status,
            message: "the service's own words".into(),
            request_id: None,
            reason: None,
        };
        assert_eq!(
            grants_failure(answer(ErrorKind::ResourceNotFound, 404)),
            GrantsFailure::NotFound
        );
        // A user token the identity service refused: not signed in, never "try again".
        assert_eq!(
            grants_failure(answer(ErrorKind::AccessDenied, 403)),
            GrantsFailure::NotSignedIn
        );
        assert_eq!(
            grants_failure(answer(ErrorKind::Unauthorized, 401)),
            GrantsFailure::CredentialRefused
        );
        let GrantsFailure::Unavailable(why) =
            grants_failure(answer(ErrorKind::Other("<b>".into()), 500))
        else {
            panic!("unavailable expected");
        };
        assert_eq!(why, "identity service answered 500 b");
        assert!(matches!(
            grants_failure(Error::Timeout),
            GrantsFailure::Unavailable(_)
        ));
    }

    #[test]
    fn classification() {
        assert_eq!(
            classify(403, &ErrorKind::AccessDenied, None),
            Completion::WrongUser
        );
        assert_eq!(
            classify(400, &ErrorKind::Validation, Some(&Reason::SessionExpired)),
            Completion::Expired
        );
        assert_eq!(
            classify(400, &ErrorKind::Validation, Some(&Reason::SessionCancelled)),
            Completion::Cancelled
        );
        // Typed: only the reason says cancelled; a wrong user's own refusal stays WrongUser.
        assert_eq!(
            classify(
                403,
                &ErrorKind::AccessDenied,
                Some(&Reason::SessionCancelled)
            ),
            Completion::WrongUser
        );
        assert_eq!(
            classify(400, &ErrorKind::Validation, None),
            Completion::InvalidLink
        );
        assert_eq!(
            classify(404, &ErrorKind::ResourceNotFound, None),
            Completion::UnknownLink
        );
        assert_eq!(
            classify(401, &ErrorKind::Unauthorized, None),
            Completion::CredentialRefused
        );
        assert!(matches!(
            classify(503, &ErrorKind::Internal, None),
            Completion::Unavailable(_)
        ));
        assert!(matches!(
            classify(500, &ErrorKind::Other("500".into()), None),
            Completion::Unavailable(_)
        ));
        let Completion::Unavailable(why) =
            classify(500, &ErrorKind::Other("<script>".into()), None)
        else {
            panic!("unavailable expected");
        };
        assert!(!why.contains('<'));
    }
}
