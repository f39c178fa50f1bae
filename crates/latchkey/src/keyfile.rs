//! The data directory and the generated key-encryption key file (mode 0600, created once).

use std::io::Write as _;
use std::path::Path;

use anyhow::{Context, anyhow, bail};
use latchkey_core::crypto::FileKeyProvider;

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
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            bail!(
                "the key file {} is readable by other users (mode {:o}); run `chmod 600 {}`",
                path.display(),
                mode & 0o777,
                path.display()
            );
        }
    }
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the key file {}", path.display()))?,
    );
    FileKeyProvider::from_json(&text)
        .map_err(|e| anyhow!("the key file {} is not usable: {e}", path.display()))
}
