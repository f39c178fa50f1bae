//! One transport-agnostic error type. Each variant carries a message that is safe to show
//! the client; internal context (for the log only) travels separately.

use serde::Serialize;

/// Why a request failed validation (AgentCore's `ValidationExceptionReason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ValidationReason {
    CannotParse,
    FieldValidationFailed,
    IdempotentParameterMismatchException,
    EventInOtherSession,
    ResourceConflict,
}

/// One offending field (AgentCore's `ValidationExceptionField`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub name: String,
    pub message: String,
}

/// Every error the AgentCore-compatible API can answer. The HTTP mapping lives in the
/// service crate; here we only name the error and its client-safe message.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    Validation {
        message: String,
        reason: ValidationReason,
        fields: Vec<FieldError>,
    },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    AccessDenied(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Throttling(String),
    #[error("{0}")]
    ServiceQuotaExceeded(String),
    /// AgentCore's answer when the customer's own KMS key refuses to decrypt. Latchkey's
    /// keys are the server's: a stored value or key that does not open is
    /// [`ApiError::Internal`] (500, generic message, detail in the log), never this.
    #[error("{0}")]
    DecryptionFailure(String),
    /// AgentCore's answer when the customer's own KMS key refuses to encrypt; see
    /// [`ApiError::DecryptionFailure`].
    #[error("{0}")]
    EncryptionFailure(String),
    /// A dependency (database, key provider) is unavailable; safe to retry.
    #[error("the service is temporarily unavailable; retry the request")]
    Unavailable { internal: String },
    /// A bug or an unexpected state. `internal` is logged, never sent.
    #[error("an internal error occurred")]
    Internal { internal: String },
}

impl ApiError {
    /// The AgentCore error name (`x-amzn-ErrorType`, `__type`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Validation { .. } => "ValidationException",
            Self::Unauthorized(_) => "UnauthorizedException",
            Self::AccessDenied(_) => "AccessDeniedException",
            Self::NotFound(_) => "ResourceNotFoundException",
            Self::Conflict(_) => "ConflictException",
            Self::Throttling(_) => "ThrottlingException",
            Self::ServiceQuotaExceeded(_) => "ServiceQuotaExceededException",
            Self::DecryptionFailure(_) => "DecryptionFailure",
            Self::EncryptionFailure(_) => "EncryptionFailure",
            Self::Unavailable { .. } | Self::Internal { .. } => "InternalServerException",
        }
    }

    /// The HTTP status AgentCore uses for this error.
    pub fn status(&self) -> u16 {
        match self {
            Self::Validation { .. } => 400,
            Self::Unauthorized(_) => 401,
            Self::AccessDenied(_) => 403,
            Self::NotFound(_) => 404,
            Self::Conflict(_) => 409,
            Self::Throttling(_) => 429,
            Self::ServiceQuotaExceeded(_) => 402,
            Self::DecryptionFailure(_) | Self::EncryptionFailure(_) => 400,
            Self::Unavailable { .. } => 503,
            Self::Internal { .. } => 500,
        }
    }

    /// Context for the log (never sent to the client).
    pub fn internal_context(&self) -> Option<&str> {
        match self {
            Self::Unavailable { internal } | Self::Internal { internal } => Some(internal),
            _ => None,
        }
    }

    /// A single-field validation failure.
    pub fn field(name: impl Into<String>, message: impl Into<String>) -> Self {
        let name = name.into();
        let message = message.into();
        Self::Validation {
            message: format!(
                "1 validation error detected: Value at '{name}' failed to satisfy constraint: {message}"
            ),
            reason: ValidationReason::FieldValidationFailed,
            fields: vec![FieldError { name, message }],
        }
    }

    /// Several field failures at once.
    pub fn fields(fields: Vec<FieldError>) -> Self {
        let message = format!(
            "{} validation error{} detected: {}",
            fields.len(),
            if fields.len() == 1 { "" } else { "s" },
            fields
                .iter()
                .map(|f| format!(
                    "Value at '{}' failed to satisfy constraint: {}",
                    f.name, f.message
                ))
                .collect::<Vec<_>>()
                .join("; ")
        );
        Self::Validation {
            message,
            reason: ValidationReason::FieldValidationFailed,
            fields,
        }
    }

    /// The body could not be parsed at all.
    pub fn cannot_parse(message: impl Into<String>) -> Self {
        Self::Validation {
            message: message.into(),
            reason: ValidationReason::CannotParse,
            fields: vec![],
        }
    }

    pub fn internal(context: impl std::fmt::Display) -> Self {
        Self::Internal {
            internal: context.to_string(),
        }
    }

    pub fn unavailable(context: impl std::fmt::Display) -> Self {
        Self::Unavailable {
            internal: context.to_string(),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
