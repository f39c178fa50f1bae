//! The router, its state and the two handlers.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use latchkey_authn::alb::AlbVerifier;
use latchkey_authn::outbound::{OutboundClient, OutboundError};
use latchkey_authn::user::{Cookies, ResolveError, SignedInUser, Source, UserResolver};
use latchkey_core::clock::Clock;
use latchkey_core::protocol::SessionUri;
use latchkey_telemetry::{Service, within};

use crate::config::{BindingConfig, ConfigError};
use crate::connections::{self, FormKey};
use crate::pages::{Page, harden};
use crate::upstream::{ClientBuildError, Completion, IdentityClient};

pub use latchkey_authn::user::{ALB_HEADER, MAX_ID_TOKEN_BYTES};

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
    users: UserResolver,
    identity: IdentityClient,
    /// The connections page's form-token key.
    form_key: FormKey,
    clock: Arc<dyn Clock>,
}

impl BindingState {
    /// Validate `config` and build the verifiers and clients (no network access yet).
    pub fn new(config: BindingConfig, clock: Arc<dyn Clock>) -> Result<Self, StartError> {
        config.validate()?;
        let outbound = OutboundClient::new(config.outbound.clone())?;
        // The binding page is a GET that completes nothing without the one-time completion
        // URN, so the ID token may come from a cookie.
        let users = UserResolver::new(&config.users, Cookies::Allowed, outbound, clock.clone());
        let identity = IdentityClient::new(&config)?;
        let form_key = FormKey::derive(&config.credential.bearer());
        Ok(Self {
            inner: Arc::new(Inner {
                users,
                identity,
                form_key,
                clock,
            }),
        })
    }

    pub(crate) fn identity(&self) -> &IdentityClient {
        &self.inner.identity
    }

    pub(crate) fn form_key(&self) -> &FormKey {
        &self.inner.form_key
    }

    pub(crate) fn clock(&self) -> &dyn Clock {
        self.inner.clock.as_ref()
    }

    /// The signed-in user, or the page that says why there is none (logged).
    pub(crate) async fn signed_in(&self, headers: &HeaderMap) -> Result<SignedInUser, Page> {
        resolve_user(&self.inner, headers)
            .await
            .map(|(_, user)| user)
    }

    /// The ALB verifier, when that source is configured.
    pub fn alb(&self) -> Option<&AlbVerifier> {
        self.inner.users.alb()
    }
}

/// The binding service's routes: `GET /oauth2/session-binding`, `GET`/`POST /connections`
/// (the signed-in user's grants, [`crate::connections`]), `GET /ping`; every
/// response carries the hardening headers.
pub fn app(state: BindingState) -> Router {
    let router = Router::new()
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
        .route(
            "/connections",
            get(connections::list).post(connections::revoke),
        )
        .route("/ping", get(ping))
        .route("/ready", get(ready))
        .route("/metrics", get(latchkey_telemetry::metrics))
        .fallback(not_found);
    latchkey_telemetry::instrument(router, Service::Binding, |_, _| None)
        .layer(axum::middleware::map_response(|r: Response| async move {
            harden(r)
        }))
        .with_state(state)
}

/// Readiness (`GET /ready`): the identity service answers its `/ping` (it runs and
/// reaches its database) within two seconds. 503 with the reason otherwise.
async fn ready(State(state): State<BindingState>) -> Response {
    let identity = within(Duration::from_secs(2), async {
        state
            .inner
            .identity
            .ping(Duration::from_secs(2))
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "readiness: identity service unavailable");
                "identity service unavailable"
            })
    })
    .await;
    latchkey_telemetry::ready(&[("identity", identity)])
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
        Completion::Cancelled => {
            tracing::info!(source, outcome = "cancelled", "session binding refused");
            Page::Cancelled
        }
        Completion::InvalidLink => {
            tracing::info!(source, outcome = "invalid-link", "session binding refused");
            Page::InvalidLink
        }
        Completion::UnknownLink => {
            tracing::info!(source, outcome = "unknown-link", "session binding refused");
            Page::UnknownLink
        }
        Completion::CredentialRefused => credential_refused(&state),
        Completion::Unavailable(why) => {
            tracing::error!(source, outcome = "unavailable", error = %why, "session binding failed");
            Page::TryAgain
        }
    }
}

/// The identity service refused this service's own credential: logged (without the
/// secret) for the operator, the misconfiguration page for the user.
pub(crate) fn credential_refused(state: &BindingState) -> Page {
    tracing::error!(
        access_key_id = state.inner.identity.access_key_id(),
        outcome = "credential-refused",
        "the identity service refused the binding credential (UnauthorizedException): check credential_file / LATCHKEY_BINDING_CREDENTIAL and that the credential is active with role `binding`"
    );
    Page::Misconfigured
}

/// The one `session_id` query parameter, when it is a valid `sessionUri`.
pub fn session_id(query: Option<&str>) -> Option<SessionUri> {
    let mut found = None;
    for (name, value) in url::form_urlencoded::parse(query?.as_bytes()) {
        if name == "session_id" {
            if found.is_some() {
                return None;
            }
            found = Some(value.into_owned());
        }
    }
    found.and_then(|s| SessionUri::parse(&s).ok())
}

/// The signed-in user ([`UserResolver`]); a refusal is logged and becomes its page.
async fn resolve_user(inner: &Inner, headers: &HeaderMap) -> Result<(Source, SignedInUser), Page> {
    inner.users.resolve(headers).await.map_err(|error| {
        let source = error.source_str();
        match error {
            ResolveError::NotSignedIn { reason, .. } => {
                tracing::info!(
                    source,
                    outcome = "not-signed-in",
                    reason,
                    "session binding refused"
                );
                Page::NotSignedIn
            }
            ResolveError::Unavailable { reason, .. } => {
                tracing::error!(
                    source,
                    outcome = "unavailable",
                    error = reason,
                    "session binding failed"
                );
                Page::TryAgain
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use latchkey_core::protocol::{MAX_SESSION_URI_LEN, SESSION_URI_PREFIX};

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
}
