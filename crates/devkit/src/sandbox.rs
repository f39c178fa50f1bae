//! The sandbox OAuth provider: a stand-in for GitHub that runs in `latchkey dev`, with
//! GitHub's paths and shapes, so the `GithubOauth2` preset points at it unchanged but for
//! its endpoints.
//!
//! - `GET /login/oauth/authorize`: the consent page, naming the application that asks and
//!   each scope, with the sandbox account to authorize as (`alice`, `bob` or a typed name);
//!   `POST` of its form (bound to the browser that loaded it): approve or deny;
//! - `POST /login/oauth/access_token`: `authorization_code` (PKCE verified when the request
//!   had a challenge) and `refresh_token` (rotating; a reused one revokes the grant). JSON
//!   with `Accept: application/json`, form-encoded otherwise, `scope` comma-separated, as
//!   GitHub answers;
//! - `POST /login/oauth/revoke`: RFC 7009;
//! - `GET /.well-known/oauth-authorization-server`: RFC 8414 metadata naming those
//!   endpoints (GitHub has none; Latchkey discovers the revocation endpoint from it);
//! - `GET /user` (scope `read:user` or `user`) and `GET /user/repos` (scope `repo`, or
//!   `public_repo` for public repositories only): 401 `Bad credentials` for a missing,
//!   expired or revoked token, 403 naming the scope it lacks, with GitHub's
//!   `X-OAuth-Scopes` and `X-Accepted-OAuth-Scopes` headers.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use latchkey_core::clock::Clock;
use serde_json::{Value, json};

use crate::authorizer::{Authorizer, Granted};
use crate::html::{self, escape};
use crate::idp::bearer;
use crate::oauth::{Client, Clients, Codes, FormGuard, OAuthError, token_response};
use crate::persist::PersistError;
use crate::tokens::{Lifetimes, TokenGrant, Tokens};

const NAME: &str = "Latchkey sandbox (GitHub stand-in)";

/// The scopes the sandbox knows, with what the consent page says of each.
pub const SCOPES: [(&str, &str); 4] = [
    ("read:user", "Read your profile (login, name)"),
    ("user", "Read and update your profile"),
    (
        "repo",
        "Full access to your repositories, private ones included",
    ),
    ("public_repo", "Access to your public repositories"),
];

/// How to build the sandbox.
#[derive(Debug)]
pub struct SandboxOptions {
    /// The base URL the sandbox is reached at (no trailing slash): the `iss` of its redirects.
    pub base_url: String,
    /// The OAuth applications (Latchkey's credential providers).
    pub clients: Vec<Client>,
    /// Where issued tokens are kept (`None`: in memory).
    pub state_file: Option<PathBuf>,
    /// Access token lifetime in seconds: short, so that refresh can be watched.
    pub access_token_lifetime_seconds: i64,
    /// Refresh token lifetime in seconds.
    pub refresh_token_lifetime_seconds: i64,
    pub clock: Arc<dyn Clock>,
}

#[derive(Debug)]
struct Sandbox {
    authorizer: Authorizer,
    base_url: String,
    tokens: Tokens,
    clock: Arc<dyn Clock>,
}

/// The sandbox's routes.
pub fn router(options: SandboxOptions) -> Result<Router, PersistError> {
    let base_url = options.base_url.trim_end_matches('/').to_string();
    let sandbox = Sandbox {
        authorizer: Authorizer {
            provider: NAME,
            issuer: base_url.clone(),
            clients: Clients::new(options.clients),
            codes: Codes::default(),
            guard: FormGuard::new("latchkey_dev_sandbox_form"),
            require_pkce: false,
            clock: options.clock.clone(),
        },
        base_url,
        tokens: Tokens::open(
            options.state_file,
            Lifetimes {
                access: options.access_token_lifetime_seconds,
                refresh: options.refresh_token_lifetime_seconds,
            },
            "sbx_",
        )?,
        clock: options.clock,
    };
    Ok(Router::new()
        .route("/.well-known/oauth-authorization-server", get(metadata))
        .route("/login/oauth/authorize", get(consent_page).post(decide))
        .route("/login/oauth/access_token", post(token))
        .route("/login/oauth/revoke", post(revoke))
        .route("/user", get(user))
        .route("/user/repos", get(repos))
        .with_state(Arc::new(sandbox)))
}

/// RFC 8414 metadata (GitHub publishes none; the sandbox does, so Latchkey can discover
/// its revocation endpoint).
async fn metadata(State(sandbox): State<Arc<Sandbox>>) -> Json<Value> {
    let b = &sandbox.base_url;
    Json(json!({
        "issuer": b,
        "authorization_endpoint": format!("{b}/login/oauth/authorize"),
        "token_endpoint": format!("{b}/login/oauth/access_token"),
        "revocation_endpoint": format!("{b}/login/oauth/revoke"),
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "scopes_supported": SCOPES.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        "authorization_response_iss_parameter_supported": true,
    }))
}

fn describe(scope: &str) -> &str {
    SCOPES.iter().find(|(s, _)| *s == scope).map_or(
        "(a scope the sandbox does not know: it grants nothing)",
        |(_, d)| d,
    )
}

async fn consent_page(
    State(sandbox): State<Arc<Sandbox>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    sandbox.authorizer.page(
        &headers,
        &params,
        |page| format!("Authorize {}", page.client),
        |page, users| {
            let scopes: String = if page.request.scopes.is_empty() {
                "<li>No scope: public information only</li>".to_string()
            } else {
                (page.request.scopes.iter())
                    .map(|s| format!("<li><code>{}</code>: {}</li>", escape(s), escape(describe(s))))
                    .collect()
            };
            format!(
                r#"<p><strong>{client}</strong> asks to act for you in the sandbox, with these permissions:</p>
<ul>{scopes}</ul>
<p>It will be redirected to <code>{redirect}</code>.</p>
<form method="post" action="/login/oauth/authorize">{users}
<p><button type="submit" name="decision" value="deny">Deny</button></p></form>"#,
                client = page.client,
                redirect = escape(&page.request.redirect_uri),
            )
        },
        "Authorize",
    )
}

async fn decide(
    State(sandbox): State<Arc<Sandbox>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    sandbox.authorizer.decide(&headers, &form)
}

async fn token(
    State(sandbox): State<Arc<Sandbox>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, OAuthError> {
    let Granted { grant, issued, .. } =
        (sandbox.authorizer).token(&sandbox.tokens, &headers, &form, None)?;
    let scopes = grant.scopes;
    let fields = [
        ("access_token", issued.access_token),
        ("token_type", "bearer".to_string()),
        ("expires_in", issued.expires_in.to_string()),
        ("refresh_token", issued.refresh_token),
        ("scope", scopes.join(",")),
    ];
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    if wants_json {
        let mut body = serde_json::Map::new();
        for (k, v) in fields {
            let value = match k {
                "expires_in" => json!(issued.expires_in),
                _ => Value::String(v),
            };
            body.insert(k.to_string(), value);
        }
        return Ok(token_response(Value::Object(body)));
    }
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields.iter().map(|(k, v)| (*k, v.as_str())))
        .finish();
    let mut response = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        )],
        body,
    )
        .into_response();
    html::no_store(&mut response);
    Ok(response)
}

async fn revoke(
    State(sandbox): State<Arc<Sandbox>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, OAuthError> {
    let client = sandbox.authorizer.clients.authenticate(&headers, &form)?;
    let token = form
        .get("token")
        .ok_or(OAuthError::invalid_request("the request has no token"))?;
    sandbox
        .tokens
        .revoke(token, &client.id, sandbox.clock.now_secs())?;
    tracing::info!(client = %client.id, "sandbox token revoked");
    Ok(token_response(json!({})))
}

/// The grant of the request's live token (`Bearer` or GitHub's `token` scheme).
fn authorize(sandbox: &Sandbox, headers: &HeaderMap) -> Option<TokenGrant> {
    bearer(headers)
        .or_else(|| {
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("token "))
        })
        .and_then(|t| sandbox.tokens.access(t, sandbox.clock.now_secs()))
}

/// GitHub's answer to a missing, expired or revoked token.
fn bad_credentials() -> Response {
    api_error(StatusCode::UNAUTHORIZED, "Bad credentials", None, &[])
}

fn api_error(
    status: StatusCode,
    message: &str,
    accepted: Option<&str>,
    granted: &[String],
) -> Response {
    let mut response = (
        status,
        Json(json!({
            "message": message,
            "documentation_url": "https://docs.github.com/rest",
            "status": status.as_u16().to_string(),
        })),
    )
        .into_response();
    scope_headers(&mut response, accepted, granted);
    response
}

fn scope_headers(response: &mut Response, accepted: Option<&str>, granted: &[String]) {
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&granted.join(", ")) {
        headers.insert("x-oauth-scopes", v);
    }
    if let Some(Ok(v)) = accepted.map(HeaderValue::from_str) {
        headers.insert("x-accepted-oauth-scopes", v);
    }
    html::no_store(response);
}

fn has(grant: &TokenGrant, scope: &str) -> bool {
    grant.scopes.iter().any(|s| s == scope)
}

/// A stable number for a login (GitHub's numeric `id`).
fn account_id(login: &str) -> u64 {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, login.as_bytes());
    let mut bytes = [0u8; 4];
    bytes.copy_from_slice(&digest.as_ref()[..4]);
    u64::from(u32::from_be_bytes(bytes)) + 1_000_000
}

async fn user(State(sandbox): State<Arc<Sandbox>>, headers: HeaderMap) -> Response {
    let Some(grant) = authorize(&sandbox, &headers) else {
        return bad_credentials();
    };
    if !(has(&grant, "read:user") || has(&grant, "user")) {
        return api_error(
            StatusCode::FORBIDDEN,
            "Resource not accessible: the token lacks the scope read:user",
            Some("read:user, user"),
            &grant.scopes,
        );
    }
    let login = &grant.user;
    let mut response = Json(json!({
        "login": login,
        "id": account_id(login),
        "type": "User",
        "name": format!("{} (sandbox)", crate::idp::display_name(login)),
        "html_url": format!("{}/{login}", sandbox.base_url),
        "repos_url": format!("{}/user/repos", sandbox.base_url),
    }))
    .into_response();
    scope_headers(&mut response, Some("read:user, user"), &grant.scopes);
    response
}

async fn repos(State(sandbox): State<Arc<Sandbox>>, headers: HeaderMap) -> Response {
    let Some(grant) = authorize(&sandbox, &headers) else {
        return bad_credentials();
    };
    let private = has(&grant, "repo");
    if !private && !has(&grant, "public_repo") {
        return api_error(
            StatusCode::FORBIDDEN,
            "Resource not accessible: the token lacks the scope repo (or public_repo)",
            Some("repo, public_repo"),
            &grant.scopes,
        );
    }
    let login = &grant.user;
    let all = [
        ("hello-world", false, "My first repository"),
        ("dotfiles", false, "Configuration files"),
        ("secret-plans", true, "Private notes"),
    ];
    let list: Vec<Value> = all
        .iter()
        .filter(|(_, is_private, _)| private || !is_private)
        .map(|(name, is_private, description)| {
            json!({
                "name": name,
                "full_name": format!("{login}/{name}"),
                "private": is_private,
                "description": description,
                "owner": {"login": login, "id": account_id(login)},
                "html_url": format!("{}/{login}/{name}", sandbox.base_url),
            })
        })
        .collect();
    let mut response = Json(Value::Array(list)).into_response();
    scope_headers(&mut response, Some("repo, public_repo"), &grant.scopes);
    response
}
