//! Control plane: workload identities, API-key credential providers, the token vault
//! settings and tags. Every handler takes [`Admin`], so only admin credentials reach it.
//! OAuth2 credential providers live in [`crate::providers`].

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use latchkey_core::ApiError;
use latchkey_core::arn::ResourceKind;
use latchkey_core::audit::Outcome;
use latchkey_core::crypto;
use latchkey_core::validate::{
    Validator, is_provider_char, is_return_url, is_tag_char, is_workload_char,
};
use latchkey_store::{ApiKeyProviderRecord, TokenVaultRecord, WorkloadRecord};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::audit;
use crate::auth::{Admin, AdminParts, Caller};
use crate::http_error::HttpResult;
use crate::state::{ALLOW_USER_ID_TAG, AppState};

/// Epoch seconds as a JSON number (the rest-json timestamp format).
pub fn epoch(ms: i64) -> Value {
    json!(ms as f64 / 1000.0)
}

pub(crate) fn created(body: Value) -> Response {
    (StatusCode::CREATED, Json(body)).into_response()
}

pub(crate) fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// Store errors about one named resource, in the client's words.
pub(crate) fn about<'a>(
    kind: &'static str,
    name: &'a str,
) -> impl FnOnce(latchkey_store::StoreError) -> ApiError + 'a {
    move |e| match e {
        latchkey_store::StoreError::Conflict => {
            ApiError::Conflict(format!("{kind} {name:?} already exists"))
        }
        latchkey_store::StoreError::NotFound => {
            ApiError::NotFound(format!("{kind} {name:?} not found"))
        }
        e => e.into(),
    }
}

pub(crate) async fn audit_change(state: &AppState, caller: &Caller, action: &str, target: String) {
    let mut e = audit::event(state.clock.now_ms(), Some(caller), action, Outcome::Success);
    e.target = Some(target);
    state.audit.record(e).await;
}

// ------------------------------------------------------------------ validation helpers

pub(crate) fn check_workload_name(v: &mut Validator, field: &str, name: &str) {
    v.chars(field, name, 3, 255, is_workload_char, "[A-Za-z0-9_.-]+");
}

pub(crate) fn check_provider_name(v: &mut Validator, field: &str, name: &str) {
    v.chars(field, name, 1, 128, is_provider_char, "[a-zA-Z0-9\\-_]+");
}

fn check_return_urls(v: &mut Validator, urls: &[String]) {
    for (i, u) in urls.iter().enumerate() {
        let field = format!("allowedResourceOauth2ReturnUrls.{i}");
        if v.length(&field, u, 1, 2048) {
            v.check(
                &field,
                is_return_url(u),
                "Member must satisfy regular expression pattern: \\w+:(\\/?\\/?)[^\\s]+",
            );
        }
    }
}

pub(crate) fn check_tags(v: &mut Validator, tags: &BTreeMap<String, String>) {
    v.check(
        "tags",
        tags.len() <= 50,
        "Member must have length less than or equal to 50",
    );
    for (k, val) in tags {
        v.chars(
            "tags.key",
            k,
            1,
            128,
            is_tag_char,
            "[a-zA-Z0-9\\s._:/=+@-]*",
        );
        v.chars(
            &format!("tags.{k}"),
            val,
            0,
            256,
            is_tag_char,
            "[a-zA-Z0-9\\s._:/=+@-]*",
        );
    }
    if let Some(val) = tags.get(ALLOW_USER_ID_TAG) {
        v.check(
            &format!("tags.{ALLOW_USER_ID_TAG}"),
            val == "true" || val == "false",
            "Member must be \"true\" or \"false\"",
        );
    }
}

fn tag_pairs(tags: Option<BTreeMap<String, String>>) -> Vec<(String, String)> {
    tags.unwrap_or_default().into_iter().collect()
}

/// Pagination: `maxResults` within `1..=max`, `nextToken` an opaque cursor we issued.
pub(crate) fn page_args(
    v: &mut Validator,
    max_results: Option<i64>,
    max: i64,
    next_token: Option<&str>,
) -> (i64, Option<String>) {
    let limit = max_results.unwrap_or(max);
    v.check(
        "maxResults",
        (1..=max).contains(&limit),
        format!("Member must have value between 1 and {max}, inclusive"),
    );
    let after =
        next_token.and_then(
            |t| match B64.decode(t).ok().and_then(|b| String::from_utf8(b).ok()) {
                Some(name) => Some(name),
                None => {
                    v.fail(
                        "nextToken",
                        "Member must be a token returned by a previous call",
                    );
                    None
                }
            },
        );
    (limit.clamp(1, max), after)
}

/// A list response: `{key: items}` plus `nextToken` when there is more.
pub(crate) fn page_body(key: &str, items: Vec<Value>, next: Option<String>) -> Value {
    let mut body = json!({ key: items });
    if let Some(t) = next {
        body["nextToken"] = json!(t);
    }
    body
}

/// Given `limit + 1` rows fetched, the page and the next token.
pub(crate) fn paginate<T>(
    mut rows: Vec<T>,
    limit: i64,
    name: impl Fn(&T) -> &str,
) -> (Vec<T>, Option<String>) {
    let limit = limit as usize;
    if rows.len() > limit {
        rows.truncate(limit);
        let token = rows.last().map(|r| B64.encode(name(r)));
        (rows, token)
    } else {
        (rows, None)
    }
}

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
pub struct NameRequest {
    pub(crate) name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateWorkloadIdentityRequest {
    name: String,
    #[serde(default)]
    allowed_resource_oauth2_return_urls: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListRequest {
    #[serde(default)]
    pub(crate) next_token: Option<String>,
    #[serde(default)]
    pub(crate) max_results: Option<i64>,
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
    audit_change(&state, &caller, "CreateWorkloadIdentity", arn).await;
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
    audit_change(
        &state,
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
    audit_change(&state, &caller, "DeleteWorkloadIdentity", arn).await;
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

pub fn api_key_aad(name: &str) -> String {
    format!("apikey-provider:{name}")
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
async fn api_key_envelope(
    state: &AppState,
    body: &ApiKeyProviderRequest,
) -> Result<Vec<u8>, ApiError> {
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
    crypto::encrypt(state.keys.as_ref(), api_key_aad(&body.name).as_bytes(), key)
        .await
        .map_err(|e| ApiError::internal(format!("could not seal an API key: {e}")))
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
    audit_change(&state, &caller, "CreateApiKeyCredentialProvider", arn).await;
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
    audit_change(
        &state,
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
    audit_change(&state, &caller, "DeleteApiKeyCredentialProvider", arn).await;
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
    audit_change(
        &state,
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
    Err(ApiError::internal("unreachable").into())
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
    audit_change(&state, &req.caller, "TagResource", arn).await;
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
    audit_change(&state, &req.caller, "UntagResource", arn).await;
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
