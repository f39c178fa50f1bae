//! The HTTP interface of the identity service, declared in one place.

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use latchkey_core::ApiError;
use serde_json::{Value, json};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;

use crate::auth::{Admin, DataPlane, MAX_BODY_BYTES, too_large};
use crate::handlers::{control, data, flows, providers};
use crate::http_error::{HttpError, HttpResult};
use crate::state::AppState;

/// Build the router. Tests drive it without a socket; the binary serves it.
pub fn app(state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-amzn-requestid");
    Router::new()
        .route("/ping", get(ping))
        .route("/.well-known/jwks.json", get(jwks))
        // Control plane: workload identities.
        .route(
            "/identities/CreateWorkloadIdentity",
            post(control::create_workload_identity),
        )
        .route(
            "/identities/GetWorkloadIdentity",
            post(control::get_workload_identity),
        )
        .route(
            "/identities/UpdateWorkloadIdentity",
            post(control::update_workload_identity),
        )
        .route(
            "/identities/DeleteWorkloadIdentity",
            post(control::delete_workload_identity),
        )
        .route(
            "/identities/ListWorkloadIdentities",
            post(control::list_workload_identities),
        )
        // Control plane: OAuth2 credential providers.
        .route(
            "/identities/CreateOauth2CredentialProvider",
            post(providers::create_oauth2_provider),
        )
        .route(
            "/identities/GetOauth2CredentialProvider",
            post(providers::get_oauth2_provider),
        )
        .route(
            "/identities/UpdateOauth2CredentialProvider",
            post(providers::update_oauth2_provider),
        )
        .route(
            "/identities/DeleteOauth2CredentialProvider",
            post(providers::delete_oauth2_provider),
        )
        .route(
            "/identities/ListOauth2CredentialProviders",
            post(providers::list_oauth2_providers),
        )
        // Control plane: API-key credential providers.
        .route(
            "/identities/CreateApiKeyCredentialProvider",
            post(control::create_api_key_provider),
        )
        .route(
            "/identities/GetApiKeyCredentialProvider",
            post(control::get_api_key_provider),
        )
        .route(
            "/identities/UpdateApiKeyCredentialProvider",
            post(control::update_api_key_provider),
        )
        .route(
            "/identities/DeleteApiKeyCredentialProvider",
            post(control::delete_api_key_provider),
        )
        .route(
            "/identities/ListApiKeyCredentialProviders",
            post(control::list_api_key_providers),
        )
        // Control plane: token vault.
        .route(
            "/identities/get-token-vault",
            post(control::get_token_vault),
        )
        .route(
            "/identities/set-token-vault-cmk",
            post(control::set_token_vault_cmk),
        )
        .route(
            "/identities/reset-token-vault-key-material",
            post(control::reset_token_vault_key_material),
        )
        // Control plane: tags (the ARN is one percent-encoded path segment).
        .route(
            "/tags/{*resource_arn}",
            post(control::tag_resource)
                .delete(control::untag_resource)
                .get(control::list_tags_for_resource),
        )
        // AgentCore operations Latchkey does not offer: a clear, typed refusal.
        .route("/identities/CreateConsentPortal", post(unsupported))
        .route("/identities/GetConsentPortal", post(unsupported))
        .route("/identities/UpdateConsentPortal", post(unsupported))
        .route("/identities/DeleteConsentPortal", post(unsupported))
        .route("/identities/ListConsentPortals", post(unsupported))
        .route(
            "/identities/CreatePaymentCredentialProvider",
            post(unsupported),
        )
        .route(
            "/identities/GetPaymentCredentialProvider",
            post(unsupported),
        )
        .route(
            "/identities/UpdatePaymentCredentialProvider",
            post(unsupported),
        )
        .route(
            "/identities/DeletePaymentCredentialProvider",
            post(unsupported),
        )
        .route(
            "/identities/ListPaymentCredentialProviders",
            post(unsupported),
        )
        .route(
            "/resourcepolicy/{*resource_arn}",
            get(unsupported).put(unsupported).delete(unsupported),
        )
        // Data plane.
        .route(
            "/identities/GetWorkloadAccessToken",
            post(data::get_workload_access_token),
        )
        .route(
            "/identities/GetWorkloadAccessTokenForJWT",
            post(data::get_workload_access_token_for_jwt),
        )
        .route(
            "/identities/GetWorkloadAccessTokenForUserId",
            post(data::get_workload_access_token_for_user_id),
        )
        .route("/identities/api-key", post(data::get_resource_api_key))
        .route(
            "/identities/oauth2/token",
            post(flows::get_resource_oauth2_token),
        )
        .route(
            "/identities/CompleteResourceTokenAuth",
            post(flows::complete_resource_token_auth),
        )
        // Browser endpoints of the 3-legged flow.
        // GET only: axum also routes HEAD to GET handlers, and a link checker's HEAD
        // must not consume a callback's single-use state.
        .route(
            "/identities/oauth2/authorize",
            get(flows::authorize).layer(axum::middleware::from_fn(get_only)),
        )
        .route(
            "/identities/oauth2/callback/{id}",
            get(flows::callback).layer(axum::middleware::from_fn(get_only)),
        )
        .route("/identities/payment/token", post(data_unsupported))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::map_response(map_body_limit))
        .layer(SetSensitiveRequestHeadersLayer::new([
            axum::http::header::AUTHORIZATION,
            HeaderName::from_static("x-amz-security-token"),
        ]))
        // Spans name the path only: query strings carry authorization codes and state.
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                tracing::debug_span!("request", method = %req.method(), path = %req.uri().path())
            }),
        )
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}

/// Health: the database is checked at most once a second (so a load balancer's probes
/// cost nothing), and the answer is 503 while it is unreachable. `auditChain` is
/// `broken` once this process found the audit chain broken (at start or while appending).
async fn ping(State(state): State<AppState>) -> Response {
    let healthy = match state.health.get(&()) {
        Some(ok) => ok,
        None => {
            let ok = match state.store.ping().await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "health check: database unavailable");
                    false
                }
            };
            state.health.put((), ok);
            ok
        }
    };
    // A broken audit chain is reported, not fatal: the service keeps serving and recording.
    let chain = if state.audit.is_chain_broken() {
        "broken"
    } else {
        "intact"
    };
    if healthy {
        Json(json!({"status": "Healthy", "timeOfLastUpdate": state.clock.now_secs(), "auditChain": chain}))
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "Unhealthy", "reason": "database unavailable"})),
        )
            .into_response()
    }
}

async fn jwks(State(state): State<AppState>) -> Response {
    let mut r = Json(state.wat.jwks()).into_response();
    r.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    r
}

/// Refuse HEAD on browser endpoints whose GET changes state.
async fn get_only(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if req.method() == axum::http::Method::HEAD {
        return crate::pages::harden(method_not_allowed().await);
    }
    next.run(req).await
}

async fn not_found() -> Response {
    HttpError::from(ApiError::NotFound("no such operation: unknown path".into())).into_response()
}

async fn method_not_allowed() -> Response {
    let body = json!({"__type": "ValidationException", "message": "method not allowed for this path", "reason": "CannotParse", "fieldList": []});
    let mut r = (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response();
    r.headers_mut().insert(
        "x-amzn-ErrorType",
        HeaderValue::from_static("ValidationException"),
    );
    r
}

/// Axum answers an over-limit body with a plain-text 413; give it our JSON shape.
async fn map_body_limit(response: Response) -> Response {
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE
        && !response.headers().contains_key("x-amzn-ErrorType")
    {
        return too_large();
    }
    response
}

async fn unsupported(_: Admin<Value>) -> HttpResult<Response> {
    Err(ApiError::cannot_parse("this AgentCore operation is not supported by Latchkey").into())
}

async fn data_unsupported(_: DataPlane<Value>) -> HttpResult<Response> {
    Err(ApiError::cannot_parse("this AgentCore operation is not supported by Latchkey").into())
}
