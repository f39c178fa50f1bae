//! Fixtures shared by the identity service's integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use latchkey_core::crypto::{self, KeyProvider};
use latchkey_identity::aad;
use latchkey_store::{CredentialRecord, Store};

/// Store a credential with `role`; its `Authorization` header value (bearer).
pub async fn credential(store: &Store, keys: &dyn KeyProvider, id: &str, role: &str) -> String {
    let secret = format!("secret-of-{id}");
    let envelope = crypto::encrypt(keys, aad::credential(id).as_bytes(), secret.as_bytes())
        .await
        .unwrap();
    store
        .create_credential(&CredentialRecord {
            access_key_id: id.into(),
            role: role.into(),
            secret_envelope: envelope,
            description: None,
            created_ms: 0,
            revoked_ms: None,
        })
        .await
        .unwrap();
    format!("Bearer {id}:{secret}")
}
