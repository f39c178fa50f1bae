//! TLS termination whose certificate follows the files on disk.
//!
//! [`ReloadingTls`] loads a PEM certificate chain and a PEM private key (PKCS#8,
//! PKCS#1/RSA or SEC1/EC) into a rustls 0.23 server configuration using the
//! aws-lc-rs provider, with ALPN `http/1.1`. The configuration's certificate
//! resolver re-reads both files at most once per [`CHECK_INTERVAL`], on a handshake,
//! and swaps the served key when their contents changed; renewing a certificate
//! (certbot, cert-manager, a cron job) needs no restart. A replacement that does not
//! parse, or whose key does not match its certificate (say the certificate was
//! written before the key), keeps the previous key and logs a warning; the pair is
//! tried again as soon as either file changes.
//!
//! Errors name the file and the problem, never key material.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use aws_lc_rs::digest;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;
use zeroize::Zeroizing;

/// How often, at most, a handshake looks at the files again.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Which of the two files an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFile {
    /// The PEM certificate chain.
    Certificate,
    /// The PEM private key.
    PrivateKey,
}

impl fmt::Display for TlsFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Certificate => "certificate",
            Self::PrivateKey => "private key",
        })
    }
}

/// Why the certificate or key could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The file could not be read.
    #[error("cannot read {file} file {}: {source}", path.display())]
    Read {
        /// Which file.
        file: TlsFile,
        /// Its path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The file is not usable PEM of the expected kind.
    #[error("{file} file {}: {problem}", path.display())]
    Invalid {
        /// Which file.
        file: TlsFile,
        /// Its path.
        path: PathBuf,
        /// What is wrong (never file contents).
        problem: &'static str,
    },
    /// rustls rejected the pair (unsupported key type, key does not match the
    /// certificate, no usable protocol versions).
    #[error("certificate {} with key {}: {message}", cert.display(), key.display())]
    Rejected {
        /// The certificate path.
        cert: PathBuf,
        /// The key path.
        key: PathBuf,
        /// rustls's description of the problem.
        message: String,
    },
}

/// A TLS server configuration whose certificate is reloaded when its files change.
#[derive(Debug, Clone)]
pub struct ReloadingTls {
    resolver: Arc<ReloadingResolver>,
    config: Arc<ServerConfig>,
}

impl ReloadingTls {
    /// Loads the certificate chain and key; fails if either is unusable.
    pub fn new(cert_path: impl AsRef<Path>, key_path: impl AsRef<Path>) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let cert_path = cert_path.as_ref().to_path_buf();
        let key_path = key_path.as_ref().to_path_buf();
        let files = read_files(&cert_path, &key_path)?;
        let key = load(&cert_path, &key_path, &files, &provider)?;
        let resolver = Arc::new(ReloadingResolver {
            cert_path: cert_path.clone(),
            key_path: key_path.clone(),
            provider: provider.clone(),
            current: RwLock::new(Arc::new(key)),
            state: Mutex::new(CheckState {
                last_check: Instant::now(),
                fingerprint: files.fingerprint(),
            }),
        });
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| TlsError::Rejected {
                cert: cert_path,
                key: key_path,
                message: error.to_string(),
            })?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            resolver,
            config: Arc::new(config),
        })
    }

    /// An acceptor that always serves the newest valid certificate.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.clone())
    }

    /// The underlying rustls configuration.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.config.clone()
    }

    /// Re-reads the files now (for example on `SIGHUP`). `Ok(true)` when a new
    /// certificate is being served, `Ok(false)` when the files did not change; on
    /// `Err` the previous certificate stays.
    pub fn reload(&self) -> Result<bool, TlsError> {
        self.resolver.reload()
    }

    /// The DER end-entity certificate currently served.
    pub fn current_certificate(&self) -> CertificateDer<'static> {
        let key = self.resolver.current();
        key.cert
            .first()
            .cloned()
            .unwrap_or_else(|| CertificateDer::from(Vec::new()))
    }
}

struct ReloadingResolver {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    state: Mutex<CheckState>,
}

struct CheckState {
    last_check: Instant,
    /// SHA-256 over both files as last tried, so the key bytes are not kept twice
    /// and a bad pair is reported once rather than every second.
    fingerprint: digest::Digest,
}

impl fmt::Debug for ReloadingResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingResolver")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl ReloadingResolver {
    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn maybe_reload(&self) {
        // Another handshake is already checking: serve what we have.
        let Ok(mut state) = self.state.try_lock() else {
            return;
        };
        let now = Instant::now();
        if now.saturating_duration_since(state.last_check) < CHECK_INTERVAL {
            return;
        }
        state.last_check = now;
        if let Err(error) = self.reload_locked(&mut state) {
            tracing::warn!(%error, "TLS certificate reload failed; still serving the previous certificate");
        }
    }

    fn reload(&self) -> Result<bool, TlsError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.last_check = Instant::now();
        self.reload_locked(&mut state)
    }

    fn reload_locked(&self, state: &mut CheckState) -> Result<bool, TlsError> {
        let files = read_files(&self.cert_path, &self.key_path)?;
        let fingerprint = files.fingerprint();
        if fingerprint.as_ref() == state.fingerprint.as_ref() {
            return Ok(false);
        }
        state.fingerprint = fingerprint;
        let key = load(&self.cert_path, &self.key_path, &files, &self.provider)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
        tracing::info!(cert = %self.cert_path.display(), "TLS certificate reloaded");
        Ok(true)
    }
}

impl ResolvesServerCert for ReloadingResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.maybe_reload();
        Some(self.current())
    }
}

struct Files {
    cert: Vec<u8>,
    /// Key bytes, wiped when dropped.
    key: Zeroizing<Vec<u8>>,
}

impl Files {
    fn fingerprint(&self) -> digest::Digest {
        let mut context = digest::Context::new(&digest::SHA256);
        context.update(&(self.cert.len() as u64).to_be_bytes());
        context.update(&self.cert);
        context.update(&self.key);
        context.finish()
    }
}

fn read_files(cert_path: &Path, key_path: &Path) -> Result<Files, TlsError> {
    let cert = std::fs::read(cert_path).map_err(|source| TlsError::Read {
        file: TlsFile::Certificate,
        path: cert_path.to_path_buf(),
        source,
    })?;
    let key = std::fs::read(key_path).map_err(|source| TlsError::Read {
        file: TlsFile::PrivateKey,
        path: key_path.to_path_buf(),
        source,
    })?;
    Ok(Files {
        cert,
        key: Zeroizing::new(key),
    })
}

fn load(
    cert_path: &Path,
    key_path: &Path,
    files: &Files,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let invalid = |file: TlsFile, path: &Path, problem: &'static str| TlsError::Invalid {
        file,
        path: path.to_path_buf(),
        problem,
    };
    let chain = CertificateDer::pem_slice_iter(&files.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(TlsFile::Certificate, cert_path, pem_problem(&e)))?;
    if chain.is_empty() {
        return Err(invalid(
            TlsFile::Certificate,
            cert_path,
            "no CERTIFICATE section found",
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&files.key).map_err(|e| match e {
        pem::Error::NoItemsFound => invalid(
            TlsFile::PrivateKey,
            key_path,
            "no PKCS#8, RSA or EC private key section found",
        ),
        other => invalid(TlsFile::PrivateKey, key_path, pem_problem(&other)),
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|error| TlsError::Rejected {
        cert: cert_path.to_path_buf(),
        key: key_path.to_path_buf(),
        message: error.to_string(),
    })
}

/// A description of a PEM error that never quotes the file.
fn pem_problem(error: &pem::Error) -> &'static str {
    match error {
        pem::Error::MissingSectionEnd { .. } => "a PEM section has no END line",
        pem::Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed",
        pem::Error::Base64Decode(_) => "a PEM section is not valid base64",
        pem::Error::NoItemsFound => "no PEM section found",
        pem::Error::SectionTooLarge => "a PEM section is too large",
        _ => "the PEM data is malformed",
    }
}
