//! Sessions shared by gateway replicas through the database (`session_store = "database"`):
//! any replica serves any browser.
//!
//! - A session is one row (`gateway_sessions`): its tokens and claims sealed with the
//!   gateway's cookie key (AES-256-GCM, bound to the row's key), the SHA-256 of its id (the
//!   id itself is not stored), a version that changes with the tokens, and its times.
//!   Replicas share the cookie key (they must, to read each other's cookies).
//! - Each replica keeps a copy in memory and uses it for at most `session_cache_seconds`
//!   before comparing it with the row (one small query): a logout on one replica holds on
//!   all within that time; a session whose row is gone ends here too.
//! - The tokens are refreshed once across replicas: the replica that takes the row's
//!   refresh lease (a conditional update) refreshes and writes the new version; the others
//!   wait for that version (up to [`REFRESH_WAIT`]) instead of spending the refresh token
//!   a second time.
//! - Use is written back at most every [`TOUCH_EVERY_SECS`] (the idle timeout is that much
//!   coarser across replicas); sessions past their timeouts are deleted by every replica
//!   now and then ([`SharedSessions::purge_every`]).
//! - When the database does not answer, a session whose copy is due for a check is not
//!   used (the request is treated as signed out, nothing is deleted): a logout must not be
//!   undone by an outage.

use std::time::{Duration, Instant};

use latchkey_store::{GatewaySessionRow, Store, StoreError};
use zeroize::Zeroizing;

use crate::keys::CookieSealer;
use crate::session::{Session, SessionId, Synced};
use crate::snapshot::Saved;

/// What a row is sealed for (with the row's key appended).
const PURPOSE: &str = "latchkey-gateway-session-row-v1";
/// A replica writes a session's last use at most this often.
pub const TOUCH_EVERY_SECS: i64 = 60;
/// How long the refresh lease of a session lasts (longer than a token request).
const REFRESH_LEASE_MS: i64 = 30_000;
/// How long a replica waits for another replica's refresh of the same session.
pub const REFRESH_WAIT: Duration = Duration::from_secs(5);
const REFRESH_POLL: Duration = Duration::from_millis(100);

/// The database side of shared sessions.
#[derive(Debug, Clone)]
pub struct SharedSessions {
    store: Store,
    /// How long a copy is used before it is compared with its row.
    cache: Duration,
}

/// What the row says of a copy due for a check.
#[derive(Debug)]
pub enum Check {
    /// The copy is current.
    Current { last_seen_secs: i64 },
    /// The tokens changed (another replica refreshed): the new session.
    Changed(Box<Session>),
    /// The row is gone (a logout, a timeout on another replica).
    Gone,
}

impl SharedSessions {
    /// Connect to the database (applying Latchkey's migrations).
    pub async fn connect(database_url: &str, cache: Duration) -> Result<Self, StoreError> {
        let store = Store::connect(database_url).await?;
        Ok(Self { store, cache })
    }

    /// Whether `synced` is older than the cache time.
    pub fn due(&self, synced: &Synced) -> bool {
        synced.checked.elapsed() >= self.cache
    }

    /// The row's key: the id's SHA-256, hex.
    fn key(id: &SessionId) -> String {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, id);
        hex::encode(digest.as_ref())
    }

    fn seal(sealer: &CookieSealer, key: &str, session: &Session) -> Option<Vec<u8>> {
        // Sealed in place: the buffer holds ciphertext from here on.
        let plain = serde_json::to_vec(&Saved::of(String::new(), session)).ok()?;
        sealer.seal_bytes(&format!("{PURPOSE}:{key}"), plain)
    }

    fn open(sealer: &CookieSealer, row: &GatewaySessionRow) -> Option<Session> {
        let mut sealed = Zeroizing::new(row.sealed.clone());
        let plain = sealer.open_bytes(&format!("{PURPOSE}:{}", row.id_hash), &mut sealed)?;
        let saved: Saved = serde_json::from_slice(plain).ok()?;
        let mut session = saved.into_session();
        session.last_seen_secs = session.last_seen_secs.max(row.last_seen_secs);
        session.shared = Some(Synced {
            version: row.version,
            checked: Instant::now(),
            touched_secs: row.last_seen_secs,
        });
        Some(session)
    }

    /// Store a new session (version 1); marks `session` as synced.
    pub async fn create(
        &self,
        sealer: &CookieSealer,
        id: &SessionId,
        session: &mut Session,
    ) -> Result<(), SharedError> {
        let key = Self::key(id);
        let sealed = Self::seal(sealer, &key, session).ok_or(SharedError::Seal)?;
        self.store
            .insert_gateway_session(&GatewaySessionRow {
                id_hash: key,
                sealed,
                version: 1,
                created_secs: session.created_secs,
                last_seen_secs: session.last_seen_secs,
            })
            .await?;
        session.shared = Some(Synced {
            version: 1,
            checked: Instant::now(),
            touched_secs: session.last_seen_secs,
        });
        Ok(())
    }

    /// The session of `id` from its row; `None` when there is none (or it does not open:
    /// another deployment's cookie key, an altered row — logged).
    pub async fn load(
        &self,
        sealer: &CookieSealer,
        id: &SessionId,
    ) -> Result<Option<Session>, SharedError> {
        let Some(row) = self.store.find_gateway_session(&Self::key(id)).await? else {
            return Ok(None);
        };
        let session = Self::open(sealer, &row);
        if session.is_none() {
            tracing::warn!(
                "a shared session row does not open with this gateway's cookie key (replicas need the same gateway-cookie.key); the session is not used"
            );
        }
        Ok(session)
    }

    /// Compare a copy of version `version` with its row.
    pub async fn check(
        &self,
        sealer: &CookieSealer,
        id: &SessionId,
        version: i64,
    ) -> Result<Check, SharedError> {
        match self.store.gateway_session_stamp(&Self::key(id)).await? {
            None => Ok(Check::Gone),
            Some(stamp) if stamp.version == version => Ok(Check::Current {
                last_seen_secs: stamp.last_seen_secs,
            }),
            Some(_) => Ok(match self.load(sealer, id).await? {
                Some(session) => Check::Changed(Box::new(session)),
                None => Check::Gone,
            }),
        }
    }

    /// Write the session's last use (off the request path; failures only logged).
    pub fn touch(&self, id: &SessionId, last_seen_secs: i64) {
        let (store, key) = (self.store.clone(), Self::key(id));
        tokio::spawn(async move {
            if let Err(error) = store.touch_gateway_session(&key, last_seen_secs).await {
                tracing::warn!(%error, "cannot record a shared session's last use");
            }
        });
    }

    /// Take the refresh lease of `version`: `true` when this replica refreshes.
    pub async fn lease_refresh(
        &self,
        id: &SessionId,
        version: i64,
        now_ms: i64,
    ) -> Result<bool, SharedError> {
        Ok(self
            .store
            .lease_gateway_session_refresh(
                &Self::key(id),
                version,
                now_ms,
                now_ms + REFRESH_LEASE_MS,
            )
            .await?)
    }

    /// Store the refreshed `session` as the next version of `expected` (releasing the
    /// lease); `false` when the row changed or is gone meanwhile.
    pub async fn save_refreshed(
        &self,
        sealer: &CookieSealer,
        id: &SessionId,
        session: &mut Session,
        expected: i64,
    ) -> Result<bool, SharedError> {
        let key = Self::key(id);
        let sealed = Self::seal(sealer, &key, session).ok_or(SharedError::Seal)?;
        let row = GatewaySessionRow {
            id_hash: key,
            sealed,
            version: expected + 1,
            created_secs: session.created_secs,
            last_seen_secs: session.last_seen_secs,
        };
        if !self.store.replace_gateway_session(&row, expected).await? {
            return Ok(false);
        }
        session.shared = Some(Synced {
            version: expected + 1,
            checked: Instant::now(),
            touched_secs: session.last_seen_secs,
        });
        Ok(true)
    }

    /// Wait for another replica's refresh of a session at `version`: [`Check::Changed`]
    /// with the refreshed session, [`Check::Gone`], or [`Check::Current`] when nothing
    /// changed within [`REFRESH_WAIT`].
    pub async fn wait_for_refresh(
        &self,
        sealer: &CookieSealer,
        id: &SessionId,
        version: i64,
    ) -> Result<Check, SharedError> {
        let deadline = Instant::now() + REFRESH_WAIT;
        loop {
            tokio::time::sleep(REFRESH_POLL).await;
            let check = self.check(sealer, id, version).await?;
            if !matches!(check, Check::Current { .. }) || Instant::now() >= deadline {
                return Ok(check);
            }
        }
    }

    /// Delete the row (a logout, a timeout); done before the logout is answered.
    pub async fn delete(&self, id: &SessionId) -> Result<(), SharedError> {
        self.store.delete_gateway_session(&Self::key(id)).await?;
        Ok(())
    }

    /// Delete sessions past their timeouts every `interval`, forever.
    pub async fn purge_every(
        self,
        interval: Duration,
        clock: std::sync::Arc<dyn latchkey_core::clock::Clock>,
        absolute_secs: i64,
        idle_secs: i64,
    ) {
        loop {
            tokio::time::sleep(interval).await;
            let now = clock.now_secs();
            let purged = self
                .store
                .purge_gateway_sessions(
                    now.saturating_sub(absolute_secs),
                    now.saturating_sub(idle_secs + TOUCH_EVERY_SECS),
                )
                .await;
            match purged {
                Ok(0) => {}
                Ok(n) => tracing::debug!(sessions = n, "expired shared sessions deleted"),
                Err(error) => tracing::warn!(%error, "cannot delete expired shared sessions"),
            }
        }
    }

    /// `SELECT 1`, for `/oauth2/ready`.
    pub async fn ping(&self) -> Result<(), SharedError> {
        Ok(self.store.ping().await?)
    }
}

/// Why a shared session could not be read or written (never holds a secret).
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    #[error("the session database: {0}")]
    Store(#[from] StoreError),
    #[error("cannot seal the session")]
    Seal,
}
