//! Control plane: OAuth2 credential providers (AgentCore's operations over HTTP). Parsing,
//! discovery and sealing are the provider service's ([`crate::services::providers`]);
//! these handlers validate names and tags, store, audit and render.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::response::Response;
use latchkey_core::oauth2_provider;
use latchkey_core::validate::Validator;
use latchkey_store::Oauth2ProviderRecord;
use serde::Deserialize;
use serde_json::{Value, json};

use super::common::{
    ListRequest, NameRequest, about, check_provider_name, check_tags, created, epoch, no_content,
    page_args, page_body, paginate,
};
use crate::auth::Admin;
use crate::error::{Error, Result};
use crate::http_error::HttpResult;
use crate::services::providers::{PreparedProvider, not_found, stored};
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

/// Validate the name (and tags), then let the provider service parse, discover and seal.
async fn prepare(
    state: &AppState,
    body: &ProviderRequest,
    with_tags: bool,
) -> Result<PreparedProvider> {
    let mut v = Validator::new();
    check_provider_name(&mut v, "name", &body.name);
    if let (true, Some(tags)) = (with_tags, &body.tags) {
        check_tags(&mut v, tags);
    }
    v.finish()?;
    state
        .providers
        .prepare(
            &body.name,
            &body.credential_provider_vendor,
            &body.oauth2_provider_config_input,
        )
        .await
}

fn provider_json(state: &AppState, record: &Oauth2ProviderRecord, detail: bool) -> Result<Value> {
    let cfg = stored(record)?;
    let mut body = json!({
        "clientSecretArn": {"secretArn": state.config.arn.managed_secret("oauth2", &record.name)},
        "clientSecretSource": "MANAGED",
        "name": record.name,
        "credentialProviderArn": state.config.arn.oauth2_provider(&record.name),
        "callbackUrl": state.providers.callback_url(&record.callback_id),
        "oauth2ProviderConfigOutput": oauth2_provider::render_output(&cfg.config, cfg.resolved.as_ref()),
        "status": "READY",
    });
    if detail {
        body["credentialProviderVendor"] = json!(record.vendor);
        body["createdTime"] = epoch(record.created_ms);
        body["lastUpdatedTime"] = epoch(record.updated_ms);
    }
    Ok(body)
}

pub async fn create_oauth2_provider(
    State(state): State<AppState>,
    req: Admin<ProviderRequest>,
) -> HttpResult<Response> {
    let Admin { caller, body } = req;
    let prepared = prepare(&state, &body, true).await?;
    let now = state.clock.now_ms();
    let record = Oauth2ProviderRecord {
        name: body.name.clone(),
        vendor: prepared.vendor,
        config: serde_json::to_value(&prepared.config).map_err(Error::internal)?,
        secret_envelope: prepared.secret_envelope,
        callback_id: uuid::Uuid::new_v4().to_string(),
        created_ms: now,
        updated_ms: now,
    };
    let arn = state.config.arn.oauth2_provider(&record.name);
    state
        .store
        .create_oauth2_provider(
            &record,
            &body
                .tags
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect::<Vec<_>>(),
            &arn,
        )
        .await
        .map_err(about("credential provider", &record.name))?;
    state
        .auditor
        .change(&caller, "CreateOauth2CredentialProvider", arn)
        .await;
    Ok(created(provider_json(&state, &record, false)?))
}

async fn find(state: &AppState, name: &str) -> Result<Oauth2ProviderRecord> {
    state
        .store
        .find_oauth2_provider(name)
        .await?
        .ok_or_else(|| not_found(name))
}

pub async fn get_oauth2_provider(
    State(state): State<AppState>,
    req: Admin<NameRequest>,
) -> HttpResult<Json<Value>> {
    let mut v = Validator::new();
    check_provider_name(&mut v, "name", &req.body.name);
    v.finish()?;
    let record = find(&state, &req.body.name).await?;
    Ok(Json(provider_json(&state, &record, true)?))
}

pub async fn update_oauth2_provider(
    State(state): State<AppState>,
    req: Admin<ProviderRequest>,
) -> HttpResult<Json<Value>> {
    let Admin { caller, body } = req;
    // Existence first: an update of a missing provider must not fetch its discovery URL.
    let mut v = Validator::new();
    check_provider_name(&mut v, "name", &body.name);
    v.finish()?;
    let mut record = find(&state, &body.name).await?;
    let prepared = prepare(&state, &body, false).await?;
    record.vendor = prepared.vendor;
    record.config = serde_json::to_value(&prepared.config).map_err(Error::internal)?;
    record.secret_envelope = prepared.secret_envelope;
    record.updated_ms = state.clock.now_ms();
    state.store.update_oauth2_provider(&record).await?;
    state
        .auditor
        .change(
            &caller,
            "UpdateOauth2CredentialProvider",
            state.config.arn.oauth2_provider(&record.name),
        )
        .await;
    Ok(Json(provider_json(&state, &record, true)?))
}

pub async fn delete_oauth2_provider(
    State(state): State<AppState>,
    req: Admin<NameRequest>,
) -> HttpResult<Response> {
    let Admin { caller, body } = req;
    let mut v = Validator::new();
    check_provider_name(&mut v, "name", &body.name);
    v.finish()?;
    let arn = state.config.arn.oauth2_provider(&body.name);
    state
        .store
        .delete_oauth2_provider(&body.name, &arn)
        .await
        .map_err(about("OAuth2 credential provider", &body.name))?;
    state
        .auditor
        .change(&caller, "DeleteOauth2CredentialProvider", arn)
        .await;
    Ok(no_content())
}

pub async fn list_oauth2_providers(
    State(state): State<AppState>,
    req: Admin<ListRequest>,
) -> HttpResult<Json<Value>> {
    let mut v = Validator::new();
    let (limit, after) = page_args(
        &mut v,
        req.body.max_results,
        20,
        req.body.next_token.as_deref(),
    );
    v.finish()?;
    let rows = state
        .store
        .list_oauth2_providers(after.as_deref(), limit + 1)
        .await?;
    let (rows, next) = paginate(rows, limit, |p| &p.name);
    let items: Vec<Value> = rows
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "credentialProviderVendor": p.vendor,
                "credentialProviderArn": state.config.arn.oauth2_provider(&p.name),
                "createdTime": epoch(p.created_ms),
                "lastUpdatedTime": epoch(p.updated_ms),
            })
        })
        .collect();
    Ok(Json(page_body("credentialProviders", items, next)))
}
