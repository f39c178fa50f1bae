//! Access credentials as the server holds them: opened once, cached per replica for the
//! cache TTL ([`Credentials`]), with their derived SigV4 signing key.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use latchkey_core::crypto::{self, KeyProvider};
use latchkey_core::sigv4;
use latchkey_store::Store;
use secrecy::{ExposeSecret, SecretBox};

use crate::aad;
use crate::cache::TtlCache;
use crate::caller::Role;
use crate::error::{Error, Result};

/// A credential as held in memory: its role and its secret (zeroized on drop).
pub struct LiveCredential {
    pub role: Role,
    pub secret: SecretBox<Vec<u8>>,
    /// The last SigV4 signing key derived from the secret, by credential scope
    /// (`date/region/service`): it changes once a day per region, so the four-HMAC
    /// derivation is skipped on almost every request.
    signing_key: std::sync::Mutex<Option<(String, SecretBox<[u8; 32]>)>>,
}

impl LiveCredential {
    pub fn new(role: Role, secret: Vec<u8>) -> Self {
        Self {
            role,
            secret: SecretBox::new(Box::new(secret)),
            signing_key: std::sync::Mutex::new(None),
        }
    }

    pub(crate) fn signing_key(&self, auth: &sigv4::Authorization) -> [u8; 32] {
        let scope = auth.credential_scope();
        if let Ok(cached) = self.signing_key.lock()
            && let Some((s, key)) = cached.as_ref()
            && *s == scope
        {
            return *key.expose_secret();
        }
        let key = sigv4::signing_key(
            self.secret.expose_secret(),
            &auth.date,
            &auth.region,
            &auth.service,
        );
        if let Ok(mut cached) = self.signing_key.lock() {
            *cached = Some((scope, SecretBox::new(Box::new(key))));
        }
        key
    }
}

impl fmt::Debug for LiveCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveCredential")
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// Credentials by access key id (`None`: unknown or revoked). Revocation takes effect at
/// once on this replica and within the TTL on others.
pub type CredentialCache = TtlCache<String, Option<Arc<LiveCredential>>>;

/// The credential service: store, key material and this replica's cache.
#[derive(Debug)]
pub struct Credentials {
    store: Store,
    keys: Arc<dyn KeyProvider>,
    cache: CredentialCache,
}

impl Credentials {
    pub fn new(store: Store, keys: Arc<dyn KeyProvider>, ttl: Duration, cap: usize) -> Self {
        Self {
            store,
            keys,
            cache: CredentialCache::new(ttl, cap),
        }
    }

    /// The live credential with this access key id (`None`: unknown or revoked).
    pub async fn load(&self, access_key_id: &str) -> Result<Option<Arc<LiveCredential>>> {
        if let Some(hit) = self.cache.get(access_key_id) {
            return Ok(hit);
        }
        let live = match self.store.find_credential(access_key_id).await? {
            Some(rec) if rec.revoked_ms.is_none() => {
                let role = Role::parse(&rec.role).map_err(Error::internal)?;
                let secret = crypto::decrypt(
                    self.keys.as_ref(),
                    aad::credential(access_key_id).as_bytes(),
                    &rec.secret_envelope,
                )
                .await
                .map_err(|e| Error::internal(format!("credential {access_key_id}: {e}")))?;
                Some(Arc::new(LiveCredential::new(role, secret.to_vec())))
            }
            _ => None,
        };
        self.cache.put(access_key_id.to_string(), live.clone());
        Ok(live)
    }
}
