//! The data directory and the generated key-encryption key file (mode 0600, created once);
//! a key provider that follows the file when `admin vault rotate-key` changes it; atomic
//! rewrites of the file for rotation.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, anyhow, bail};
use latchkey_core::crypto::{BoxFuture, CryptoError, FileKeyProvider, KeyProvider};
use zeroize::Zeroizing;

pub fn ensure_private_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))
}

/// Load the key file, or generate it (atomically, never overwriting) on first start.
pub fn load_or_create(path: &Path) -> anyhow::Result<FileKeyProvider> {
    if !path.exists() {
        if let Some(parent) = path.parent() {
            ensure_private_dir(parent)?;
        }
        let provider = FileKeyProvider::generate()?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(path) {
            Ok(mut f) => {
                f.write_all(provider.to_json().as_bytes())?;
                f.sync_all()?;
                tracing::info!(path = %path.display(), "generated a new key-encryption key file");
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot create the key file {}", path.display()));
            }
        }
    }
    load(path)
}

/// Load an existing key file, refusing one that other users can read.
pub fn load(path: &Path) -> anyhow::Result<FileKeyProvider> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .with_context(|| format!("cannot read the key file {}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            bail!(
                "the key file {} is readable by other users (mode {:o}); run `chmod 600 {}`",
                path.display(),
                mode & 0o777,
                path.display()
            );
        }
    }
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the key file {}", path.display()))?,
    );
    FileKeyProvider::from_json(&text)
        .map_err(|e| anyhow!("the key file {} is not usable: {e}", path.display()))
}

/// Replace the key file atomically: a new file (0600) in the same directory, written and
/// synced, then renamed over the old one. The old file's mode and owner are kept, so a
/// server running as another user still reads it; if the owner cannot be kept, the key
/// file is left unchanged and an error returned.
pub fn write_atomic(path: &Path, keys: &FileKeyProvider) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("the key file path {} has no file name", path.display()))?
        .to_string_lossy()
        .into_owned();
    let mut suffix = [0u8; 6];
    aws_lc_rs::rand::fill(&mut suffix).map_err(|_| anyhow!("random number generator failed"))?;
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        suffix
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    ));
    let result = write_new(&tmp, path, keys).and_then(|()| {
        std::fs::rename(&tmp, path).with_context(|| {
            format!(
                "cannot replace the key file {} with {}",
                path.display(),
                tmp.display()
            )
        })
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return result;
    }
    // Make the rename itself durable.
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn write_new(tmp: &Path, original: &Path, keys: &FileKeyProvider) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options
        .open(tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(original) {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let mine = f.metadata()?;
        if (mine.uid(), mine.gid()) != (meta.uid(), meta.gid()) {
            std::os::unix::fs::fchown(&f, Some(meta.uid()), Some(meta.gid())).with_context(
                || {
                    format!(
                        "cannot give the new key file the owner of {} (uid {}, gid {}); run this command as that user",
                        original.display(),
                        meta.uid(),
                        meta.gid()
                    )
                },
            )?;
        }
        // Never wider than 0600, whatever the old file had.
        let mode = meta.permissions().mode() & 0o600;
        f.set_permissions(std::fs::Permissions::from_mode(mode | 0o400))?;
    }
    #[cfg(not(unix))]
    let _ = original;
    f.write_all(keys.to_json().as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// Held while `admin vault rotate-key` changes the key file: one rotation at a time. The
/// lock is an advisory lock on `<key file>.lock`, released when the process ends.
#[derive(Debug)]
pub struct RotationLock {
    _file: std::fs::File,
}

impl RotationLock {
    pub fn acquire(key_file: &Path) -> anyhow::Result<Self> {
        let mut lock_path = key_file.as_os_str().to_owned();
        lock_path.push(".lock");
        let lock_path = PathBuf::from(lock_path);
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options
            .open(&lock_path)
            .with_context(|| format!("cannot open the lock file {}", lock_path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => bail!(
                "another key rotation is running (it holds {})",
                lock_path.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("cannot lock {}", lock_path.display()))
            }
        }
    }
}

/// What identifies one version of the key file on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    modified: Option<SystemTime>,
    len: u64,
    #[cfg(unix)]
    inode: (u64, u64),
}

fn fingerprint(path: &Path) -> std::io::Result<Fingerprint> {
    let meta = std::fs::metadata(path)?;
    Ok(Fingerprint {
        modified: meta.modified().ok(),
        len: meta.len(),
        #[cfg(unix)]
        inode: {
            use std::os::unix::fs::MetadataExt;
            (meta.dev(), meta.ino())
        },
    })
}

/// How often a server looks at the key file's modification time.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// A forced re-read (an envelope under an unknown key) of an unchanged file happens at most
/// this often.
const FORCED_REREAD_MIN: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct ReloadState {
    last_check: Instant,
    last_read: Instant,
    seen: Option<Fingerprint>,
}

/// The key file, followed while the server runs (`admin vault rotate-key`):
/// - at most every [`RELOAD_CHECK_INTERVAL`], when it is about to seal something, it looks
///   at the file's modification time and re-reads a changed file, so new envelopes use the
///   new active key;
/// - an envelope under a key id it does not know makes it re-read the file at once and try
///   again (another process rotated and already wrote with the new key).
///
/// A re-read applies the same checks as at start (mode 0600, valid JSON); a file that fails
/// them is logged and the keys in memory stay in use. Keys removed from the file stay in
/// memory for opening until the process restarts, so envelopes read or cached just before
/// a re-wrap still open.
pub struct ReloadingKeyProvider {
    path: PathBuf,
    interval: Duration,
    current: RwLock<Arc<FileKeyProvider>>,
    state: Mutex<ReloadState>,
}

impl std::fmt::Debug for ReloadingKeyProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingKeyProvider")
            .field("path", &self.path)
            .field("interval", &self.interval)
            .field("keys", &*self.snapshot())
            .finish()
    }
}

impl ReloadingKeyProvider {
    /// Load (or create, on first start) the key file and follow it.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        Self::with_interval(path, RELOAD_CHECK_INTERVAL)
    }

    pub fn with_interval(path: &Path, interval: Duration) -> anyhow::Result<Self> {
        // The fingerprint is taken before reading: a change racing the read is seen later.
        let seen = fingerprint(path).ok();
        let keys = load_or_create(path)?;
        let seen = seen.or_else(|| fingerprint(path).ok());
        let now = Instant::now();
        Ok(Self {
            path: path.to_path_buf(),
            interval,
            current: RwLock::new(Arc::new(keys)),
            state: Mutex::new(ReloadState {
                last_check: now,
                last_read: now,
                seen,
            }),
        })
    }

    fn snapshot(&self) -> Arc<FileKeyProvider> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The periodic check: cheap (one `stat` every `interval`), never blocks on another
    /// thread's check.
    fn maybe_reload(&self) {
        let Ok(mut state) = self.state.try_lock() else {
            return;
        };
        if state.last_check.elapsed() < self.interval {
            return;
        }
        state.last_check = Instant::now();
        match fingerprint(&self.path) {
            Ok(fp) if state.seen.as_ref() != Some(&fp) => {
                self.reread(&mut state, fp, "the key file changed");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot check the key file; keeping the keys in memory");
            }
        }
    }

    /// Re-read at once (an envelope names a key we do not have). An unchanged file is
    /// re-read at most every [`FORCED_REREAD_MIN`].
    fn reload_now(&self) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.last_check = Instant::now();
        match fingerprint(&self.path) {
            Ok(fp) => {
                if state.seen.as_ref() != Some(&fp)
                    || state.last_read.elapsed() >= FORCED_REREAD_MIN
                {
                    self.reread(&mut state, fp, "an envelope names a key not in memory");
                }
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot check the key file; keeping the keys in memory");
            }
        }
    }

    fn reread(&self, state: &mut ReloadState, fp: Fingerprint, reason: &str) {
        state.last_read = Instant::now();
        match load(&self.path) {
            Ok(mut fresh) => {
                state.seen = Some(fp);
                let previous = self.snapshot();
                let before = previous.active_key_id();
                if !previous.key_ids().iter().any(|id| fresh.has_key(id)) {
                    // A rotation keeps the active key in the file until every value is
                    // re-wrapped; a file sharing no key with memory is usually another
                    // installation's.
                    tracing::warn!(path = %self.path.display(), reason, keys_in_memory = ?previous.key_ids(), keys_in_file = ?fresh.key_ids(), "the key file now holds none of the keys in memory: if it was replaced by mistake, restore it (values sealed from now on use its active key)");
                }
                fresh.keep_keys_from(&previous);
                let after = fresh.active_key_id();
                let file_ids = fresh.key_ids();
                *self
                    .current
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(fresh);
                if before != after {
                    tracing::info!(path = %self.path.display(), reason, previous_key = %before, active_key = %after, "reloaded the key file: new active key");
                } else {
                    tracing::debug!(path = %self.path.display(), reason, keys = ?file_ids, "reloaded the key file");
                }
            }
            Err(e) => {
                // Remember the fingerprint: a bad file is reported once, not every check;
                // the next change is tried again.
                state.seen = Some(fp);
                tracing::error!(path = %self.path.display(), reason, error = %format!("{e:#}"), "cannot reload the key file; keeping the keys in memory");
            }
        }
    }
}

impl KeyProvider for ReloadingKeyProvider {
    fn active_key_id(&self) -> String {
        self.maybe_reload();
        self.snapshot().active_key_id()
    }

    fn wrap_data_key<'a>(
        &'a self,
        key_id: &'a str,
        dek: &'a [u8],
        aad: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<u8>, CryptoError>> {
        Box::pin(async move {
            let keys = self.snapshot();
            keys.wrap_data_key(key_id, dek, aad).await
        })
    }

    fn unwrap_data_key<'a>(
        &'a self,
        key_id: &'a str,
        wrapped: &'a [u8],
        aad: &'a [u8],
    ) -> BoxFuture<'a, Result<Zeroizing<Vec<u8>>, CryptoError>> {
        Box::pin(async move {
            // A replaced key file is noticed when reading, as when writing.
            self.maybe_reload();
            let keys = self.snapshot();
            match keys.unwrap_data_key(key_id, wrapped, aad).await {
                Err(CryptoError::UnknownKey(_)) => {
                    drop(keys);
                    self.reload_now();
                    let keys = self.snapshot();
                    let result = keys.unwrap_data_key(key_id, wrapped, aad).await;
                    if matches!(result, Err(CryptoError::UnknownKey(_))) {
                        tracing::error!(
                            path = %self.path.display(),
                            key_id,
                            keys_in_file = ?keys.key_ids(),
                            "a sealed value in the database names a key-encryption key that the key file does not hold: the key file was replaced or a key removed from it; restore the key file that holds this key"
                        );
                    }
                    result
                }
                other => other,
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use latchkey_core::crypto;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "latchkey-keyfile-{name}-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        ensure_private_dir(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn follows_rotation_and_keeps_retired_keys_in_memory() {
        let dir = temp_dir("follow");
        let path = dir.join("kek.json");
        let server = ReloadingKeyProvider::with_interval(&path, Duration::ZERO).unwrap();
        let old = server.active_key_id();
        let before = crypto::encrypt(&server, b"r", b"v").await.unwrap();

        // Another process rotates and retires the old key.
        let mut cli = load(&path).unwrap();
        let new = cli.rotate().unwrap();
        cli.retire(&old).unwrap();
        write_atomic(&path, &cli).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert_eq!(server.active_key_id(), new);
        let after = crypto::encrypt(&server, b"r", b"v").await.unwrap();
        assert_eq!(crypto::envelope_key_id(&after).unwrap(), new);
        // Retired from the file, still in memory for what was read before.
        assert_eq!(
            &*crypto::decrypt(&server, b"r", &before).await.unwrap(),
            b"v"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn unknown_key_id_reloads_at_once() {
        let dir = temp_dir("unknown");
        let path = dir.join("kek.json");
        // A long interval: only the unknown-key path can pick the change up.
        let server = ReloadingKeyProvider::with_interval(&path, Duration::from_secs(3600)).unwrap();
        let old = server.active_key_id();
        let mut cli = load(&path).unwrap();
        let new = cli.rotate().unwrap();
        write_atomic(&path, &cli).unwrap();
        let env = crypto::encrypt(&cli, b"r", b"v").await.unwrap();
        assert_eq!(server.active_key_id(), old, "not checked yet");
        assert_eq!(&*crypto::decrypt(&server, b"r", &env).await.unwrap(), b"v");
        assert_eq!(
            server.active_key_id(),
            new,
            "the reload also moved the active key"
        );
        // A key nobody has is still unknown.
        let stranger = FileKeyProvider::generate().unwrap();
        let env = crypto::encrypt(&stranger, b"r", b"v").await.unwrap();
        assert!(matches!(
            crypto::decrypt(&server, b"r", &env).await,
            Err(CryptoError::UnknownKey(_))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_readable_file_is_not_reloaded() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("mode");
        let path = dir.join("kek.json");
        let server = ReloadingKeyProvider::with_interval(&path, Duration::ZERO).unwrap();
        let old = server.active_key_id();
        let mut cli = load(&path).unwrap();
        cli.rotate().unwrap();
        write_atomic(&path, &cli).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            server.active_key_id(),
            old,
            "a world-readable file is refused"
        );
        assert!(load(&path).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn one_rotation_at_a_time() {
        let dir = temp_dir("lock");
        let path = dir.join("kek.json");
        let first = RotationLock::acquire(&path).unwrap();
        assert!(RotationLock::acquire(&path).is_err());
        drop(first);
        RotationLock::acquire(&path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
