//! The identity service's one error type. Each error has a kind and a message safe for
//! the client (an [`ApiError`], AgentCore's vocabulary), an optional internal message for
//! the log only, and an optional machine-readable [`Reason`] for the services that call
//! this one. Services return it; each wire format maps it once: AgentCore JSON in
//! [`crate::http_error`], HTML pages in [`crate::pages`] (the identity service has no
//! endpoint that answers RFC 6749 error JSON: it is an OAuth *client* of providers).
//!
//! Internal text (crypto, serde, store, outbound errors) goes into
//! [`Error::with_internal`] or [`Error::internal`], never into the client message.

use std::fmt;

use latchkey_core::ApiError;
use latchkey_store::StoreError;

/// The header that carries [`Reason`] beside the unchanged AgentCore error body.
pub const REASON_HEADER: &str = "x-latchkey-reason";

/// Why `CompleteResourceTokenAuth` (and the session steps behind it) refused, for the
/// binding service, and why a polled session is `FAILED`, for the workload: a typed value
/// instead of words in the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The authorization session expired before it was completed.
    SessionExpired,
    /// The session failed earlier (provider error, a failed exchange).
    SessionFailed,
    /// The session was cancelled because another user opened its link (a completion
    /// by the wrong user fails the session, to protect the user who started it).
    SessionCancelled,
    /// The session was completed (or claimed) before.
    SessionAlreadyUsed,
    /// No session has this completion URN (unknown, purged, or not a completion URN).
    SessionUnknown,
    /// The completing user is not the user who started the session.
    UserMismatch,
    /// The code exchange at the provider failed (or could not be stored).
    ExchangeFailed,
}

impl Reason {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SessionExpired => "session-expired",
            Self::SessionFailed => "session-failed",
            Self::SessionCancelled => "session-cancelled",
            Self::SessionAlreadyUsed => "session-already-used",
            Self::SessionUnknown => "session-unknown",
            Self::UserMismatch => "user-mismatch",
            Self::ExchangeFailed => "exchange-failed",
        }
    }
}

/// An error of the identity service (see the module documentation).
#[derive(Debug)]
pub struct Error {
    public: ApiError,
    internal: Option<String>,
    reason: Option<Reason>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(public: ApiError) -> Self {
        Self {
            public,
            internal: None,
            reason: None,
        }
    }

    /// A bug or an unexpected state: the client gets the generic 500 message.
    pub fn internal(detail: impl fmt::Display) -> Self {
        Self::new(ApiError::internal(detail))
    }

    /// A dependency is unavailable: the client gets the generic retry-safe 503 message.
    pub fn unavailable(detail: impl fmt::Display) -> Self {
        Self::new(ApiError::unavailable(detail))
    }

    /// Add detail for the log (never sent).
    #[must_use]
    pub fn with_internal(mut self, detail: impl fmt::Display) -> Self {
        let detail = detail.to_string();
        self.internal = Some(match self.internal.take() {
            Some(before) => format!("{before}: {detail}"),
            None => detail,
        });
        self
    }

    #[must_use]
    pub fn with_reason(mut self, reason: Reason) -> Self {
        self.reason = Some(reason);
        self
    }

    /// Kind and client-safe message.
    pub fn public(&self) -> &ApiError {
        &self.public
    }

    pub fn into_public(self) -> ApiError {
        self.public
    }

    /// The kind's AgentCore name (`ValidationException`, …).
    pub fn kind(&self) -> &'static str {
        self.public.name()
    }

    /// The message the client may see.
    pub fn client_message(&self) -> String {
        self.public.to_string()
    }

    /// Everything for the log: the internal context of the kind and the added detail.
    pub fn internal_message(&self) -> Option<String> {
        match (self.public.internal_context(), &self.internal) {
            (Some(a), Some(b)) => Some(format!("{a}: {b}")),
            (Some(a), None) => Some(a.to_string()),
            (None, Some(b)) => Some(b.clone()),
            (None, None) => None,
        }
    }

    pub fn reason(&self) -> Option<Reason> {
        self.reason
    }
}

/// The client-safe message only: an `Error` shown anywhere shows nothing internal.
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.public, f)
    }
}

impl std::error::Error for Error {}

/// Why a user token was refused, in the client's words: which check failed, never the
/// text of a dependency (a key-set fetch error goes to the log).
pub(crate) fn user_token_refusal(e: &crate::inbound::InboundError) -> String {
    use crate::inbound::InboundError;
    match e {
        InboundError::Discovery(_) => {
            "the user token was rejected: the issuer's signing keys could not be loaded".to_string()
        }
        e => format!("the user token was rejected: {e}"),
    }
}

/// `AccessDeniedException` for a user token that failed verification (see
/// [`user_token_refusal`]); the whole verification error goes to the log.
pub(crate) fn user_token_rejected(e: &crate::inbound::InboundError) -> Error {
    Error::new(ApiError::AccessDenied(user_token_refusal(e))).with_internal(e)
}

impl From<ApiError> for Error {
    fn from(e: ApiError) -> Self {
        Self::new(e)
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        Self::new(e.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_detail_stays_out_of_the_client_message() {
        let e = Error::internal("CryptoError: tag mismatch in envelope 42");
        assert_eq!(e.client_message(), "an internal error occurred");
        assert_eq!(e.to_string(), "an internal error occurred");
        assert!(
            e.internal_message()
                .unwrap_or_default()
                .contains("tag mismatch")
        );
        let e = Error::new(ApiError::field("x", "bad"))
            .with_internal("serde: expected `,` at line 1")
            .with_reason(Reason::SessionExpired);
        assert!(!e.client_message().contains("serde"));
        assert!(e.internal_message().unwrap_or_default().contains("serde"));
        assert_eq!(e.reason().map(Reason::as_str), Some("session-expired"));
    }
}
