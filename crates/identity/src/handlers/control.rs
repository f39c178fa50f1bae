//! Control plane: workload identities, API-key credential providers, the token vault
//! settings and tags. Every handler takes [`Admin`], so only admin credentials reach it;
//! each validates in AgentCore's terms, calls the [`Registry`] and renders a
//! `latchkey_api::control` response. OAuth2 credential providers are in
//! [`super::providers`].
//!
//! [`Registry`]: crate::services::registry::Registry

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::response::Response;
use latchkey_api::control::{
    ApiKeyCredentialProviderResponse, ApiKeyCredentialProviderSummary, KmsConfiguration,
    ListCredentialProvidersResponse, ListTagsForResourceResponse, ListWorkloadIdentitiesResponse,
    MANAGED, SecretReference, TokenVaultResponse, WorkloadIdentityResponse,
    WorkloadIdentitySummary,
};
use latchkey_api::epoch_seconds;
use latchkey_core::ApiError;
use latchkey_core::validate::{Validator, is_provider_char, is_tag_char};
use latchkey_store::{ApiKeyProviderRecord, TokenVaultRecord, WorkloadRecord};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;

use super::common::{
    ListRequest, NameRequest, check_provider_name, check_return_urls, check_tags,
    check_workload_name, checked_provider_name, checked_workload_name, created, no_content,
    page_args,
};
use crate::auth::{Admin, AdminParts};
use crate::error::Result;
use crate::http_error::HttpResult;
use crate::services::registry::{ApiKeyProviderInput, DEFAULT_VAULT, KmsInput, TaggedResource};
use crate::state::AppState;

// ------------------------------------------------------------------ workload identities

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateWorkloadIdentityRequest {
    name: String,
    #[serde(default)]
    allowed_resource_oauth2_return_urls: Option<Vec<String>>,
    #[serde(default)]
    tags: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateWorkloadIdentityRequest {
    name: String,
    #[serde(default)]
    allowed_resource_oauth2_return_urls: Option<Vec<String>>,
}

fn workload_response(
    state: &AppState,
    w: WorkloadRecord,
    with_times: bool,
) -> WorkloadIdentityResponse {
    WorkloadIdentityResponse {
        workload_identity_arn: state.config.arn.workload_identity(&w.name),
        created_time: with_times.then(|| epoch_seconds(w.created_ms)),
        last_updated_time: with_times.then(|| epoch_seconds(w.updated_ms)),
        allowed_resource_oauth2_return_urls: w.return_urls,
        name: w.name,
    }
}

pub async fn create_workload_identity(
    State(state): State<AppState>,
    req: Admin<CreateWorkloadIdentityRequest>,
) -> HttpResult<Response> {
    let Admin { caller, body } = req;
    let mut v = Validator::new();
    check_workload_name(&mut v, "name", &body.name);
    let urls = body.allowed_resource_oauth2_return_urls.unwrap_or_default();
    check_return_urls(&mut v, &urls);
    if let Some(tags) = &body.tags {
        check_tags(&mut v, tags);
    }
    v.finish()?;
    let record = state
        .registry
        .create_workload(&caller, body.name, urls, body.tags)
        .await?;
    Ok(created(workload_response(&state, record, false)))
}

pub async fn get_workload_identity(
    State(state): State<AppState>,
    req: Admin<NameRequest>,
) -> HttpResult<Json<WorkloadIdentityResponse>> {
    checked_workload_name(&req.body.name)?;
    let w = state.registry.find_workload(&req.body.name).await?;
    Ok(Json(workload_response(&state, w, true)))
}

pub async fn update_workload_identity(
    State(state): State<AppState>,
    req: Admin<UpdateWorkloadIdentityRequest>,
) -> HttpResult<Json<WorkloadIdentityResponse>> {
    let Admin { caller, body } = req;
    let mut v = Validator::new();
    check_workload_name(&mut v, "name", &body.name);
    let urls = body.allowed_resource_oauth2_return_urls.unwrap_or_default();
    check_return_urls(&mut v, &urls);
    v.finish()?;
    let w = state
        .registry
        .update_workload(&caller, &body.name, &urls)
        .await?;
    Ok(Json(workload_response(&state, w, true)))
}

pub async fn delete_workload_identity(
    State(state): State<AppState>,
    req: Admin<NameRequest>,
) -> HttpResult<Response> {
    checked_workload_name(&req.body.name)?;
    state
        .registry
        .delete_workload(&req.caller, &req.body.name)
        .await?;
    Ok(no_content())
}

pub async fn list_workload_identities(
    State(state): State<AppState>,
    req: Admin<ListRequest>,
) -> HttpResult<Json<ListWorkloadIdentitiesResponse>> {
    let (limit, after) = page_args(&req.body, 20)?;
    let page = state
        .registry
        .list_workloads(after.as_deref(), limit)
        .await?;
    Ok(Json(ListWorkloadIdentitiesResponse {
        workload_identities: page
            .rows
            .into_iter()
            .map(|w| WorkloadIdentitySummary {
                workload_identity_arn: state.config.arn.workload_identity(&w.name),
                name: w.name,
            })
            .collect(),
        next_token: page.next_token,
    }))
}

// ------------------------------------------------------------- API-key credential providers

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyProviderRequest {
    name: String,
    #[serde(default)]
    api_key: Option<SecretString>,
    #[serde(default)]
    api_key_secret_config: Option<Value>,
    #[serde(default)]
    api_key_secret_source: Option<String>,
    #[serde(default)]
    tags: Option<BTreeMap<String, String>>,
}

fn api_key_response(
    state: &AppState,
    p: ApiKeyProviderRecord,
    with_times: bool,
) -> ApiKeyCredentialProviderResponse {
    ApiKeyCredentialProviderResponse {
        api_key_secret_arn: SecretReference {
            secret_arn: state.config.arn.managed_secret("apikey", &p.name),
        },
        api_key_secret_source: MANAGED.to_string(),
        created_time: with_times.then(|| epoch_seconds(p.created_ms)),
        credential_provider_arn: state.config.arn.api_key_provider(&p.name),
        last_updated_time: with_times.then(|| epoch_seconds(p.updated_ms)),
        name: p.name,
    }
}

/// Validate an API key provider request in AgentCore's terms.
fn api_key_input(body: ApiKeyProviderRequest) -> Result<ApiKeyProviderInput, ApiError> {
    let mut v = Validator::new();
    check_provider_name(&mut v, "name", &body.name);
    if let Some(source) = &body.api_key_secret_source {
        if source == "EXTERNAL" {
            v.fail("apiKeySecretSource", "EXTERNAL secret sources (AWS Secrets Manager references) are not supported by Latchkey; send apiKey");
        } else {
            v.check(
                "apiKeySecretSource",
                source == MANAGED,
                "Member must satisfy enum value set: [MANAGED, EXTERNAL]",
            );
        }
    }
    if body.api_key_secret_config.is_some() {
        v.fail(
            "apiKeySecretConfig",
            "AWS Secrets Manager references are not supported by Latchkey; send apiKey",
        );
    }
    match &body.api_key {
        Some(key) => {
            v.length("apiKey", key.expose_secret(), 1, 65536);
        }
        None => v.fail(
            "apiKey",
            "Member must not be null (Latchkey stores the key itself)",
        ),
    }
    if let Some(tags) = &body.tags {
        check_tags(&mut v, tags);
    }
    v.finish()?;
    Ok(ApiKeyProviderInput {
        name: body.name,
        api_key: body
            .api_key
            .unwrap_or_else(|| SecretString::from(String::new())),
        tags: body.tags,
    })
}

pub async fn create_api_key_provider(
    State(state): State<AppState>,
    req: Admin<ApiKeyProviderRequest>,
) -> HttpResult<Response> {
    let Admin { caller, body } = req;
    let record = state
        .registry
        .create_api_key_provider(&caller, api_key_input(body)?)
        .await?;
    Ok(created(api_key_response(&state, record, false)))
}

pub async fn get_api_key_provider(
    State(state): State<AppState>,
    req: Admin<NameRequest>,
) -> HttpResult<Json<ApiKeyCredentialProviderResponse>> {
    checked_provider_name(&req.body.name)?;
    let p = state.registry.find_api_key_provider(&req.body.name).await?;
    Ok(Json(api_key_response(&state, p, true)))
}

pub async fn update_api_key_provider(
    State(state): State<AppState>,
    req: Admin<ApiKeyProviderRequest>,
) -> HttpResult<Json<ApiKeyCredentialProviderResponse>> {
    let Admin { caller, body } = req;
    let record = state
        .registry
        .update_api_key_provider(&caller, api_key_input(body)?)
        .await?;
    Ok(Json(api_key_response(&state, record, true)))
}

pub async fn delete_api_key_provider(
    State(state): State<AppState>,
    req: Admin<NameRequest>,
) -> HttpResult<Response> {
    checked_provider_name(&req.body.name)?;
    state
        .registry
        .delete_api_key_provider(&req.caller, &req.body.name)
        .await?;
    Ok(no_content())
}

pub async fn list_api_key_providers(
    State(state): State<AppState>,
    req: Admin<ListRequest>,
) -> HttpResult<Json<ListCredentialProvidersResponse<ApiKeyCredentialProviderSummary>>> {
    let (limit, after) = page_args(&req.body, 100)?;
    let page = state
        .registry
        .list_api_key_providers(after.as_deref(), limit)
        .await?;
    Ok(Json(ListCredentialProvidersResponse {
        credential_providers: page
            .rows
            .into_iter()
            .map(|p| ApiKeyCredentialProviderSummary {
                created_time: epoch_seconds(p.created_ms),
                credential_provider_arn: state.config.arn.api_key_provider(&p.name),
                last_updated_time: epoch_seconds(p.updated_ms),
                name: p.name,
            })
            .collect(),
        next_token: page.next_token,
    }))
}

// ------------------------------------------------------------------------- token vault

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenVaultRequest {
    #[serde(default)]
    token_vault_id: Option<String>,
    #[serde(default)]
    kms_configuration: Option<KmsConfigurationRequest>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KmsConfigurationRequest {
    key_type: String,
    #[serde(default)]
    kms_key_arn: Option<String>,
}

fn vault_id(v: &mut Validator, id: Option<&str>) -> String {
    let id = id.unwrap_or(DEFAULT_VAULT);
    v.chars(
        "tokenVaultId",
        id,
        1,
        64,
        is_provider_char,
        "[a-zA-Z0-9\\-_]+",
    );
    id.to_string()
}

fn vault_response(record: TokenVaultRecord) -> TokenVaultResponse {
    TokenVaultResponse {
        kms_configuration: KmsConfiguration {
            key_type: record.key_type,
            kms_key_arn: record.kms_key_arn,
        },
        last_modified_date: epoch_seconds(record.updated_ms),
        token_vault_id: record.id,
    }
}

pub async fn get_token_vault(
    State(state): State<AppState>,
    req: Admin<TokenVaultRequest>,
) -> HttpResult<Json<TokenVaultResponse>> {
    let mut v = Validator::new();
    let id = vault_id(&mut v, req.body.token_vault_id.as_deref());
    v.finish()?;
    Ok(Json(vault_response(
        state.registry.find_token_vault(&id).await?,
    )))
}

pub async fn set_token_vault_cmk(
    State(state): State<AppState>,
    req: Admin<TokenVaultRequest>,
) -> HttpResult<Json<TokenVaultResponse>> {
    let Admin { caller, body } = req;
    let mut v = Validator::new();
    let id = vault_id(&mut v, body.token_vault_id.as_deref());
    let mut key = KmsInput::ServiceManagedKey;
    match &body.kms_configuration {
        None => v.fail("kmsConfiguration", "Member must not be null"),
        Some(k) => match k.key_type.as_str() {
            "ServiceManagedKey" => {
                v.check(
                    "kmsConfiguration.kmsKeyArn",
                    k.kms_key_arn.is_none(),
                    "Member must be absent when keyType is ServiceManagedKey",
                );
            }
            "CustomerManagedKey" => match &k.kms_key_arn {
                None => v.fail(
                    "kmsConfiguration.kmsKeyArn",
                    "Member must not be null when keyType is CustomerManagedKey",
                ),
                Some(arn) => {
                    if v.length("kmsConfiguration.kmsKeyArn", arn, 1, 2048) {
                        key = KmsInput::CustomerManagedKey(arn.clone());
                    }
                }
            },
            _ => v.fail(
                "kmsConfiguration.keyType",
                "Member must satisfy enum value set: [CustomerManagedKey, ServiceManagedKey]",
            ),
        },
    }
    v.finish()?;
    let record = state
        .registry
        .set_token_vault_key(&caller, &id, key)
        .await?;
    Ok(Json(vault_response(record)))
}

pub async fn reset_token_vault_key_material(
    State(state): State<AppState>,
    req: Admin<TokenVaultRequest>,
) -> HttpResult<Json<TokenVaultResponse>> {
    let Admin { caller, body } = req;
    let mut v = Validator::new();
    let id = vault_id(&mut v, body.token_vault_id.as_deref());
    v.finish()?;
    let record = state.registry.reset_token_vault(&caller, &id).await?;
    Ok(Json(vault_response(record)))
}

// ------------------------------------------------------------------------------- tags

#[derive(Debug, Deserialize)]
pub struct TagRequest {
    #[serde(default)]
    tags: Option<BTreeMap<String, String>>,
}

/// Decode the ARN from the path, and find the existing resource it names.
async fn tagged_resource(
    state: &AppState,
    parts: &axum::http::request::Parts,
) -> Result<TaggedResource> {
    let raw = parts.uri.path().strip_prefix("/tags/").unwrap_or_default();
    let arn = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| ApiError::field("resourceArn", "Member must be a valid ARN"))?
        .to_string();
    let mut v = Validator::new();
    v.length("resourceArn", &arn, 20, 1011);
    v.finish()?;
    state.registry.tagged_resource(arn).await
}

pub async fn tag_resource(State(state): State<AppState>, req: AdminParts) -> HttpResult<Response> {
    let body: TagRequest = serde_json::from_value(req.body)
        .map_err(|_| ApiError::cannot_parse("tags must be a map of strings"))?;
    let resource = tagged_resource(&state, &req.parts).await?;
    let mut v = Validator::new();
    let tags = match body.tags {
        Some(t) => t,
        None => {
            v.fail("tags", "Member must not be null");
            BTreeMap::new()
        }
    };
    check_tags(&mut v, &tags);
    v.finish()?;
    state.registry.tag(&req.caller, &resource, tags).await?;
    Ok(no_content())
}

pub async fn untag_resource(
    State(state): State<AppState>,
    req: AdminParts,
) -> HttpResult<Response> {
    let resource = tagged_resource(&state, &req.parts).await?;
    let keys: Vec<String> =
        url::form_urlencoded::parse(req.parts.uri.query().unwrap_or("").as_bytes())
            .filter(|(k, _)| k == "tagKeys")
            .map(|(_, v)| v.into_owned())
            .collect();
    let mut v = Validator::new();
    v.check(
        "tagKeys",
        keys.len() <= 200,
        "Member must have length less than or equal to 200",
    );
    for k in &keys {
        v.chars("tagKeys", k, 1, 128, is_tag_char, "[a-zA-Z0-9\\s._:/=+@-]*");
    }
    v.finish()?;
    state.registry.untag(&req.caller, &resource, &keys).await?;
    Ok(no_content())
}

pub async fn list_tags_for_resource(
    State(state): State<AppState>,
    req: AdminParts,
) -> HttpResult<Json<ListTagsForResourceResponse>> {
    let resource = tagged_resource(&state, &req.parts).await?;
    Ok(Json(ListTagsForResourceResponse {
        tags: state.registry.list_tags(&resource).await?,
    }))
}
