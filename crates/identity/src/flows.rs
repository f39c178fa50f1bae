//! The OAuth flows: `GetResourceOauth2Token` (user federation and client credentials),
//! the browser endpoints (`/identities/oauth2/authorize`, `/identities/oauth2/callback/{id}`)
//! and `CompleteResourceTokenAuth` (session binding).
//!
//! A session goes PENDING → (callback with a code) CALLBACK → (the session's own user
//! completes it) EXCHANGING → COMPLETED, or to FAILED. Each step is a compare-and-set on
//! the status, so a replayed `state`, code or completion finds the session already moved,
//! and nothing but its own exchange moves a session out of EXCHANGING.
//!
//! Two URNs name a session. The `sessionUri` (polling) is known to the workload that
//! started it, and so to whoever it shows the authorization link. The **completion URN**
//! is issued at the callback, only to the browser that came back from the provider, in the
//! `session_id` of the redirect to the return URL; `CompleteResourceTokenAuth` accepts only
//! it. So the initiator of a flow cannot complete a consent someone else gave on his link
//! (browser swapping), however fast he reloads the binding URL.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use latchkey_core::audit::Outcome;
use latchkey_core::audit::chain::{session_ref, vend_id};
use latchkey_core::crypto;
use latchkey_core::validate::{
    Validator, is_custom_param_key_char, is_jwt_shape, is_return_url, is_session_uri,
};
use latchkey_core::wat::WatClaims;
use latchkey_core::{ApiError, UserKind, UserPrincipal};
use latchkey_store::{GrantKey, GrantTokens, SessionRecord, SessionStatus, StoreError};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::audit::record;
use crate::auth::{Binding, Caller, DataPlane};
use crate::control::check_provider_name;
use crate::data::{check_wat_field, verify_wat};
use crate::http_error::HttpResult;
use crate::pages::{self, BrowserError};
use crate::providers::{self, ProviderLookup, ProviderRuntime};
use crate::state::AppState;
use crate::vault::{self, VaultAnswer};

pub const SESSION_URI_PREFIX: &str = "urn:ietf:params:oauth:request_uri:";

/// Parameters the flow sets itself; `customParameters` may never name them.
const STANDARD_PARAMETERS: &[&str] = &[
    "response_type",
    "response_mode",
    "client_id",
    "client_secret",
    "redirect_uri",
    "scope",
    "user_scope",
    "state",
    "code_challenge",
    "code_challenge_method",
    "code_verifier",
    "resource",
    "request",
    "request_uri",
    "grant_type",
    "code",
    "nonce",
];

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRequest {
    workload_identity_token: SecretString,
    resource_credential_provider_name: String,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    oauth2_flow: Option<String>,
    #[serde(default)]
    session_uri: Option<String>,
    #[serde(default)]
    resource_oauth2_return_url: Option<String>,
    #[serde(default)]
    force_authentication: Option<bool>,
    #[serde(default)]
    custom_parameters: Option<BTreeMap<String, SecretString>>,
    #[serde(default)]
    custom_state: Option<SecretString>,
    #[serde(default)]
    resources: Option<Vec<String>>,
    #[serde(default)]
    audiences: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    UserFederation,
    M2m,
    OnBehalfOf,
}

/// Non-secret facts of a session (stored as JSON).
#[derive(Debug, Serialize, Deserialize)]
struct SessionRequest {
    scopes: Vec<String>,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    audiences: Vec<String>,
    #[serde(default)]
    return_url: Option<String>,
}

/// Secret facts of a session, sealed together.
#[derive(Serialize, Deserialize)]
struct SessionSecrets {
    /// The OAuth `state` (only its hash is a lookup column).
    state: String,
    verifier: String,
    #[serde(default)]
    custom_state: Option<String>,
    #[serde(default)]
    custom_parameters: BTreeMap<String, String>,
}

pub fn session_aad(id: &str) -> String {
    format!("auth-session:{id}")
}

pub fn code_aad(id: &str) -> String {
    format!("auth-session-code:{id}")
}

fn random_b64(n: usize) -> Result<String, ApiError> {
    let mut buf = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut buf).map_err(|_| ApiError::internal("random source failed"))?;
    Ok(B64.encode(buf))
}

fn sha256_hex(s: &str) -> String {
    hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        s.as_bytes(),
    ))
}

/// An event about an authorization session: its workload, user and provider.
async fn record_session(
    state: &AppState,
    caller: Option<&Caller>,
    action: &str,
    session: &SessionRecord,
    outcome: Outcome,
    mut detail: Value,
) {
    // Joinable without a bearer value: the session's digest, never its id.
    if let Some(d) = detail.as_object_mut() {
        d.insert("session".into(), session_ref(&session.id).into());
    }
    record(
        state,
        caller,
        action,
        Some(&session.workload),
        Some(&session.user),
        Some(&session.provider),
        outcome,
        detail,
    )
    .await;
}

fn validate_token_request(body: &TokenRequest) -> Result<Flow, ApiError> {
    let mut v = Validator::new();
    check_wat_field(&mut v, body.workload_identity_token.expose_secret());
    check_provider_name(
        &mut v,
        "resourceCredentialProviderName",
        &body.resource_credential_provider_name,
    );
    match &body.scopes {
        Some(scopes) => {
            for s in scopes {
                v.length("scopes", s, 1, 128);
            }
        }
        None => v.fail("scopes", "Member must not be null"),
    }
    let flow = match body.oauth2_flow.as_deref() {
        Some("USER_FEDERATION") => Some(Flow::UserFederation),
        Some("M2M") => Some(Flow::M2m),
        Some("ON_BEHALF_OF_TOKEN_EXCHANGE") => Some(Flow::OnBehalfOf),
        Some(_) => {
            v.fail(
                "oauth2Flow",
                "Member must satisfy enum value set: [USER_FEDERATION, M2M, ON_BEHALF_OF_TOKEN_EXCHANGE]",
            );
            None
        }
        None => {
            v.fail("oauth2Flow", "Member must not be null");
            None
        }
    };
    if let Some(uri) = &body.session_uri
        && v.length("sessionUri", uri, 1, 1024)
    {
        v.check(
            "sessionUri",
            is_session_uri(uri),
            "Member must satisfy regular expression pattern: urn:ietf:params:oauth:request_uri:[a-zA-Z0-9-._~]+",
        );
    }
    if let Some(url) = &body.resource_oauth2_return_url
        && v.length("resourceOauth2ReturnUrl", url, 1, 2048)
    {
        v.check(
            "resourceOauth2ReturnUrl",
            is_return_url(url),
            "Member must satisfy regular expression pattern: \\w+:(\\/?\\/?)[^\\s]+",
        );
    }
    if let Some(params) = &body.custom_parameters {
        for (k, val) in params {
            if v.chars(
                "customParameters",
                k,
                1,
                256,
                is_custom_param_key_char,
                "[a-zA-Z0-9\\-_\\.]+",
            ) {
                v.check(
                    "customParameters",
                    !STANDARD_PARAMETERS.contains(&k.to_ascii_lowercase().as_str()),
                    format!("custom parameter {k:?} would override a standard OAuth parameter"),
                );
            }
            v.length("customParameters", val.expose_secret(), 1, 2048);
        }
    }
    if let Some(cs) = &body.custom_state {
        v.length("customState", cs.expose_secret(), 1, 4096);
    }
    for (name, list) in [
        ("resources", &body.resources),
        ("audiences", &body.audiences),
    ] {
        for item in list.iter().flatten() {
            v.length(name, item, 1, 2048);
        }
    }
    if let Some(resources) = &body.resources {
        for r in resources {
            // RFC 8707 §2: an absolute URI without a fragment.
            let ok = url::Url::parse(r).is_ok_and(|u| u.fragment().is_none());
            v.check(
                "resources",
                ok,
                "each resource must be an absolute URI without a fragment",
            );
        }
    }
    v.finish()?;
    flow.ok_or_else(|| ApiError::cannot_parse("oauth2Flow is required"))
}

/// `POST /identities/oauth2/token`.
pub async fn get_resource_oauth2_token(
    State(state): State<AppState>,
    req: DataPlane<TokenRequest>,
) -> HttpResult<Json<Value>> {
    const ACTION: &str = "GetResourceOauth2Token";
    let DataPlane { caller, body } = req;
    let flow = validate_token_request(&body)?;
    let claims = verify_wat(
        &state,
        &caller,
        body.workload_identity_token.expose_secret(),
        ACTION,
    )
    .await?;
    // A return URL is checked on every call, vault hit or not (from the workload facts
    // `verify_wat` just cached).
    if let Some(url) = &body.resource_oauth2_return_url
        && !state
            .workload_facts(&claims.sub)
            .await?
            .return_urls
            .iter()
            .any(|allowed| allowed == url)
    {
        return Err(ApiError::field(
            "resourceOauth2ReturnUrl",
            "the return URL is not in the workload identity's allowedResourceOauth2ReturnUrls (exact match required)",
        )
        .into());
    }
    let name = body.resource_credential_provider_name.as_str();
    let scopes = body.scopes.clone().unwrap_or_default();
    let resources = body.resources.clone().unwrap_or_default();
    match flow {
        Flow::OnBehalfOf => Err(ApiError::cannot_parse(
            "oauth2Flow ON_BEHALF_OF_TOKEN_EXCHANGE is not yet supported by Latchkey",
        )
        .into()),
        Flow::M2m => {
            let provider = load_provider(&state, name).await?;
            let audiences = body.audiences.clone().unwrap_or_default();
            let token = vault::m2m_token(&state, &provider, &scopes, &resources, &audiences).await;
            let outcome = if token.is_ok() {
                Outcome::Success
            } else {
                Outcome::Failed
            };
            record(
                &state,
                Some(&caller),
                ACTION,
                Some(&claims.sub),
                claims.user.as_ref(),
                Some(name),
                outcome,
                json!({"provider": name, "flow": "M2M", "scopes": scopes,
                    "vendId": token.as_ref().ok().map(|t| vend_id(t.expose_secret()))}),
            )
            .await;
            Ok(Json(json!({"accessToken": token?.expose_secret()})))
        }
        Flow::UserFederation => {
            let Some(user) = claims.user.clone() else {
                return Err(ApiError::cannot_parse(
                    "USER_FEDERATION needs a workload access token issued for a user (GetWorkloadAccessTokenForJWT or GetWorkloadAccessTokenForUserId)",
                )
                .into());
            };
            user_federation(&state, &caller, &claims, &user, &body, scopes, resources).await
        }
    }
}

async fn load_provider(state: &AppState, name: &str) -> Result<ProviderRuntime, ApiError> {
    providers::runtime(state, ProviderLookup::Name(name))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("OAuth2 credential provider {name:?} not found")))
}

#[allow(clippy::too_many_arguments)]
async fn user_federation(
    state: &AppState,
    caller: &Caller,
    claims: &WatClaims,
    user: &UserPrincipal,
    body: &TokenRequest,
    scopes: Vec<String>,
    resources: Vec<String>,
) -> HttpResult<Json<Value>> {
    const ACTION: &str = "GetResourceOauth2Token";
    let name = body.resource_credential_provider_name.as_str();
    let key = GrantKey {
        workload: claims.sub.clone(),
        user: user.clone(),
        provider: name.to_string(),
    };
    let audit = |outcome: Outcome, detail: Value| {
        record(
            state,
            Some(caller),
            ACTION,
            Some(&key.workload),
            Some(user),
            Some(name),
            outcome,
            detail,
        )
    };
    // Polling a session: its status until it completes, then the vault.
    if let Some(uri) = &body.session_uri {
        let id = uri.trim_start_matches(SESSION_URI_PREFIX);
        let session = state
            .store
            .find_session(id)
            .await?
            .ok_or_else(unknown_session)?;
        if session.workload != key.workload
            || session.user != key.user
            || session.provider != key.provider
        {
            audit(
                Outcome::Denied,
                json!({"provider": name, "reason": "session of another workload, user or provider"}),
            )
            .await;
            return Err(ApiError::AccessDenied(
                "this authorization session belongs to another workload, user or provider".into(),
            )
            .into());
        }
        let expired = session.expires_ms <= state.clock.now_ms();
        match session.status {
            SessionStatus::Completed => {}
            SessionStatus::Failed => return Ok(Json(session_status(uri, "FAILED"))),
            _ if expired => return Ok(Json(session_status(uri, "FAILED"))),
            _ => return Ok(Json(session_status(uri, "IN_PROGRESS"))),
        }
    }
    let answer = if body.force_authentication.unwrap_or(false) && body.session_uri.is_none() {
        VaultAnswer::NeedsConsent {
            scopes: scopes.clone(),
            reason: "forceAuthentication",
        }
    } else {
        vault::get(state, &key, &scopes, &resources).await?
    };
    match answer {
        VaultAnswer::Token(token) => {
            // The vend id joins this event to the agent's tool call that uses the token.
            audit(
                Outcome::Success,
                json!({"provider": name, "flow": "USER_FEDERATION", "scopes": scopes,
                    "vendId": vend_id(token.expose_secret()),
                    "session": body.session_uri.as_deref().map(|u| session_ref(u.trim_start_matches(SESSION_URI_PREFIX)))}),
            )
            .await;
            Ok(Json(json!({"accessToken": token.expose_secret()})))
        }
        VaultAnswer::NeedsConsent {
            scopes: wanted,
            reason,
        } => {
            let provider = load_provider(state, name).await?;
            let (uri, url) =
                start_session(state, &key, &provider, body, wanted.clone(), resources).await?;
            audit(
                Outcome::Success,
                json!({"provider": name, "flow": "USER_FEDERATION", "scopes": wanted, "consent": reason,
                    "session": session_ref(uri.trim_start_matches(SESSION_URI_PREFIX))}),
            )
            .await;
            Ok(Json(json!({
                "authorizationUrl": url,
                "sessionUri": uri,
                "sessionStatus": "IN_PROGRESS",
            })))
        }
    }
}

fn session_status(uri: &str, status: &str) -> Value {
    json!({"sessionUri": uri, "sessionStatus": status})
}

/// Create an authorization session; returns its `sessionUri` and authorization URL.
#[allow(clippy::too_many_arguments)]
async fn start_session(
    state: &AppState,
    key: &GrantKey,
    provider: &ProviderRuntime,
    body: &TokenRequest,
    scopes: Vec<String>,
    resources: Vec<String>,
) -> Result<(String, String), ApiError> {
    let id = random_b64(32)?;
    let oauth_state = random_b64(32)?;
    let secrets = SessionSecrets {
        state: oauth_state.clone(),
        verifier: random_b64(32)?,
        custom_state: body
            .custom_state
            .as_ref()
            .map(|s| s.expose_secret().to_string()),
        custom_parameters: body
            .custom_parameters
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.expose_secret().to_string()))
            .collect(),
    };
    let sealed = serde_json::to_vec(&secrets).map_err(ApiError::internal)?;
    let secrets_envelope =
        crypto::encrypt(state.keys.as_ref(), session_aad(&id).as_bytes(), &sealed)
            .await
            .map_err(|e| {
                ApiError::internal(format!("could not seal an authorization session: {e}"))
            })?;
    let request = SessionRequest {
        scopes,
        resources,
        audiences: body.audiences.clone().unwrap_or_default(),
        return_url: body.resource_oauth2_return_url.clone(),
    };
    let now = state.clock.now_ms();
    state
        .store
        .create_session(&SessionRecord {
            id: id.clone(),
            state_hash: sha256_hex(&oauth_state),
            workload: key.workload.clone(),
            user: key.user.clone(),
            provider: provider.name.clone(),
            request: serde_json::to_value(&request).map_err(ApiError::internal)?,
            secrets_envelope,
            code_envelope: None,
            status: SessionStatus::Pending,
            failure: None,
            created_ms: now,
            expires_ms: now + state.config.session_ttl_secs * 1000,
            updated_ms: now,
        })
        .await?;
    let uri = format!("{SESSION_URI_PREFIX}{id}");
    let url = format!(
        "{}/identities/oauth2/authorize?request_uri={}",
        state.config.public_url,
        url::form_urlencoded::byte_serialize(uri.as_bytes()).collect::<String>()
    );
    Ok((uri, url))
}

async fn open_secrets(state: &AppState, s: &SessionRecord) -> Result<SessionSecrets, ApiError> {
    let bytes = crypto::decrypt(
        state.keys.as_ref(),
        session_aad(&s.id).as_bytes(),
        &s.secrets_envelope,
    )
    .await
    .map_err(|e| {
        ApiError::internal(format!(
            "could not open the secrets of an authorization session: {e}"
        ))
    })?;
    serde_json::from_slice(&bytes).map_err(ApiError::internal)
}

fn session_request(s: &SessionRecord) -> Result<SessionRequest, ApiError> {
    serde_json::from_value(s.request.clone()).map_err(ApiError::internal)
}

/// Any failure of a dependency during a browser step: logged (unless merely unavailable),
/// and the browser is asked to try again.
fn browser_error(e: ApiError) -> BrowserError {
    if !matches!(e, ApiError::Unavailable { .. }) {
        tracing::error!(error = %e, context = e.internal_context().unwrap_or(""), "browser flow step failed");
    }
    BrowserError::Unavailable
}

/// A state seen where it should not be is burnt: the session fails, and that is audited.
async fn deny_callback(
    state: &AppState,
    session: &SessionRecord,
    provider: &str,
    why: BrowserError,
    now: i64,
) -> BrowserError {
    if matches!(
        session.status,
        SessionStatus::Pending | SessionStatus::Callback
    ) {
        // Compare-and-set on the status seen: a session claimed since stays as it is.
        let _ = state
            .store
            .fail_session(&session.id, session.status, why.as_str(), now)
            .await;
    }
    record_session(
        state,
        None,
        "OAuth2Callback",
        session,
        Outcome::Denied,
        json!({"provider": provider, "reason": why.as_str()}),
    )
    .await;
    why
}

/// Move a PENDING session on (to CALLBACK with the code, or to FAILED); a session another
/// request moved first is a replay.
async fn leave_pending(
    state: &AppState,
    id: &str,
    to: SessionStatus,
    code_envelope: Option<&[u8]>,
    failure: Option<&str>,
    now: i64,
) -> Result<(), BrowserError> {
    match state
        .store
        .transition_session(id, SessionStatus::Pending, to, code_envelope, failure, now)
        .await
    {
        Ok(()) => Ok(()),
        Err(StoreError::NotFound) => Err(BrowserError::AlreadyUsed),
        Err(e) => Err(browser_error(e.into())),
    }
}

#[derive(Debug, Deserialize)]
pub struct AuthorizeQuery {
    request_uri: Option<String>,
}

/// `GET /identities/oauth2/authorize?request_uri=…`: send the browser to the provider.
pub async fn authorize(State(state): State<AppState>, Query(q): Query<AuthorizeQuery>) -> Response {
    match authorize_inner(&state, q).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn authorize_inner(state: &AppState, q: AuthorizeQuery) -> Result<Response, BrowserError> {
    let uri = q
        .request_uri
        .filter(|u| u.len() <= 1024 && is_session_uri(u))
        .ok_or(BrowserError::BadRequest)?;
    let id = uri.trim_start_matches(SESSION_URI_PREFIX);
    let session = state
        .store
        .find_session(id)
        .await
        .map_err(|e| browser_error(e.into()))?
        .ok_or(BrowserError::UnknownSession)?;
    if session.status != SessionStatus::Pending {
        return Err(BrowserError::AlreadyUsed);
    }
    if session.expires_ms <= state.clock.now_ms() {
        return Err(BrowserError::Expired);
    }
    let provider = providers::runtime(state, ProviderLookup::Name(&session.provider))
        .await
        .map_err(browser_error)?
        .ok_or(BrowserError::UnknownSession)?;
    let secrets = open_secrets(state, &session).await.map_err(browser_error)?;
    let request = session_request(&session).map_err(browser_error)?;
    let url = authorization_url(&provider, &request, &secrets).ok_or_else(|| {
        tracing::error!(provider = %provider.name, "the provider's authorization endpoint is not a URL");
        BrowserError::Unavailable
    })?;
    record_session(
        state,
        None,
        "OAuth2Authorize",
        &session,
        Outcome::Success,
        json!({"provider": session.provider, "scopes": request.scopes}),
    )
    .await;
    Ok(pages::redirect(&url))
}

/// The provider's authorization URL for a session: vendor defaults, then the caller's
/// custom parameters, then the standard parameters (which nothing can override).
fn authorization_url(
    provider: &ProviderRuntime,
    request: &SessionRequest,
    secrets: &SessionSecrets,
) -> Option<String> {
    let mut url = url::Url::parse(&provider.metadata.authorization_endpoint).ok()?;
    let quirks = &provider.config.quirks;
    let mut scopes = request.scopes.clone();
    if let Some(offline) = &quirks.offline_scope
        && !scopes.contains(offline)
    {
        scopes.push(offline.clone());
    }
    let scope = scopes.join(&quirks.scope_separator);
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in &quirks.authorize_params {
            if !secrets.custom_parameters.contains_key(k) {
                q.append_pair(k, v);
            }
        }
        for (k, v) in &secrets.custom_parameters {
            q.append_pair(k, v);
        }
        q.append_pair("response_type", "code");
        q.append_pair("client_id", &provider.config.client_id);
        q.append_pair("redirect_uri", &provider.callback_url);
        if !scope.is_empty() {
            q.append_pair(
                if quirks.slack_user_token {
                    "user_scope"
                } else {
                    "scope"
                },
                &scope,
            );
        }
        q.append_pair("state", &secrets.state);
        q.append_pair(
            "code_challenge",
            &latchkey_authn::pkce::code_challenge(&secrets.verifier),
        );
        q.append_pair("code_challenge_method", "S256");
        for r in &request.resources {
            q.append_pair("resource", r);
        }
    }
    Some(url.into())
}

#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    code: Option<SecretString>,
    state: Option<SecretString>,
    iss: Option<String>,
    error: Option<String>,
}

/// `GET /identities/oauth2/callback/{id}`: the provider's answer for one of its sessions.
pub async fn callback(
    State(state): State<AppState>,
    Path(callback_id): Path<String>,
    Query(q): Query<CallbackQuery>,
) -> Response {
    match callback_inner(&state, &callback_id, q).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn callback_inner(
    state: &AppState,
    callback_id: &str,
    q: CallbackQuery,
) -> Result<Response, BrowserError> {
    if callback_id.len() > 64 {
        return Err(BrowserError::BadRequest);
    }
    let oauth_state = q
        .state
        .filter(|s| !s.expose_secret().is_empty() && s.expose_secret().len() <= 512)
        .ok_or(BrowserError::BadRequest)?;
    let provider = providers::runtime(state, ProviderLookup::Callback(callback_id))
        .await
        .map_err(browser_error)?
        .ok_or(BrowserError::UnknownSession)?;
    let session = state
        .store
        .find_session_by_state(&sha256_hex(oauth_state.expose_secret()))
        .await
        .map_err(|e| browser_error(e.into()))?
        .ok_or(BrowserError::UnknownSession)?;
    let now = state.clock.now_ms();
    // Mix-up defence: the state must belong to a session of *this* provider.
    if session.provider != provider.name {
        return Err(deny_callback(
            state,
            &session,
            &provider.name,
            BrowserError::WrongProvider,
            now,
        )
        .await);
    }
    if session.status != SessionStatus::Pending {
        // A replayed callback (code replay): leave the session as it is.
        return Err(BrowserError::AlreadyUsed);
    }
    if session.expires_ms <= now {
        return Err(
            deny_callback(state, &session, &provider.name, BrowserError::Expired, now).await,
        );
    }
    // RFC 9207: when the provider names itself, it must be the issuer we know.
    match &q.iss {
        Some(iss) if iss != &provider.metadata.issuer => {
            return Err(deny_callback(
                state,
                &session,
                &provider.name,
                BrowserError::IssuerMismatch,
                now,
            )
            .await);
        }
        None if provider.iss_parameter_supported => {
            return Err(deny_callback(
                state,
                &session,
                &provider.name,
                BrowserError::IssuerMismatch,
                now,
            )
            .await);
        }
        _ => {}
    }
    let request = session_request(&session).map_err(browser_error)?;
    let secrets = open_secrets(state, &session).await.map_err(browser_error)?;
    let uri = format!("{SESSION_URI_PREFIX}{}", session.id);
    if let Some(error) = q.error {
        let error: String = error
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect();
        let error = if error.is_empty() {
            "server_error".to_string()
        } else {
            error
        };
        leave_pending(
            state,
            &session.id,
            SessionStatus::Failed,
            None,
            Some(&format!("provider error: {error}")),
            now,
        )
        .await?;
        record_session(
            state,
            None,
            "OAuth2Callback",
            &session,
            Outcome::Failed,
            json!({"provider": provider.name, "error": error}),
        )
        .await;
        return Ok(finish_redirect(&request, &secrets, &uri, Some(&error)));
    }
    let code = q
        .code
        .filter(|c| !c.expose_secret().is_empty() && c.expose_secret().len() <= 4096)
        .ok_or(BrowserError::BadRequest)?;
    let code_envelope = crypto::encrypt(
        state.keys.as_ref(),
        code_aad(&session.id).as_bytes(),
        code.expose_secret().as_bytes(),
    )
    .await
    .map_err(|e| {
        browser_error(ApiError::internal(format!(
            "could not seal the code of a session: {e}"
        )))
    })?;
    // The one-time completion URN: only this browser gets it, only its hash is kept.
    let completion = format!(
        "{SESSION_URI_PREFIX}{}",
        random_b64(32).map_err(browser_error)?
    );
    match state
        .store
        .receive_callback(&session.id, &code_envelope, &sha256_hex(&completion), now)
        .await
    {
        Ok(()) => {}
        Err(StoreError::NotFound) => return Err(BrowserError::AlreadyUsed),
        Err(e) => return Err(browser_error(e.into())),
    }
    record_session(
        state,
        None,
        "OAuth2Callback",
        &session,
        Outcome::Success,
        json!({"provider": provider.name}),
    )
    .await;
    Ok(finish_redirect(&request, &secrets, &completion, None))
}

/// Send the browser on to the return URL (`session_id`, `state` = custom state, `error`),
/// or show Latchkey's own page when the flow has no return URL. `uri` is the one-time
/// completion URN after a consent, the polling `sessionUri` after a provider error (that
/// session can no longer be completed).
fn finish_redirect(
    request: &SessionRequest,
    secrets: &SessionSecrets,
    uri: &str,
    error: Option<&str>,
) -> Response {
    let Some(return_url) = request
        .return_url
        .as_deref()
        .and_then(|u| url::Url::parse(u).ok())
    else {
        return match error {
            // No return URL: the completion URN is shown to this browser's user, who hands
            // it to the application themself (nobody else ever sees it).
            None => pages::completion_code_page(uri),
            Some(_) => pages::page(
                axum::http::StatusCode::BAD_REQUEST,
                "Authorization declined",
                "The provider did not grant access. Nothing was stored. Start again from the application.",
            ),
        };
    };
    let mut url = return_url;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("session_id", uri);
        if let Some(cs) = &secrets.custom_state {
            q.append_pair("state", cs);
        }
        if let Some(e) = error {
            q.append_pair("error", e);
        }
    }
    pages::redirect(url.as_str())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompleteRequest {
    #[serde(default)]
    user_identifier: Option<UserIdentifier>,
    #[serde(default)]
    session_uri: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserIdentifier {
    #[serde(default)]
    user_token: Option<SecretString>,
    #[serde(default)]
    user_id: Option<String>,
}

/// `POST /identities/CompleteResourceTokenAuth`: bind the consent to the session's user,
/// then (and only then) exchange the code and store the grant.
pub async fn complete_resource_token_auth(
    State(state): State<AppState>,
    req: Binding<CompleteRequest>,
) -> HttpResult<Json<Value>> {
    const ACTION: &str = "CompleteResourceTokenAuth";
    let Binding { caller, body } = req;
    let mut v = Validator::new();
    match &body.session_uri {
        Some(uri) => {
            if v.length("sessionUri", uri, 1, 1024) {
                v.check("sessionUri", is_session_uri(uri), "Member must satisfy regular expression pattern: urn:ietf:params:oauth:request_uri:[a-zA-Z0-9-._~]+");
            }
        }
        None => v.fail("sessionUri", "Member must not be null"),
    }
    match &body.user_identifier {
        None => v.fail("userIdentifier", "Member must not be null"),
        Some(
            UserIdentifier {
                user_token: Some(_),
                user_id: Some(_),
            }
            | UserIdentifier {
                user_token: None,
                user_id: None,
            },
        ) => {
            v.fail(
                "userIdentifier",
                "exactly one of userToken and userId must be set",
            );
        }
        Some(UserIdentifier {
            user_token: Some(t),
            ..
        }) => {
            if v.length("userIdentifier.userToken", t.expose_secret(), 1, 131_072) {
                v.check("userIdentifier.userToken", is_jwt_shape(t.expose_secret()), "Member must satisfy regular expression pattern: [A-Za-z0-9-_=]+.[A-Za-z0-9-_=]+.[A-Za-z0-9-_=]+");
            }
        }
        Some(UserIdentifier {
            user_id: Some(u), ..
        }) => {
            v.user_id("userIdentifier.userId", u);
        }
    }
    v.finish()?;
    let uri = body.session_uri.unwrap_or_default();
    let identifier = body
        .user_identifier
        .ok_or_else(|| ApiError::cannot_parse("userIdentifier is required"))?;
    // Only the one-time completion URN issued at the callback names a session here. The
    // polling `sessionUri`, a URN of a session before its callback, or anything else gets
    // the answer of an unknown session, and nothing changes.
    let session = state
        .store
        .find_session_by_completion(&sha256_hex(&uri))
        .await?
        .ok_or_else(unknown_session)?;
    let now = state.clock.now_ms();
    let audit = |outcome: Outcome, detail: Value| {
        record_session(&state, Some(&caller), ACTION, &session, outcome, detail)
    };
    match session.status {
        // Waiting for completion, or already claimed: the user is checked first, so a wrong
        // user is told so (and changes nothing) whenever they come.
        SessionStatus::Callback | SessionStatus::Exchanging | SessionStatus::Completed => {}
        // A completion URN exists only from the callback on.
        SessionStatus::Pending => return Err(unknown_session().into()),
        SessionStatus::Failed => {
            return Err(ApiError::cannot_parse(format!(
                "authorization session failed: {}",
                session.failure.as_deref().unwrap_or("unknown reason")
            ))
            .into());
        }
    }
    if session.status == SessionStatus::Callback && session.expires_ms <= now {
        let _ = state
            .store
            .fail_session(
                &session.id,
                SessionStatus::Callback,
                "expired before completion",
                now,
            )
            .await;
        audit(Outcome::Denied, json!({"reason": "session expired"})).await;
        return Err(ApiError::cannot_parse(
            "authorization session expired: start the authorization again",
        )
        .into());
    }
    let request = session_request(&session)?;
    // [flows-identity] Who is completing? The same user (kind, issuer, subject) who
    // started the flow, or nobody.
    let completing = completing_user(&state, &identifier).await;
    let mismatch = match &completing {
        Ok(user) => same_user(&session.user, user).err().map(str::to_string),
        Err(reason) => Some(reason.clone()),
    };
    // [/flows-identity]
    if let Some(reason) = mismatch {
        // Fail the session only if nobody claimed it meanwhile (compare-and-set from
        // CALLBACK): a wrong user never breaks the exchange of the right one.
        let failed = session.status == SessionStatus::Callback
            && match state
                .store
                .fail_session(
                    &session.id,
                    SessionStatus::Callback,
                    "user mismatch at completion",
                    now,
                )
                .await
            {
                Ok(()) => true,
                Err(StoreError::NotFound) => false,
                Err(e) => return Err(e.into()),
            };
        audit(
            Outcome::Denied,
            // A refused binding records both users: the session's and the completing one.
            json!({"reason": reason, "provider": session.provider, "session_failed": failed,
                "sessionUser": user_ref(&session.user),
                "completingUser": completing.as_ref().ok().map(user_ref)}),
        )
        .await;
        let outcome = if failed {
            "the authorization session has failed and nothing was stored"
        } else {
            "nothing was stored for this user"
        };
        return Err(ApiError::AccessDenied(format!("{reason}; {outcome}")).into());
    }
    if session.status != SessionStatus::Callback {
        audit(Outcome::Denied, json!({"reason": "session already used"})).await;
        return Err(already_used().into());
    }
    // Claim the session: exactly one completion gets past this line.
    match state
        .store
        .transition_session(
            &session.id,
            SessionStatus::Callback,
            SessionStatus::Exchanging,
            None,
            None,
            now,
        )
        .await
    {
        Ok(()) => {}
        Err(StoreError::NotFound) => {
            audit(Outcome::Denied, json!({"reason": "session already used"})).await;
            return Err(already_used().into());
        }
        Err(e) => return Err(e.into()),
    }
    // Exchange, then store the grant and mark the session COMPLETED in one transaction:
    // success means stored, failure means nothing stored.
    let stored = match exchange(&state, &session, &request).await {
        Ok((key, tokens)) => match state
            .store
            .complete_session(&session.id, &key, &tokens, state.clock.now_ms())
            .await
        {
            Ok(()) => {
                state.vault.invalidate(&key);
                Ok(())
            }
            Err(StoreError::NotFound) => Err(ApiError::cannot_parse(
                "authorization session no longer valid: nothing was stored; start the authorization again",
            )),
            Err(e) => Err(e.into()),
        },
        Err(e) => Err(e),
    };
    match stored {
        Ok(()) => {
            audit(
                Outcome::Success,
                json!({"provider": session.provider, "scopes": request.scopes}),
            )
            .await;
            Ok(Json(json!({})))
        }
        Err(e) => {
            let _ = state
                .store
                .fail_session(
                    &session.id,
                    SessionStatus::Exchanging,
                    "code exchange failed",
                    state.clock.now_ms(),
                )
                .await;
            audit(
                Outcome::Failed,
                json!({"provider": session.provider, "reason": e.to_string()}),
            )
            .await;
            Err(e.into())
        }
    }
}

/// The user named by `userIdentifier`: a `userId` is a user id (the binding service vouches
/// for it); a `userToken` is verified against the configured inbound issuers and names its
/// subject at its issuer. `Err` is the reason to refuse.
async fn completing_user(
    state: &AppState,
    identifier: &UserIdentifier,
) -> Result<UserPrincipal, String> {
    match (&identifier.user_id, &identifier.user_token) {
        (Some(u), _) => UserPrincipal::user_id(u.as_str()).map_err(|e| e.to_string()),
        (None, Some(t)) => state
            .inbound
            .verify(t.expose_secret())
            .await
            .and_then(|u| u.principal())
            .map_err(|e| format!("the user token was rejected: {e}")),
        (None, None) => Err("no user".to_string()),
    }
}

/// A user as audit events name it: kind, issuer (token users) and subject.
fn user_ref(user: &UserPrincipal) -> Value {
    json!({"kind": user.kind().as_str(), "issuer": user.issuer(), "subject": user.subject()})
}

/// Whether the user completing a session is the user who started it: same kind, same
/// issuer, same subject. `Err` says which part differs (no values, so nothing of either
/// user is echoed to the caller).
pub(crate) fn same_user(
    started: &UserPrincipal,
    completing: &UserPrincipal,
) -> Result<(), &'static str> {
    match (started.kind(), completing.kind()) {
        (UserKind::UserId, UserKind::Jwt) => Err(
            "the authorization session was started for a user id (GetWorkloadAccessTokenForUserId): it can only be completed with userIdentifier.userId, not a user token",
        ),
        (UserKind::Jwt, UserKind::UserId) => Err(
            "the authorization session was started for a user token (GetWorkloadAccessTokenForJWT): it can only be completed with userIdentifier.userToken from the same issuer, not a user id",
        ),
        _ if started.issuer() != completing.issuer() => Err(
            "the user token comes from another issuer than the one that started the authorization session",
        ),
        _ if started.subject() != completing.subject() => {
            Err("the user does not match the user who started this authorization session")
        }
        _ => Ok(()),
    }
}

/// The answer for a session that does not exist, or a URN that is not a completion URN.
fn unknown_session() -> ApiError {
    ApiError::NotFound("authorization session not found (unknown or purged)".into())
}

fn already_used() -> ApiError {
    ApiError::cannot_parse("authorization session already used: it was completed before")
}

/// Exchange the session's code (with its PKCE verifier) and seal the provider's answer as
/// the grant to store.
async fn exchange(
    state: &AppState,
    session: &SessionRecord,
    request: &SessionRequest,
) -> Result<(GrantKey, GrantTokens), ApiError> {
    let provider = load_provider(state, &session.provider).await?;
    let secrets = open_secrets(state, session).await?;
    let code_envelope = session
        .code_envelope
        .as_ref()
        .ok_or_else(|| ApiError::internal("session in CALLBACK without a code"))?;
    let code = crypto::decrypt_string(
        state.keys.as_ref(),
        code_aad(&session.id).as_bytes(),
        code_envelope,
    )
    .await
    .map_err(|e| {
        ApiError::internal(format!(
            "could not open the code of an authorization session: {e}"
        ))
    })?;
    let mut form = vec![
        ("grant_type", "authorization_code".to_string()),
        ("code", code.expose_secret().to_string()),
        ("redirect_uri", provider.callback_url.clone()),
        ("code_verifier", secrets.verifier.clone()),
    ];
    for r in &request.resources {
        form.push(("resource", r.clone()));
    }
    let resp = provider
        .token_client(state)
        .await?
        .request(form)
        .await
        .map_err(|e| vault::token_error(&e))?;
    let key = GrantKey {
        workload: session.workload.clone(),
        user: session.user.clone(),
        provider: session.provider.clone(),
    };
    let tokens = vault::seal(
        state,
        &key,
        &provider,
        &resp,
        &request.scopes,
        &request.resources,
        None,
    )
    .await?;
    Ok((key, tokens))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod same_user_tests {
    use super::*;

    #[test]
    fn completion_needs_the_same_kind_issuer_and_subject() {
        let id = |s: &str| UserPrincipal::user_id(s).unwrap();
        let jwt = |i: &str, s: &str| UserPrincipal::jwt(i, s).unwrap();
        let a = "https://a.example";
        let b = "https://b.example";
        assert_eq!(same_user(&id("alice"), &id("alice")), Ok(()));
        assert_eq!(same_user(&jwt(a, "alice"), &jwt(a, "alice")), Ok(()));
        // Issue 12 item 4, both directions: a JWT-started session and a bare user id of
        // the same subject; a user-id session and a token of the same subject.
        assert!(
            same_user(&jwt(a, "alice"), &id("alice"))
                .unwrap_err()
                .contains("userToken")
        );
        assert!(
            same_user(&id("alice"), &jwt(b, "alice"))
                .unwrap_err()
                .contains("userId")
        );
        assert!(
            same_user(&jwt(a, "alice"), &jwt(b, "alice"))
                .unwrap_err()
                .contains("another issuer")
        );
        assert!(same_user(&jwt(a, "alice"), &jwt(a, "bob")).is_err());
        assert!(same_user(&id("alice"), &id("bob")).is_err());
    }
}
