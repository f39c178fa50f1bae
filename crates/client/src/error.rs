//! The client's one error type, and how a service error is read off the wire.

use std::fmt;

/// Everything a call can fail with.
///
/// No variant ever carries a secret: not the credentials, not a token from a request or
/// a response, not a response body other than the service's own `message`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The service answered with an error (`x-amzn-ErrorType` / `__type`, and `message`).
    #[error("{kind} (HTTP {status}): {message}")]
    Service {
        /// The AgentCore error name, typed.
        kind: ErrorKind,
        /// The HTTP status code.
        status: u16,
        /// The service's message (`message` or `Message`); empty when it sent none.
        message: String,
        /// The `x-amzn-RequestId` response header, when present.
        request_id: Option<String>,
        /// Latchkey's machine-readable reason (`x-latchkey-reason`), when it sent one:
        /// decide on this, never on `message`.
        reason: Option<Reason>,
    },
    /// The request could not be sent or the response could not be read (connection
    /// refused, TLS, reset…).
    #[error("transport error: {0}")]
    Transport(#[source] reqwest::Error),
    /// The request took longer than the client's timeout.
    #[error("the request timed out")]
    Timeout,
    /// The caller's cancellation signal fired (see [`crate::Client::poll_resource_token`]).
    #[error("cancelled")]
    Cancelled,
    /// The authorization session failed: the user refused consent, the provider answered
    /// with an error, a different user tried to complete it, or it expired.
    #[error("the authorization session {session_uri} failed")]
    SessionFailed {
        /// The session that failed.
        session_uri: String,
        /// Why, when the service said so (`x-latchkey-reason` on the `FAILED` answer):
        /// [`Reason::SessionCancelled`] when another account opened the link,
        /// [`Reason::SessionExpired`] when it took too long.
        reason: Option<Reason>,
    },
    /// The poller's deadline passed before a token arrived.
    #[error("no token before the polling deadline (session {session_uri})")]
    Deadline {
        /// The session that was still in progress.
        session_uri: String,
    },
    /// While polling, the service asked for a new user consent (for example because the
    /// stored grant was revoked in the meantime). The new session must be shown to the
    /// user and polled instead.
    #[error("a new user consent is required (session {session_uri})")]
    ConsentRequired {
        /// The new authorization URL to show to the user.
        authorization_url: String,
        /// The new session.
        session_uri: String,
    },
    /// The service answered 2xx with a body this client does not understand.
    #[error("unexpected response from the service: {0}")]
    InvalidResponse(String),
    /// The client or a request was set up wrongly (no credentials, a bad endpoint, a poll
    /// without `session_uri`…).
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl Error {
    /// Whether the same request may succeed if sent again later: transport failures,
    /// timeouts, HTTP 5xx and throttling.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Service { kind, status, .. } => {
                *status >= 500 || matches!(kind, ErrorKind::Throttling)
            }
            Error::Transport(_) | Error::Timeout => true,
            _ => false,
        }
    }

    /// The service error kind, when this is a [`Error::Service`].
    pub fn kind(&self) -> Option<&ErrorKind> {
        match self {
            Error::Service { kind, .. } => Some(kind),
            _ => None,
        }
    }

    pub(crate) fn from_reqwest(e: reqwest::Error) -> Self {
        if e.is_timeout() {
            Error::Timeout
        } else {
            Error::Transport(e)
        }
    }
}

/// The AgentCore error names (`x-amzn-ErrorType`), typed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// `UnauthorizedException` (401): no, unknown or badly signed credentials.
    Unauthorized,
    /// `AccessDeniedException` (403): a valid caller without permission.
    AccessDenied,
    /// `ValidationException` (400): the request breaks a constraint.
    Validation,
    /// `ResourceNotFoundException` (404).
    ResourceNotFound,
    /// `ConflictException` (409).
    Conflict,
    /// `ThrottlingException` (429).
    Throttling,
    /// `InternalServerException` (500).
    Internal,
    /// `ServiceQuotaExceededException` (402).
    ServiceQuotaExceeded,
    /// `ResourceLimitExceededException` (400).
    ResourceLimitExceeded,
    /// `DecryptionFailure` (400).
    DecryptionFailure,
    /// `EncryptionFailure` (400).
    EncryptionFailure,
    /// `ConcurrentModificationException` (409).
    ConcurrentModification,
    /// Any other code, as sent (or the HTTP status when the service sent no code).
    Other(String),
}

impl ErrorKind {
    /// The kind for a wire error code (`AccessDeniedException`, …).
    pub fn from_code(code: &str) -> Self {
        match code {
            "UnauthorizedException" => Self::Unauthorized,
            "AccessDeniedException" => Self::AccessDenied,
            "ValidationException" => Self::Validation,
            "ResourceNotFoundException" => Self::ResourceNotFound,
            "ConflictException" => Self::Conflict,
            "ThrottlingException" => Self::Throttling,
            "InternalServerException" => Self::Internal,
            "ServiceQuotaExceededException" => Self::ServiceQuotaExceeded,
            "ResourceLimitExceededException" => Self::ResourceLimitExceeded,
            "DecryptionFailure" => Self::DecryptionFailure,
            "EncryptionFailure" => Self::EncryptionFailure,
            "ConcurrentModificationException" => Self::ConcurrentModification,
            other => Self::Other(other.to_string()),
        }
    }

    /// The wire error code.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Unauthorized => "UnauthorizedException",
            Self::AccessDenied => "AccessDeniedException",
            Self::Validation => "ValidationException",
            Self::ResourceNotFound => "ResourceNotFoundException",
            Self::Conflict => "ConflictException",
            Self::Throttling => "ThrottlingException",
            Self::Internal => "InternalServerException",
            Self::ServiceQuotaExceeded => "ServiceQuotaExceededException",
            Self::ResourceLimitExceeded => "ResourceLimitExceededException",
            Self::DecryptionFailure => "DecryptionFailure",
            Self::EncryptionFailure => "EncryptionFailure",
            Self::ConcurrentModification => "ConcurrentModificationException",
            Self::Other(code) => code,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The longest service message kept (in characters); longer ones are cut.
const MAX_MESSAGE_CHARS: usize = 1024;

/// The response header carrying Latchkey's machine-readable reason: on an error, and on a
/// `GetResourceOauth2Token` answer `sessionStatus: FAILED`.
pub const REASON_HEADER: &str = "x-latchkey-reason";

/// Why Latchkey refused a call, beyond the AgentCore error name: typed, for services that
/// must tell cases apart (AgentCore clients ignore the header).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// `session-expired`: the authorization session expired before it was completed.
    SessionExpired,
    /// `session-cancelled`: another account opened the session's link, so the session was
    /// cancelled to protect the user who started it; nothing was granted.
    SessionCancelled,
    /// Any other reason, as sent (at most 64 characters of `[a-z0-9-]`).
    Other(String),
}

impl Reason {
    /// The reason for a header value.
    pub fn from_header(value: &str) -> Option<Self> {
        let value: String = value
            .trim()
            .chars()
            .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
            .take(64)
            .collect();
        match value.as_str() {
            "" => None,
            "session-expired" => Some(Self::SessionExpired),
            "session-cancelled" => Some(Self::SessionCancelled),
            _ => Some(Self::Other(value)),
        }
    }
}

/// Read an error response the way botocore does: the code from the `x-amzn-ErrorType`
/// header (text before `:`), else body `__type` (text after `#`), else body `code`, else
/// the HTTP status; the message from `message` or `Message`. A body that is not JSON is
/// never copied into the error (it could be anything, a proxy's page or an echo).
pub(crate) fn service_error(
    status: u16,
    header_code: Option<&str>,
    request_id: Option<String>,
    reason: Option<&str>,
    body: &[u8],
) -> Error {
    let json: Option<serde_json::Map<String, serde_json::Value>> =
        serde_json::from_slice(body).ok();
    let field = |name: &str| -> Option<&str> {
        json.as_ref()
            .and_then(|m| m.get(name))
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
    };
    let code = header_code
        .map(|h| h.split(':').next().unwrap_or(h).trim())
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .or_else(|| field("__type").map(|t| t.rsplit('#').next().unwrap_or(t).to_string()))
        .or_else(|| field("code").map(str::to_string))
        .unwrap_or_else(|| status.to_string());
    let message = field("message")
        .or_else(|| field("Message"))
        .map(|m| m.chars().take(MAX_MESSAGE_CHARS).collect())
        .unwrap_or_default();
    Error::Service {
        kind: ErrorKind::from_code(&code),
        status,
        message,
        request_id,
        reason: reason.and_then(Reason::from_header),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_from_header_then_type_then_code_then_status() {
        let e = service_error(
            403,
            Some("AccessDeniedException:http://internal.amazon.com/"),
            None,
            None,
            br#"{"__type":"x#ValidationException","message":"no"}"#,
        );
        assert_eq!(e.kind(), Some(&ErrorKind::AccessDenied));
        let e = service_error(
            400,
            None,
            None,
            None,
            br#"{"__type":"a.b#ValidationException"}"#,
        );
        assert_eq!(e.kind(), Some(&ErrorKind::Validation));
        let e = service_error(429, None, None, None, br#"{"code":"ThrottlingException"}"#);
        assert!(e.is_retryable());
        let e = service_error(502, None, None, None, b"<html>bad gateway</html>");
        assert_eq!(e.kind(), Some(&ErrorKind::Other("502".into())));
        assert!(e.is_retryable());
        assert!(!e.to_string().contains("html"));
    }

    #[test]
    fn message_or_capital_message() {
        let e = service_error(404, None, None, None, br#"{"Message":"gone"}"#);
        assert!(matches!(e, Error::Service { ref message, .. } if message == "gone"));
        assert!(!e.is_retryable());
    }

    #[test]
    fn latchkey_reason_is_typed() {
        let e = service_error(
            400,
            None,
            None,
            Some("session-expired"),
            br#"{"__type":"ValidationException","message":"whatever"}"#,
        );
        assert!(matches!(
            e,
            Error::Service {
                reason: Some(Reason::SessionExpired),
                ..
            }
        ));
        let e = service_error(400, None, None, Some("session-cancelled"), b"{}");
        assert!(matches!(
            e,
            Error::Service {
                reason: Some(Reason::SessionCancelled),
                ..
            }
        ));
        let e = service_error(400, None, None, Some(" Odd<Value> "), b"{}");
        assert!(
            matches!(e, Error::Service { reason: Some(Reason::Other(ref r)), .. } if r == "ddalue")
        );
        let e = service_error(400, None, None, None, b"{}");
        assert!(matches!(e, Error::Service { reason: None, .. }));
    }
}
