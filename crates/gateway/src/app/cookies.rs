//! The gateway's cookies: the sealed session cookie, and reading the request's `Cookie`
//! headers.

use axum::http::{HeaderMap, HeaderValue};

use super::Inner;
use crate::session::SessionId;

pub(crate) use latchkey_authn::user::cookie_pairs;

/// The values of the request's cookies named `name`.
pub(crate) fn cookie_values<'a>(
    headers: &'a HeaderMap,
    name: &'a str,
) -> impl Iterator<Item = &'a str> {
    cookie_pairs(headers).filter_map(move |(k, v)| (k == name).then_some(v))
}

pub(super) fn set_cookie(state: &Inner, value: &str, max_age: u64) -> HeaderValue {
    cookie_header(state, state.cookie_name, value, max_age)
}

pub(super) fn cookie_header(state: &Inner, name: &str, value: &str, max_age: u64) -> HeaderValue {
    let secure = if state.config.is_https() {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{name}={value}; Max-Age={max_age}; Path=/; HttpOnly; SameSite=Lax{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("latchkey-gw=; Max-Age=0; Path=/"))
}

pub(super) fn clear_cookie(state: &Inner) -> HeaderValue {
    set_cookie(state, "", 0)
}

/// The session id sealed in the request's cookie, when one opens.
pub(super) fn session_id(state: &Inner, headers: &HeaderMap) -> Option<SessionId> {
    cookie_values(headers, state.cookie_name).find_map(|value| {
        let id = state.sealer.open(state.cookie_name, value)?;
        SessionId::try_from(id.as_slice()).ok()
    })
}
