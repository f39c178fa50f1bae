//! Sessions kept across restarts: the session table is written, sealed with the cookie
//! key (AES-256-GCM, bound to its purpose), to `<data_dir>/gateway-sessions.sealed`
//! every [`SAVE_INTERVAL`], at shutdown, and before a logout is answered; it is read back
//! at start. A restart (a deploy, a crash) does not sign everyone out, as it does not
//! behind an ALB, whose sessions live in its cookies.
//!
//! - A logged-out session never comes back: the logout is answered only once a snapshot
//!   without it is on disk. When a snapshot cannot be written, the old one is deleted
//!   (everyone signs in again rather than a revoked session returning).
//! - A snapshot that does not open (another key, tampered, truncated) or does not parse
//!   is ignored with a warning: the gateway starts with no sessions.
//! - Sessions past their absolute or idle timeout at start are dropped.
//! - The file is written to a private temporary file (0600), synced, then renamed into
//!   place: a crash leaves the old snapshot or the new one, never half of one.
//!
//! Replicas do not share sessions (each keeps its own table). One process owns a data
//! directory's snapshot (an exclusive lock on `gateway-sessions.lock`, held while it
//! runs): another gateway started on the same directory keeps its sessions in memory
//! only, with a warning, since reading a snapshot another replica wrote could bring back
//! a session that replica has since ended.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::keys::{CookieSealer, random_token};
use crate::session::{Session, SessionId, SessionStore};

/// The snapshot's file name in the data directory.
pub const SNAPSHOT_FILE: &str = "gateway-sessions.sealed";
/// How often the session table is written while the gateway runs.
pub const SAVE_INTERVAL: Duration = Duration::from_secs(30);
/// The lock file that makes one process the snapshot's owner.
pub const LOCK_FILE: &str = "gateway-sessions.lock";
/// What the snapshot is sealed for (a cookie sealed with the same key cannot pass for it).
const PURPOSE: &str = "latchkey-gateway-sessions-v1";

/// One session as written (secrets in clear only inside the sealed file). Borrowed from
/// the session table when written, so no copy of a token is made on the way.
#[derive(Serialize, Deserialize)]
pub(crate) struct Saved<'a> {
    id: String,
    #[serde(borrow)]
    subject: Cow<'a, str>,
    claims: Cow<'a, Map<String, Value>>,
    #[serde(borrow)]
    id_token: Option<Cow<'a, str>>,
    #[serde(borrow)]
    access_token: Cow<'a, str>,
    #[serde(borrow)]
    refresh_token: Option<Cow<'a, str>>,
    access_expires_at: Option<i64>,
    created_secs: i64,
    last_seen_secs: i64,
}

impl<'a> Saved<'a> {
    /// `s` as written, borrowing its values; `id` as it is written (may be empty).
    pub(crate) fn of(id: String, s: &'a Session) -> Self {
        Self {
            id,
            subject: Cow::Borrowed(&s.subject),
            claims: Cow::Borrowed(&s.claims),
            id_token: s
                .id_token
                .as_ref()
                .map(|t| Cow::Borrowed(t.expose_secret())),
            access_token: Cow::Borrowed(s.access_token.expose_secret()),
            refresh_token: s
                .refresh_token
                .as_ref()
                .map(|t| Cow::Borrowed(t.expose_secret())),
            access_expires_at: s.access_expires_at,
            created_secs: s.created_secs,
            last_seen_secs: s.last_seen_secs,
        }
    }

    /// The session written.
    pub(crate) fn into_session(self) -> Session {
        Session {
            subject: Arc::from(self.subject),
            claims: self.claims.into_owned(),
            id_token: self.id_token.map(|t| SecretString::from(t.into_owned())),
            access_token: SecretString::from(self.access_token.into_owned()),
            refresh_token: self
                .refresh_token
                .map(|t| SecretString::from(t.into_owned())),
            access_expires_at: self.access_expires_at,
            upstream_headers: None,
            created_secs: self.created_secs,
            last_seen_secs: self.last_seen_secs,
            shared: None,
        }
    }
}

#[derive(Deserialize)]
struct Snapshot<'a> {
    version: u32,
    #[serde(borrow)]
    sessions: Vec<Saved<'a>>,
}

/// The snapshot's opening, before the sessions (the format `Snapshot` reads).
const HEAD: &[u8] = br#"{"version":1,"sessions":["#;

/// Why a snapshot could not be read or written (never holds a secret).
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{0}: does not open with this gateway's cookie key (another key, or altered)")]
    Sealed(PathBuf),
    #[error("{0}: not a session snapshot: {1}")]
    Format(PathBuf, String),
    #[error("cannot seal the snapshot")]
    Seal,
    #[error("the snapshot writer stopped before it finished")]
    Interrupted,
}

/// What went wrong with the JSON, without serde's message: that quotes the offending
/// value, which in a snapshot may be a token.
fn shape_of(error: &serde_json::Error) -> String {
    format!(
        "{:?} error at line {} column {}",
        error.classify(),
        error.line(),
        error.column()
    )
}

/// Writes the session table; one write at a time.
#[derive(Debug)]
pub struct Snapshots {
    path: PathBuf,
    /// The locked lock file; `None`: another process owns the snapshot (or the lock could
    /// not be taken), and this one neither reads nor writes it.
    owner: Option<std::fs::File>,
    /// The [`SessionStore::generation`] the file on disk reflects.
    saved: Mutex<u64>,
    /// Writes so far (for tests and metrics).
    writes: AtomicU64,
    /// The size of the last snapshot written, in bytes.
    last_len: std::sync::atomic::AtomicUsize,
    /// Tests: the next write fails as a full disk would make it.
    #[cfg(test)]
    fail_next_write: std::sync::atomic::AtomicBool,
}

impl Snapshots {
    /// Snapshots in `data_dir`, when no other process owns them there.
    pub fn new(data_dir: &Path) -> Self {
        let lock_path = data_dir.join(LOCK_FILE);
        let owner = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| e.to_string())
            .and_then(|file| match file.try_lock() {
                Ok(()) => Ok(file),
                Err(std::fs::TryLockError::WouldBlock) => {
                    Err("another gateway holds it".to_string())
                }
                Err(std::fs::TryLockError::Error(e)) => Err(e.to_string()),
            });
        let owner = match owner {
            Ok(file) => Some(file),
            Err(why) => {
                tracing::warn!(
                    lock = %lock_path.display(),
                    %why,
                    "sessions are kept in memory only (not across restarts)"
                );
                None
            }
        };
        Self {
            path: data_dir.join(SNAPSHOT_FILE),
            owner,
            saved: Mutex::new(0),
            writes: AtomicU64::new(0),
            last_len: std::sync::atomic::AtomicUsize::new(0),
            #[cfg(test)]
            fail_next_write: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// No snapshots: sessions in memory only. A snapshot left in `data_dir` from before
    /// is deleted (unless another process owns it), so no token stays on disk.
    pub fn off(data_dir: &Path) -> Self {
        let mut snapshots = Self::new(data_dir);
        if snapshots.owner.take().is_some() {
            match std::fs::remove_file(&snapshots.path) {
                Ok(()) => tracing::info!("session snapshot deleted (sessions kept in memory only)"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => tracing::error!(%error, "cannot delete the session snapshot"),
            }
        }
        snapshots
    }

    /// The snapshot file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Snapshots written since start.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// The sessions in the snapshot that are still within their timeouts at `now`; no
    /// file: none.
    pub fn load(
        &self,
        sealer: &CookieSealer,
        now: i64,
        absolute_secs: i64,
        idle_secs: i64,
    ) -> Result<Vec<(SessionId, Session)>, SnapshotError> {
        if self.owner.is_none() {
            return Ok(Vec::new());
        }
        let mut sealed = match std::fs::read(&self.path) {
            Ok(bytes) => Zeroizing::new(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(SnapshotError::Io(self.path.clone(), e)),
        };
        let plain = sealer
            .open_bytes(PURPOSE, &mut sealed)
            .ok_or_else(|| SnapshotError::Sealed(self.path.clone()))?;
        let snapshot: Snapshot = serde_json::from_slice(plain)
            .map_err(|e| SnapshotError::Format(self.path.clone(), shape_of(&e)))?;
        if snapshot.version != 1 {
            return Err(SnapshotError::Format(
                self.path.clone(),
                format!("version {}", snapshot.version),
            ));
        }
        let mut sessions = Vec::with_capacity(snapshot.sessions.len());
        for saved in snapshot.sessions {
            let Some(id) = URL_SAFE_NO_PAD
                .decode(&saved.id)
                .ok()
                .and_then(|raw| SessionId::try_from(raw.as_slice()).ok())
            else {
                continue;
            };
            // The same rule as on every request (`>`: a session lasts at least its time).
            if now.saturating_sub(saved.created_secs) > absolute_secs
                || now.saturating_sub(saved.last_seen_secs) > idle_secs
            {
                continue;
            }
            sessions.push((id, saved.into_session()));
        }
        Ok(sessions)
    }

    /// Write `store` unless the file already reflects generation `covered` or later (a
    /// write that started after the caller's change). Blocking: run it off the async
    /// workers. On failure the old file is removed, so that no session ended since
    /// comes back at the next start.
    pub fn save(
        &self,
        store: &SessionStore,
        sealer: &CookieSealer,
        covered: u64,
    ) -> Result<(), SnapshotError> {
        if self.owner.is_none() {
            return Ok(());
        }
        let mut saved = self.saved.lock().unwrap_or_else(PoisonError::into_inner);
        if *saved >= covered && covered != 0 {
            return Ok(());
        }
        // Read before the table: every change up to `generation` is in what follows.
        let generation = store.generation();
        let result = self.write(store, sealer);
        match &result {
            Ok(()) => *saved = generation,
            Err(_) => {
                let _ = std::fs::remove_file(&self.path);
            }
        }
        result
    }

    fn write(&self, store: &SessionStore, sealer: &CookieSealer) -> Result<(), SnapshotError> {
        // Sized from the last snapshot: a buffer that grows leaves clear copies behind
        // in freed memory.
        let expected = self.last_len.load(Ordering::Relaxed);
        let mut plain = Zeroizing::new(Vec::with_capacity(expected + expected / 4 + 64 * 1024));
        plain.extend_from_slice(HEAD);
        let mut failed = None;
        store.for_each_blocking(|id, s| {
            if plain.len() > HEAD.len() {
                plain.push(b',');
            }
            let saved = Saved::of(URL_SAFE_NO_PAD.encode(id), s);
            if let Err(error) = serde_json::to_writer(&mut *plain, &saved) {
                failed.get_or_insert(error);
            }
        });
        if let Some(error) = failed {
            return Err(SnapshotError::Format(self.path.clone(), shape_of(&error)));
        }
        plain.extend_from_slice(b"]}");
        self.last_len.store(plain.len(), Ordering::Relaxed);
        // Sealed in place: the buffer holds ciphertext from here on.
        let sealed = sealer
            .seal_bytes(PURPOSE, std::mem::take(&mut *plain))
            .ok_or(SnapshotError::Seal)?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let io = |e| SnapshotError::Io(self.path.clone(), e);
        let token = random_token::<9>().map_err(|_| SnapshotError::Seal)?;
        let tmp = dir.join(format!("{SNAPSHOT_FILE}.{token}.tmp"));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let written = options.open(&tmp).and_then(|mut file| {
            #[cfg(test)]
            if self.fail_next_write.swap(false, Ordering::Relaxed) {
                return Err(std::io::Error::from(std::io::ErrorKind::StorageFull));
            }
            std::io::Write::write_all(&mut file, &sealed)?;
            file.sync_all()
        });
        let renamed = written.and_then(|()| std::fs::rename(&tmp, &self.path));
        if renamed.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        renamed.map_err(io)?;
        self.writes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn session(subject: &str, created: i64, seen: i64) -> Session {
        Session {
            subject: Arc::from(subject),
            claims: serde_json::json!({"email": format!("{subject}@example.com")})
                .as_object()
                .unwrap()
                .clone(),
            id_token: Some(SecretString::from("id-token-secret")),
            access_token: SecretString::from("access-token-secret"),
            refresh_token: Some(SecretString::from("refresh-token-secret")),
            access_expires_at: Some(created + 3600),
            upstream_headers: None,
            created_secs: created,
            last_seen_secs: seen,
            shared: None,
        }
    }

    /// A fresh directory, the sealer, and a table with `sessions` (id byte, subject,
    /// created, last seen).
    fn fixture(sessions: &[(u8, &str, i64, i64)]) -> (PathBuf, CookieSealer, SessionStore) {
        let dir = crate::keys::test_dir("snapshot");
        std::fs::create_dir_all(&dir).unwrap();
        let store = SessionStore::default();
        for &(id, subject, created, seen) in sessions {
            store.insert([id; 32], session(subject, created, seen));
        }
        (dir, CookieSealer::from_key(&[3u8; 32]).unwrap(), store)
    }

    #[test]
    fn round_trip_drops_expired_and_refuses_anything_altered() {
        let (dir, sealer, store) = fixture(&[
            (1, "alice", 1_000, 1_900),
            (2, "idle", 1_000, 1_100),
            (3, "old", 0, 1_950),
        ]);
        let snapshots = Snapshots::new(&dir);
        snapshots.save(&store, &sealer, 0).unwrap();
        let sealed = std::fs::read(snapshots.path()).unwrap();
        for clear in [
            "access-token-secret",
            "refresh-token-secret",
            "alice",
            "email",
        ] {
            assert!(
                !sealed.windows(clear.len()).any(|w| w == clear.as_bytes()),
                "{clear} in clear"
            );
        }

        // At 2000 with a 1500 s absolute and a 600 s idle limit only alice is left.
        let restored = snapshots.load(&sealer, 2_000, 1_500, 600).unwrap();
        assert_eq!(restored.len(), 1);
        let (id, alice) = &restored[0];
        assert_eq!(id, &[1u8; 32]);
        assert_eq!(&*alice.subject, "alice");
        assert_eq!(alice.access_token.expose_secret(), "access-token-secret");
        assert_eq!(
            alice.refresh_token.as_ref().unwrap().expose_secret(),
            "refresh-token-secret"
        );
        assert_eq!(alice.claims["email"], "alice@example.com");
        assert_eq!((alice.created_secs, alice.last_seen_secs), (1_000, 1_900));

        // Another key, a flipped bit, a cut-off file, a cookie sealed with the same key:
        // none of them opens.
        let other = CookieSealer::from_key(&[4u8; 32]).unwrap();
        assert!(matches!(
            snapshots.load(&other, 2_000, 1_500, 600),
            Err(SnapshotError::Sealed(_))
        ));
        let mut flipped = sealed.clone();
        flipped[sealed.len() / 2] ^= 1;
        std::fs::write(snapshots.path(), &flipped).unwrap();
        assert!(snapshots.load(&sealer, 2_000, 1_500, 600).is_err());
        std::fs::write(snapshots.path(), &sealed[..sealed.len() - 1]).unwrap();
        assert!(snapshots.load(&sealer, 2_000, 1_500, 600).is_err());
        let cookie = sealer.seal_bytes("latchkey-gw", b"{}".to_vec()).unwrap();
        std::fs::write(snapshots.path(), cookie).unwrap();
        assert!(snapshots.load(&sealer, 2_000, 1_500, 600).is_err());
        // No file: no sessions, no error.
        std::fs::remove_file(snapshots.path()).unwrap();
        assert!(
            snapshots
                .load(&sealer, 2_000, 1_500, 600)
                .unwrap()
                .is_empty()
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_snapshot_of_another_shape_is_refused_without_quoting_it() {
        let (dir, sealer, _) = fixture(&[]);
        let snapshots = Snapshots::new(&dir);
        // Sealed with the right key (say, by another version) but not this format: serde
        // would quote the offending value, a token here.
        let odd = br#"{"version":1,"sessions":[{"id":"AA","subject":"s","claims":{},
            "id_token":null,"access_token":"at","refresh_token":null,"access_expires_at":null,
            "created_secs":"SECRET-REFRESH-TOKEN","last_seen_secs":0}]}"#;
        std::fs::write(
            snapshots.path(),
            sealer.seal_bytes(PURPOSE, odd.to_vec()).unwrap(),
        )
        .unwrap();
        let error = snapshots
            .load(&sealer, 0, 100, 100)
            .unwrap_err()
            .to_string();
        assert!(error.contains("not a session snapshot"), "{error}");
        assert!(!error.contains("SECRET"), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn turned_off_nothing_is_read_or_written_and_an_old_snapshot_goes() {
        let (dir, sealer, store) = fixture(&[(1, "alice", 1_000, 1_000)]);
        Snapshots::new(&dir).save(&store, &sealer, 0).unwrap();
        let off = Snapshots::off(&dir);
        assert!(!off.path().exists(), "the old snapshot is deleted");
        assert!(off.load(&sealer, 1_000, 100, 100).unwrap().is_empty());
        off.save(&store, &sealer, 0).unwrap();
        assert!(!off.path().exists());
        assert_eq!(off.writes(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn one_process_owns_a_directory_s_snapshot() {
        let (dir, sealer, store) = fixture(&[(1, "alice", 1_000, 1_000)]);
        let first = Snapshots::new(&dir);
        first.save(&store, &sealer, 0).unwrap();
        // A second gateway on the same directory neither reads nor writes the snapshot.
        let second = Snapshots::new(&dir);
        assert!(second.load(&sealer, 1_000, 100, 100).unwrap().is_empty());
        second.save(&SessionStore::default(), &sealer, 0).unwrap();
        assert_eq!(second.writes(), 0);
        assert_eq!(first.load(&sealer, 1_000, 100, 100).unwrap().len(), 1);
        // Once the owner is gone, the next one takes over.
        drop(first);
        let third = Snapshots::new(&dir);
        assert_eq!(third.load(&sealer, 1_000, 100, 100).unwrap().len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_save_covering_a_removal_is_not_repeated_and_a_failed_save_removes_the_file() {
        let (dir, sealer, store) = fixture(&[(1, "alice", 1_000, 1_000), (2, "bob", 1_000, 1_000)]);
        let snapshots = Snapshots::new(&dir);
        let generation = store.delete(&[2u8; 32]);
        snapshots.save(&store, &sealer, generation).unwrap();
        assert_eq!(snapshots.writes(), 1);
        // Already covered: no second write.
        snapshots.save(&store, &sealer, generation).unwrap();
        assert_eq!(snapshots.writes(), 1);
        let restored = snapshots.load(&sealer, 1_000, 100, 100).unwrap();
        assert_eq!(restored.len(), 1, "bob was logged out");

        // The disk is full when alice logs out: the save fails and the old file goes, so
        // alice cannot come back from it at the next start; no temporary file is left.
        let generation = store.delete(&[1u8; 32]);
        snapshots.fail_next_write.store(true, Ordering::Relaxed);
        assert!(snapshots.save(&store, &sealer, generation).is_err());
        assert!(!snapshots.path().exists());
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, [LOCK_FILE], "no snapshot or temporary file left");
        assert!(snapshots.load(&sealer, 1_000, 100, 100).unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
