//! Caller authentication (SigV4 or bearer API key) and the request extractors that carry
//! privilege in their type: a handler taking [`Admin`] cannot be reached by a workload or
//! binding credential, and bodies are parsed only after the caller is authenticated and
//! authorized, so anonymous callers learn nothing from validation messages.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use latchkey_core::ApiError;
use latchkey_core::sigv4;
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

pub use crate::aad::credential as credential_aad;
pub use crate::caller::{Caller, Role};
pub use crate::credentials::{CredentialCache, LiveCredential};
use crate::error::Error;
use crate::http_error::HttpError;
use crate::state::AppState;

/// Largest request body accepted (1 MiB).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

fn unauthorized(why: &str) -> Error {
    ApiError::Unauthorized(format!("the request could not be authenticated: {why}")).into()
}

/// Authenticate a request from its parts and full body.
pub async fn authenticate(state: &AppState, parts: &Parts, body: &[u8]) -> Result<Caller, Error> {
    let mut values = parts
        .headers
        .get_all(axum::http::header::AUTHORIZATION)
        .iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(unauthorized(
            "exactly one Authorization header is required (SigV4 or Bearer)",
        ));
    };
    let value = value
        .to_str()
        .map_err(|_| unauthorized("malformed Authorization header"))?;
    if let Some(token) = value.strip_prefix("Bearer ") {
        return authenticate_bearer(state, token.trim()).await;
    }
    if value.starts_with("AWS4-HMAC-SHA256 ") {
        return authenticate_sigv4(state, parts, body, value).await;
    }
    Err(unauthorized("unsupported authorization scheme"))
}

async fn authenticate_bearer(state: &AppState, token: &str) -> Result<Caller, Error> {
    let (id, secret) = token
        .split_once(':')
        .ok_or_else(|| unauthorized("bearer key must be ACCESS_KEY_ID:SECRET"))?;
    let cred = state
        .credentials
        .load(id)
        .await?
        .ok_or_else(|| unauthorized("unknown or revoked access key"))?;
    if bool::from(
        cred.secret
            .expose_secret()
            .as_slice()
            .ct_eq(secret.as_bytes()),
    ) {
        Ok(Caller {
            access_key_id: id.to_string(),
            role: cred.role.clone(),
        })
    } else {
        tracing::info!(access_key_id = id, "bearer key rejected");
        Err(unauthorized("invalid bearer key"))
    }
}

async fn authenticate_sigv4(
    state: &AppState,
    parts: &Parts,
    body: &[u8],
    header: &str,
) -> Result<Caller, Error> {
    let auth = sigv4::parse_authorization(header).map_err(|e| unauthorized(&e.to_string()))?;
    let cred = state
        .credentials
        .load(&auth.access_key_id)
        .await?
        .ok_or_else(|| unauthorized("unknown or revoked access key"))?;
    let headers: Vec<(&str, std::borrow::Cow<'_, str>)> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), String::from_utf8_lossy(v.as_bytes())))
        .collect();
    let header_refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_ref())).collect();
    let request = sigv4::RequestParts {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers: &header_refs,
        body,
    };
    let now = time::OffsetDateTime::from_unix_timestamp(state.clock.now_secs())
        .map_err(ApiError::internal)?;
    let options = sigv4::VerifyOptions {
        service: "bedrock-agentcore",
        max_skew: time::Duration::minutes(5),
        now,
        normalize_path: true,
    };
    let key = zeroize::Zeroizing::new(cred.signing_key(&auth));
    match sigv4::verify_with_signing_key(&request, &auth, &key, &options) {
        Ok(()) => Ok(Caller {
            access_key_id: auth.access_key_id,
            role: cred.role.clone(),
        }),
        Err(e) => {
            tracing::info!(access_key_id = %auth.access_key_id, reason = %e, "SigV4 signature rejected");
            Err(unauthorized(&e.to_string()))
        }
    }
}

/// Parse a JSON body into `T`, mapping serde errors onto `ValidationException` without
/// echoing input values (they may be secrets).
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    // Every AgentCore request body is a JSON object (serde would also read a struct from an array).
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::cannot_parse(
            "the request body must be a JSON object",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        let text = e.to_string();
        if let Some(rest) = text.strip_prefix("missing field `") {
            let field = rest.split('`').next().unwrap_or_default();
            return ApiError::field(field, "Member must not be null");
        }
        ApiError::cannot_parse(format!(
            "the request body could not be parsed ({} error at line {} column {})",
            match e.classify() {
                serde_json::error::Category::Data => "type",
                serde_json::error::Category::Eof => "end-of-input",
                _ => "syntax",
            },
            e.line(),
            e.column()
        ))
    })
}

async fn read_body(parts: &Parts, body: axum::body::Body) -> Result<Bytes, Response> {
    let _ = parts;
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| too_large())
}

/// 413 in AgentCore's error shape.
pub fn too_large() -> Response {
    let mut r = crate::http_error::agentcore(&ApiError::cannot_parse(format!(
        "request body exceeds {MAX_BODY_BYTES} bytes"
    )));
    *r.status_mut() = axum::http::StatusCode::PAYLOAD_TOO_LARGE;
    r
}

/// Any authenticated caller, with its parsed body.
#[derive(Debug)]
pub struct Signed<T> {
    pub caller: Caller,
    pub body: T,
}

/// An admin or workload caller (never a binding credential), with its parsed body.
#[derive(Debug)]
pub struct DataPlane<T> {
    pub caller: Caller,
    pub body: T,
}

/// An admin or session-binding caller (`CompleteResourceTokenAuth`), with its parsed body.
#[derive(Debug)]
pub struct Binding<T> {
    pub caller: Caller,
    pub body: T,
}

/// An admin caller, with its parsed body.
#[derive(Debug)]
pub struct Admin<T> {
    pub caller: Caller,
    pub body: T,
}

/// Who may reach a handler; checked after authentication and before the body is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    /// Any authenticated caller (the handler decides).
    Any,
    /// Admin or workload credentials: data-plane token operations.
    DataPlane,
    /// Admin or binding credentials: completing an authorization session.
    Binding,
    /// Admin credentials only: the control plane.
    Admin,
}

async fn extract<T: DeserializeOwned>(
    req: Request,
    state: &AppState,
    gate: Gate,
) -> Result<(Caller, T, Parts), Response> {
    let (parts, body) = req.into_parts();
    let bytes = read_body(&parts, body).await?;
    let caller = authenticate(state, &parts, &bytes)
        .await
        .map_err(|e| HttpError::from(e).into_response())?;
    let allowed = match gate {
        Gate::Any => Ok(()),
        Gate::DataPlane => caller.require_data_plane(),
        Gate::Binding if matches!(caller.role, Role::Admin | Role::Binding) => Ok(()),
        Gate::Binding => Err(ApiError::AccessDenied(format!(
            "caller {} ({}) may not complete authorization sessions or manage users' grants: that needs a binding credential",
            caller.access_key_id, caller.role
        ))),
        Gate::Admin if caller.is_admin() => Ok(()),
        Gate::Admin => Err(ApiError::AccessDenied(format!(
            "caller {} ({}) is not allowed to use the control plane",
            caller.access_key_id, caller.role
        ))),
    };
    allowed.map_err(|e| HttpError::from(e).into_response())?;
    let body = parse_json(&bytes).map_err(|e| HttpError::from(e).into_response())?;
    Ok((caller, body, parts))
}

/// `FromRequest` for each body extractor: the caller must pass its gate.
macro_rules! gated_extractors {
    ($($extractor:ident => $gate:expr),+ $(,)?) => {
        $(
            impl<T: DeserializeOwned + Send> FromRequest<AppState> for $extractor<T> {
                type Rejection = Response;

                async fn from_request(
                    req: Request,
                    state: &AppState,
                ) -> Result<Self, Self::Rejection> {
                    let (caller, body, _) = extract(req, state, $gate).await?;
                    Ok(Self { caller, body })
                }
            }
        )+
    };
}

gated_extractors!(
    Signed => Gate::Any,
    Binding => Gate::Binding,
    DataPlane => Gate::DataPlane,
    Admin => Gate::Admin,
);

/// An admin caller of an operation whose members live in the path and query (tags).
#[derive(Debug)]
pub struct AdminParts {
    pub caller: Caller,
    pub parts: Parts,
    pub body: serde_json::Value,
}

impl FromRequest<AppState> for AdminParts {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (caller, body, parts) = extract(req, state, Gate::Admin).await?;
        Ok(Self {
            caller,
            parts,
            body,
        })
    }
}
