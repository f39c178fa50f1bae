//! Test support (feature `testing`, for the tests of crates built on the store): a SQLite
//! store in a fresh temporary directory, removed when dropped.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::Store;

/// A store on a SQLite file in its own temporary directory.
#[derive(Debug)]
pub struct TempStore {
    /// The store (cheap to clone).
    pub store: Store,
    dir: PathBuf,
}

impl TempStore {
    /// A new, migrated store; `label` names the directory (for a reader of `/tmp`).
    ///
    /// # Panics
    /// When the directory or the database cannot be created: it is test support.
    #[allow(clippy::unwrap_used)]
    pub async fn new(label: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "latchkey-{label}-{}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::connect(&format!("sqlite://{}?mode=rwc", dir.join("db").display()))
            .await
            .unwrap();
        Self { store, dir }
    }
}

impl Drop for TempStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
