//! Server-side state: sessions (keyed by a random id that only ever leaves the gateway
//! sealed in the cookie), in memory and bounded. Logins in progress are kept by the
//! browser, sealed in a cookie ([`crate::login`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use http::HeaderValue;
use secrecy::SecretString;
use serde_json::{Map, Value};

/// Most sessions held at once; when full, the session idle the longest is dropped.
pub const MAX_SESSIONS: usize = 100_000;

/// A session id: random bytes that only ever leave the gateway sealed in the cookie.
pub type SessionId = [u8; crate::keys::SESSION_ID_LEN];

/// A signed-in browser.
#[derive(Debug)]
pub struct Session {
    pub subject: Arc<str>,
    /// The user's claims, forwarded in `x-amzn-oidc-data`.
    pub claims: Map<String, Value>,
    pub id_token: Option<SecretString>,
    pub access_token: SecretString,
    pub refresh_token: Option<SecretString>,
    pub access_expires_at: Option<i64>,
    /// The identity headers last sent for this session: reused until half the signed
    /// token's lifetime is gone (signing is ES256, about a quarter of the proxy's CPU when
    /// done per request) and cleared when the tokens change.
    pub upstream_headers: Option<UpstreamHeaders>,
    pub created_secs: i64,
    pub last_seen_secs: i64,
    /// With sessions in the database ([`crate::shared`]): the row this copy was read from.
    pub shared: Option<Synced>,
}

/// Where a replica's copy of a shared session stands against its row.
#[derive(Debug, Clone, Copy)]
pub struct Synced {
    /// The row's version this copy holds (it changes when the tokens do).
    pub version: i64,
    /// When this copy was last compared with the row.
    pub checked: std::time::Instant,
    /// The `last_seen_secs` last written to the row.
    pub touched_secs: i64,
}

/// The ALB-format headers for one session, ready to insert (clones share their bytes).
#[derive(Debug, Clone)]
pub struct UpstreamHeaders {
    /// `x-amzn-oidc-data`.
    pub data: HeaderValue,
    /// The `exp` of the token in `data`.
    pub data_expires_secs: i64,
    /// `x-amzn-oidc-identity`.
    pub identity: HeaderValue,
    /// `x-amzn-oidc-accesstoken` (marked sensitive).
    pub access_token: HeaderValue,
}

/// A session's slot: the lock serialises refreshes of one session.
pub type SessionSlot = Arc<tokio::sync::Mutex<Session>>;

/// Sessions by id.
#[derive(Debug, Default)]
pub struct SessionStore {
    map: Mutex<HashMap<SessionId, SessionSlot>>,
    /// Counts sessions added and removed (see [`crate::snapshot`]).
    generation: std::sync::atomic::AtomicU64,
}

impl SessionStore {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, SessionSlot>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn insert(&self, id: SessionId, session: Session) {
        let mut map = self.map();
        if map.len() >= MAX_SESSIONS {
            // Drop the session idle the longest (only when full: O(n) is fine here).
            let victim = map
                .iter()
                .filter_map(|(k, s)| s.try_lock().ok().map(|s| (*k, s.last_seen_secs)))
                .min_by_key(|(_, seen)| *seen)
                .map(|(k, _)| k);
            if let Some(k) = victim {
                map.remove(&k);
            }
        }
        map.insert(id, Arc::new(tokio::sync::Mutex::new(session)));
        drop(map);
        self.bump();
    }

    fn bump(&self) -> u64 {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1
    }

    /// Changes (sessions added or removed) so far.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Calls `f` with each session, under its lock. Blocking (a session being refreshed
    /// is waited for): not for the async workers.
    pub fn for_each_blocking(&self, mut f: impl FnMut(&SessionId, &Session)) {
        let slots: Vec<(SessionId, SessionSlot)> =
            self.map().iter().map(|(k, v)| (*k, v.clone())).collect();
        for (id, slot) in slots {
            f(&id, &slot.blocking_lock());
        }
    }

    pub fn find(&self, id: &SessionId) -> Option<SessionSlot> {
        self.map().get(id).cloned()
    }

    /// Removes the session; returns the [`Self::generation`] that no longer has it.
    pub fn delete(&self, id: &SessionId) -> u64 {
        self.map().remove(id);
        self.bump()
    }

    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `path` when it is a local path the browser may be sent back to, else `/`.
///
/// Refused: anything not starting with exactly one `/` (`//host`, `https://…`, relative
/// paths), any backslash (browsers treat `/\host` as `//host`), control characters and
/// whitespace, and paths longer than 2048 bytes.
pub fn safe_return_path(path: &str) -> String {
    let is_safe = path.starts_with('/')
        && !path.starts_with("//")
        && !path.contains('\\')
        && !path.chars().any(|c| c.is_control() || c.is_whitespace())
        && path.len() <= 2048;
    if is_safe {
        path.to_string()
    } else {
        "/".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_paths() {
        for good in ["/", "/app?x=1", "/a/b#c"] {
            assert_eq!(safe_return_path(good), good);
        }
        for bad in [
            "//evil.example",
            "https://evil.example/",
            "/\\evil.example",
            "\\\\evil",
            "/\tevil",
            "/a\nb",
            "evil",
            "",
            "/%0a x",
        ] {
            assert_eq!(safe_return_path(bad), "/", "{bad:?}");
        }
    }
}
