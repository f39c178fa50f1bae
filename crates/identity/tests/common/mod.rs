//! Fixtures shared by the identity service's integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use latchkey_core::clock::SystemClock;
use latchkey_core::crypto::{self, FileKeyProvider, KeyProvider};
use latchkey_identity::{AppState, ServiceConfig, aad, app};
use latchkey_store::testing::TempStore;
use latchkey_store::{CredentialRecord, Store};

/// A running identity service (no socket) on a fresh SQLite store, with the credentials
/// `roles` asks for, as `(access key id, role)`; their `Authorization` values in order.
pub struct Service {
    pub router: axum::Router,
    pub state: AppState,
    pub credentials: Vec<String>,
    _store: TempStore,
}

pub async fn service(label: &str, roles: &[(&str, &str)]) -> Service {
    let temp = TempStore::new(label).await;
    let keys: Arc<dyn KeyProvider> = Arc::new(FileKeyProvider::generate().unwrap());
    let mut credentials = Vec::new();
    for (id, role) in roles {
        credentials.push(credential(&temp.store, keys.as_ref(), id, role).await);
    }
    let state = AppState::start(
        ServiceConfig::new("http://latchkey.test"),
        temp.store.clone(),
        keys,
        Arc::new(SystemClock),
    )
    .await
    .unwrap();
    Service {
        router: app(state.clone()),
        state,
        credentials,
        _store: temp,
    }
}

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
