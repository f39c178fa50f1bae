//! The signed-in user of a request: its session, after timeouts and (when due) a token
//! refresh, and the identity headers signed for the upstream.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue};
use secrecy::{ExposeSecret, SecretString};

use super::cookies::session_id;
use super::{ALB_TOKEN_LIFETIME_SECONDS, Inner, REFRESH_BEFORE_EXPIRY_SECONDS};
use crate::oidc::user_claims;
use crate::session::{Session, UpstreamHeaders};

/// What the proxy needs of a valid session.
pub(super) struct User {
    pub(super) subject: Arc<str>,
    /// `None` when the identity headers could not be built (signing failed).
    pub(super) headers: Option<UpstreamHeaders>,
}

/// The request's session, after timeouts and (when due) a token refresh. An expired or
/// unrefreshable session is deleted.
pub(super) async fn current_user(state: &Inner, headers: &HeaderMap) -> Option<User> {
    let id = session_id(state, headers)?;
    let slot = state.sessions.find(&id)?;
    let mut session = slot.lock().await;
    let now = state.clock.now_secs();
    let absolute = i64::try_from(state.config.keys.session_absolute_seconds).unwrap_or(i64::MAX);
    let idle = i64::try_from(state.config.keys.session_idle_seconds).unwrap_or(i64::MAX);
    // Whole seconds: `>` so that a session always lasts at least the configured time (with
    // `>=` a 2 s idle timeout could end a session after 1.01 s of real idleness).
    if now.saturating_sub(session.created_secs) > absolute
        || now.saturating_sub(session.last_seen_secs) > idle
    {
        drop(session);
        state.sessions.delete(&id);
        return None;
    }
    if let Some(expires_at) = session.access_expires_at
        && expires_at.saturating_sub(now) <= REFRESH_BEFORE_EXPIRY_SECONDS
    {
        let refresh_token = session.refresh_token.clone();
        let refreshed = match refresh_token {
            // Boxed, as every rare path here: an `async fn` is as large as its largest
            // await, and the request's future is moved a few times on its way to hyper.
            Some(refresh_token) => Box::pin(refresh(state, &mut session, refresh_token)).await,
            None => expires_at > now,
        };
        if !refreshed {
            drop(session);
            state.sessions.delete(&id);
            return None;
        }
    }
    session.last_seen_secs = now;
    let headers = match &session.upstream_headers {
        Some(h) if h.data_expires_secs.saturating_sub(now) > ALB_TOKEN_LIFETIME_SECONDS / 2 => {
            Some(h.clone())
        }
        _ => {
            let headers = upstream_headers(state, &session, now);
            session.upstream_headers.clone_from(&headers);
            headers
        }
    };
    Some(User {
        subject: session.subject.clone(),
        headers,
    })
}

/// A freshly signed `x-amzn-oidc-data` and the other identity headers for `session`.
fn upstream_headers(state: &Inner, session: &Session, now: i64) -> Option<UpstreamHeaders> {
    let exp = now + ALB_TOKEN_LIFETIME_SECONDS;
    let token = state.signer.sign(
        &state.config.keys.oidc_issuer,
        &state.config.keys.oidc_client_id,
        &state.config.keys.alb_signer,
        exp,
        session.claims.clone(),
    )?;
    let mut access_token = HeaderValue::from_str(session.access_token.expose_secret()).ok()?;
    access_token.set_sensitive(true);
    Some(UpstreamHeaders {
        data: HeaderValue::from_str(&token).ok()?,
        data_expires_secs: exp,
        identity: HeaderValue::from_str(&session.subject).ok()?,
        access_token,
    })
}

/// The refresh-token grant for `session`; `false` when the session must end.
async fn refresh(state: &Inner, session: &mut Session, refresh_token: SecretString) -> bool {
    let tokens = match state.rp.refresh(&refresh_token).await {
        Ok(t) => t,
        Err(error) => {
            tracing::info!(sub = %session.subject, %error, "token refresh failed; the session ends");
            return false;
        }
    };
    if let Some(id_token) = &tokens.id_token {
        match state.rp.verify_id_token(id_token, None).await {
            Ok(id) if *id.subject == *session.subject => {
                session.claims = user_claims(&id.claims);
                session.id_token = Some(id_token.clone());
            }
            Ok(_) => {
                tracing::warn!("a refreshed ID token names another subject; the session ends");
                return false;
            }
            Err(error) => {
                tracing::warn!(%error, "a refreshed ID token was refused; the session ends");
                return false;
            }
        }
    }
    session.access_token = tokens.access_token;
    session.upstream_headers = None;
    if let Some(new_refresh) = tokens.refresh_token {
        session.refresh_token = Some(new_refresh);
    }
    session.access_expires_at = tokens.access_expires_at;
    true
}
