//! Data plane: workload access tokens and API keys, and the workload-access-token check
//! every data-plane call makes ([`verify_wat`]). OAuth2 tokens are in [`super::flows`].
//! Callers: admin credentials, or a workload credential acting for its own workload.
//! Every token issued and every refusal after authentication is an audit event.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use latchkey_api::data::{
    GetResourceApiKeyRequest, GetResourceApiKeyResponse, WorkloadAccessTokenRequest,
    WorkloadAccessTokenResponse,
};
use latchkey_core::UserPrincipal;
use latchkey_core::audit::Outcome;
use latchkey_core::validate::{Validator, is_jwt_shape};
use latchkey_core::wat::WatClaims;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::common::{check_provider_name, check_workload_name};
use crate::auth::DataPlane;
use crate::caller::Caller;
use crate::error::Result;
use crate::http_error::HttpResult;
use crate::services::workloads::UserAssertion;
use crate::state::AppState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UserMode {
    None,
    Jwt,
    UserId,
}

impl UserMode {
    fn action(self) -> &'static str {
        match self {
            Self::None => "GetWorkloadAccessToken",
            Self::Jwt => "GetWorkloadAccessTokenForJWT",
            Self::UserId => "GetWorkloadAccessTokenForUserId",
        }
    }
}

async fn record(
    state: &AppState,
    caller: &Caller,
    action: &str,
    workload: Option<&str>,
    user: Option<&UserPrincipal>,
    outcome: Outcome,
    detail: Value,
) {
    state
        .auditor
        .record(Some(caller), action, workload, user, None, outcome, detail)
        .await;
}

async fn issue_workload_token(
    state: &AppState,
    caller: &Caller,
    body: WorkloadAccessTokenRequest,
    mode: UserMode,
) -> HttpResult<Json<WorkloadAccessTokenResponse>> {
    let action = mode.action();
    let mut v = Validator::new();
    check_workload_name(&mut v, "workloadName", &body.workload_name);
    match mode {
        UserMode::None => {}
        UserMode::Jwt => match &body.user_token {
            Some(t) => {
                if v.length("userToken", t.expose_secret(), 1, 131_072) {
                    v.check("userToken", is_jwt_shape(t.expose_secret()), "Member must satisfy regular expression pattern: [A-Za-z0-9-_=]+.[A-Za-z0-9-_=]+.[A-Za-z0-9-_=]+");
                }
            }
            None => v.fail("userToken", "Member must not be null"),
        },
        UserMode::UserId => match &body.user_id {
            Some(u) => {
                v.user_id("userId", u);
            }
            None => v.fail("userId", "Member must not be null"),
        },
    }
    v.finish()?;
    let user = match mode {
        UserMode::None => UserAssertion::None,
        UserMode::UserId => UserAssertion::UserId(body.user_id.unwrap_or_default()),
        UserMode::Jwt => UserAssertion::Token(
            body.user_token
                .unwrap_or_else(|| SecretString::from(String::new())),
        ),
    };
    let token = state
        .workloads
        .issue(caller, action, &body.workload_name, &user)
        .await?;
    Ok(Json(WorkloadAccessTokenResponse {
        workload_access_token: Some(SecretString::from(token)),
    }))
}

pub async fn get_workload_access_token(
    State(state): State<AppState>,
    req: DataPlane<WorkloadAccessTokenRequest>,
) -> HttpResult<Json<WorkloadAccessTokenResponse>> {
    issue_workload_token(&state, &req.caller, req.body, UserMode::None).await
}

pub async fn get_workload_access_token_for_jwt(
    State(state): State<AppState>,
    req: DataPlane<WorkloadAccessTokenRequest>,
) -> HttpResult<Json<WorkloadAccessTokenResponse>> {
    issue_workload_token(&state, &req.caller, req.body, UserMode::Jwt).await
}

pub async fn get_workload_access_token_for_user_id(
    State(state): State<AppState>,
    req: DataPlane<WorkloadAccessTokenRequest>,
) -> HttpResult<Json<WorkloadAccessTokenResponse>> {
    issue_workload_token(&state, &req.caller, req.body, UserMode::UserId).await
}

/// Verify a WAT presented to the data plane (see [`Workloads::verify_wat`]).
///
/// [`Workloads::verify_wat`]: crate::services::workloads::Workloads::verify_wat
pub(crate) async fn verify_wat(
    state: &AppState,
    caller: &Caller,
    token: &str,
    action: &str,
) -> Result<Arc<WatClaims>> {
    state.workloads.verify_wat(caller, token, action).await
}

pub(crate) fn check_wat_field(v: &mut Validator, token: &str) {
    v.length("workloadIdentityToken", token, 1, 131_072);
}

pub async fn get_resource_api_key(
    State(state): State<AppState>,
    req: DataPlane<GetResourceApiKeyRequest>,
) -> HttpResult<Json<GetResourceApiKeyResponse>> {
    const ACTION: &str = "GetResourceApiKey";
    let DataPlane { caller, body } = req;
    let mut v = Validator::new();
    check_wat_field(&mut v, body.workload_identity_token.expose_secret());
    check_provider_name(
        &mut v,
        "resourceCredentialProviderName",
        &body.resource_credential_provider_name,
    );
    v.finish()?;
    let claims = verify_wat(
        &state,
        &caller,
        body.workload_identity_token.expose_secret(),
        ACTION,
    )
    .await?;
    let provider = &body.resource_credential_provider_name;
    let key = state.registry.open_api_key(provider).await?;
    record(
        &state,
        &caller,
        ACTION,
        Some(&claims.sub),
        claims.user.as_ref(),
        Outcome::Success,
        json!({"provider": provider}),
    )
    .await;
    Ok(Json(GetResourceApiKeyResponse { api_key: Some(key) }))
}
