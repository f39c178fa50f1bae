//! Control plane: OAuth2 credential providers. Parsing, validation and vendor presets live
//! in `latchkey_core::oauth2_provider`; this module adds what needs I/O: OIDC discovery
//! through the guarded outbound client, envelope encryption of the client secret, the
//! per-provider callback URL, storage and audit.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::response::Response;
use latchkey_core::ApiError;
use latchkey_core::crypto;
use latchkey_core::oauth2_provider::{
    self, AuthorizationServerMetadata, Discovery, ProviderConfig,
};
use latchkey_core::validate::Validator;
use latchkey_store::Oauth2ProviderRecord;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::auth::Admin;
use crate::control::{
    ListRequest, NameRequest, about, audit_change, check_provider_name, check_tags, created, epoch,
    no_content, page_args, page_body, paginate,
};
use crate::http_error::HttpResult;
use crate::state::AppState;

/// What we store as the provider's non-secret configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredConfig {
    config: ProviderConfig,
    /// Endpoints resolved from `discoveryUrl` at create/update time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resolved: Option<AuthorizationServerMetadata>,
    /// Optional facts of the discovery document the flows use.
    #[serde(default)]
    discovered: Discovered,
}

/// What discovery told us beyond the endpoints the AgentCore output shows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Discovered {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revocation_endpoint: Option<String>,
    /// RFC 9207: the provider sends `iss` on its authorization responses.
    #[serde(default)]
    iss_parameter_supported: bool,
}

/// How the flows find a provider.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ProviderLookup<'a> {
    Name(&'a str),
    Callback(&'a str),
}

/// Everything the OAuth flows need of a provider. The client secret stays sealed until a
/// token request needs it ([`ProviderRuntime::token_client`]).
#[derive(Debug)]
pub(crate) struct ProviderRuntime {
    pub name: String,
    pub config: ProviderConfig,
    pub metadata: AuthorizationServerMetadata,
    pub callback_url: String,
    secret_envelope: Option<Vec<u8>>,
    pub revocation_endpoint: Option<String>,
    pub iss_parameter_supported: bool,
    pub updated_ms: i64,
}

impl ProviderRuntime {
    pub fn client_auth_method(&self) -> oauth2_provider::ClientAuthMethod {
        self.config.client_auth_method(Some(&self.metadata))
    }

    /// The provider's token endpoint with its client secret opened.
    pub async fn token_client<'a>(
        &'a self,
        state: &'a AppState,
    ) -> Result<crate::token_client::TokenClient<'a>, ApiError> {
        let secret = match &self.secret_envelope {
            Some(env) => Some(
                crypto::decrypt_string(
                    state.keys.as_ref(),
                    provider_aad(&self.name).as_bytes(),
                    env,
                )
                .await
                .map_err(|e| {
                    ApiError::internal(format!(
                        "could not open the client secret of the OAuth2 credential provider {:?}: {e}",
                        self.name
                    ))
                })?,
            ),
            None => None,
        };
        Ok(crate::token_client::TokenClient {
            http: &state.outbound,
            provider: self,
            secret,
        })
    }
}

/// Load a provider (`Ok(None)`: no such provider).
pub(crate) async fn runtime(
    state: &AppState,
    lookup: ProviderLookup<'_>,
) -> Result<Option<ProviderRuntime>, ApiError> {
    let record = match lookup {
        ProviderLookup::Name(n) => state.store.find_oauth2_provider(n).await?,
        ProviderLookup::Callback(c) => state.store.find_oauth2_provider_by_callback(c).await?,
    };
    let Some(record) = record else {
        return Ok(None);
    };
    let cfg = stored(&record)?;
    let metadata = cfg
        .resolved
        .clone()
        .or_else(|| cfg.config.metadata().cloned())
        .ok_or_else(|| {
            ApiError::internal(format!(
                "provider {:?} has no resolved endpoints",
                record.name
            ))
        })?;
    Ok(Some(ProviderRuntime {
        callback_url: callback_url(state, &record.callback_id),
        revocation_endpoint: cfg
            .config
            .revocation_endpoint
            .clone()
            .or(cfg.discovered.revocation_endpoint.clone()),
        iss_parameter_supported: cfg.discovered.iss_parameter_supported,
        name: record.name,
        config: cfg.config,
        metadata,
        secret_envelope: record.secret_envelope,
        updated_ms: record.updated_ms,
    }))
}

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

pub fn provider_aad(name: &str) -> String {
    format!("oauth2-provider:{name}")
}

fn callback_url(state: &AppState, callback_id: &str) -> String {
    format!(
        "{}/identities/oauth2/callback/{callback_id}",
        state.config.public_url
    )
}

#[derive(Debug, Deserialize)]
struct DiscoveryDocument {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    #[serde(default)]
    response_types_supported: Vec<String>,
    #[serde(default)]
    token_endpoint_auth_methods_supported: Vec<String>,
    #[serde(default)]
    revocation_endpoint: Option<String>,
    #[serde(default)]
    authorization_response_iss_parameter_supported: bool,
}

/// Fetch and check a discovery document (RFC 8414 / OIDC Discovery).
async fn discover(
    state: &AppState,
    url: &str,
) -> Result<(AuthorizationServerMetadata, Discovered), ApiError> {
    const FIELD: &str =
        "oauth2ProviderConfigInput.customOauth2ProviderConfig.oauthDiscovery.discoveryUrl";
    let doc: DiscoveryDocument = state.outbound.get_json(url).await.map_err(|e| {
        ApiError::field(
            FIELD,
            format!("the discovery document could not be fetched: {e}"),
        )
    })?;
    // The issuer must be the discovery URL's prefix (OIDC Discovery §4.3, RFC 8414 §3.3).
    let (prefix, rest) = url.split_once("/.well-known/").unwrap_or((url, ""));
    let expected = match rest.split_once('/') {
        // RFC 8414 §3.1: the issuer's path follows the well-known suffix.
        Some((_, issuer_path)) => format!("{prefix}/{issuer_path}"),
        None => prefix.to_string(),
    };
    if doc.issuer.trim_end_matches('/') != expected.trim_end_matches('/') {
        return Err(ApiError::field(
            FIELD,
            format!(
                "the discovery document's issuer {:?} does not match the discovery URL",
                doc.issuer
            ),
        ));
    }
    for (name, endpoint) in [
        ("authorization_endpoint", &doc.authorization_endpoint),
        ("token_endpoint", &doc.token_endpoint),
    ] {
        let ok = url::Url::parse(endpoint).is_ok_and(|u| matches!(u.scheme(), "https" | "http"));
        if !ok {
            return Err(ApiError::field(
                FIELD,
                format!("the discovery document's {name} is not an http(s) URL"),
            ));
        }
    }
    let revocation_endpoint = doc
        .revocation_endpoint
        .filter(|e| url::Url::parse(e).is_ok_and(|u| matches!(u.scheme(), "https" | "http")));
    let discovered = Discovered {
        revocation_endpoint,
        iss_parameter_supported: doc.authorization_response_iss_parameter_supported,
    };
    let metadata = AuthorizationServerMetadata {
        issuer: doc.issuer,
        authorization_endpoint: doc.authorization_endpoint,
        token_endpoint: doc.token_endpoint,
        response_types: doc.response_types_supported,
        token_endpoint_auth_methods: doc
            .token_endpoint_auth_methods_supported
            .into_iter()
            .filter(|m| m == "client_secret_basic" || m == "client_secret_post")
            .collect(),
    };
    Ok((metadata, discovered))
}

/// Validate, discover, and seal: everything before the store is touched.
async fn prepare(
    state: &AppState,
    body: &ProviderRequest,
    with_tags: bool,
) -> Result<(String, StoredConfig, Option<Vec<u8>>), ApiError> {
    let mut v = Validator::new();
    check_provider_name(&mut v, "name", &body.name);
    if let (true, Some(tags)) = (with_tags, &body.tags) {
        check_tags(&mut v, tags);
    }
    v.finish()?;
    let input = oauth2_provider::parse_create(
        &body.credential_provider_vendor,
        &body.oauth2_provider_config_input,
    )?;
    let (resolved, discovered) = match &input.config.discovery {
        Discovery::DiscoveryUrl(url) => {
            let (m, d) = discover(state, url).await?;
            (Some(m), d)
        }
        Discovery::Metadata(_) => (None, Discovered::default()),
    };
    let envelope = match &input.client_secret {
        Some(secret) => Some(
            crypto::encrypt(
                state.keys.as_ref(),
                provider_aad(&body.name).as_bytes(),
                secret.expose_secret().as_bytes(),
            )
            .await
            .map_err(|e| ApiError::internal(format!("could not seal a client secret: {e}")))?,
        ),
        None => None,
    };
    Ok((
        input.vendor.as_str().to_string(),
        StoredConfig {
            config: input.config,
            resolved,
            discovered,
        },
        envelope,
    ))
}

fn stored(record: &Oauth2ProviderRecord) -> Result<StoredConfig, ApiError> {
    serde_json::from_value(record.config.clone()).map_err(|e| {
        ApiError::internal(format!(
            "stored provider config of {:?} is unreadable: {e}",
            record.name
        ))
    })
}

fn provider_json(
    state: &AppState,
    record: &Oauth2ProviderRecord,
    detail: bool,
) -> Result<Value, ApiError> {
    let cfg = stored(record)?;
    let mut body = json!({
        "clientSecretArn": {"secretArn": state.config.arn.managed_secret("oauth2", &record.name)},
        "clientSecretSource": "MANAGED",
        "name": record.name,
        "credentialProviderArn": state.config.arn.oauth2_provider(&record.name),
        "callbackUrl": callback_url(state, &record.callback_id),
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
    let (vendor, config, secret_envelope) = prepare(&state, &body, true).await?;
    let now = state.clock.now_ms();
    let record = Oauth2ProviderRecord {
        name: body.name.clone(),
        vendor,
        config: serde_json::to_value(&config).map_err(ApiError::internal)?,
        secret_envelope,
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
    audit_change(&state, &caller, "CreateOauth2CredentialProvider", arn).await;
    Ok(created(provider_json(&state, &record, false)?))
}

async fn find(state: &AppState, name: &str) -> Result<Oauth2ProviderRecord, ApiError> {
    state
        .store
        .find_oauth2_provider(name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("OAuth2 credential provider {name:?} not found")))
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
    let (vendor, config, secret_envelope) = prepare(&state, &body, false).await?;
    record.vendor = vendor;
    record.config = serde_json::to_value(&config).map_err(ApiError::internal)?;
    record.secret_envelope = secret_envelope;
    record.updated_ms = state.clock.now_ms();
    state.store.update_oauth2_provider(&record).await?;
    audit_change(
        &state,
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
    audit_change(&state, &caller, "DeleteOauth2CredentialProvider", arn).await;
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
