//! The server's state: configuration, the services (built with their dependencies here,
//! once), the per-replica caches of the HTTP layer, and start-up (signing keys loaded or
//! created, audit chain checked, background tasks spawned). Handlers take it; services
//! never do.

use std::sync::Arc;
use std::time::Duration;

use latchkey_core::arn::ArnContext;
use latchkey_core::clock::Clock;
use latchkey_core::crypto::{self, KeyProvider};
use latchkey_core::wat::{WatAuthority, WatKey, WatPublicKey};
use latchkey_store::{SigningKeyRecord, Store, StoreError};

use crate::aad;
use crate::audit::{AuditSink, Auditor};
use crate::cache::TtlCache;
use crate::credentials::Credentials;
use crate::inbound::{InboundIssuerConfig, InboundVerifier};
use crate::outbound::{OutboundClient, OutboundPolicy};
use crate::services::providers::Providers;
use crate::services::registry::Registry;
use crate::services::sessions::{SessionSettings, Sessions};
use crate::services::vault::{Vault, VaultSettings};
use crate::services::workloads::{WorkloadSettings, Workloads};

/// Settings of the identity service (the binary builds this from its config).
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Public base URL (no trailing slash): WAT issuer, callback and authorization URLs.
    pub public_url: String,
    pub arn: ArnContext,
    pub wat_ttl_seconds: i64,
    pub inbound_issuers: Vec<InboundIssuerConfig>,
    pub outbound: OutboundPolicy,
    /// How long credentials and workload facts are cached per replica.
    pub cache_ttl: Duration,
    /// How long an authorization session lives (seconds).
    pub session_ttl_secs: i64,
    /// How long a replica holds a grant's refresh lease (ms); longer than the outbound
    /// timeout, so a live refresh is never taken over.
    pub refresh_lease_ms: i64,
    /// Token lifetime assumed when neither the provider's response nor its config says.
    pub default_token_lifetime_secs: i64,
    /// The KMS key that wraps the key-encryption keys (`key_provider = "aws-kms"`), which
    /// the token vault operations drive; `None` with the key file.
    pub kms_root: Option<Arc<dyn latchkey_core::crypto::KmsRoot>>,
}

impl ServiceConfig {
    pub fn new(public_url: impl Into<String>) -> Self {
        Self {
            public_url: public_url.into().trim_end_matches('/').to_string(),
            arn: ArnContext::default(),
            wat_ttl_seconds: 900,
            inbound_issuers: vec![],
            outbound: OutboundPolicy::default(),
            cache_ttl: Duration::from_secs(5),
            session_ttl_secs: 600,
            refresh_lease_ms: 30_000,
            default_token_lifetime_secs: crate::services::vault::FALLBACK_LIFETIME_SECS,
            kms_root: None,
        }
    }
}

/// Entries per cache before it starts over.
const CACHE_CAP: usize = 10_000;

pub use crate::services::workloads::{ALLOW_USER_ID_TAG, WorkloadFacts};

/// Everything a handler needs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Inner>);

#[derive(Debug)]
pub struct Inner {
    pub config: ServiceConfig,
    pub store: Store,
    pub keys: Arc<dyn KeyProvider>,
    pub clock: Arc<dyn Clock>,
    pub wat: Arc<WatAuthority>,
    pub credentials: Credentials,
    /// Workload facts, WAT issuance and verification.
    pub workloads: Arc<Workloads>,
    /// The control plane's resources (and the API keys the data plane opens).
    pub registry: Registry,
    /// The last database health check, for `/ping`.
    pub health: TtlCache<(), bool>,
    /// The audit sink (flushed at shutdown) and the auditor services record through.
    pub audit: AuditSink,
    pub auditor: Auditor,
    pub providers: Providers,
    pub vault: Arc<Vault>,
    pub sessions: Sessions,
    pub inbound: InboundVerifier,
    pub outbound: OutboundClient,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Build the state: load (or create, once across replicas) the WAT signing key.
    pub async fn start(
        config: ServiceConfig,
        store: Store,
        keys: Arc<dyn KeyProvider>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let wat =
            load_wat_authority(&config.public_url, &store, keys.as_ref(), clock.as_ref()).await?;
        let outbound = OutboundClient::new(config.outbound.clone())?;
        let inbound = InboundVerifier::new(
            config.inbound_issuers.clone(),
            outbound.clone(),
            clock.clone(),
        );
        let chain = Arc::new(latchkey_store::AuditChain::new(keys.clone()));
        crate::audit::check_at_start(&store, &chain).await?;
        let audit = AuditSink::start(store.clone(), chain);
        let auditor = Auditor::new(audit.clone(), clock.clone());
        spawn_session_purge(store.clone(), clock.clone());
        let providers = Providers::new(
            store.clone(),
            keys.clone(),
            outbound.clone(),
            config.public_url.clone(),
        );
        let vault = Arc::new(Vault::new(
            store.clone(),
            keys.clone(),
            clock.clone(),
            providers.clone(),
            VaultSettings {
                cache_ttl: config.cache_ttl,
                refresh_lease_ms: config.refresh_lease_ms,
                default_token_lifetime_secs: config.default_token_lifetime_secs,
            },
        ));
        let sessions = Sessions::new(
            store.clone(),
            keys.clone(),
            clock.clone(),
            providers.clone(),
            vault.clone(),
            auditor.clone(),
            inbound.clone(),
            SessionSettings {
                public_url: config.public_url.clone(),
                ttl_secs: config.session_ttl_secs,
            },
        );
        let wat = Arc::new(wat);
        let workloads = Arc::new(Workloads::new(
            store.clone(),
            clock.clone(),
            wat.clone(),
            inbound.clone(),
            auditor.clone(),
            WorkloadSettings {
                arn: config.arn.clone(),
                wat_ttl_seconds: config.wat_ttl_seconds,
                cache_ttl: config.cache_ttl,
                cache_cap: CACHE_CAP,
            },
        ));
        let registry = Registry::new(
            store.clone(),
            keys.clone(),
            clock.clone(),
            auditor.clone(),
            config.arn.clone(),
            providers.clone(),
            workloads.clone(),
            (config.cache_ttl, CACHE_CAP),
        )
        .with_kms_root(config.kms_root.clone());
        Ok(Self(Arc::new(Inner {
            registry,
            workloads,
            credentials: Credentials::new(store.clone(), keys.clone(), config.cache_ttl, CACHE_CAP),
            health: TtlCache::new(Duration::from_secs(1), 1),
            config,
            store,
            keys,
            clock,
            wat,
            audit,
            auditor,
            providers,
            vault,
            sessions,
            inbound,
            outbound,
        })))
    }
}

/// Authorization sessions are kept an hour past expiry (polls still answer `FAILED`), then
/// deleted, by whichever replica gets there first.
fn spawn_session_purge(store: Store, clock: Arc<dyn Clock>) {
    const KEEP_MS: i64 = 3_600_000;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(300));
        loop {
            tick.tick().await;
            match store.purge_sessions(clock.now_ms() - KEEP_MS).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(sessions = n, "purged expired authorization sessions"),
                Err(e) => {
                    tracing::warn!(error = %e, "could not purge expired authorization sessions")
                }
            }
        }
    });
}

async fn load_wat_authority(
    issuer: &str,
    store: &Store,
    keys: &dyn KeyProvider,
    clock: &dyn Clock,
) -> anyhow::Result<WatAuthority> {
    let mut records = store.list_signing_keys().await?;
    if records.is_empty() {
        let kid = format!("wat-{}", uuid::Uuid::now_v7().simple());
        let (_, pkcs8) = WatKey::generate(kid.clone())?;
        let envelope = crypto::encrypt(keys, aad::signing_key(&kid).as_bytes(), &pkcs8).await?;
        match store
            .create_signing_key(&SigningKeyRecord {
                kid,
                private_envelope: envelope,
                created_ms: clock.now_ms(),
                retired_ms: None,
            })
            .await
        {
            Ok(()) | Err(StoreError::Conflict) => {}
            Err(e) => return Err(e.into()),
        }
        records = store.list_signing_keys().await?;
    }
    let mut loaded = Vec::new();
    for r in &records {
        let pkcs8 = crypto::decrypt(
            keys,
            aad::signing_key(&r.kid).as_bytes(),
            &r.private_envelope,
        )
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot open WAT signing key {}: {e} (is this the right key file?)",
                r.kid
            )
        })?;
        loaded.push(WatKey::from_pkcs8(r.kid.clone(), &pkcs8)?);
    }
    // Newest first: sign with the newest, keep verifying the others.
    let mut iter = loaded.into_iter();
    let signing = iter
        .next()
        .ok_or_else(|| anyhow::anyhow!("no WAT signing key"))?;
    let others = iter
        .map(|k| WatPublicKey {
            kid: k.kid().to_string(),
            point: k.public_point(),
        })
        .collect();
    Ok(WatAuthority::new(issuer.to_string(), signing, others))
}
