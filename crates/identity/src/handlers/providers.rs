//! Control plane: OAuth2 credential providers (AgentCore's operations over HTTP). These
//! handlers validate names and tags, call the [`Registry`] (which lets the provider
//! service parse, discover and seal, then stores and audits) and render a
//! `latchkey_api::control` response.
//!
//! [`Registry`]: crate::services::registry::Registry

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::response::Response;
use latchkey_api::control::{
    ListCredentialProvidersResponse, MANAGED, Oauth2CredentialProviderResponse,
    Oauth2CredentialProviderSummary, SecretReference,
};
use latchkey_api::epoch_seconds;
use latchkey_core::oauth2_provider;
use latchkey_core::validate::Validator;
use latchkey_store::Oauth2ProviderRecord;
use serde::Deserialize;
use serde_json::Value;

use super::common::{
    ListRequest, NameRequest, check_provider_name, check_tags, checked_provider_name, created,
    no_content, page_args,
};
use crate::auth::Admin;
use crate::error::Result;
use crate::http_error::HttpResult;
use crate::services::providers::stored;
use crate::services::registry::Oauth2ProviderInput;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderRequest {
    name: String,
    #[serde(default)]
    credential_provider_vendor: Value,
    #[serde(default)]
    oauth2_provider_config_input: Value,
    #[serde(default)]
    tags: Option<BTreeMap<String, String>>,
}

impl From<ProviderRequest> for Oauth2ProviderInput {
    fn from(body: ProviderRequest) -> Self {
        Self {
            name: body.name,
            vendor: body.credential_provider_vendor,
            config_input: body.oauth2_provider_config_input,
            tags: body.tags,
        }
    }
}

fn provider_response(
    state: &AppState,
    record: Oauth2ProviderRecord,
    detail: bool,
) -> Result<Oauth2CredentialProviderResponse> {
    let cfg = stored(&record)?;
    Ok(Oauth2CredentialProviderResponse {
        callback_url: state.providers.callback_url(&record.callback_id),
        client_secret_arn: SecretReference {
            secret_arn: state.config.arn.managed_secret("oauth2", &record.name),
        },
        client_secret_source: MANAGED.to_string(),
        created_time: detail.then(|| epoch_seconds(record.created_ms)),
        credential_provider_arn: state.config.arn.oauth2_provider(&record.name),
        last_updated_time: detail.then(|| epoch_seconds(record.updated_ms)),
        oauth2_provider_config_output: oauth2_provider::render_output(
            &cfg.config,
            cfg.resolved.as_ref(),
        ),
        status: "READY".to_string(),
        credential_provider_vendor: detail.then_some(record.vendor),
        name: record.name,
    })
}

pub async fn create_oauth2_provider(
    State(state): State<AppState>,
    req: Admin<ProviderRequest>,
) -> HttpResult<Response> {
    let Admin { caller, body } = req;
    let mut v = Validator::new();
    check_provider_name(&mut v, "name", &body.name);
    if let Some(tags) = &body.tags {
        check_tags(&mut v, tags);
    }
    v.finish()?;
    let record = state
        .registry
        .create_oauth2_provider(&caller, body.into())
        .await?;
    Ok(created(provider_response(&state, record, false)?))
}

pub async fn get_oauth2_provider(
    State(state): State<AppState>,
    req: Admin<NameRequest>,
) -> HttpResult<Json<Oauth2CredentialProviderResponse>> {
    checked_provider_name(&req.body.name)?;
    let record = state.registry.find_oauth2_provider(&req.body.name).await?;
    Ok(Json(provider_response(&state, record, true)?))
}

pub async fn update_oauth2_provider(
    State(state): State<AppState>,
    req: Admin<ProviderRequest>,
) -> HttpResult<Json<Oauth2CredentialProviderResponse>> {
    let Admin { caller, body } = req;
    checked_provider_name(&body.name)?;
    let record = state
        .registry
        .update_oauth2_provider(&caller, body.into())
        .await?;
    Ok(Json(provider_response(&state, record, true)?))
}

pub async fn delete_oauth2_provider(
    State(state): State<AppState>,
    req: Admin<NameRequest>,
) -> HttpResult<Response> {
    checked_provider_name(&req.body.name)?;
    state
        .registry
        .delete_oauth2_provider(&req.caller, &req.body.name)
        .await?;
    Ok(no_content())
}

pub async fn list_oauth2_providers(
    State(state): State<AppState>,
    req: Admin<ListRequest>,
) -> HttpResult<Json<ListCredentialProvidersResponse<Oauth2CredentialProviderSummary>>> {
    let (limit, after) = page_args(&req.body, 20)?;
    let page = state
        .registry
        .list_oauth2_providers(after.as_deref(), limit)
        .await?;
    Ok(Json(ListCredentialProvidersResponse {
        credential_providers: page
            .rows
            .into_iter()
            .map(|p| Oauth2CredentialProviderSummary {
                created_time: epoch_seconds(p.created_ms),
                credential_provider_arn: state.config.arn.oauth2_provider(&p.name),
                credential_provider_vendor: p.vendor,
                last_updated_time: epoch_seconds(p.updated_ms),
                name: p.name,
            })
            .collect(),
        next_token: page.next_token,
    }))
}
