//! The gateway's two keys: the AES-256-GCM key that seals session cookies, and the P-256
//! key that signs `x-amzn-oidc-data` headers.

use std::io::Write as _;
use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

/// File name of the cookie key in the data directory.
pub const COOKIE_KEY_FILE: &str = "gateway-cookie.key";
/// File name of the optional ALB signing key (PEM, PKCS#8 or SEC1) in the data directory.
pub const ALB_KEY_FILE: &str = "gateway-alb-key.pem";
/// Length of a session id, in bytes.
pub const SESSION_ID_LEN: usize = 32;

/// Why a key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {why}")]
    File { path: String, why: String },
    #[error("the random number generator failed")]
    Random,
}

fn file_error(path: &Path, why: impl std::fmt::Display) -> KeyError {
    KeyError::File {
        path: path.display().to_string(),
        why: why.to_string(),
    }
}

/// Fill a fresh buffer from the system RNG.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut out = [0u8; N];
    aws_lc_rs::rand::fill(&mut out).map_err(|_| KeyError::Random)?;
    Ok(out)
}

/// A random URL-safe token of `N` bytes of entropy.
pub fn random_token<const N: usize>() -> Result<String, KeyError> {
    Ok(URL_SAFE_NO_PAD.encode(random_bytes::<N>()?))
}

/// Tests: a fresh path under the system's temporary directory (not created).
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn test_dir(what: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "latchkey-gateway-{what}-{}-{}",
        std::process::id(),
        random_token::<8>().unwrap()
    ))
}

/// Create `<dir>/<name>` holding `contents` (0600), unless it exists: written to a private
/// temporary file, then linked into place, so a replica starting at the same moment sees
/// either no file or a complete one. `Ok(false)`: it existed (another replica's is kept).
pub fn write_once(dir: &Path, name: &str, contents: &[u8]) -> Result<bool, KeyError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.{}.tmp", random_token::<9>()?));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&tmp).and_then(|mut file| {
        file.write_all(contents)?;
        file.sync_all()
    });
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, &path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(file_error(&path, e)),
    }
}

/// The key that signs `x-amzn-oidc-data`: `<dir>/gateway-alb-key.pem` (PKCS#8 or SEC1,
/// P-256), created on first start (0600), so its `kid` stays the same across restarts and
/// upstreams' per-kid key caches stay valid. Replicas sharing the file share the key.
pub fn alb_signer(dir: &Path) -> Result<latchkey_authn::alb::AlbSigner, KeyError> {
    std::fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
    let path = dir.join(ALB_KEY_FILE);
    if !path.exists() {
        let pem = latchkey_authn::alb::AlbSigner::generate_pkcs8_pem()
            .map_err(|e| file_error(&path, e))?;
        write_once(dir, ALB_KEY_FILE, pem.as_bytes())?;
    }
    latchkey_authn::alb::AlbSigner::load(&path).map_err(|e| file_error(&path, e))
}

/// Seals session ids into cookie values and opens them again.
pub struct CookieSealer {
    key: RandomizedNonceKey,
}

impl std::fmt::Debug for CookieSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieSealer(..)")
    }
}

impl CookieSealer {
    /// Load `<dir>/gateway-cookie.key`, creating it (0600, 32 random bytes, base64) on first start.
    pub fn open_or_create(dir: &Path) -> Result<Self, KeyError> {
        std::fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
        let path = dir.join(COOKIE_KEY_FILE);
        let key: Vec<u8> = match std::fs::read_to_string(&path) {
            Ok(text) => STANDARD
                .decode(text.trim())
                .map_err(|_| file_error(&path, "not base64"))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = random_bytes::<32>()?;
                if !write_once(
                    dir,
                    COOKIE_KEY_FILE,
                    format!("{}\n", STANDARD.encode(key)).as_bytes(),
                )? {
                    // Another replica created it first: use theirs.
                    return Self::open_or_create(dir);
                }
                key.to_vec()
            }
            Err(e) => return Err(file_error(&path, e)),
        };
        Self::from_key(&key).map_err(|why| file_error(&path, why))
    }

    /// A sealer over a raw 32-byte key.
    pub fn from_key(key: &[u8]) -> Result<Self, &'static str> {
        if key.len() != 32 {
            return Err("the cookie key must be 32 bytes");
        }
        let key = RandomizedNonceKey::new(&AES_256_GCM, key).map_err(|_| "unusable key")?;
        Ok(Self { key })
    }

    /// base64url(nonce || ciphertext || tag) of `session_id`, bound to `cookie_name`.
    pub fn seal(&self, cookie_name: &str, session_id: &[u8]) -> Option<String> {
        Some(URL_SAFE_NO_PAD.encode(self.seal_bytes(cookie_name, session_id.to_vec())?))
    }

    /// The session id in a cookie value, or `None` when it was not sealed by this key for
    /// this cookie name (tampered, truncated, another key).
    pub fn open(&self, cookie_name: &str, value: &str) -> Option<Vec<u8>> {
        if value.len() > 256 {
            return None;
        }
        let mut raw = URL_SAFE_NO_PAD.decode(value).ok()?;
        let plain_len = self.open_bytes(cookie_name, &mut raw)?.len();
        raw.truncate(plain_len);
        Some(raw)
    }

    /// nonce || ciphertext || tag of `plain` (encrypted in place, so no plaintext copy is
    /// left behind), bound to `purpose`.
    pub fn seal_bytes(&self, purpose: &str, mut plain: Vec<u8>) -> Option<Vec<u8>> {
        use zeroize::Zeroize as _;
        let tag_len = AES_256_GCM.tag_len();
        if plain.capacity() < plain.len() + tag_len {
            // Room for the tag first: growing in place would free a clear copy unwiped.
            let mut roomy = Vec::with_capacity(plain.len() + tag_len);
            roomy.extend_from_slice(&plain);
            plain.zeroize();
            plain = roomy;
        }
        let Ok(nonce) = self
            .key
            .seal_in_place_append_tag(Aad::from(purpose.as_bytes()), &mut plain)
        else {
            plain.zeroize();
            return None;
        };
        let mut out = Vec::with_capacity(NONCE_LEN + plain.len());
        out.extend_from_slice(nonce.as_ref());
        out.extend_from_slice(&plain);
        Some(out)
    }

    /// Opens what [`Self::seal_bytes`] sealed for `purpose`, in place: the plaintext is
    /// the returned slice of `sealed` (moved to its start). `None` when tampered,
    /// truncated, sealed for another purpose or with another key.
    pub fn open_bytes<'a>(&self, purpose: &str, sealed: &'a mut [u8]) -> Option<&'a [u8]> {
        if sealed.len() <= NONCE_LEN {
            return None;
        }
        let nonce = Nonce::try_assume_unique_for_key(&sealed[..NONCE_LEN]).ok()?;
        let plain_len = self
            .key
            .open_in_place(
                nonce,
                Aad::from(purpose.as_bytes()),
                &mut sealed[NONCE_LEN..],
            )
            .ok()?
            .len();
        sealed.copy_within(NONCE_LEN..NONCE_LEN + plain_len, 0);
        Some(&sealed[..plain_len])
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_alb_signing_key_is_created_once_and_keeps_its_kid() {
        let dir = test_dir("alb-key");
        let first = alb_signer(&dir).unwrap();
        let path = dir.join(ALB_KEY_FILE);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = alb_signer(&dir).unwrap();
        assert_eq!(first.kid(), again.kid(), "a restart keeps the kid");
        // A key file an operator put there is used as it is.
        let other = test_dir("alb-key-other");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join(ALB_KEY_FILE), std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(alb_signer(&other).unwrap().kid(), first.kid());
        std::fs::write(other.join(ALB_KEY_FILE), "not a key").unwrap();
        assert!(
            alb_signer(&other).is_err(),
            "a broken key file stops the start"
        );
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&other);
    }

    #[test]
    fn sealed_cookies_open_only_untampered() {
        let sealer = CookieSealer::from_key(&[7u8; 32]).unwrap();
        let value = sealer.seal("latchkey-gw", b"session-id").unwrap();
        assert_eq!(
            sealer.open("latchkey-gw", &value).as_deref(),
            Some(&b"session-id"[..])
        );
        assert!(sealer.open("other-name", &value).is_none());
        let mut bytes = URL_SAFE_NO_PAD.decode(&value).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(
            sealer
                .open("latchkey-gw", &URL_SAFE_NO_PAD.encode(bytes))
                .is_none()
        );
        let other = CookieSealer::from_key(&[8u8; 32]).unwrap();
        assert!(other.open("latchkey-gw", &value).is_none());
        assert!(sealer.open("latchkey-gw", "").is_none());
    }

    #[test]
    fn cookie_key_file_is_private_and_reused() {
        let dir = test_dir("keys");
        let first = CookieSealer::open_or_create(&dir).unwrap();
        let second = CookieSealer::open_or_create(&dir).unwrap();
        let value = first.seal("c", b"id").unwrap();
        assert_eq!(second.open("c", &value).as_deref(), Some(&b"id"[..]));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(COOKIE_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // A key file the gateway did not write is refused, naming the file.
        std::fs::write(dir.join(COOKIE_KEY_FILE), "short\n").unwrap();
        let error = CookieSealer::open_or_create(&dir).unwrap_err().to_string();
        assert!(error.contains(COOKIE_KEY_FILE), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
