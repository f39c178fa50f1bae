//! Control plane: workload identities, API-key credential providers, the token vault
//! settings and tags. Every handler takes [`Admin`], so only admin credentials reach it.
//! OAuth2 credential providers live in [`super::providers`].

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::response::Response;
use latchkey_core::ApiError;
use latchkey_core::arn::ResourceKind;
use latchkey_core::crypto;
use latchkey_core::validate::{Validator, is_provider_char, is_tag_char};
use latchkey_store::{ApiKeyProviderRecord, TokenVaultRecord, WorkloadRecord};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

use super::common::{
    ListRequest, NameRequest, about, check_provider_name, check_return_urls, check_tags,
    check_workload_name, created, epoch, no_content, page_args, page_body, paginate, tag_pairs,
};
use crate::aad;
use crate::auth::{Admin, AdminParts};
use crate::error::{Error, Result};
use crate::http_error::HttpResult;
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

fn workload_json(state: &AppState, w: &WorkloadRecord, with_times: bool) -> Value {
    let mut body = json!({
        "name": w.name,
        "workloadIdentityArn": state.config.arn.workload_identity(&w.name),
        "allowedResourceOauth2ReturnUrls": w.return_urls,
    });
    if with_times {
        body["createdTime"] = epoch(w.created_ms);
        body["lastUpdatedTime"] = epoch(w.updated_ms);
    }
    body
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
    let now = state.clock.now_ms();
    let record = WorkloadRecord {
        name: body.name,
        return_urls: urls,
        created_ms: now,
        updated_ms: now,
    };
    let arn = state.config.arn.workload_identity(&record.name);
    state
        .store
        .create_workload(&record, &tag_pairs(body.tags), &arn)
        .await
        .map_err(about("workload identity", &record.name))?;
    state.workloads.invalidate(&record.name);
    state
        .auditor
        .change(&caller, "CreateWorkloadIdentity", arn)
        .await;
    Ok(created(workload_json(&state, &record, false)))
}

async fn find_workload(state: &AppState, name: &str) -> Result<WorkloadRecord, ApiError> {
    state
        .store
        .find_workload(name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("workload identity {name:?} not found")))
}

pub async fn get_workload_identity(
    State(state): State<AppState>,
    req: Admin<NameRequest>,
) -> HttpResult<Json<Value>> {
    let mut v = Validator::new();
    check_workload_name(&mut v, "name", &req.body.name);
    v.finish()?;
    let w = find_workload(&state, &req.body.name).await?;
    Ok(Json(workload_json(&state, &w, true)))
}

pub async fn update_workload_identity(
    State(state): State<AppState>,
    req: Admin<UpdateWorkloadIdentityRequest>,
) -> HttpResult<Json<Value>> {
    let Admin { caller, body } = req;
    let mut v = Validator::new();
    check_workload_name(&mut v, "name", &body.name);
    let urls = body.allowed_resource_oauth2_return_urls.unwrap_or_default();
    check_return_urls(&mut v, &urls);
    v.finish()?;
    let now = state.clock.now_ms();
    let w = state
        .store
        .update_workload(&body.name, &urls, now)
        .await
        .map_err(about("workload identity", &body.name))?;
    state
        .auditor
        .change(
            &caller,
            "UpdateWorkloadIdentity",
            state.config.arn.workload_identity(&w.name),
        )
        .await;
    Ok(Json(workload_json(&state, &w, true)))
}

pub async fn delete_workload_identity(
    State(state): State<AppState>,
    req: Admin<NameRequest>,
) -> HttpResult<Response> {
    let Admin { caller, body } = req;
    let mut v = Validator::new();
    check_workload_name(&mut v, "name", &body.name);
    v.finish()?;
    let arn = state.config.arn.workload_identity(&body.name);
    state
        .store
        .delete_workload(&body.name, &arn)
        .await
        .map_err(about("workload identity", &body.name))?;
    state.workloads.invalidate(&body.name);
    state
        .auditor
        .change(&caller, "DeleteWorkloadIdentity", arn)
        .await;
    Ok(no_content())
}

pub async fn list_workload_identities(
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
        .list_workloads(after.as_deref(), limit + 1)
        .await?;
    let (rows, next) = paginate(rows, limit, |w| &w.name);
    let items: Vec<Value> = rows.iter().map(|w| json!({"name": w.name, "workloadIdentityArn": state.config.arn.workload_identity(&w.name)})).collect();
    Ok(Json(page_body("workloadIdentities", items, next)))
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

fn api_key_json(state: &AppState, p: &ApiKeyProviderRecord, with_times: bool) -> Value {
    let mut body = json!({
        "apiKeySecretArn": {"secretArn": state.config.arn.managed_secret("apikey", &p.name)},
        "apiKeySecretSource": "MANAGED",
        "name": p.name,
        "credentialProviderArn": state.config.arn.api_key_provider(&p.name),
    });
    if with_times {
        body["createdTime"] = epoch(p.created_ms);
        body["lastUpdatedTime"] = epoch(p.updated_ms);
    }
    body
}

/// Validate and seal an API key provider's secret.
async fn api_key_envelope(state: &AppState, body: &ApiKeyProviderRequest) -> Result<Vec<u8>> {
    let mut v = Validator::new();
    check_provider_name(&mut v, "name", &body.name);
    if let Some(source) = &body.api_key_secret_source {
        if source == "EXTERNAL" {
            v.fail("apiKeySecretSource", "EXTERNAL secret sources (AWS Secrets Manager references) are not supported by Latchkey; send apiKey");
        } else {
            v.check(
                "apiKeySecretSource",
                source == "MANAGED",
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
    let key = body
        .api_key
        .as_ref()
        .map(|k| k.expose_secret().as_bytes())
        .unwrap_or_default();
    crypto::encrypt(
        state.keys.as_ref(),
        aad::api_key_provider(&body.name).as_bytes(),
        key,
    )
    .await
    .map_err(|e| Error::internal(format!("could not seal an API key: {e}")))
}

pub async fn create_api_key_provider(
    State(state): State<AppState>,
    req: Admin<ApiKeyProviderRequest>,
) -> HttpResult<Response> {
    let Admin { caller, body } = req;
    let envelope = api_key_envelope(&state, &body).await?;
    let now = state.clock.now_ms();
    let record = ApiKeyProviderRecord {
        name: body.name.clone(),
        secret_envelope: Some(envelope),
        created_ms: now,
        updated_ms: now,
    };
    let arn = state.config.arn.api_key_provider(&record.name);
    state
        .store
        .create_api_key_provider(&record, &tag_pairs(body.tags), &arn)
        .await
        .map_err(about("credential provider", &record.name))?;
    state.api_keys.invalidate(&record.name);
    state
        .auditor
        .change(&caller, "CreateApiKeyCredentialProvider", arn)
        .await;
    Ok(created(api_key_json(&state, &record, false)))
}

async fn find_api_key_provider(
    state: &AppState,
    name: &str,
) -> Result<ApiKeyProviderRecord, ApiError> {
    state
        .store
        .find_api_key_provider(name)
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!("API key credential provider {name:?} not found"))
        })
}

pub async fn get_api_key_provider(
    State(state): State<AppState>,
    req: Admin<NameRequest>,
) -> HttpResult<Json<Value>> {
    let mut v = Validator::new();
    check_provider_name(&mut v, "name", &req.body.name);
    v.finish()?;
    let p = find_api_key_provider(&state, &req.body.name).await?;
    Ok(Json(api_key_json(&state, &p, true)))
}

pub async fn update_api_key_provider(
    State(state): State<AppState>,
    req: Admin<ApiKeyProviderRequest>,
) -> HttpResult<Json<Value>> {
    let Admin { caller, body } = req;
    let envelope = api_key_envelope(&state, &body).await?;
    let mut record = find_api_key_provider(&state, &body.name).await?;
    record.secret_envelope = Some(envelope);
    record.updated_ms = state.clock.now_ms();
    state.store.update_api_key_provider(&record).await?;
    state.api_keys.invalidate(&record.name);
    state
        .auditor
        .change(
            &caller,
            "UpdateApiKeyCredentialProvider",
            state.config.arn.api_key_provider(&record.name),
        )
        .await;
    Ok(Json(api_key_json(&state, &record, true)))
}

pub async fn delete_api_key_provider(
    State(state): State<AppState>,
    req: Admin<NameRequest>,
) -> HttpResult<Response> {
    let Admin { caller, body } = req;
    let mut v = Validator::new();
    check_provider_name(&mut v, "name", &body.name);
    v.finish()?;
    let arn = state.config.arn.api_key_provider(&body.name);
    state
        .store
        .delete_api_key_provider(&body.name, &arn)
        .await
        .map_err(about("API key credential provider", &body.name))?;
    state.api_keys.invalidate(&body.name);
    state
        .auditor
        .change(&caller, "DeleteApiKeyCredentialProvider", arn)
        .await;
    Ok(no_content())
}

pub async fn list_api_key_providers(
    State(state): State<AppState>,
    req: Admin<ListRequest>,
) -> HttpResult<Json<Value>> {
    let mut v = Validator::new();
    let (limit, after) = page_args(
        &mut v,
        req.body.max_results,
        100,
        req.body.next_token.as_deref(),
    );
    v.finish()?;
    let rows = state
        .store
        .list_api_key_providers(after.as_deref(), limit + 1)
        .await?;
    let (rows, next) = paginate(rows, limit, |p| &p.name);
    let items: Vec<Value> = rows
        .iter()
        .map(|p| json!({"name": p.name, "credentialProviderArn": state.config.arn.api_key_provider(&p.name), "createdTime": epoch(p.created_ms), "lastUpdatedTime": epoch(p.updated_ms)}))
        .collect();
    Ok(Json(page_body("credentialProviders", items, next)))
}

// ------------------------------------------------------------------------- token vault

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenVaultRequest {
    #[serde(default)]
    token_vault_id: Option<String>,
    #[serde(default)]
    kms_configuration: Option<KmsConfiguration>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KmsConfiguration {
    key_type: String,
    #[serde(default)]
    kms_key_arn: Option<String>,
}

const DEFAULT_VAULT: &str = "default";

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

async fn vault_json(state: &AppState, id: &str) -> Result<Value, ApiError> {
    if id != DEFAULT_VAULT {
        return Err(ApiError::NotFound(format!(
            "token vault {id:?} not found (Latchkey has one vault, \"default\")"
        )));
    }
    let record = state
        .store
        .find_token_vault(id)
        .await?
        .unwrap_or(TokenVaultRecord {
            id: id.into(),
            key_type: "ServiceManagedKey".into(),
            kms_key_arn: None,
            updated_ms: 0,
        });
    let mut kms = json!({"keyType": record.key_type});
    if let Some(arn) = record.kms_key_arn {
        kms["kmsKeyArn"] = json!(arn);
    }
    Ok(
        json!({"tokenVaultId": record.id, "kmsConfiguration": kms, "lastModifiedDate": epoch(record.updated_ms)}),
    )
}

pub async fn get_token_vault(
    State(state): State<AppState>,
    req: Admin<TokenVaultRequest>,
) -> HttpResult<Json<Value>> {
    let mut v = Validator::new();
    let id = vault_id(&mut v, req.body.token_vault_id.as_deref());
    v.finish()?;
    Ok(Json(vault_json(&state, &id).await?))
}

pub async fn set_token_vault_cmk(
    State(state): State<AppState>,
    req: Admin<TokenVaultRequest>,
) -> HttpResult<Json<Value>> {
    let Admin { caller, body } = req;
    let mut v = Validator::new();
    let id = vault_id(&mut v, body.token_vault_id.as_deref());
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
                        v.fail(
                            "kmsConfiguration.kmsKeyArn",
                            "CustomerManagedKey is not available: this Latchkey server wraps vault keys with its configured key-encryption key (key file); configure a KMS key provider on the server to use a customer managed key",
                        );
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
    vault_json(&state, &id).await?; // existence
    let record = TokenVaultRecord {
        id: id.clone(),
        key_type: "ServiceManagedKey".into(),
        kms_key_arn: None,
        updated_ms: state.clock.now_ms(),
    };
    state.store.upsert_token_vault(&record).await?;
    state
        .auditor
        .change(
            &caller,
            "SetTokenVaultCMK",
            state.config.arn.token_vault(&id),
        )
        .await;
    Ok(Json(vault_json(&state, &id).await?))
}

pub async fn reset_token_vault_key_material(
    State(_state): State<AppState>,
    req: Admin<TokenVaultRequest>,
) -> HttpResult<Json<Value>> {
    let mut v = Validator::new();
    vault_id(&mut v, req.body.token_vault_id.as_deref());
    v.fail("tokenVaultId", "ResetTokenVaultKeyMaterial is only allowed after the vault's customer managed key was deleted; this vault uses the server's key-encryption key");
    v.finish()?;
    unreachable_response()
}

fn unreachable_response() -> HttpResult<Json<Value>> {
    Err(Error::internal("unreachable"))
}

// ------------------------------------------------------------------------------- tags

#[derive(Debug, Deserialize)]
pub struct TagRequest {
    #[serde(default)]
    tags: Option<BTreeMap<String, String>>,
}

/// Decode the ARN from the path, and check that it names an existing resource.
async fn tagged_resource(
    state: &AppState,
    raw: &str,
) -> Result<(String, ResourceKind, String), ApiError> {
    let arn = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| ApiError::field("resourceArn", "Member must be a valid ARN"))?
        .to_string();
    let mut v = Validator::new();
    v.length("resourceArn", &arn, 20, 1011);
    v.finish()?;
    let not_found = || ApiError::NotFound(format!("resource {arn:?} not found"));
    let (kind, name) = state.config.arn.parse(&arn).ok_or_else(not_found)?;
    let exists = match kind {
        ResourceKind::WorkloadIdentity => state.store.find_workload(&name).await?.is_some(),
        ResourceKind::Oauth2Provider => state.store.find_oauth2_provider(&name).await?.is_some(),
        ResourceKind::ApiKeyProvider => state.store.find_api_key_provider(&name).await?.is_some(),
        ResourceKind::TokenVault => name == DEFAULT_VAULT,
    };
    if !exists {
        return Err(not_found());
    }
    Ok((arn, kind, name))
}

fn arn_from_path(parts: &axum::http::request::Parts) -> &str {
    parts.uri.path().strip_prefix("/tags/").unwrap_or_default()
}

pub async fn tag_resource(State(state): State<AppState>, req: AdminParts) -> HttpResult<Response> {
    let body: TagRequest = serde_json::from_value(req.body)
        .map_err(|_| ApiError::cannot_parse("tags must be a map of strings"))?;
    let (arn, kind, name) = tagged_resource(&state, arn_from_path(&req.parts)).await?;
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
    state.store.tag(&arn, &tag_pairs(Some(tags))).await?;
    if kind == ResourceKind::WorkloadIdentity {
        state.workloads.invalidate(&name);
    }
    state.auditor.change(&req.caller, "TagResource", arn).await;
    Ok(no_content())
}

pub async fn untag_resource(
    State(state): State<AppState>,
    req: AdminParts,
) -> HttpResult<Response> {
    let (arn, kind, name) = tagged_resource(&state, arn_from_path(&req.parts)).await?;
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
    state.store.untag(&arn, &keys).await?;
    if kind == ResourceKind::WorkloadIdentity {
        state.workloads.invalidate(&name);
    }
    state
        .auditor
        .change(&req.caller, "UntagResource", arn)
        .await;
    Ok(no_content())
}

pub async fn list_tags_for_resource(
    State(state): State<AppState>,
    req: AdminParts,
) -> HttpResult<Json<Value>> {
    let (arn, _, _) = tagged_resource(&state, arn_from_path(&req.parts)).await?;
    let tags: serde_json::Map<String, Value> = state
        .store
        .list_tags(&arn)
        .await?
        .into_iter()
        .map(|(k, v)| (k, json!(v)))
        .collect();
    Ok(Json(json!({"tags": tags})))
}
