//! The development OpenID provider: the one a `latchkey dev` user signs in with.
//!
//! - `GET /.well-known/openid-configuration`, `GET /jwks`;
//! - `GET /authorize`: the login page (pick `alice`, `bob` or type a name), for a registered
//!   client and redirect URI, with PKCE S256 required; `POST /authorize`: the form it posts,
//!   bound to the browser that loaded it;
//! - `POST /token`: `authorization_code` (one-time code, same redirect URI, PKCE verified)
//!   and `refresh_token` (rotating); ES256 ID tokens with `nonce`;
//! - `GET /userinfo` (bearer access token) and `GET /logout` (RP-initiated logout).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use latchkey_core::clock::Clock;
use serde_json::{Value, json};
use url::Url;

use crate::authorizer::{Authorizer, Granted};
use crate::html;
use crate::keys::SigningKey;
use crate::oauth::{Client, Clients, Codes, FormGuard, OAuthError, token_response};
use crate::persist::PersistError;
use crate::tokens::{Lifetimes, Tokens};

const NAME: &str = "Latchkey development identity provider";

/// How to build the provider.
#[derive(Debug)]
pub struct IdpOptions {
    /// The issuer: the base URL the provider is reached at (no trailing slash).
    pub issuer: String,
    /// The relying parties (the gateway).
    pub clients: Vec<Client>,
    pub key: SigningKey,
    /// Where issued refresh and access tokens are kept (`None`: in memory).
    pub state_file: Option<PathBuf>,
    /// Lifetime of ID and access tokens, in seconds.
    pub token_lifetime_seconds: i64,
    /// Lifetime of refresh tokens, in seconds.
    pub refresh_lifetime_seconds: i64,
    pub clock: Arc<dyn Clock>,
}

#[derive(Debug)]
struct Idp {
    authorizer: Authorizer,
    issuer: String,
    key: SigningKey,
    tokens: Tokens,
    token_lifetime: i64,
    clock: Arc<dyn Clock>,
}

/// The provider's routes.
pub fn router(options: IdpOptions) -> Result<Router, PersistError> {
    let issuer = options.issuer.trim_end_matches('/').to_string();
    let idp = Idp {
        authorizer: Authorizer {
            provider: NAME,
            issuer: issuer.clone(),
            clients: Clients::new(options.clients),
            codes: Codes::default(),
            guard: FormGuard::new("latchkey_dev_idp_form"),
            require_pkce: true,
            clock: options.clock.clone(),
        },
        issuer,
        key: options.key,
        tokens: Tokens::open(
            options.state_file,
            Lifetimes {
                access: options.token_lifetime_seconds,
                refresh: options.refresh_lifetime_seconds,
            },
            "idp_",
        )?,
        token_lifetime: options.token_lifetime_seconds,
        clock: options.clock,
    };
    Ok(Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks))
        .route("/authorize", get(login_page).post(login))
        .route("/token", axum::routing::post(token))
        .route("/userinfo", get(userinfo))
        .route("/logout", get(logout))
        .with_state(Arc::new(idp)))
}

async fn discovery(State(idp): State<Arc<Idp>>) -> Json<Value> {
    let i = &idp.issuer;
    Json(json!({
        "issuer": i,
        "authorization_endpoint": format!("{i}/authorize"),
        "token_endpoint": format!("{i}/token"),
        "jwks_uri": format!("{i}/jwks"),
        "userinfo_endpoint": format!("{i}/userinfo"),
        "end_session_endpoint": format!("{i}/logout"),
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "scopes_supported": ["openid", "profile", "email"],
        "claims_supported": ["sub", "name", "preferred_username", "email", "email_verified", "nonce"],
        "authorization_response_iss_parameter_supported": true,
    }))
}

async fn jwks(State(idp): State<Arc<Idp>>) -> Json<Value> {
    Json(json!({"keys": [idp.key.public_jwk()]}))
}

async fn login_page(
    State(idp): State<Arc<Idp>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    idp.authorizer.page(
        &headers,
        &params,
        |_| "Sign in".to_string(),
        |page, users| {
            format!(
                r#"<p>Sign in to <strong>{}</strong>. No password: pick a demo user, or type any name.</p>
<form method="post" action="/authorize">{users}</form>"#,
                page.client
            )
        },
        "Sign in",
    )
}

async fn login(
    State(idp): State<Arc<Idp>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    idp.authorizer.decide(&headers, &form)
}

async fn token(
    State(idp): State<Arc<Idp>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, OAuthError> {
    let Granted {
        grant,
        issued,
        nonce,
    } = (idp.authorizer).token(&idp.tokens, &headers, &form, Some("openid"))?;
    let now = idp.clock.now_secs();
    let mut claims = json!({
        "iss": idp.issuer,
        "sub": grant.user,
        "aud": grant.client_id,
        "azp": grant.client_id,
        "iat": now,
        "auth_time": now,
        "exp": now + idp.token_lifetime,
        "name": display_name(&grant.user),
        "preferred_username": grant.user,
        "email": format!("{}@example.test", grant.user),
        "email_verified": true,
    });
    if let Some(nonce) = nonce {
        claims["nonce"] = Value::String(nonce);
    }
    let id_token = idp
        .key
        .sign_jwt(&claims)
        .map_err(|_| OAuthError::server_error())?;
    Ok(token_response(json!({
        "access_token": issued.access_token,
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
        "refresh_token": issued.refresh_token,
        "id_token": id_token,
        "scope": grant.scopes.join(" "),
    })))
}

/// `alice` → `Alice`.
pub(crate) fn display_name(user: &str) -> String {
    let mut chars = user.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

async fn userinfo(State(idp): State<Arc<Idp>>, headers: HeaderMap) -> Response {
    let grant = bearer(&headers).and_then(|t| idp.tokens.access(t, idp.clock.now_secs()));
    match grant {
        Some(grant) => Json(json!({
            "sub": grant.user,
            "name": display_name(&grant.user),
            "preferred_username": grant.user,
            "email": format!("{}@example.test", grant.user),
            "email_verified": true,
        }))
        .into_response(),
        None => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer error=\"invalid_token\"")],
        )
            .into_response(),
    }
}

/// The bearer token of `Authorization`, if there is exactly one.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let value = value.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// RP-initiated logout: back to the client when `post_logout_redirect_uri` is on the origin
/// of one of its redirect URIs, otherwise a page.
async fn logout(
    State(idp): State<Arc<Idp>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let back = params
        .get("client_id")
        .and_then(|id| idp.authorizer.clients.get(id))
        .zip(params.get("post_logout_redirect_uri"))
        .and_then(|(client, uri)| {
            let target = Url::parse(uri).ok()?;
            client
                .redirect_uris
                .iter()
                .filter_map(|r| Url::parse(r).ok())
                .any(|r| r.origin() == target.origin())
                .then_some(target)
        });
    match back {
        Some(url) => crate::oauth::redirect(&url),
        None => html::page(
            StatusCode::OK,
            NAME,
            "Signed out",
            "<p>You are signed out of the development identity provider. You can close this tab.</p>",
            false,
        ),
    }
}
