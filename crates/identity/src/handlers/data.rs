//! Data plane: workload access tokens and API keys, and the workload-access-token check
//! every data-plane call makes ([`verify_wat`]). OAuth2 tokens are in [`super::flows`].
//! Callers: admin credentials, or a workload credential acting for its own workload.
//! Every token issued and every refusal after authentication is an audit event.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use latchkey_core::audit::Outcome;
use latchkey_core::crypto;
use latchkey_core::validate::{Validator, is_jwt_shape};
use latchkey_core::wat::{WatClaims, WatError};
use latchkey_core::{ApiError, UserPrincipal};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

use super::common::{check_provider_name, check_workload_name};
use crate::aad;
use crate::auth::DataPlane;
use crate::caller::Caller;
use crate::error::{Error, Result, user_token_rejected};
use crate::http_error::HttpResult;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadTokenRequest {
    workload_name: String,
    #[serde(default)]
    user_token: Option<SecretString>,
    #[serde(default)]
    user_id: Option<String>,
}

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
    body: WorkloadTokenRequest,
    mode: UserMode,
) -> HttpResult<Json<Value>> {
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
    let workload = body.workload_name.as_str();
    if let Err(e) = caller.require_workload(workload) {
        record(
            state,
            caller,
            action,
            Some(workload),
            None,
            Outcome::Denied,
            json!({"reason": "workload not allowed for caller"}),
        )
        .await;
        return Err(e.into());
    }
    let facts = state.workload_facts(workload).await?;
    let user: Option<UserPrincipal> = match mode {
        UserMode::None => None,
        UserMode::UserId => {
            // Validated above: 1 to 128 characters.
            let asserted = body
                .user_id
                .as_deref()
                .map(UserPrincipal::user_id)
                .transpose()
                .map_err(|_| {
                    ApiError::field("userId", "Member must have length between 1 and 128")
                })?;
            if !caller.is_admin() && !facts.allow_user_id {
                record(
                    state,
                    caller,
                    action,
                    Some(workload),
                    asserted.as_ref(),
                    Outcome::Denied,
                    json!({"reason": "user id trust not enabled for workload"}),
                )
                .await;
                return Err(ApiError::AccessDenied(format!(
                    "workload {workload:?} may not assert user ids: use GetWorkloadAccessTokenForJWT, or have an admin set the tag {}=true on the workload identity",
                    crate::state::ALLOW_USER_ID_TAG
                ))
                .into());
            }
            asserted
        }
        UserMode::Jwt => {
            let token = body
                .user_token
                .as_ref()
                .map(|t| t.expose_secret())
                .unwrap_or_default();
            match state
                .inbound
                .verify(token)
                .await
                .and_then(|u| u.principal())
            {
                Ok(user) => Some(user),
                Err(e) => {
                    record(
                        state,
                        caller,
                        action,
                        Some(workload),
                        None,
                        Outcome::Denied,
                        json!({"reason": e.to_string()}),
                    )
                    .await;
                    return Err(user_token_rejected(&e));
                }
            }
        }
    };
    let now = state.clock.now_secs();
    let (token, claims) = state
        .wat
        .issue(workload, user.as_ref(), now, state.config.wat_ttl_seconds)
        .map_err(Error::internal)?;
    record(
        state,
        caller,
        action,
        Some(workload),
        claims.user.as_ref(),
        Outcome::Success,
        json!({"jti": claims.jti, "exp": claims.exp}),
    )
    .await;
    Ok(Json(json!({"workloadAccessToken": token})))
}

pub async fn get_workload_access_token(
    State(state): State<AppState>,
    req: DataPlane<WorkloadTokenRequest>,
) -> HttpResult<Json<Value>> {
    issue_workload_token(&state, &req.caller, req.body, UserMode::None).await
}

pub async fn get_workload_access_token_for_jwt(
    State(state): State<AppState>,
    req: DataPlane<WorkloadTokenRequest>,
) -> HttpResult<Json<Value>> {
    issue_workload_token(&state, &req.caller, req.body, UserMode::Jwt).await
}

pub async fn get_workload_access_token_for_user_id(
    State(state): State<AppState>,
    req: DataPlane<WorkloadTokenRequest>,
) -> HttpResult<Json<Value>> {
    issue_workload_token(&state, &req.caller, req.body, UserMode::UserId).await
}

/// Verify a WAT presented to the data plane: signature, issuer, expiry, the caller may act
/// for its workload, and the workload still exists.
pub async fn verify_wat(
    state: &AppState,
    caller: &Caller,
    token: &str,
    action: &str,
) -> Result<Arc<WatClaims>> {
    let now = state.clock.now_secs();
    let verified = match state.verified_wats.get(token) {
        // A cached verification still has to be unexpired now.
        Some(claims) if claims.exp > now => Ok(claims),
        _ => state.wat.verify(token, now).map(|claims| {
            let claims = Arc::new(claims);
            state.verified_wats.put(token.to_string(), claims.clone());
            claims
        }),
    };
    let claims = match verified {
        Ok(c) => c,
        Err(e) => {
            record(
                state,
                caller,
                action,
                None,
                None,
                Outcome::Denied,
                json!({"reason": e.to_string()}),
            )
            .await;
            // Every refusal names the failed check; a key fault is the service's, not the
            // token's, and its text stays in the log.
            let public = match &e {
                WatError::Key(_) => "the workload access token was rejected".to_string(),
                e => format!("the workload access token was rejected: {e}"),
            };
            return Err(Error::new(ApiError::AccessDenied(public)).with_internal(e));
        }
    };
    if let Err(e) = caller.require_workload(&claims.sub) {
        record(
            state,
            caller,
            action,
            Some(&claims.sub),
            claims.user.as_ref(),
            Outcome::Denied,
            json!({"reason": "token belongs to another workload"}),
        )
        .await;
        return Err(e.into());
    }
    // Only a missing workload voids the token; a database outage stays a retry-safe 503.
    if let Err(e) = state.workload_facts(&claims.sub).await {
        if !matches!(e.public(), ApiError::NotFound(_)) {
            return Err(e);
        }
        record(
            state,
            caller,
            action,
            Some(&claims.sub),
            claims.user.as_ref(),
            Outcome::Denied,
            json!({"reason": "workload no longer exists"}),
        )
        .await;
        return Err(ApiError::AccessDenied(
            "the workload access token was rejected: its workload identity no longer exists".into(),
        )
        .into());
    }
    Ok(claims)
}

pub(crate) fn check_wat_field(v: &mut Validator, token: &str) {
    v.length("workloadIdentityToken", token, 1, 131_072);
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyRequest {
    workload_identity_token: SecretString,
    resource_credential_provider_name: String,
}

pub async fn get_resource_api_key(
    State(state): State<AppState>,
    req: DataPlane<ApiKeyRequest>,
) -> HttpResult<Json<Value>> {
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
    let envelope = match state.api_keys.get(provider.as_str()) {
        Some(hit) => hit,
        None => {
            let envelope = state
                .store
                .find_api_key_provider(provider)
                .await?
                .and_then(|r| r.secret_envelope)
                .map(Arc::new);
            state.api_keys.put(provider.clone(), envelope.clone());
            envelope
        }
    };
    let envelope = envelope.ok_or_else(|| {
        ApiError::NotFound(format!(
            "API key credential provider {provider:?} not found"
        ))
    })?;
    let key = crypto::decrypt_string(
        state.keys.as_ref(),
        aad::api_key_provider(provider).as_bytes(),
        &envelope,
    )
    .await
    .map_err(|e| {
        Error::internal(format!(
            "could not open the API key of the API key credential provider {provider:?}: {e}"
        ))
    })?;
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
    Ok(Json(json!({"apiKey": key.expose_secret()})))
}
