//! The development OpenID provider's ES256 signing key, kept as PKCS#8 in a file of the dev
//! data directory (mode 0600) so ID tokens stay verifiable across restarts.

use std::fmt;
use std::path::Path;

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::persist;

/// Why the signing key could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the signing key file {path} could not be read or written: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("the signing key file {path} does not hold a P-256 PKCS#8 key")]
    Invalid { path: String },
    #[error("the system random generator or the signer failed")]
    Crypto,
}

/// An ES256 key pair with its JWK `kid`. `Debug` shows only the `kid`.
pub struct SigningKey {
    pair: EcdsaKeyPair,
    kid: String,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new key, kept only in memory.
    pub fn generate() -> Result<Self, KeyError> {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| KeyError::Crypto)?;
        Self::from_pkcs8(pkcs8.as_ref()).ok_or(KeyError::Crypto)
    }

    /// The key in `path`, or a new one written there (0600) when the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read(path) {
            Ok(bytes) => Self::from_pkcs8(&bytes).ok_or_else(|| KeyError::Invalid {
                path: path.display().to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let pkcs8 = EcdsaKeyPair::generate_pkcs8(
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    &SystemRandom::new(),
                )
                .map_err(|_| KeyError::Crypto)?;
                persist::write_private(path, pkcs8.as_ref()).map_err(io)?;
                Self::from_pkcs8(pkcs8.as_ref()).ok_or(KeyError::Crypto)
            }
            Err(e) => Err(io(e)),
        }
    }

    fn from_pkcs8(bytes: &[u8]) -> Option<Self> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, bytes).ok()?;
        let kid =
            URL_SAFE_NO_PAD.encode(&digest(&SHA256, pair.public_key().as_ref()).as_ref()[..12]);
        Some(Self { pair, kid })
    }

    /// The key's id in the JWKS and in every token's header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK (`kty` EC, `crv` P-256, `use` sig, `alg` ES256).
    pub fn public_jwk(&self) -> Value {
        // An uncompressed point: 0x04 || x (32 bytes) || y (32 bytes).
        let point = self.pair.public_key().as_ref();
        json!({
            "kty": "EC",
            "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
            "kid": self.kid,
            "use": "sig",
            "alg": "ES256",
        })
    }

    /// A compact JWS (ES256) over `claims`.
    pub fn sign_jwt(&self, claims: &Value) -> Result<String, KeyError> {
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": self.kid});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .map_err(|_| KeyError::Crypto)?;
        Ok(format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn key_file_is_created_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("idp-key.p8");
        let first = SigningKey::load_or_create(&path).unwrap();
        let again = SigningKey::load_or_create(&path).unwrap();
        assert_eq!(first.kid(), again.kid());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, b"not a key").unwrap();
        assert!(matches!(
            SigningKey::load_or_create(&path),
            Err(KeyError::Invalid { .. })
        ));
        assert!(!format!("{first:?}").contains("pair"));
    }
}
