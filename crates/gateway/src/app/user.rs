//! The signed-in user of a request: its session, after timeouts and (when due) a token
//! refresh, and the identity headers signed for the upstream.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue};
use secrecy::{ExposeSecret, SecretString};

use super::cookies::session_id;
use super::{ALB_TOKEN_LIFETIME_SECONDS, Inner, REFRESH_BEFORE_EXPIRY_SECONDS};
use crate::oidc::user_claims;
use crate::session::{Session, SessionId, SessionSlot, Synced, UpstreamHeaders};
use crate::shared::{Check, SharedSessions};

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
    let slot = match &state.shared {
        None => state.sessions.find(&id)?,
        Some(shared) => shared_slot(state, shared, &id).await?,
    };
    let mut session = slot.lock().await;
    // A shared session's copy is compared with its row once it is due (not boxed per
    // request: most requests use the copy as it is).
    if let Some(shared) = &state.shared
        && session.shared.is_none_or(|synced| shared.due(&synced))
        && !Box::pin(revalidate(state, shared, &id, &mut session)).await
    {
        drop(session);
        state.sessions.delete(&id);
        return None;
    }
    let now = state.clock.now_secs();
    let absolute = i64::try_from(state.config.keys.session_absolute_seconds).unwrap_or(i64::MAX);
    let idle = i64::try_from(state.config.keys.session_idle_seconds).unwrap_or(i64::MAX);
    // Whole seconds: `>` so that a session always lasts at least the configured time (with
    // `>=` a 2 s idle timeout could end a session after 1.01 s of real idleness).
    if now.saturating_sub(session.created_secs) > absolute
        || now.saturating_sub(session.last_seen_secs) > idle
    {
        drop(session);
        Box::pin(end_session(state, &id)).await;
        return None;
    }
    if let Some(expires_at) = session.access_expires_at
        && expires_at.saturating_sub(now) <= REFRESH_BEFORE_EXPIRY_SECONDS
    {
        let refresh_token = session.refresh_token.clone();
        let refreshed = match (refresh_token, &state.shared) {
            // Boxed, as every rare path here: an `async fn` is as large as its largest
            // await, and the request's future is moved a few times on its way to hyper.
            (Some(refresh_token), None) => {
                Box::pin(refresh(state, &mut session, refresh_token)).await
            }
            (Some(refresh_token), Some(shared)) => {
                match Box::pin(refresh_once(
                    state,
                    shared,
                    &id,
                    &mut session,
                    refresh_token,
                ))
                .await
                {
                    Some(refreshed) => refreshed,
                    // Not here, not now (another replica's refresh is late, the database
                    // does not answer): signed out for this request, the session stays.
                    None => return None,
                }
            }
            (None, _) => expires_at > now,
        };
        if !refreshed {
            drop(session);
            Box::pin(end_session(state, &id)).await;
            return None;
        }
    }
    session.last_seen_secs = now;
    if let (Some(shared), Some(synced)) = (&state.shared, session.shared.as_mut())
        && now.saturating_sub(synced.touched_secs) >= crate::shared::TOUCH_EVERY_SECS
    {
        synced.touched_secs = now;
        shared.touch(&id, now);
    }
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

/// End a session here and, when shared, for every replica.
async fn end_session(state: &Inner, id: &SessionId) {
    state.sessions.delete(id);
    if let Some(shared) = &state.shared
        && let Err(error) = shared.delete(id).await
    {
        tracing::warn!(%error, "cannot delete an ended shared session");
    }
}

/// This replica's copy of a shared session, read from its row when there is none.
async fn shared_slot(
    state: &Inner,
    shared: &SharedSessions,
    id: &SessionId,
) -> Option<SessionSlot> {
    if let Some(slot) = state.sessions.find(id) {
        return Some(slot);
    }
    match shared.load(&state.sealer, id).await {
        Ok(Some(session)) => {
            state.sessions.insert(*id, session);
            state.sessions.find(id)
        }
        Ok(None) => None,
        Err(error) => {
            tracing::warn!(%error, "cannot read a shared session; the request is treated as signed out");
            None
        }
    }
}

/// Compare a copy due for a check with its row: `false` when the session must not be used
/// here (the row is gone, or the database does not answer).
async fn revalidate(
    state: &Inner,
    shared: &SharedSessions,
    id: &SessionId,
    session: &mut Session,
) -> bool {
    let Some(synced) = session.shared else {
        return false;
    };
    match shared.check(&state.sealer, id, synced.version).await {
        Ok(Check::Current { last_seen_secs }) => {
            session.last_seen_secs = session.last_seen_secs.max(last_seen_secs);
            session.shared = Some(Synced {
                checked: std::time::Instant::now(),
                touched_secs: synced.touched_secs.max(last_seen_secs),
                ..synced
            });
            true
        }
        Ok(Check::Changed(fresh)) => {
            let last_seen = session.last_seen_secs;
            *session = *fresh;
            session.last_seen_secs = session.last_seen_secs.max(last_seen);
            true
        }
        Ok(Check::Gone) => false,
        Err(error) => {
            tracing::warn!(%error, "cannot check a shared session; the request is treated as signed out");
            false
        }
    }
}

/// The refresh of a shared session, once across replicas: the replica holding the row's
/// lease refreshes and stores the new version; the others wait for it. `Some(false)`: the
/// session ends; `None`: it cannot be used for this request, but stays.
async fn refresh_once(
    state: &Inner,
    shared: &SharedSessions,
    id: &SessionId,
    session: &mut Session,
    refresh_token: SecretString,
) -> Option<bool> {
    let synced = session.shared?;
    let now_ms = state.clock.now_ms();
    let leased = shared.lease_refresh(id, synced.version, now_ms).await;
    match leased {
        Ok(true) => {
            if !refresh(state, session, refresh_token).await {
                return Some(false);
            }
            let saved = shared.save_refreshed(&state.sealer, id, session, synced.version);
            match saved.await {
                Ok(true) => Some(true),
                Ok(false) => {
                    tracing::info!("a shared session ended while its tokens were refreshed");
                    Some(false)
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot store a refreshed shared session");
                    None
                }
            }
        }
        Ok(false) => match shared
            .wait_for_refresh(&state.sealer, id, synced.version)
            .await
        {
            Ok(Check::Changed(fresh)) => {
                let last_seen = session.last_seen_secs;
                *session = *fresh;
                session.last_seen_secs = last_seen;
                Some(true)
            }
            Ok(Check::Gone) => Some(false),
            // Nothing came in time: the current token serves while it is valid.
            Ok(Check::Current { .. }) => {
                let valid = session.access_expires_at;
                valid
                    .is_some_and(|e| e > state.clock.now_secs())
                    .then_some(true)
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read a shared session being refreshed");
                None
            }
        },
        Err(error) => {
            tracing::warn!(%error, "cannot take a shared session's refresh lease");
            None
        }
    }
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
