//! Logins in progress, kept by the browser rather than by the gateway.
//!
//! Everything the callback needs (the `state`, the `nonce`, the PKCE verifier, the return
//! path and when the login started) is sealed with the cookie key (AES-256-GCM, bound to
//! [`PURPOSE`] and the cookie's name, so neither a session cookie nor the session snapshot
//! can pass for it) into a cookie named after the `state`: `{session cookie}-login-{tag}`,
//! the tag being the first [`TAG_LEN`] characters of the `state`. Starting a login
//! therefore costs the gateway no memory at all, and anonymous requests cannot fill
//! anything up (issue 12, item 3: a pending-login table used to).
//!
//! The properties of the server-side table are kept:
//! - bound to the browser that started the login: only it has the cookie, and the
//!   callback's `state` must equal the sealed one;
//! - `nonce` and PKCE S256 as before; the return path is checked before it is sealed;
//! - expiry: [`LOGIN_TTL_SECONDS`] from the sealed start time (and the cookie's `Max-Age`);
//! - one use: every answer of the callback that opened the cookie clears it, the provider
//!   accepts an authorization code once, and [`UsedLogins`] remembers each `state` that
//!   completed a login until it expires, so a replay with a copy of the cookie is refused
//!   before the provider is asked again. Only completed logins (each a code the provider
//!   issued for a real sign-in) are remembered, so anonymous requests add nothing there
//!   either; when it is full the entry closest to expiry goes, and the provider's
//!   single-use code still refuses a replay;
//! - several tabs can log in at once (one cookie each); starting a login when the browser
//!   already holds [`MAX_LOGIN_COOKIES`] of them clears the oldest, so a browser never
//!   carries more than a few.

use std::collections::HashMap;
use std::sync::Mutex;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderMap;
use latchkey_authn::pkce::PkceVerifier;
use secrecy::SecretString;
use zeroize::Zeroize as _;

use crate::keys::{CookieSealer, KeyError, random_bytes};

/// How long a login attempt may take, in seconds.
pub const LOGIN_TTL_SECONDS: i64 = 600;
/// How far in the future a login's start time may be (clock skew between replicas that
/// share the cookie key), in seconds.
const MAX_CLOCK_SKEW_SECONDS: i64 = 60;
/// Most login cookies a browser keeps: starting one more clears the oldest.
pub const MAX_LOGIN_COOKIES: usize = 4;
/// Most login cookies of one request looked at (a browser sends a few; more are ignored).
const MAX_LOGIN_COOKIES_READ: usize = 16;
/// Most completed logins remembered for replay refusal.
pub const MAX_USED_LOGINS: usize = 100_000;
/// What login cookies are sealed for (with the cookie's name).
pub const PURPOSE: &str = "latchkey-gateway-login-v1";
/// Characters of the `state` in the cookie's name.
pub const TAG_LEN: usize = 16;
/// Bytes of randomness in a `state`.
const STATE_BYTES: usize = 32;
/// Length of a `state`: 32 bytes in unpadded base64url.
const STATE_LEN: usize = 43;
/// The longest login cookie value opened (a return path of 2048 bytes seals to ~3 KB).
const MAX_COOKIE_VALUE_LEN: usize = 4096;
/// Version byte of the sealed format.
const FORMAT_VERSION: u8 = 1;

/// A login's `state`: 32 random bytes, base64url without padding (43 characters). What
/// the callback receives is parsed into one before anything else looks at it.
#[derive(Clone, PartialEq, Eq)]
pub struct LoginState(String);

impl std::fmt::Debug for LoginState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Kept out of logs, as the authorization code is.
        f.write_str("LoginState(..)")
    }
}

impl LoginState {
    /// A fresh random state.
    pub fn generate() -> Result<Self, KeyError> {
        Ok(Self(URL_SAFE_NO_PAD.encode(random_bytes::<STATE_BYTES>()?)))
    }

    /// `text` when it is a state this gateway could have issued (43 base64url characters
    /// that decode to 32 bytes), else `None`.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != STATE_LEN
            || !text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        (bytes.len() == STATE_BYTES).then(|| Self(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn bytes(&self) -> Option<[u8; STATE_BYTES]> {
        URL_SAFE_NO_PAD.decode(&self.0).ok()?.try_into().ok()
    }

    /// The part of the state in its cookie's name.
    fn tag(&self) -> &str {
        &self.0[..TAG_LEN]
    }
}

/// A login in progress, as sealed in its cookie.
#[derive(Debug)]
pub struct PendingLogin {
    pub state: LoginState,
    pub nonce: String,
    /// Used once, consumed by the code exchange.
    pub code_verifier: PkceVerifier,
    /// A local path (already checked by [`crate::session::safe_return_path`]).
    pub return_path: String,
    pub created_secs: i64,
}

impl PendingLogin {
    /// `version || created (i64 BE) || (u16 BE length || bytes)` of the state, the nonce,
    /// the verifier and the return path.
    fn encode(&self) -> Option<Vec<u8>> {
        let fields = [
            self.state.as_str().as_bytes(),
            self.nonce.as_bytes(),
            self.code_verifier.expose_for_storage().as_bytes(),
            self.return_path.as_bytes(),
        ];
        let len = 9 + fields.iter().map(|f| 2 + f.len()).sum::<usize>();
        // Room for the tag too: the sealer encrypts in place.
        let mut out = Vec::with_capacity(len + 16);
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&self.created_secs.to_be_bytes());
        for field in fields {
            out.extend_from_slice(&u16::try_from(field.len()).ok()?.to_be_bytes());
            out.extend_from_slice(field);
        }
        Some(out)
    }

    fn decode(mut bytes: &[u8]) -> Option<Self> {
        fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            let (head, rest) = bytes.split_at_checked(n)?;
            *bytes = rest;
            Some(head)
        }
        fn field(bytes: &mut &[u8]) -> Option<String> {
            let len = u16::from_be_bytes(take(bytes, 2)?.try_into().ok()?);
            String::from_utf8(take(bytes, usize::from(len))?.to_vec()).ok()
        }
        if take(&mut bytes, 1)? != [FORMAT_VERSION] {
            return None;
        }
        let created_secs = i64::from_be_bytes(take(&mut bytes, 8)?.try_into().ok()?);
        let state = LoginState::parse(&field(&mut bytes)?)?;
        let nonce = field(&mut bytes)?;
        let code_verifier = PkceVerifier::from_stored(SecretString::from(field(&mut bytes)?));
        let return_path = field(&mut bytes)?;
        bytes.is_empty().then_some(Self {
            state,
            nonce,
            code_verifier,
            return_path,
            created_secs,
        })
    }

    /// Whether the login may still complete at `now`.
    fn is_live(&self, now: i64) -> bool {
        let age = now.saturating_sub(self.created_secs);
        (-MAX_CLOCK_SKEW_SECONDS..LOGIN_TTL_SECONDS).contains(&age)
    }
}

/// Names, seals and opens login cookies.
#[derive(Debug)]
pub struct LoginCookies {
    /// `{session cookie}-login`: every login cookie's name starts with it.
    prefix: String,
}

impl LoginCookies {
    /// Login cookies next to the session cookie `session_cookie`.
    pub fn new(session_cookie: &str) -> Self {
        Self {
            prefix: format!("{session_cookie}-login"),
        }
    }

    /// Whether a cookie of this name is a login cookie (also the single login cookie of
    /// earlier versions, `{session cookie}-login`): such cookies never reach an upstream.
    pub fn is_login_cookie(&self, name: &str) -> bool {
        name.starts_with(&self.prefix)
    }

    /// The name of the cookie that carries the login of `state`.
    pub fn name(&self, state: &LoginState) -> String {
        format!("{}-{}", self.prefix, state.tag())
    }

    fn aad(name: &str) -> String {
        format!("{PURPOSE} {name}")
    }

    /// The cookie's name and value for `login`.
    pub fn seal(&self, sealer: &CookieSealer, login: &PendingLogin) -> Option<(String, String)> {
        let name = self.name(&login.state);
        let sealed = sealer.seal_bytes(&Self::aad(&name), login.encode()?)?;
        Some((name, URL_SAFE_NO_PAD.encode(sealed)))
    }

    /// The login sealed in cookie `name` with `value`, when it opens (any age).
    fn open_value(sealer: &CookieSealer, name: &str, value: &str) -> Option<PendingLogin> {
        if value.len() > MAX_COOKIE_VALUE_LEN {
            return None;
        }
        let mut raw = URL_SAFE_NO_PAD.decode(value).ok()?;
        let login = sealer
            .open_bytes(&Self::aad(name), &mut raw)
            .and_then(PendingLogin::decode);
        raw.zeroize();
        login
    }

    /// The live login of `state` that this browser started: its cookie opens, seals this
    /// very state, and has not expired.
    pub fn open(
        &self,
        sealer: &CookieSealer,
        headers: &HeaderMap,
        state: &LoginState,
        now: i64,
    ) -> Option<PendingLogin> {
        let name = self.name(state);
        crate::app::cookie_values(headers, &name)
            .take(MAX_LOGIN_COOKIES_READ)
            .filter_map(|value| Self::open_value(sealer, &name, value))
            .find(|login| {
                verify_slices_are_equal(login.state.as_str().as_bytes(), state.as_str().as_bytes())
                    .is_ok()
                    && login.is_live(now)
            })
    }

    /// The login cookies to clear when this request starts one more login: none while
    /// the browser holds fewer than [`MAX_LOGIN_COOKIES`]; else those that do not open or
    /// have expired, and the oldest of the rest, so that with the new one it keeps
    /// [`MAX_LOGIN_COOKIES`].
    pub fn to_clear(&self, sealer: &CookieSealer, headers: &HeaderMap, now: i64) -> Vec<String> {
        let mut found: Vec<(&str, &str)> = Vec::new();
        for (name, value) in crate::app::cookie_pairs(headers) {
            if self.is_login_cookie(name) && !found.iter().any(|(n, _)| *n == name) {
                found.push((name, value));
                if found.len() == MAX_LOGIN_COOKIES_READ {
                    break;
                }
            }
        }
        if found.len() < MAX_LOGIN_COOKIES {
            return Vec::new();
        }
        let mut live: Vec<(i64, &str)> = Vec::new();
        let mut clear: Vec<String> = Vec::new();
        for (name, value) in found {
            match Self::open_value(sealer, name, value) {
                Some(login) if login.is_live(now) && self.name(&login.state) == name => {
                    live.push((login.created_secs, name));
                }
                _ => clear.push(name.to_string()),
            }
        }
        // Newest first; keep room for the new one.
        live.sort_by_key(|(created, _)| std::cmp::Reverse(*created));
        clear.extend(
            live.into_iter()
                .skip(MAX_LOGIN_COOKIES - 1)
                .map(|(_, name)| name.to_string()),
        );
        clear
    }
}

/// The `state`s of completed logins, until they expire: a callback replayed with a copy
/// of its login cookie is refused here, before the provider is asked again.
#[derive(Debug, Default)]
pub struct UsedLogins {
    /// State bytes → when the login expires.
    map: Mutex<HashMap<[u8; STATE_BYTES], i64>>,
}

impl UsedLogins {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; STATE_BYTES], i64>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `state` completed a login that has not yet expired.
    pub fn was_used(&self, state: &LoginState, now: i64) -> bool {
        state
            .bytes()
            .and_then(|key| self.map().get(&key).copied())
            .is_some_and(|expires| now < expires)
    }

    /// Remembers that the login with this `state`, started at `created_secs`, completed.
    pub fn mark_used(&self, state: &LoginState, created_secs: i64, now: i64) {
        let Some(key) = state.bytes() else {
            return;
        };
        let expires = created_secs.saturating_add(LOGIN_TTL_SECONDS + MAX_CLOCK_SKEW_SECONDS);
        let mut map = self.map();
        if map.len() >= MAX_USED_LOGINS {
            map.retain(|_, e| now < *e);
            if map.len() >= MAX_USED_LOGINS {
                // Only when full of live entries (O(n) is fine here).
                let first = map.iter().min_by_key(|(_, e)| **e).map(|(k, _)| *k);
                if let Some(k) = first {
                    map.remove(&k);
                }
            }
        }
        map.insert(key, expires);
    }

    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn sealer() -> CookieSealer {
        CookieSealer::from_key(&[9u8; 32]).unwrap()
    }

    fn login(created_secs: i64, return_path: &str) -> PendingLogin {
        PendingLogin {
            state: LoginState::generate().unwrap(),
            nonce: "nonce-value".into(),
            code_verifier: PkceVerifier::from_stored(SecretString::from("verifier-value")),
            return_path: return_path.into(),
            created_secs,
        }
    }

    fn cookie_headers(pairs: &[(String, String)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let value = pairs
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        headers.insert(http::header::COOKIE, HeaderValue::from_str(&value).unwrap());
        headers
    }

    #[test]
    fn states_are_parsed_strictly() {
        let state = LoginState::generate().unwrap();
        assert_eq!(LoginState::parse(state.as_str()), Some(state.clone()));
        let mut long = state.as_str().to_string();
        long.push('A');
        for bad in [
            "",
            "short",
            long.as_str(),
            &state.as_str()[..42],
            // 43 characters, but not base64url.
            "+++++++++++++++++++++++++++++++++++++++++++",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        ] {
            assert!(LoginState::parse(bad).is_none(), "{bad:?}");
        }
        assert_eq!(format!("{state:?}"), "LoginState(..)");
    }

    #[test]
    fn a_login_opens_only_in_its_own_cookie_for_its_own_state_until_it_expires() {
        let sealer = sealer();
        let cookies = LoginCookies::new("latchkey-gw");
        let mine = login(1_000, "/app/page?x=1");
        let (name, value) = cookies.seal(&sealer, &mine).unwrap();
        assert!(name.starts_with("latchkey-gw-login-"));
        assert!(cookies.is_login_cookie(&name) && cookies.is_login_cookie("latchkey-gw-login"));
        assert!(!cookies.is_login_cookie("latchkey-gw"));
        let headers = cookie_headers(&[(name.clone(), value.clone())]);
        let opened = cookies.open(&sealer, &headers, &mine.state, 1_001).unwrap();
        assert_eq!(opened.nonce, "nonce-value");
        assert_eq!(opened.code_verifier.expose_for_storage(), "verifier-value");
        assert_eq!(opened.return_path, "/app/page?x=1");
        assert_eq!(opened.created_secs, 1_000);
        // Nothing of the login reads in clear in the cookie.
        for clear in [
            "nonce-value",
            "verifier-value",
            "/app/page",
            mine.state.as_str(),
        ] {
            assert!(!value.contains(clear), "{clear}");
            let raw = URL_SAFE_NO_PAD.decode(&value).unwrap();
            assert!(!raw.windows(clear.len()).any(|w| w == clear.as_bytes()));
        }
        // Expired, or too far in the future.
        assert!(
            cookies
                .open(&sealer, &headers, &mine.state, 1_000 + LOGIN_TTL_SECONDS)
                .is_none()
        );
        assert!(
            cookies
                .open(&sealer, &headers, &mine.state, 1_000 - 61)
                .is_none()
        );
        // Another state (even one with the same tag) does not open it.
        let other = LoginState::parse(&format!(
            "{}{}",
            &mine.state.as_str()[..TAG_LEN],
            "A".repeat(27)
        ))
        .unwrap();
        assert_eq!(cookies.name(&other), name);
        assert!(cookies.open(&sealer, &headers, &other, 1_001).is_none());
        // Moved to another cookie name, another key, or sealed as a session cookie: no.
        let moved = cookie_headers(&[(cookies.name(&other), value.clone())]);
        assert!(cookies.open(&sealer, &moved, &other, 1_001).is_none());
        let foreign = CookieSealer::from_key(&[1u8; 32]).unwrap();
        assert!(
            cookies
                .open(&foreign, &headers, &mine.state, 1_001)
                .is_none()
        );
        let as_session = sealer
            .seal(&name, b"0123456789abcdef0123456789abcdef")
            .unwrap();
        let confused = cookie_headers(&[(name.clone(), as_session)]);
        assert!(
            cookies
                .open(&sealer, &confused, &mine.state, 1_001)
                .is_none()
        );
        // Tampered.
        let mut raw = URL_SAFE_NO_PAD.decode(&value).unwrap();
        raw[20] ^= 1;
        let tampered = cookie_headers(&[(name, URL_SAFE_NO_PAD.encode(raw))]);
        assert!(
            cookies
                .open(&sealer, &tampered, &mine.state, 1_001)
                .is_none()
        );
    }

    #[test]
    fn a_browser_keeps_at_most_a_few_login_cookies_the_newest() {
        let sealer = sealer();
        let cookies = LoginCookies::new("__Host-latchkey-gw");
        let sealed: Vec<(String, String)> = (0..6)
            .map(|i| cookies.seal(&sealer, &login(1_000 + i, "/")).unwrap())
            .collect();
        // Below the limit: nothing is opened or cleared.
        let few = cookie_headers(&sealed[..MAX_LOGIN_COOKIES - 1]);
        assert!(cookies.to_clear(&sealer, &few, 1_010).is_empty());
        // At the limit (with an unreadable one and an unrelated cookie): the unreadable
        // one and the oldest go, leaving room for one more.
        let mut held = sealed[2..6].to_vec();
        held.push((format!("{}-junk", cookies.prefix), "AAAA".into()));
        held.push(("other".into(), "kept".into()));
        let cleared = cookies.to_clear(&sealer, &cookie_headers(&held), 1_010);
        assert_eq!(cleared.len(), 2, "{cleared:?}");
        assert!(cleared.contains(&format!("{}-junk", cookies.prefix)));
        assert!(cleared.contains(&sealed[2].0));
        // Expired ones go first.
        let cleared = cookies.to_clear(
            &sealer,
            &cookie_headers(&sealed[2..6]),
            1_004 + LOGIN_TTL_SECONDS,
        );
        assert_eq!(cleared.len(), 3, "{cleared:?}");
    }

    #[test]
    fn completed_logins_are_remembered_until_they_expire() {
        let used = UsedLogins::default();
        let done = login(1_000, "/");
        assert!(!used.was_used(&done.state, 1_001));
        used.mark_used(&done.state, done.created_secs, 1_001);
        assert!(used.was_used(&done.state, 1_002));
        assert!(!used.was_used(&login(1_000, "/").state, 1_002));
        assert!(!used.was_used(
            &done.state,
            1_000 + LOGIN_TTL_SECONDS + MAX_CLOCK_SKEW_SECONDS
        ));
    }

    #[test]
    fn the_sealed_format_refuses_trailing_or_missing_bytes() {
        let l = login(5, "/x");
        let bytes = l.encode().unwrap();
        assert!(PendingLogin::decode(&bytes).is_some());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(PendingLogin::decode(&longer).is_none());
        assert!(PendingLogin::decode(&bytes[..bytes.len() - 1]).is_none());
        let mut version = bytes;
        version[0] = 2;
        assert!(PendingLogin::decode(&version).is_none());
    }
}
