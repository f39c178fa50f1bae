//! The one mapping from [`Error`] to an HTTP response in AgentCore's shape: status,
//! `x-amzn-ErrorType`, and `{"__type", "message"}` (+ `reason`, `fieldList` for
//! `ValidationException`), plus [`REASON_HEADER`] when the error names a [`Reason`].
//! Internal context is logged here, once, and never sent.
//!
//! [`Reason`]: crate::error::Reason

use axum::Json;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use latchkey_core::ApiError;

use crate::error::{Error, REASON_HEADER};

/// Handlers answer `Result<_, HttpError>`: the service error, mapped below.
pub type HttpError = Error;

pub type HttpResult<T> = Result<T, HttpError>;

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        match self.internal_message() {
            Some(internal) => {
                // Refusals with detail for the log are not server faults: log them quietly.
                if self.public().internal_context().is_some() {
                    tracing::error!(error.type = self.kind(), error.internal = %internal, "request failed");
                } else {
                    tracing::info!(error.type = self.kind(), error.message = %self, error.internal = %internal, "request refused");
                }
            }
            None => {
                tracing::debug!(error.type = self.kind(), error.message = %self, "request refused")
            }
        }
        let mut response = agentcore(self.public());
        if let Some(reason) = self.reason() {
            response
                .headers_mut()
                .insert(REASON_HEADER, HeaderValue::from_static(reason.as_str()));
        }
        response
    }
}

/// The AgentCore JSON answer for a kind and client-safe message (nothing is logged).
pub fn agentcore(e: &ApiError) -> Response {
    let name = e.name();
    let mut body = serde_json::json!({"__type": name, "message": e.to_string()});
    if let ApiError::Validation { reason, fields, .. } = e {
        body["reason"] = serde_json::to_value(reason).unwrap_or_default();
        body["fieldList"] = serde_json::to_value(fields).unwrap_or_default();
    }
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, Json(body)).into_response();
    response
        .headers_mut()
        .insert("x-amzn-ErrorType", HeaderValue::from_static(name));
    if matches!(e, ApiError::Unavailable { .. } | ApiError::Throttling(_)) {
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from_static("1"));
    }
    response
}
