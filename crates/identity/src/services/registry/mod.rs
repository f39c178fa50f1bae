//! The control plane's registry: workload identities, API-key and OAuth2 credential
//! providers, the token vault's settings and tags. The handlers validate a request in
//! AgentCore's terms and render the records this service returns; the service stores,
//! seals, keeps the per-replica caches true and records every change.
//!
//! Every change goes through [`Registry::change`]: store errors in the client's words,
//! the caches that know the resource forget it, and one audit event.

mod api_key_providers;
mod oauth2_providers;
mod tags;
mod token_vault;
mod workload_identities;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use latchkey_core::ApiError;
use latchkey_core::arn::{ArnContext, ResourceKind};
use latchkey_core::clock::Clock;
use latchkey_core::crypto::KeyProvider;
use latchkey_store::{Store, StoreError};

use crate::audit::Auditor;
use crate::cache::TtlCache;
use crate::caller::Caller;
use crate::error::Result;
use crate::services::providers::Providers;
use crate::services::workloads::Workloads;

pub use api_key_providers::ApiKeyProviderInput;
pub use oauth2_providers::Oauth2ProviderInput;
pub use tags::TaggedResource;
pub use token_vault::{DEFAULT_VAULT, KmsInput};

/// API-key provider envelopes by provider name (`None`: no such provider).
type ApiKeyCache = TtlCache<String, Option<Arc<Vec<u8>>>>;

/// The registry service (see the module documentation).
#[derive(Debug)]
pub struct Registry {
    store: Store,
    keys: Arc<dyn KeyProvider>,
    clock: Arc<dyn Clock>,
    audit: Auditor,
    arn: ArnContext,
    providers: Providers,
    /// For the workload facts it caches.
    workloads: Arc<Workloads>,
    api_keys: ApiKeyCache,
    /// The KMS key the key-encryption keys are wrapped with (`key_provider = "aws-kms"`).
    kms_root: Option<Arc<dyn latchkey_core::crypto::KmsRoot>>,
}

/// What a store change is about, for its errors and the caches.
#[derive(Debug, Clone, Copy)]
struct Target<'a> {
    pub kind: ResourceKind,
    pub arn: &'a str,
    /// The resource in the client's words (`workload identity`, `credential provider`…).
    pub label: &'static str,
    pub name: &'a str,
}

/// One page of a list: the rows and the `nextToken` of the next page.
#[derive(Debug)]
pub struct Page<T> {
    pub rows: Vec<T>,
    pub next_token: Option<String>,
}

impl<T> Page<T> {
    /// Given `limit + 1` rows fetched, the page and the next token (an opaque cursor: the
    /// last name, base64url).
    fn of(mut rows: Vec<T>, limit: i64, name: impl Fn(&T) -> &str) -> Self {
        let limit = limit.max(0) as usize;
        if rows.len() > limit {
            rows.truncate(limit);
            let next_token = rows.last().map(|r| B64.encode(name(r)));
            Self { rows, next_token }
        } else {
            Self {
                rows,
                next_token: None,
            }
        }
    }
}

/// The name after which a page starts, from a `nextToken` this service issued.
pub fn page_cursor(next_token: &str) -> Option<String> {
    B64.decode(next_token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
}

/// Store errors about one named resource, in the client's words.
pub(crate) fn about<'a>(
    label: &'static str,
    name: &'a str,
) -> impl FnOnce(StoreError) -> ApiError + 'a {
    move |e| match e {
        StoreError::Conflict => ApiError::Conflict(format!("{label} {name:?} already exists")),
        StoreError::NotFound => ApiError::NotFound(format!("{label} {name:?} not found")),
        e => e.into(),
    }
}

fn tag_pairs(tags: Option<BTreeMap<String, String>>) -> Vec<(String, String)> {
    tags.unwrap_or_default().into_iter().collect()
}

impl Registry {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        keys: Arc<dyn KeyProvider>,
        clock: Arc<dyn Clock>,
        audit: Auditor,
        arn: ArnContext,
        providers: Providers,
        workloads: Arc<Workloads>,
        api_key_cache: (std::time::Duration, usize),
    ) -> Self {
        Self {
            store,
            keys,
            clock,
            audit,
            arn,
            providers,
            workloads,
            api_keys: TtlCache::new(api_key_cache.0, api_key_cache.1),
            kms_root: None,
        }
    }

    /// Drive `root` from the token vault operations (`SetTokenVaultCMK`…).
    pub fn with_kms_root(mut self, root: Option<Arc<dyn latchkey_core::crypto::KmsRoot>>) -> Self {
        self.kms_root = root;
        self
    }

    /// Forget what this replica caches about a resource.
    fn forget(&self, kind: ResourceKind, name: &str) {
        match kind {
            ResourceKind::WorkloadIdentity => self.workloads.invalidate(name),
            ResourceKind::ApiKeyProvider => self.api_keys.invalidate(name),
            ResourceKind::Oauth2Provider | ResourceKind::TokenVault => {}
        }
    }

    /// Run one store change of `target`, then forget the cached resource and record
    /// `action` by `caller`.
    async fn change<T>(
        &self,
        caller: &Caller,
        action: &str,
        target: Target<'_>,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T> {
        let out = op.await.map_err(about(target.label, target.name))?;
        self.forget(target.kind, target.name);
        self.audit
            .change(caller, action, target.arn.to_string())
            .await;
        Ok(out)
    }
}
