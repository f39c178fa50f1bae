//! The paths the gateway answers itself: the login (its start, and the provider's
//! redirect back), sign-out, and the ALB public key.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde::Deserialize;

use super::cookies::{clear_cookie, cookie_header, session_id, set_cookie};
use super::{GatewayState, Inner};
use crate::keys::{SESSION_ID_LEN, random_bytes, random_token};
use crate::login::{LOGIN_TTL_SECONDS, LoginState, PendingLogin};
use crate::oidc::{OidcError, user_claims};
use crate::pages::{Page, page};
use crate::session::{Session, safe_return_path};
use latchkey_authn::pkce::PkceVerifier;
use latchkey_telemetry::LoginOutcome;

/// A login for this browser: a redirect to the provider, with everything the callback
/// needs sealed in a login cookie of its own ([`crate::login`]; nothing is kept here).
pub(super) async fn start_login(state: &Inner, headers: &HeaderMap, return_path: &str) -> Response {
    let (Ok(login_state), Ok(nonce), Ok(verifier)) = (
        LoginState::generate(),
        random_token::<32>(),
        PkceVerifier::generate(),
    ) else {
        return page(Page::Unavailable);
    };
    latchkey_telemetry::gateway_login(LoginOutcome::Started);
    let challenge = verifier.challenge();
    let url = match state
        .rp
        .authorization_url(login_state.as_str(), &nonce, &challenge)
        .await
    {
        Ok(url) => url,
        Err(error) => {
            tracing::warn!(%error, "cannot start a login");
            return page(Page::Unavailable);
        }
    };
    let now = state.clock.now_secs();
    let login = PendingLogin {
        state: login_state,
        nonce,
        code_verifier: verifier,
        return_path: safe_return_path(return_path),
        created_secs: now,
    };
    let Some((name, value)) = state.login_cookies.seal(&state.sealer, &login) else {
        return page(Page::Unavailable);
    };
    let mut response = redirect(&url);
    let set = response.headers_mut();
    for stale in state.login_cookies.to_clear(&state.sealer, headers, now) {
        set.append(header::SET_COOKIE, cookie_header(state, &stale, "", 0));
    }
    set.append(
        header::SET_COOKIE,
        cookie_header(state, &name, &value, LOGIN_TTL_SECONDS.unsigned_abs()),
    );
    response
}

pub(super) fn redirect(location: &str) -> Response {
    redirect_with(StatusCode::FOUND, location)
}

fn redirect_with(status: StatusCode, location: &str) -> Response {
    let mut response = status.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[derive(Deserialize)]
pub(super) struct CallbackQuery {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
}

/// `GET /oauth2/idpresponse`: the provider's redirect back.
pub(super) async fn callback(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    query: Result<Query<CallbackQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let state = &*state.inner;
    let Ok(Query(query)) = query else {
        latchkey_telemetry::gateway_login(LoginOutcome::Invalid);
        return page(Page::InvalidLogin);
    };
    let now = state.clock.now_secs();
    // Only the browser that started the login has its cookie: another browser's callback
    // (login CSRF) is refused here, and nothing of the login is used up.
    let Some(login) = query
        .state
        .as_deref()
        .and_then(LoginState::parse)
        .and_then(|s| state.login_cookies.open(&state.sealer, &headers, &s, now))
    else {
        latchkey_telemetry::gateway_login(LoginOutcome::Invalid);
        return page(Page::InvalidLogin);
    };
    // From here on the login is spent: every answer clears its cookie.
    let (mut response, spent) = Box::pin(finish_login(state, query, login, now)).await;
    // The outcome, from the answer: a redirect is a session, each page one outcome.
    latchkey_telemetry::gateway_login(match response.status() {
        StatusCode::FOUND => LoginOutcome::Completed,
        StatusCode::BAD_REQUEST => LoginOutcome::Invalid,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => LoginOutcome::Refused,
        StatusCode::BAD_GATEWAY => LoginOutcome::Failed,
        _ => LoginOutcome::Unavailable,
    });
    if let Some(name) = spent {
        response
            .headers_mut()
            .append(header::SET_COOKIE, cookie_header(state, &name, "", 0));
    }
    response
}

/// The callback of a login this browser started; the response, and the name of the
/// login cookie to clear.
async fn finish_login(
    state: &Inner,
    query: CallbackQuery,
    login: PendingLogin,
    now: i64,
) -> (Response, Option<String>) {
    let cookie = Some(state.login_cookies.name(&login.state));
    // A copy of the cookie replayed after the login completed.
    if state.used_logins.was_used(&login.state, now) {
        return (page(Page::InvalidLogin), cookie);
    }
    if query.error.is_some() {
        return (page(Page::LoginRefused), cookie);
    }
    let Some(code) = query.code else {
        return (page(Page::InvalidLogin), cookie);
    };
    let tokens = match state.rp.exchange_code(&code, login.code_verifier).await {
        Ok(t) => t,
        Err(error) => {
            tracing::warn!(%error, "code exchange failed");
            return (page(Page::LoginFailed), cookie);
        }
    };
    let Some(id_token) = tokens.id_token else {
        tracing::warn!("the token response has no id_token");
        return (page(Page::LoginFailed), cookie);
    };
    let id = match state
        .rp
        .verify_id_token(&id_token, Some(&login.nonce))
        .await
    {
        Ok(id) => id,
        Err(OidcError::UnusableSubject) => {
            // The subject itself stays out of the log: it is what could forge a line.
            tracing::warn!(
                "ID token refused: its subject contains control characters or line separators"
            );
            return (page(Page::UnusableSubject), cookie);
        }
        Err(error) => {
            tracing::warn!(%error, "ID token refused");
            return (page(Page::LoginFailed), cookie);
        }
    };
    state
        .used_logins
        .mark_used(&login.state, login.created_secs, now);
    let Ok(raw_id) = random_bytes::<SESSION_ID_LEN>() else {
        return (page(Page::Unavailable), cookie);
    };
    let Some(session_cookie) = state.sealer.seal(state.cookie_name, &raw_id) else {
        return (page(Page::Unavailable), cookie);
    };
    let mut session = Session {
        subject: Arc::from(id.subject),
        claims: user_claims(&id.claims),
        id_token: Some(id_token),
        access_token: tokens.access_token,
        refresh_token: tokens.refresh_token,
        access_expires_at: tokens.access_expires_at,
        upstream_headers: None,
        created_secs: now,
        last_seen_secs: now,
        shared: None,
    };
    if let Some(shared) = &state.shared
        && let Err(error) = shared.create(&state.sealer, &raw_id, &mut session).await
    {
        tracing::error!(%error, "cannot store a new shared session");
        return (page(Page::Unavailable), cookie);
    }
    tracing::info!(sub = %session.subject, "signed in");
    state.sessions.insert(raw_id, session);
    let mut response = redirect(&login.return_path);
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(
            state,
            &session_cookie,
            state.config.keys.session_absolute_seconds,
        ),
    );
    (response, cookie)
}

/// Whether a request provably comes from a page of the gateway's own origin: its
/// `Origin` is the public URL's origin, or (a browser that sends no `Origin`, or `null`
/// under a `no-referrer` policy) its `Sec-Fetch-Site` is `same-origin`. Both headers are
/// set by the browser, never by a page. A request that proves neither is refused: a
/// cross-site form, and also a same-site one from another origin (a sibling subdomain,
/// another port), which carries the `SameSite=Lax` session cookie.
pub(super) fn is_same_origin(state: &Inner, headers: &HeaderMap) -> bool {
    const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");
    let only = |name: &HeaderName| {
        let mut values = headers.get_all(name).iter();
        match (values.next(), values.next()) {
            (Some(value), None) => Some(value),
            _ => None,
        }
    };
    if headers.contains_key(header::ORIGIN) {
        match only(&header::ORIGIN).map(HeaderValue::as_bytes) {
            Some(origin) if origin == state.public_origin.as_bytes() => return true,
            // The opaque origin: the browser withheld it; Sec-Fetch-Site decides.
            Some(b"null") => {}
            _ => return false,
        }
    }
    only(&SEC_FETCH_SITE).is_some_and(|site| site.as_bytes() == b"same-origin")
}

/// The most of a sign-out `POST`'s body read (it carries nothing the gateway uses).
const LOGOUT_BODY_LIMIT: usize = 64 * 1024;

/// `GET /oauth2/logout`: a page whose button signs out (a `POST`); nothing changes, so a
/// link or a cross-site navigation here cannot end a session (issue 12, item 11).
pub(super) async fn logout_page() -> Response {
    page(Page::LogoutConfirm)
}

/// `POST /oauth2/logout` from the gateway's own origin: end the session here, then at the
/// provider (RP-initiated logout) when it supports it. From anywhere else: 403.
pub(super) async fn logout(
    State(gateway): State<GatewayState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let state = &*gateway.inner;
    // The form's body means nothing, but is read (up to a small limit), so the connection
    // stays usable for the browser's next request.
    let _ = axum::body::to_bytes(body, LOGOUT_BODY_LIMIT).await;
    if !is_same_origin(state, &headers) {
        tracing::debug!("a sign-out that did not come from the gateway's origin was refused");
        return page(Page::LogoutRefused);
    }
    let mut id_token = None;
    if let Some(id) = session_id(state, &headers)
        && let Some(shared) = &state.shared
    {
        // Ended for every replica before the answer; a database that does not answer
        // gets no "signed out" page.
        if let Some(slot) = state.sessions.find(&id) {
            id_token = slot.lock().await.id_token.clone();
        } else if let Ok(Some(session)) = shared.load(&state.sealer, &id).await {
            id_token = session.id_token;
        }
        state.sessions.delete(&id);
        if let Err(error) = shared.delete(&id).await {
            tracing::error!(%error, "cannot delete a shared session at sign-out");
            return page(Page::Unavailable);
        }
    } else if let Some(id) = session_id(state, &headers)
        && let Some(slot) = state.sessions.find(&id)
    {
        id_token = slot.lock().await.id_token.clone();
        let generation = state.sessions.delete(&id);
        // Answered once the snapshot on disk no longer has it (see `crate::snapshot`).
        if let Err(error) = gateway.save_sessions_covering(generation).await {
            tracing::error!(%error, "cannot write the session snapshot after a logout");
        }
    }
    let location = match state.rp.metadata().await {
        Ok(metadata) => match metadata
            .end_session_endpoint
            .as_deref()
            .and_then(|e| url::Url::parse(e).ok())
        {
            Some(mut url) => {
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(t) = &id_token {
                        q.append_pair("id_token_hint", t.expose_secret());
                    }
                    q.append_pair(
                        "post_logout_redirect_uri",
                        &format!("{}/", state.config.public_url),
                    );
                    q.append_pair("client_id", &state.config.keys.oidc_client_id);
                }
                String::from(url)
            }
            None => "/".to_string(),
        },
        Err(_) => "/".to_string(),
    };
    // 303: the browser follows with a GET.
    let mut response = redirect_with(StatusCode::SEE_OTHER, &location);
    response
        .headers_mut()
        .insert(header::SET_COOKIE, clear_cookie(state));
    response
}

/// `GET /.well-known/alb-keys/{kid}`: the signing key as PEM, as the ALB key endpoint serves it.
pub(super) async fn alb_key(
    State(state): State<GatewayState>,
    Path(kid): Path<String>,
) -> Response {
    let signer = &state.inner.signer;
    if kid != signer.kid() {
        return (StatusCode::NOT_FOUND, "unknown key id\n").into_response();
    }
    (
        [
            (header::CONTENT_TYPE, "application/x-pem-file"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        signer.public_pem().to_string(),
    )
        .into_response()
}
