//! The HTTP side of the OAuth flows: `GetResourceOauth2Token`, `CompleteResourceTokenAuth`
//! and the browser endpoints. Each handler validates the request in AgentCore's terms,
//! calls the authorization-session service ([`crate::services::sessions`]) or the vault,
//! and renders the answer: AgentCore JSON, or a redirect / HTML page for the browser.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use latchkey_api::data::{
    CompleteResourceTokenAuthRequest, CompleteResourceTokenAuthResponse,
    GetResourceOauth2TokenRequest, GetResourceOauth2TokenResponse, UserIdentifier,
};
use latchkey_core::ApiError;
use latchkey_core::audit::Outcome;
use latchkey_core::audit::chain::vend_id;
use latchkey_core::validate::{
    Validator, is_custom_param_key_char, is_jwt_shape, is_return_url, is_session_uri,
};
use latchkey_store::GrantKey;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;

use super::common::check_provider_name;
use super::data::{check_wat_field, verify_wat};
use crate::auth::{Binding, DataPlane};
use crate::error::REASON_HEADER;
use crate::http_error::HttpResult;
use crate::pages;
use crate::services::sessions::callback::{CallbackOutcome, CallbackParams};
use crate::services::sessions::{CompletingUser, TokenAnswer, UserFederation};
use crate::state::AppState;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    UserFederation,
    M2m,
    OnBehalfOf,
}

fn validate_token_request(body: &GetResourceOauth2TokenRequest) -> Result<Flow, ApiError> {
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
    // Optional members: (name, value, longest, rule, the model's pattern).
    let optional = [
        (
            "sessionUri",
            body.session_uri.as_deref(),
            1024,
            is_session_uri as fn(&str) -> bool,
            "urn:ietf:params:oauth:request_uri:[a-zA-Z0-9-._~]+",
        ),
        (
            "resourceOauth2ReturnUrl",
            body.resource_oauth2_return_url.as_deref(),
            2048,
            is_return_url,
            "\\w+:(\\/?\\/?)[^\\s]+",
        ),
    ];
    for (name, value, max, rule, pattern) in optional {
        if let Some(value) = value
            && v.length(name, value, 1, max)
        {
            let message = format!("Member must satisfy regular expression pattern: {pattern}");
            v.check(name, rule(value), message);
        }
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
    req: DataPlane<GetResourceOauth2TokenRequest>,
) -> HttpResult<Response> {
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
            .workloads
            .facts(&claims.sub)
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
    let audiences = body.audiences.clone().unwrap_or_default();
    match flow {
        Flow::OnBehalfOf => Err(ApiError::cannot_parse(
            "oauth2Flow ON_BEHALF_OF_TOKEN_EXCHANGE is not yet supported by Latchkey",
        )
        .into()),
        Flow::M2m => {
            let provider = state.providers.require(name).await?;
            let token = state
                .vault
                .m2m_token(&provider, &scopes, &resources, &audiences)
                .await;
            let outcome = if token.is_ok() {
                Outcome::Success
            } else {
                Outcome::Failed
            };
            state
                .auditor
                .record(
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
            Ok(Json(GetResourceOauth2TokenResponse {
                access_token: Some(token?),
                ..Default::default()
            })
            .into_response())
        }
        Flow::UserFederation => {
            let Some(user) = claims.user.clone() else {
                return Err(ApiError::cannot_parse(
                    "USER_FEDERATION needs a workload access token issued for a user (GetWorkloadAccessTokenForJWT or GetWorkloadAccessTokenForUserId)",
                )
                .into());
            };
            let request = UserFederation {
                key: GrantKey {
                    workload: claims.sub.clone(),
                    user,
                    provider: name.to_string(),
                },
                scopes,
                resources,
                audiences,
                session_uri: body.session_uri.as_deref(),
                return_url: body.resource_oauth2_return_url.as_deref(),
                force_authentication: body.force_authentication.unwrap_or(false),
                custom_state: body.custom_state.as_ref(),
                custom_parameters: body.custom_parameters.as_ref(),
            };
            let mut reason = None;
            let answer = match state.sessions.user_federation(&caller, request).await? {
                TokenAnswer::Token(token) => GetResourceOauth2TokenResponse {
                    access_token: Some(token),
                    ..Default::default()
                },
                TokenAnswer::Status {
                    session_uri,
                    status,
                    reason: why,
                } => {
                    reason = why;
                    GetResourceOauth2TokenResponse {
                        session_status: Some(status.to_string()),
                        session_uri: Some(session_uri),
                        ..Default::default()
                    }
                }
                TokenAnswer::Started {
                    session_uri,
                    authorization_url,
                } => GetResourceOauth2TokenResponse {
                    authorization_url: Some(authorization_url),
                    session_status: Some("IN_PROGRESS".to_string()),
                    session_uri: Some(session_uri),
                    ..Default::default()
                },
            };
            // A FAILED session says why in `x-latchkey-reason` (AgentCore's body has no
            // field for it; AgentCore clients ignore the header).
            let header = reason.map(|r| [(REASON_HEADER, r.as_str())]);
            Ok((header, Json(answer)).into_response())
        }
    }
}

/// `POST /identities/CompleteResourceTokenAuth`: bind the consent to the session's user,
/// then (and only then) exchange the code and store the grant.
pub async fn complete_resource_token_auth(
    State(state): State<AppState>,
    req: Binding<CompleteResourceTokenAuthRequest>,
) -> HttpResult<Json<CompleteResourceTokenAuthResponse>> {
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
    let identifier = user_identifier(&mut v, body.user_identifier);
    v.finish()?;
    let uri = body.session_uri.unwrap_or_default();
    let identifier =
        identifier.ok_or_else(|| ApiError::cannot_parse("userIdentifier is required"))?;
    state.sessions.complete(&caller, &uri, &identifier).await?;
    Ok(Json(CompleteResourceTokenAuthResponse {}))
}

/// Check a `userIdentifier` union (exactly one of `userToken` and `userId`, each in its
/// model's shape) and name the user it identifies; `None` when it failed a check.
pub(crate) fn user_identifier(
    v: &mut Validator,
    identifier: Option<UserIdentifier>,
) -> Option<CompletingUser> {
    match identifier {
        None => v.fail("userIdentifier", "Member must not be null"),
        Some(UserIdentifier {
            user_token: Some(t),
            user_id: None,
        }) => {
            if v.length("userIdentifier.userToken", t.expose_secret(), 1, 131_072)
                && v.check("userIdentifier.userToken", is_jwt_shape(t.expose_secret()), "Member must satisfy regular expression pattern: [A-Za-z0-9-_=]+.[A-Za-z0-9-_=]+.[A-Za-z0-9-_=]+")
            {
                return Some(CompletingUser::UserToken(t));
            }
        }
        Some(UserIdentifier {
            user_id: Some(u),
            user_token: None,
        }) => {
            if v.user_id("userIdentifier.userId", &u) {
                return Some(CompletingUser::UserId(u));
            }
        }
        Some(_) => v.fail(
            "userIdentifier",
            "exactly one of userToken and userId must be set",
        ),
    }
    None
}

#[derive(Debug, Deserialize)]
pub struct AuthorizeQuery {
    request_uri: Option<String>,
}

/// `GET /identities/oauth2/authorize?request_uri=…`: send the browser to the provider.
pub async fn authorize(State(state): State<AppState>, Query(q): Query<AuthorizeQuery>) -> Response {
    match state.sessions.authorize(q.request_uri).await {
        Ok(url) => pages::redirect(&url),
        Err(e) => e.into_response(),
    }
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
    let params = CallbackParams {
        code: q.code,
        state: q.state,
        iss: q.iss,
        error: q.error,
    };
    match state.sessions.callback(&callback_id, params).await {
        Ok(outcome) => finish_redirect(&outcome),
        Err(e) => e.into_response(),
    }
}

/// Send the browser on to the return URL (`session_id`, `state` = custom state, `error`),
/// or show Latchkey's own page when the flow has no return URL.
fn finish_redirect(outcome: &CallbackOutcome) -> Response {
    let Some(return_url) = outcome
        .return_url
        .as_deref()
        .and_then(|u| url::Url::parse(u).ok())
    else {
        return match outcome.error {
            // No return URL: the completion URN is shown to this browser's user, who hands
            // it to the application themself (nobody else ever sees it).
            None => pages::completion_code_page(&outcome.session_id),
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
        q.append_pair("session_id", &outcome.session_id);
        if let Some(cs) = &outcome.custom_state {
            q.append_pair("state", cs);
        }
        if let Some(e) = &outcome.error {
            q.append_pair("error", e);
        }
    }
    pages::redirect(url.as_str())
}
