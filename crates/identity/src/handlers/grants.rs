//! Latchkey's operations on one user's grants (`latchkey_api::grants`): what a
//! connections page lists and revokes for its signed-in user. Binding or admin callers
//! only; the user is named by `userIdentifier` exactly as `CompleteResourceTokenAuth`
//! names them (a `userToken` is verified), so a caller sees and revokes the grants of the
//! user it vouches for, and nothing of anyone else.

use axum::Json;
use axum::extract::State;
use latchkey_api::epoch_seconds;
use latchkey_api::grants::{
    ListUserGrantsRequest, ListUserGrantsResponse, ProviderRevocation, RevokeUserGrantRequest,
    RevokeUserGrantResponse, UserGrant,
};
use latchkey_core::audit::Outcome;
use latchkey_core::validate::Validator;
use latchkey_core::{ApiError, UserPrincipal};
use latchkey_store::GrantKey;
use serde_json::json;

use super::common::{check_provider_name, check_workload_name};
use super::flows::user_identifier;
use crate::auth::Binding;
use crate::error::{Error, Result};
use crate::http_error::HttpResult;
use crate::services::sessions::CompletingUser;
use crate::state::AppState;

/// The most grants one user's list holds (one per workload and provider).
const MAX_USER_GRANTS: i64 = 1000;

/// The user a checked `userIdentifier` names (a token is verified; its refusal is
/// `AccessDeniedException`, as at completion).
async fn principal(state: &AppState, identifier: &CompletingUser) -> Result<UserPrincipal> {
    state
        .sessions
        .completing_user(identifier)
        .await
        .map_err(|(public, internal)| {
            Error::new(ApiError::AccessDenied(public)).with_internal(internal)
        })
}

/// `POST /latchkey/ListUserGrants`.
pub async fn list_user_grants(
    State(state): State<AppState>,
    req: Binding<ListUserGrantsRequest>,
) -> HttpResult<Json<ListUserGrantsResponse>> {
    let mut v = Validator::new();
    let identifier = user_identifier(&mut v, req.body.user_identifier);
    v.finish()?;
    let Some(identifier) = identifier else {
        return Err(ApiError::cannot_parse("userIdentifier is required").into());
    };
    let user = principal(&state, &identifier).await?;
    let grants = state
        .store
        .user_grants(&user, MAX_USER_GRANTS)
        .await
        .map_err(Error::from)?;
    let grants = grants
        .into_iter()
        .map(|g| UserGrant {
            credential_provider_name: g.key.provider,
            granted_time: epoch_seconds(g.consented_ms.unwrap_or(g.created_ms)),
            last_refreshed_time: g.refreshed_ms.map(epoch_seconds),
            last_used_time: g.last_used_ms.map(epoch_seconds),
            needs_consent: g.needs_consent,
            scopes: g.scopes,
            workload_identity_name: g.key.workload,
        })
        .collect();
    Ok(Json(ListUserGrantsResponse { grants }))
}

/// `POST /latchkey/RevokeUserGrant`: RFC 7009 at the provider when it offers it, then the
/// grant is deleted from the vault whatever the provider said; audited either way.
pub async fn revoke_user_grant(
    State(state): State<AppState>,
    req: Binding<RevokeUserGrantRequest>,
) -> HttpResult<Json<RevokeUserGrantResponse>> {
    const ACTION: &str = "RevokeUserGrant";
    let Binding { caller, body } = req;
    let mut v = Validator::new();
    let identifier = user_identifier(&mut v, body.user_identifier);
    let workload = body.workload_identity_name.unwrap_or_default();
    let provider = body.credential_provider_name.unwrap_or_default();
    check_workload_name(&mut v, "workloadIdentityName", &workload);
    check_provider_name(&mut v, "credentialProviderName", &provider);
    v.finish()?;
    let Some(identifier) = identifier else {
        return Err(ApiError::cannot_parse("userIdentifier is required").into());
    };
    let user = principal(&state, &identifier).await?;
    let key = GrantKey {
        workload,
        user,
        provider,
    };
    let audit = |outcome: Outcome, detail: serde_json::Value| {
        state
            .auditor
            .record_grant(&caller, ACTION, &key, outcome, detail)
    };
    let report = match state.vault.revoke_grant(&key).await {
        Ok(report) => report,
        Err(e) => {
            audit(
                Outcome::Failed,
                json!({"via": "api", "reason": e.to_string()}),
            )
            .await;
            return Err(e);
        }
    };
    let revocation = if !report.provider_endpoint {
        ProviderRevocation::NotOffered
    } else if report.provider_errors.is_empty() {
        ProviderRevocation::Revoked
    } else {
        ProviderRevocation::Failed
    };
    audit(
        Outcome::Success,
        json!({"via": "api", "revokedAtProvider": report.revoked_at_provider,
            "providerErrors": report.provider_errors}),
    )
    .await;
    Ok(Json(RevokeUserGrantResponse {
        provider_revocation: revocation,
    }))
}
