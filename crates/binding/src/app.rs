//! The router, its state and the two handlers.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use latchkey_core::clock::Clock;
use latchkey_identity::inbound::{InboundError, InboundVerifier};
use latchkey_identity::outbound::{OutboundClient, OutboundError};
use secrecy::SecretString;

use crate::alb::AlbVerifier;
use crate::config::{BindingConfig, ConfigError};
use crate::pages::{Page, harden};
use crate::upstream::{ClientBuildError, Completion, IdentityClient, UserIdentifier};

/// The prefix of every `sessionUri`.
pub const SESSION_URI_PREFIX: &str = "urn:ietf:params:oauth:request_uri:";
/// Longest accepted `sessionUri` (the API's limit).
pub const MAX_SESSION_URI_LEN: usize = 1024;
/// The ALB's signed-claims header.
pub const ALB_HEADER: &str = "x-amzn-oidc-data";
/// Longest accepted OIDC ID token.
pub const MAX_ID_TOKEN_BYTES: usize = 16 * 1024;

/// Why the service cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration key {0}")]
    Config(#[from] ConfigError),
    #[error("cannot build the outbound client: {0}")]
    Outbound(#[from] OutboundError),
    #[error(transparent)]
    Client(#[from] ClientBuildError),
}

/// Shared state of the binding service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct BindingState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    alb: Option<AlbVerifier>,
    oidc: Option<OidcSource>,
    identity: IdentityClient,
}

#[derive(Debug)]
struct OidcSource {
    verifier: InboundVerifier,
    cookie_name: Option<String>,
}

impl BindingState {
    /// Validate `config` and build the verifiers and clients (no network access yet).
    pub fn new(config: BindingConfig, clock: Arc<dyn Clock>) -> Result<Self, StartError> {
        config.validate()?;
        let outbound = OutboundClient::new(config.outbound.clone())?;
        let alb = config
            .alb
            .clone()
            .map(|alb| AlbVerifier::new(alb, outbound.clone(), clock.clone()));
        let oidc = config.oidc.clone().map(|oidc| OidcSource {
            verifier: InboundVerifier::new(vec![oidc.issuer], outbound.clone(), clock.clone()),
            cookie_name: oidc.cookie_name,
        });
        let identity = IdentityClient::new(&config)?;
        Ok(Self {
            inner: Arc::new(Inner {
                alb,
                oidc,
                identity,
            }),
        })
    }

    /// The ALB verifier, when that source is configured.
    pub fn alb(&self) -> Option<&AlbVerifier> {
        self.inner.alb.as_ref()
    }
}

/// The binding service's routes: `GET /oauth2/session-binding`, `GET /ping`; every
/// response carries the hardening headers.
pub fn app(state: BindingState) -> Router {
    Router::new()
        // GET only: axum also routes HEAD to GET handlers, and a HEAD must not complete a
        // session.
        .route(
            "/oauth2/session-binding",
            get(session_binding).layer(axum::middleware::from_fn(
                |req: axum::extract::Request, next: axum::middleware::Next| async move {
                    if req.method() == axum::http::Method::HEAD {
                        return axum::http::StatusCode::METHOD_NOT_ALLOWED.into_response();
                    }
                    next.run(req).await
                },
            )),
        )
        .route("/ping", get(ping))
        .fallback(not_found)
        .layer(axum::middleware::map_response(|r: Response| async move {
            harden(r)
        }))
        .with_state(state)
}

async fn ping() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "ok",
    )
        .into_response()
}

async fn not_found() -> Page {
    Page::NotFound
}

/// Which source vouched for the user (for logs).
#[derive(Debug, Clone, Copy)]
enum Source {
    Alb,
    OidcBearer,
    OidcCookie,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Self::Alb => "alb",
            Self::OidcBearer => "oidc-bearer",
            Self::OidcCookie => "oidc-cookie",
        }
    }
}

/// `GET /oauth2/session-binding?session_id=<completion URN>`: `session_id` is forwarded
/// unchanged as `sessionUri` (only the one-time URN of the callback's redirect completes).
async fn session_binding(State(state): State<BindingState>, uri: Uri, headers: HeaderMap) -> Page {
    let Some(session_uri) = session_id(uri.query()) else {
        tracing::info!(outcome = "invalid-session-id", "session binding refused");
        return Page::InvalidLink;
    };
    let (source, user) = match resolve_user(&state.inner, &headers).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let completion = state.inner.identity.complete(&session_uri, &user).await;
    let source = source.as_str();
    match completion {
        Completion::Completed => {
            tracing::info!(source, outcome = "completed", "session bound");
            Page::Success
        }
        Completion::WrongUser => {
            tracing::warn!(
                source,
                outcome = "wrong-user",
                "the signed-in user is not the user who started the authorization"
            );
            Page::WrongUser
        }
        Completion::Expired => {
            tracing::info!(source, outcome = "expired", "session binding refused");
            Page::Expired
        }
        Completion::InvalidLink => {
            tracing::info!(source, outcome = "invalid-link", "session binding refused");
            Page::InvalidLink
        }
        Completion::UnknownLink => {
            tracing::info!(source, outcome = "unknown-link", "session binding refused");
            Page::UnknownLink
        }
        Completion::CredentialRefused => {
            tracing::error!(
                access_key_id = state.inner.identity.access_key_id(),
                outcome = "credential-refused",
                "the identity service refused the binding credential (UnauthorizedException): check credential_file / LATCHKEY_BINDING_CREDENTIAL and that the credential is active with role `binding`"
            );
            Page::Misconfigured
        }
        Completion::Unavailable(why) => {
            tracing::error!(source, outcome = "unavailable", error = %why, "session binding failed");
            Page::TryAgain
        }
    }
}

/// The one `session_id` query parameter, when it is a valid `sessionUri`.
pub fn session_id(query: Option<&str>) -> Option<String> {
    let mut found = None;
    for (name, value) in url::form_urlencoded::parse(query?.as_bytes()) {
        if name == "session_id" {
            if found.is_some() {
                return None;
            }
            found = Some(value.into_owned());
        }
    }
    found.filter(|s| is_session_uri(s))
}

/// `urn:ietf:params:oauth:request_uri:[a-zA-Z0-9-._~]+`, at most 1024 characters.
pub fn is_session_uri(s: &str) -> bool {
    s.len() <= MAX_SESSION_URI_LEN
        && s.strip_prefix(SESSION_URI_PREFIX).is_some_and(|rest| {
            !rest.is_empty()
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
        })
}

/// The signed-in user, from the first configured source whose credential is present. A
/// present but invalid credential is refused; no other source is tried after it.
async fn resolve_user(
    inner: &Inner,
    headers: &HeaderMap,
) -> Result<(Source, UserIdentifier), Page> {
    if let Some(alb) = &inner.alb {
        let mut values = headers.get_all(ALB_HEADER).iter();
        if let Some(value) = values.next() {
            if values.next().is_some() {
                tracing::info!(
                    source = "alb",
                    outcome = "not-signed-in",
                    reason = "several x-amzn-oidc-data headers",
                    "session binding refused"
                );
                return Err(Page::NotSignedIn);
            }
            let token = value.to_str().map_err(|_| {
                tracing::info!(
                    source = "alb",
                    outcome = "not-signed-in",
                    reason = "x-amzn-oidc-data is not ASCII",
                    "session binding refused"
                );
                Page::NotSignedIn
            })?;
            return match alb.verify(token.trim()).await {
                Ok(user) => Ok((Source::Alb, UserIdentifier::UserId(user.subject))),
                Err(error) if error.is_unavailable() => {
                    tracing::error!(source = "alb", outcome = "unavailable", %error, "session binding failed");
                    Err(Page::TryAgain)
                }
                Err(error) => {
                    tracing::info!(source = "alb", outcome = "not-signed-in", reason = %error, "session binding refused");
                    Err(Page::NotSignedIn)
                }
            };
        }
    }
    if let Some(oidc) = &inner.oidc {
        let found = match bearer_token(headers) {
            Some(token) => Some((Source::OidcBearer, token)),
            None => oidc
                .cookie_name
                .as_deref()
                .and_then(|name| cookie(headers, name))
                .map(|token| (Source::OidcCookie, token)),
        };
        if let Some((source, token)) = found {
            if token.len() > MAX_ID_TOKEN_BYTES {
                tracing::info!(
                    source = source.as_str(),
                    outcome = "not-signed-in",
                    reason = "ID token too long",
                    "session binding refused"
                );
                return Err(Page::NotSignedIn);
            }
            return match oidc.verifier.verify(&token).await {
                Ok(_) => Ok((source, UserIdentifier::UserToken(SecretString::from(token)))),
                Err(error @ InboundError::Discovery(_)) => {
                    tracing::error!(source = source.as_str(), outcome = "unavailable", %error, "session binding failed");
                    Err(Page::TryAgain)
                }
                Err(error) => {
                    tracing::info!(source = source.as_str(), outcome = "not-signed-in", reason = %error, "session binding refused");
                    Err(Page::NotSignedIn)
                }
            };
        }
    }
    tracing::info!(
        outcome = "not-signed-in",
        reason = "no signed-in user",
        "session binding refused"
    );
    Err(Page::NotSignedIn)
}

/// The token of the one `Authorization: Bearer …` header (scheme case-insensitive).
fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next()?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty()).then(|| token.to_string())
}

/// The first value of cookie `name` (quotes removed).
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids() {
        let ok = "urn:ietf:params:oauth:request_uri:abc-._~XYZ09";
        assert_eq!(
            session_id(Some(&format!("session_id={ok}"))).as_deref(),
            Some(ok)
        );
        assert_eq!(
            session_id(Some(&format!("x=1&session_id={ok}&y=2"))).as_deref(),
            Some(ok)
        );
        assert!(session_id(None).is_none());
        assert!(session_id(Some("")).is_none());
        assert!(session_id(Some("session_id=")).is_none());
        assert!(session_id(Some(&format!("session_id={ok}&session_id={ok}"))).is_none());
        assert!(session_id(Some("session_id=urn:ietf:params:oauth:request_uri:")).is_none());
        assert!(session_id(Some("session_id=urn:ietf:params:oauth:request_uri:a%2Fb")).is_none());
        assert!(session_id(Some("session_id=urn:other:abc")).is_none());
        let long = format!("{SESSION_URI_PREFIX}{}", "a".repeat(MAX_SESSION_URI_LEN));
        assert!(session_id(Some(&format!("session_id={long}"))).is_none());
        let max = format!(
            "{SESSION_URI_PREFIX}{}",
            "a".repeat(MAX_SESSION_URI_LEN - SESSION_URI_PREFIX.len())
        );
        assert!(session_id(Some(&format!("session_id={max}"))).is_some());
    }

    #[test]
    fn cookies_and_bearer() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "a=1; id_token=\"x.y.z\"; id_token=other"
                .parse()
                .expect("header"),
        );
        assert_eq!(cookie(&headers, "id_token").as_deref(), Some("x.y.z"));
        assert_eq!(cookie(&headers, "missing"), None);
        headers.insert(
            header::AUTHORIZATION,
            "bearer  t.o.k ".parse().expect("header"),
        );
        assert_eq!(bearer_token(&headers).as_deref(), Some("t.o.k"));
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().expect("header"));
        assert_eq!(bearer_token(&headers), None);
    }
}
