//! The HTTP interface of the identity service, declared in one place.

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};
use latchkey_core::ApiError;
use latchkey_telemetry::{Service, within};
use serde_json::{Value, json};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;

use crate::auth::{Admin, DataPlane, MAX_BODY_BYTES, too_large};
use crate::handlers::{control, data, flows, grants, providers};
use crate::http_error::{HttpError, HttpResult};
use crate::state::AppState;

/// Every AgentCore operation the identity service answers, as the service models declare
/// it: (operation, HTTP method, request URI). The router is built from this table, and a
/// test checks it against the committed model subset (`spec/models/*.json`) both ways.
/// Operations Latchkey does not offer answer a typed refusal ([`unsupported`]).
pub const OPERATIONS: &[(&str, &str, &str)] = &[
    // Control plane: workload identities.
    (
        "CreateWorkloadIdentity",
        "POST",
        "/identities/CreateWorkloadIdentity",
    ),
    (
        "GetWorkloadIdentity",
        "POST",
        "/identities/GetWorkloadIdentity",
    ),
    (
        "UpdateWorkloadIdentity",
        "POST",
        "/identities/UpdateWorkloadIdentity",
    ),
    (
        "DeleteWorkloadIdentity",
        "POST",
        "/identities/DeleteWorkloadIdentity",
    ),
    (
        "ListWorkloadIdentities",
        "POST",
        "/identities/ListWorkloadIdentities",
    ),
    // Control plane: OAuth2 credential providers.
    (
        "CreateOauth2CredentialProvider",
        "POST",
        "/identities/CreateOauth2CredentialProvider",
    ),
    (
        "GetOauth2CredentialProvider",
        "POST",
        "/identities/GetOauth2CredentialProvider",
    ),
    (
        "UpdateOauth2CredentialProvider",
        "POST",
        "/identities/UpdateOauth2CredentialProvider",
    ),
    (
        "DeleteOauth2CredentialProvider",
        "POST",
        "/identities/DeleteOauth2CredentialProvider",
    ),
    (
        "ListOauth2CredentialProviders",
        "POST",
        "/identities/ListOauth2CredentialProviders",
    ),
    // Control plane: API-key credential providers.
    (
        "CreateApiKeyCredentialProvider",
        "POST",
        "/identities/CreateApiKeyCredentialProvider",
    ),
    (
        "GetApiKeyCredentialProvider",
        "POST",
        "/identities/GetApiKeyCredentialProvider",
    ),
    (
        "UpdateApiKeyCredentialProvider",
        "POST",
        "/identities/UpdateApiKeyCredentialProvider",
    ),
    (
        "DeleteApiKeyCredentialProvider",
        "POST",
        "/identities/DeleteApiKeyCredentialProvider",
    ),
    (
        "ListApiKeyCredentialProviders",
        "POST",
        "/identities/ListApiKeyCredentialProviders",
    ),
    // Control plane: token vault.
    ("GetTokenVault", "POST", "/identities/get-token-vault"),
    (
        "SetTokenVaultCMK",
        "POST",
        "/identities/set-token-vault-cmk",
    ),
    (
        "ResetTokenVaultKeyMaterial",
        "POST",
        "/identities/reset-token-vault-key-material",
    ),
    // Control plane: tags (the ARN is one percent-encoded path segment).
    ("TagResource", "POST", "/tags/{resourceArn}"),
    ("UntagResource", "DELETE", "/tags/{resourceArn}"),
    ("ListTagsForResource", "GET", "/tags/{resourceArn}"),
    // Not offered by Latchkey: a clear, typed refusal.
    (
        "CreateConsentPortal",
        "POST",
        "/identities/CreateConsentPortal",
    ),
    ("GetConsentPortal", "POST", "/identities/GetConsentPortal"),
    (
        "UpdateConsentPortal",
        "POST",
        "/identities/UpdateConsentPortal",
    ),
    (
        "DeleteConsentPortal",
        "POST",
        "/identities/DeleteConsentPortal",
    ),
    (
        "ListConsentPortals",
        "POST",
        "/identities/ListConsentPortals",
    ),
    (
        "CreatePaymentCredentialProvider",
        "POST",
        "/identities/CreatePaymentCredentialProvider",
    ),
    (
        "GetPaymentCredentialProvider",
        "POST",
        "/identities/GetPaymentCredentialProvider",
    ),
    (
        "UpdatePaymentCredentialProvider",
        "POST",
        "/identities/UpdatePaymentCredentialProvider",
    ),
    (
        "DeletePaymentCredentialProvider",
        "POST",
        "/identities/DeletePaymentCredentialProvider",
    ),
    (
        "ListPaymentCredentialProviders",
        "POST",
        "/identities/ListPaymentCredentialProviders",
    ),
    ("PutResourcePolicy", "PUT", "/resourcepolicy/{resourceArn}"),
    ("GetResourcePolicy", "GET", "/resourcepolicy/{resourceArn}"),
    (
        "DeleteResourcePolicy",
        "DELETE",
        "/resourcepolicy/{resourceArn}",
    ),
    // Data plane.
    (
        "GetWorkloadAccessToken",
        "POST",
        "/identities/GetWorkloadAccessToken",
    ),
    (
        "GetWorkloadAccessTokenForJWT",
        "POST",
        "/identities/GetWorkloadAccessTokenForJWT",
    ),
    (
        "GetWorkloadAccessTokenForUserId",
        "POST",
        "/identities/GetWorkloadAccessTokenForUserId",
    ),
    ("GetResourceApiKey", "POST", "/identities/api-key"),
    ("GetResourceOauth2Token", "POST", "/identities/oauth2/token"),
    (
        "CompleteResourceTokenAuth",
        "POST",
        "/identities/CompleteResourceTokenAuth",
    ),
    (
        "GetResourcePaymentToken",
        "POST",
        "/identities/payment/token",
    ),
];

/// The handler of one operation in [`OPERATIONS`]; `None` for a name it does not know
/// (a table entry without a handler is a programming error, refused when the router is
/// built rather than routed to a refusal by default).
fn handler(operation: &str) -> Option<MethodRouter<AppState>> {
    Some(match operation {
        "CreateWorkloadIdentity" => post(control::create_workload_identity),
        "GetWorkloadIdentity" => post(control::get_workload_identity),
        "UpdateWorkloadIdentity" => post(control::update_workload_identity),
        "DeleteWorkloadIdentity" => post(control::delete_workload_identity),
        "ListWorkloadIdentities" => post(control::list_workload_identities),
        "CreateOauth2CredentialProvider" => post(providers::create_oauth2_provider),
        "GetOauth2CredentialProvider" => post(providers::get_oauth2_provider),
        "UpdateOauth2CredentialProvider" => post(providers::update_oauth2_provider),
        "DeleteOauth2CredentialProvider" => post(providers::delete_oauth2_provider),
        "ListOauth2CredentialProviders" => post(providers::list_oauth2_providers),
        "CreateApiKeyCredentialProvider" => post(control::create_api_key_provider),
        "GetApiKeyCredentialProvider" => post(control::get_api_key_provider),
        "UpdateApiKeyCredentialProvider" => post(control::update_api_key_provider),
        "DeleteApiKeyCredentialProvider" => post(control::delete_api_key_provider),
        "ListApiKeyCredentialProviders" => post(control::list_api_key_providers),
        "GetTokenVault" => post(control::get_token_vault),
        "SetTokenVaultCMK" => post(control::set_token_vault_cmk),
        "ResetTokenVaultKeyMaterial" => post(control::reset_token_vault_key_material),
        "TagResource" => post(control::tag_resource),
        "UntagResource" => delete(control::untag_resource),
        "ListTagsForResource" => get(control::list_tags_for_resource),
        "GetWorkloadAccessToken" => post(data::get_workload_access_token),
        "GetWorkloadAccessTokenForJWT" => post(data::get_workload_access_token_for_jwt),
        "GetWorkloadAccessTokenForUserId" => post(data::get_workload_access_token_for_user_id),
        "GetResourceApiKey" => post(data::get_resource_api_key),
        "GetResourceOauth2Token" => post(flows::get_resource_oauth2_token),
        "CompleteResourceTokenAuth" => post(flows::complete_resource_token_auth),
        "GetResourcePaymentToken" => post(data_unsupported),
        "PutResourcePolicy" => put(unsupported),
        "GetResourcePolicy" => get(unsupported),
        "DeleteResourcePolicy" => delete(unsupported),
        "CreateConsentPortal"
        | "GetConsentPortal"
        | "UpdateConsentPortal"
        | "DeleteConsentPortal"
        | "ListConsentPortals"
        | "CreatePaymentCredentialProvider"
        | "GetPaymentCredentialProvider"
        | "UpdatePaymentCredentialProvider"
        | "DeletePaymentCredentialProvider"
        | "ListPaymentCredentialProviders" => post(unsupported),
        _ => return None,
    })
}

/// The axum path of a model request URI: a `{resourceArn}` label becomes a wildcard (the
/// ARN is one percent-encoded segment, which may still hold `/` once decoded by clients).
fn axum_path(uri: &str) -> String {
    uri.replace("{resourceArn}", "{*resource_arn}")
}

/// Build the router. Tests drive it without a socket; the binary serves it.
pub fn app(state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-amzn-requestid");
    // One method router per path (the tag operations share theirs).
    let mut paths: Vec<(String, MethodRouter<AppState>)> = Vec::new();
    for (operation, _, uri) in OPERATIONS {
        let Some(routes) = handler(operation) else {
            panic!("operation {operation} is in OPERATIONS but has no handler");
        };
        let path = axum_path(uri);
        match paths.iter_mut().find(|(p, _)| *p == path) {
            Some((_, merged)) => *merged = std::mem::take(merged).merge(routes),
            None => paths.push((path, routes)),
        }
    }
    let mut router = Router::new()
        .route("/ping", get(ping))
        .route("/ready", get(ready))
        .route("/metrics", get(latchkey_telemetry::metrics))
        .route("/.well-known/jwks.json", get(jwks));
    for (path, routes) in paths {
        router = router.route(&path, routes);
    }
    let router = router
        // Browser endpoints of the 3-legged flow (Latchkey's, not AgentCore operations).
        // GET only: axum also routes HEAD to GET handlers, and a link checker's HEAD
        // must not consume a callback's single-use state.
        // Latchkey's own operations on one user's grants (the connections page).
        .route("/latchkey/ListUserGrants", post(grants::list_user_grants))
        .route("/latchkey/RevokeUserGrant", post(grants::revoke_user_grant))
        .route(
            "/identities/oauth2/authorize",
            get(flows::authorize).layer(axum::middleware::from_fn(get_only)),
        )
        .route(
            "/identities/oauth2/callback/{id}",
            get(flows::callback).layer(axum::middleware::from_fn(get_only)),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    latchkey_telemetry::instrument(router, Service::Identity, operation_name)
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

/// The AgentCore operation of a matched route (`method`, route template), for metrics.
fn operation_name(method: &Method, route: &str) -> Option<&'static str> {
    static BY_ROUTE: OnceLock<HashMap<(String, String), &'static str>> = OnceLock::new();
    let table = BY_ROUTE.get_or_init(|| {
        OPERATIONS
            .iter()
            .map(|(op, m, uri)| (((*m).to_string(), axum_path(uri)), *op))
            .collect()
    });
    table
        .get(&(method.as_str().to_string(), route.to_string()))
        .copied()
}

/// How long one readiness check may take.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Readiness (`GET /ready`): the database answers within two seconds (checked afresh, not
/// from the `/ping` cache) and the key-encryption key seals and opens a value. 503 with
/// the failing check otherwise; the reasons are fixed words, never an error's text.
async fn ready(State(state): State<AppState>) -> Response {
    let database = within(READY_TIMEOUT, async {
        state.store.ping().await.map_err(|e| {
            tracing::warn!(error = %e, "readiness: database unavailable");
            "database unavailable"
        })
    })
    .await;
    let keys = within(READY_TIMEOUT, async {
        let aad = b"latchkey-readiness";
        let sealed = latchkey_core::crypto::encrypt(state.keys.as_ref(), aad, b"ready").await;
        let opened = match sealed {
            Ok(envelope) => {
                latchkey_core::crypto::decrypt(state.keys.as_ref(), aad, &envelope).await
            }
            Err(e) => Err(e),
        };
        match opened {
            Ok(bytes) if bytes.as_slice() == b"ready" => Ok(()),
            Ok(_) => Err("key-encryption key unusable"),
            Err(e) => {
                tracing::warn!(error = %e, "readiness: key-encryption key unusable");
                Err("key-encryption key unusable")
            }
        }
    })
    .await;
    latchkey_telemetry::ready(&[("database", database), ("keys", keys)])
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_in_the_table_has_a_handler() {
        for (operation, _, _) in OPERATIONS {
            assert!(handler(operation).is_some(), "{operation} has no handler");
        }
        assert!(handler("NoSuchOperation").is_none());
    }
}
