//! The development providers' state files: JSON, written whole to a temporary file (0600)
//! and renamed over the old one, so a crash leaves the old state or the new one, never half.
//! A file that is present but does not parse is an error, never silently replaced.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("the state file {path} could not be read or written: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("the state file {path} is not valid (line {line}); move it away to start afresh")]
    Invalid { path: String, line: usize },
}

/// Write `bytes` to `path` atomically, readable by the owner only.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)
}

/// The value kept in `path`, or `T::default()` when there is no file yet.
pub fn load<T: DeserializeOwned + Default>(path: &Path) -> Result<T, PersistError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| PersistError::Invalid {
            path: path.display().to_string(),
            line: e.line(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(source) => Err(PersistError::Io {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Keep `value` in `path`.
pub fn save<T: Serialize>(path: &Path, value: &T) -> Result<(), PersistError> {
    let bytes = serde_json::to_vec(value).map_err(|e| PersistError::Io {
        path: path.display().to_string(),
        source: std::io::Error::other(e),
    })?;
    write_private(path, &bytes).map_err(|source| PersistError::Io {
        path: path.display().to_string(),
        source,
    })
}
