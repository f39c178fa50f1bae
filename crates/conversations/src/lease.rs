//! One turn at a time per conversation across processes sharing an S3 store: a lease
//! object per conversation (`locks/{encoded sub}/{sessionId}`), taken and renewed with S3's
//! conditional writes (`If-None-Match: *` to create it, `If-Match: <etag>` to take over an
//! expired one, renew or release it), so two replicas never interleave one conversation.
//!
//! - A lease lasts [`LEASE_TTL`] and is renewed every third of it while the turn runs; a
//!   replica that dies leaves it to expire.
//! - A replica finding the lease held waits (polling) until it is released or expires.
//! - Release writes an expired lease (conditional on the holder's etag): a holder that lost
//!   its lease (it expired and was taken) cannot release the new holder's.
//! - A local directory is one process's: it takes no lease ([`ConversationStore::lease`]
//!   answers `None`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use object_store::path::Path;
use object_store::{ObjectStoreExt as _, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

use crate::{ConversationStore, StoreError, encode_sub};

/// How long a lease lasts without renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(30);
/// How often a waiting replica looks at a held lease.
const POLL: Duration = Duration::from_millis(200);

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeaseBody {
    owner: String,
    expires_ms: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn body(owner: &str, expires_ms: u64) -> PutPayload {
    let lease = LeaseBody {
        owner: owner.to_string(),
        expires_ms,
    };
    PutPayload::from(serde_json::to_vec(&lease).unwrap_or_default())
}

fn update(e_tag: Option<String>, version: Option<String>) -> PutOptions {
    PutOptions::from(PutMode::Update(UpdateVersion { e_tag, version }))
}

/// A held lease; renewed until [`ConversationLease::release`].
#[derive(Debug)]
pub struct ConversationLease {
    store: ConversationStore,
    path: Path,
    owner: String,
    version: Arc<Mutex<UpdateVersion>>,
    renewer: tokio::task::JoinHandle<()>,
}

impl ConversationStore {
    /// Take the lease of (`sub`, `session_id`), waiting while another process holds it,
    /// for at most `wait`. `None` for a local store (one process). `Err(Busy)` when the
    /// lease stayed held for all of `wait`.
    pub async fn lease(
        &self,
        sub: &str,
        session_id: &str,
        wait: Duration,
    ) -> Result<Option<ConversationLease>, StoreError> {
        if !self.shared {
            return Ok(None);
        }
        self.path(sub, session_id)?; // validates both
        let path = Path::from(format!("locks/{}/{session_id}", encode_sub(sub)?));
        let owner = uuid::Uuid::new_v4().to_string();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let expires = now_ms() + LEASE_TTL.as_millis() as u64;
            let created = self
                .backend
                .put_opts(&path, body(&owner, expires), PutMode::Create.into())
                .await;
            let taken = match created {
                Ok(result) => Some(result),
                Err(object_store::Error::AlreadyExists { .. }) => {
                    self.take_expired(&path, &owner).await?
                }
                Err(error) => return Err(error.into()),
            };
            if let Some(result) = taken {
                return Ok(Some(ConversationLease::start(
                    self.clone(),
                    path,
                    owner,
                    UpdateVersion {
                        e_tag: result.e_tag,
                        version: result.version,
                    },
                )));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StoreError::Busy);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Take the lease at `path` if it has expired (conditional on what was read).
    async fn take_expired(
        &self,
        path: &Path,
        owner: &str,
    ) -> Result<Option<object_store::PutResult>, StoreError> {
        let current = match self.backend.get(path).await {
            Ok(current) => current,
            // Released and removed in between: try creating it again.
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        let (e_tag, version) = (current.meta.e_tag.clone(), current.meta.version.clone());
        let bytes = current.bytes().await?;
        // An unreadable lease is treated as expired: it can only be replaced conditionally.
        let expired = serde_json::from_slice::<LeaseBody>(&bytes)
            .map_or(true, |lease| lease.expires_ms <= now_ms());
        if !expired {
            return Ok(None);
        }
        let expires = now_ms() + LEASE_TTL.as_millis() as u64;
        match self
            .backend
            .put_opts(path, body(owner, expires), update(e_tag, version))
            .await
        {
            Ok(result) => Ok(Some(result)),
            // Another process took it first.
            Err(
                object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. },
            ) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }
}

impl ConversationLease {
    fn start(store: ConversationStore, path: Path, owner: String, held: UpdateVersion) -> Self {
        let version = Arc::new(Mutex::new(held));
        let renewer = tokio::spawn({
            let (store, path, owner, version) =
                (store.clone(), path.clone(), owner.clone(), version.clone());
            async move {
                loop {
                    tokio::time::sleep(LEASE_TTL / 3).await;
                    let held = match version.lock() {
                        Ok(v) => v.clone(),
                        Err(_) => return,
                    };
                    let expires = now_ms() + LEASE_TTL.as_millis() as u64;
                    let renewed = store
                        .backend
                        .put_opts(
                            &path,
                            body(&owner, expires),
                            update(held.e_tag, held.version),
                        )
                        .await;
                    match renewed {
                        Ok(result) => {
                            if let Ok(mut v) = version.lock() {
                                *v = UpdateVersion {
                                    e_tag: result.e_tag,
                                    version: result.version,
                                };
                            }
                        }
                        Err(error) => {
                            tracing::error!(%error, "a conversation's lease could not be renewed; another replica may take it");
                            return;
                        }
                    }
                }
            }
        });
        Self {
            store,
            path,
            owner,
            version,
            renewer,
        }
    }

    /// Release: an expired lease, written only if this holder still holds it.
    pub async fn release(self) {
        self.renewer.abort();
        let held = match self.version.lock() {
            Ok(v) => v.clone(),
            Err(_) => return,
        };
        let released = self
            .store
            .backend
            .put_opts(
                &self.path,
                body(&self.owner, 0),
                update(held.e_tag, held.version),
            )
            .await;
        if let Err(error) = released {
            tracing::warn!(%error, "a conversation's lease could not be released; it expires by itself");
        }
    }
}

impl Drop for ConversationLease {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}
