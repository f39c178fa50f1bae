//! The one mapping from [`ApiError`] to an HTTP response in AgentCore's shape:
//! status, `x-amzn-ErrorType`, and `{"__type", "message"}` (+ `reason`, `fieldList` for
//! `ValidationException`). Internal context is logged here, once, and never sent.

use axum::Json;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use latchkey_core::ApiError;

/// Wrapper so handlers can `?` an [`ApiError`].
#[derive(Debug)]
pub struct HttpError(pub ApiError);

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl From<latchkey_store::StoreError> for HttpError {
    fn from(e: latchkey_store::StoreError) -> Self {
        Self(e.into())
    }
}

pub type HttpResult<T> = Result<T, HttpError>;

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let e = self.0;
        if let Some(internal) = e.internal_context() {
            tracing::error!(error.type = e.name(), error.internal = internal, "request failed");
        } else {
            tracing::debug!(error.type = e.name(), error.message = %e, "request refused");
        }
        let name = e.name();
        let mut body = serde_json::json!({"__type": name, "message": e.to_string()});
        if let ApiError::Validation { reason, fields, .. } = &e {
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
}
