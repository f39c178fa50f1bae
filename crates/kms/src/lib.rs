//! Key-encryption keys rooted in AWS KMS (`key_provider = "aws-kms"`).
//!
//! Each key-encryption key (KEK) is 32 random bytes that KMS generates
//! (`GenerateDataKey`, AES-256) and that Latchkey stores only as KMS's ciphertext, in the
//! shared database (`key_encryption_keys`), under the encryption context
//! `{"latchkey:deployment": <deployment name>, "latchkey:kek": <key id>}`. A replica
//! unwraps every stored KEK once at start (`Decrypt`) and keeps them in memory: sealing and
//! opening envelopes makes no KMS call. Replicas share nothing but the database and the KMS
//! key:
//! - the first replica to start creates generation 1; the generation is unique in the
//!   table, so two first starts converge on one key;
//! - a rotation (`latchkey admin vault rotate-key`) adds the next generation, the new
//!   active key; every replica looks at the table every [`REFRESH_INTERVAL`] and at once
//!   when an envelope names a key it does not hold, and unwraps what is new;
//! - `SetTokenVaultCMK` re-wraps the stored copies under another KMS key (from memory,
//!   with `Encrypt`): no secret is decrypted, no envelope changes.
//!
//! A key that does not open (wrong KMS key, another deployment's context, a disabled or
//! deleted key, KMS unreachable) stops the start with an error that says which.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_kms::Client;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, KeyState};
use latchkey_core::crypto::{
    BoxFuture, CryptoError, FileKeyProvider, KeyProvider, KmsKeyInfo, KmsKeyState, KmsRoot,
};
use latchkey_store::{Store, WrappedKekRecord};
use zeroize::Zeroizing;

/// How often a running replica looks for keys another process added.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(2);
/// An envelope naming an unknown key makes a replica look at the table at most this often.
const FORCED_REFRESH_MIN: Duration = Duration::from_secs(1);
/// The encryption context's keys.
pub const CONTEXT_DEPLOYMENT: &str = "latchkey:deployment";
pub const CONTEXT_KEY_ID: &str = "latchkey:kek";

/// Where the KMS key is and which deployment this is.
#[derive(Debug, Clone)]
pub struct KmsSettings {
    /// The KMS key (id, ARN or `alias/…`) new key-encryption keys are wrapped with.
    pub key_id: String,
    /// The KMS endpoint, when not AWS's own for the region (tests: moto).
    pub endpoint_url: Option<String>,
    /// The region, when not the AWS chain's (`AWS_REGION`, profile…).
    pub region: Option<String>,
    /// Names this deployment in every encryption context.
    pub deployment: String,
    /// Timeout of one KMS call.
    pub timeout: Duration,
}

/// Why the KMS key provider cannot work. Messages name the key and what to do; they never
/// contain key material.
#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    #[error("cannot reach AWS KMS{endpoint}: {detail}")]
    Unreachable { endpoint: String, detail: String },
    #[error("the KMS key {key} does not exist (in this account and region)")]
    NotFound { key: String },
    #[error("the KMS key {key} is {state}")]
    NotUsable { key: String, state: String },
    #[error("AWS KMS refused {operation} on {key}: {code}: {message}")]
    Refused {
        operation: &'static str,
        key: String,
        code: String,
        message: String,
    },
    #[error(
        "the key-encryption key {kek} in the database does not open with KMS under the deployment name {deployment:?}: the database belongs to another deployment (deployment_name) or its keys were wrapped by a KMS key this deployment cannot use ({detail})"
    )]
    WrongContext {
        kek: String,
        deployment: String,
        detail: String,
    },
    #[error("KMS answered {operation} without {what}")]
    Incomplete {
        operation: &'static str,
        what: &'static str,
    },
    #[error("the database: {0}")]
    Store(#[from] latchkey_store::StoreError),
    #[error("{0}")]
    Crypto(#[from] CryptoError),
}

impl From<KmsError> for CryptoError {
    fn from(e: KmsError) -> Self {
        match e {
            KmsError::Crypto(c) => c,
            other => CryptoError::Provider(other.to_string()),
        }
    }
}

/// The key provider: the key-encryption keys in memory, their wrapped copies in the
/// database, KMS to unwrap them.
pub struct KmsKeyProvider {
    client: Client,
    store: Store,
    settings: KmsSettings,
    keys: RwLock<Arc<FileKeyProvider>>,
    /// id → generation of the keys in memory, and which KMS key wraps the active one.
    state: RwLock<KnownKeys>,
    /// One refresh at a time.
    refreshing: tokio::sync::Mutex<()>,
    refresher: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// When an unknown key id last made us look at the table (at most every
    /// [`FORCED_REFRESH_MIN`]).
    last_forced: std::sync::Mutex<Option<std::time::Instant>>,
}

#[derive(Debug, Default, Clone)]
struct KnownKeys {
    generations: BTreeMap<String, i64>,
    /// The KMS key ARN the highest generation is wrapped with: new keys use it.
    wrapping_key: Option<String>,
}

impl std::fmt::Debug for KmsKeyProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsKeyProvider")
            .field("key_id", &self.settings.key_id)
            .field("deployment", &self.settings.deployment)
            .field("keys", &*self.snapshot())
            .finish()
    }
}

impl Drop for KmsKeyProvider {
    fn drop(&mut self) {
        if let Ok(mut task) = self.refresher.lock()
            && let Some(task) = task.take()
        {
            task.abort();
        }
    }
}

impl KmsKeyProvider {
    /// Connect to KMS, check the configured key, create the first key-encryption key when
    /// the database has none, unwrap them all and follow the table. Fails (the service must
    /// not start) when the key is unusable, KMS unreachable or a stored key does not open.
    pub async fn open(settings: KmsSettings, store: Store) -> Result<Arc<Self>, KmsError> {
        let provider = Arc::new(Self::connect(settings, store).await?);
        provider.check_service_key().await?;
        provider.check_wrapping_keys().await?;
        provider.load(true).await?;
        provider.follow();
        Ok(provider)
    }

    /// For the admin commands: open what exists, create nothing, follow nothing.
    pub async fn open_existing(settings: KmsSettings, store: Store) -> Result<Arc<Self>, KmsError> {
        let provider = Arc::new(Self::connect(settings, store).await?);
        provider.load(false).await?;
        Ok(provider)
    }

    async fn connect(settings: KmsSettings, store: Store) -> Result<Self, KmsError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3).min(settings.timeout))
                    .operation_timeout(settings.timeout)
                    .build(),
            )
            .retry_config(RetryConfig::standard().with_max_attempts(2));
        if let Some(region) = &settings.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(url) = &settings.endpoint_url {
            loader = loader.endpoint_url(url.trim_end_matches('/'));
        }
        let client = Client::new(&loader.load().await);
        Ok(Self {
            client,
            store,
            settings,
            keys: RwLock::new(Arc::new(FileKeyProvider::generate()?)),
            state: RwLock::new(KnownKeys::default()),
            refreshing: tokio::sync::Mutex::new(()),
            refresher: std::sync::Mutex::new(None),
            last_forced: std::sync::Mutex::new(None),
        })
    }

    fn snapshot(&self) -> Arc<FileKeyProvider> {
        self.keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn known(&self) -> KnownKeys {
        self.state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The configured key must exist and be enabled.
    async fn check_service_key(&self) -> Result<(), KmsError> {
        let key = self.settings.key_id.clone();
        let info = self.describe(&key).await?;
        match info.state {
            KmsKeyState::Enabled => Ok(()),
            KmsKeyState::NotFound => Err(KmsError::NotFound { key }),
            state => Err(unusable(key, &state)),
        }
    }

    /// Every KMS key that wraps a stored key must be enabled (KMS refuses to decrypt under
    /// a disabled key or one pending deletion; saying which key and why is clearer).
    async fn check_wrapping_keys(&self) -> Result<(), KmsError> {
        let rows = self.store.list_wrapped_keks().await?;
        let mut arns: Vec<&str> = rows.iter().map(|r| r.kms_key_arn.as_str()).collect();
        arns.sort_unstable();
        arns.dedup();
        for arn in arns {
            let info = self.describe(arn).await?;
            if info.state != KmsKeyState::Enabled {
                let key = format!("{arn}, which wraps the stored key-encryption keys,");
                return Err(unusable(key, &info.state));
            }
        }
        Ok(())
    }

    /// Read the table; with `create`, add the first key when there is none. Unwraps every
    /// key not yet in memory and makes the highest generation active.
    async fn load(&self, create: bool) -> Result<(), KmsError> {
        let _one = self.refreshing.lock().await;
        let mut rows = self.store.list_wrapped_keks().await?;
        if rows.is_empty() && create {
            let first = self.generate(1, &self.settings.key_id).await?;
            if self.store.insert_wrapped_kek(&first.0).await? {
                tracing::info!(key_id = %first.0.id, kms_key = %first.0.kms_key_arn, "created the first key-encryption key, wrapped by KMS");
            }
            rows = self.store.list_wrapped_keks().await?;
        }
        if rows.is_empty() {
            return Err(KmsError::Crypto(CryptoError::Provider(
                "the database holds no key-encryption key: initialise it with `latchkey admin init` or a first start of `latchkey serve identity` with key_provider = \"aws-kms\"".into(),
            )));
        }
        self.absorb(&rows).await
    }

    /// Unwrap the rows not in memory; the highest generation becomes active.
    async fn absorb(&self, rows: &[WrappedKekRecord]) -> Result<(), KmsError> {
        let known = self.known();
        let mut fresh: Vec<(String, Zeroizing<[u8; 32]>)> = Vec::new();
        for row in rows {
            if !known.generations.contains_key(&row.id) {
                fresh.push((row.id.clone(), self.unwrap(row).await?));
            }
        }
        let Some(top) = rows.iter().max_by_key(|r| r.generation) else {
            return Ok(());
        };
        let current = self.snapshot();
        let changed = !fresh.is_empty() || current.active_key_id() != top.id;
        if changed {
            let before = current.active_key_id();
            let keys = if known.generations.is_empty() {
                // The first load: what the table holds (every row is fresh), nothing else.
                FileKeyProvider::from_keys(&top.id, fresh)?
            } else {
                // Keys removed from the table stay in memory: envelopes read before a
                // rotation still open.
                let mut keys = current.duplicate();
                for (id, key) in fresh {
                    keys.insert_key(id, key);
                }
                keys.set_active(&top.id)?;
                keys
            };
            *self
                .keys
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(keys);
            if !known.generations.is_empty() && before != top.id {
                tracing::info!(previous_key = %before, active_key = %top.id, "new active key-encryption key (from the database)");
            }
        }
        let mut state = self
            .state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for row in rows {
            state.generations.insert(row.id.clone(), row.generation);
        }
        state.wrapping_key = Some(top.kms_key_arn.clone());
        Ok(())
    }

    /// Look at the table now (another replica rotated, or an envelope names an unknown key).
    pub async fn refresh(&self) -> Result<(), KmsError> {
        let _one = self.refreshing.lock().await;
        let rows = self.store.list_wrapped_keks().await?;
        self.absorb(&rows).await
    }

    /// Whether an unknown key id may make us look at the table now.
    fn may_force_refresh(&self) -> bool {
        let Ok(mut last) = self.last_forced.lock() else {
            return false;
        };
        let now = std::time::Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < FORCED_REFRESH_MIN) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// Refresh every [`REFRESH_INTERVAL`] while the provider lives.
    fn follow(self: &Arc<Self>) {
        let weak: Weak<Self> = Arc::downgrade(self);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFRESH_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(provider) = weak.upgrade() else {
                    return;
                };
                if let Err(error) = provider.refresh().await {
                    tracing::warn!(%error, "cannot look for new key-encryption keys; keeping the keys in memory");
                }
            }
        });
        if let Ok(mut slot) = self.refresher.lock() {
            *slot = Some(task);
        }
    }

    /// The encryption context of the key `kek_id`: this deployment and the key's id.
    fn context(&self, kek_id: &str) -> Option<HashMap<String, String>> {
        Some(HashMap::from([
            (
                CONTEXT_DEPLOYMENT.to_string(),
                self.settings.deployment.clone(),
            ),
            (CONTEXT_KEY_ID.to_string(), kek_id.to_string()),
        ]))
    }

    /// A new key under `kms_key`, as a row of `generation` (not stored), with its plaintext.
    async fn generate(
        &self,
        generation: i64,
        kms_key: &str,
    ) -> Result<(WrappedKekRecord, Zeroizing<[u8; 32]>), KmsError> {
        let id = new_key_id()?;
        let call = self
            .client
            .generate_data_key()
            .key_id(kms_key)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(self.context(&id));
        let out = call
            .send()
            .await
            .map_err(|e| self.sdk_error("GenerateDataKey", kms_key, e))?;
        let plaintext = out.plaintext().ok_or(KmsError::Incomplete {
            operation: "GenerateDataKey",
            what: "Plaintext",
        })?;
        let key = to_key(plaintext.as_ref())?;
        let wrapped = out.ciphertext_blob().ok_or(KmsError::Incomplete {
            operation: "GenerateDataKey",
            what: "CiphertextBlob",
        })?;
        let arn = out.key_id().unwrap_or(kms_key).to_string();
        Ok((
            WrappedKekRecord {
                id,
                generation,
                wrapped: wrapped.as_ref().to_vec(),
                kms_key_arn: arn,
                created_ms: now_ms(),
            },
            key,
        ))
    }

    async fn unwrap(&self, row: &WrappedKekRecord) -> Result<Zeroizing<[u8; 32]>, KmsError> {
        let call = self
            .client
            .decrypt()
            .ciphertext_blob(Blob::new(row.wrapped.clone()))
            .set_encryption_context(self.context(&row.id));
        let out = call.send().await.map_err(|e| {
            let code = e.as_service_error().and_then(|s| s.code()).unwrap_or("");
            if code == "InvalidCiphertextException" {
                return KmsError::WrongContext {
                    kek: row.id.clone(),
                    deployment: self.settings.deployment.clone(),
                    detail: format!(
                        "KMS: InvalidCiphertextException; wrapped by {}",
                        row.kms_key_arn
                    ),
                };
            }
            self.sdk_error("Decrypt", &row.kms_key_arn, e)
        })?;
        let plaintext = out.plaintext().ok_or(KmsError::Incomplete {
            operation: "Decrypt",
            what: "Plaintext",
        })?;
        to_key(plaintext.as_ref())
    }

    async fn describe(&self, key: &str) -> Result<KmsKeyInfo, KmsError> {
        let out = match self.client.describe_key().key_id(key).send().await {
            Ok(out) => out,
            Err(e) if e.as_service_error().and_then(|s| s.code()) == Some("NotFoundException") => {
                return Ok(KmsKeyInfo {
                    arn: key.to_string(),
                    state: KmsKeyState::NotFound,
                });
            }
            Err(e) => return Err(self.sdk_error("DescribeKey", key, e)),
        };
        let meta = out.key_metadata().ok_or(KmsError::Incomplete {
            operation: "DescribeKey",
            what: "KeyMetadata",
        })?;
        let symmetric = meta
            .key_spec()
            .is_none_or(|s| s.as_str() == "SYMMETRIC_DEFAULT");
        let encrypt = meta
            .key_usage()
            .is_none_or(|u| u.as_str() == "ENCRYPT_DECRYPT");
        let state = match meta.key_state() {
            _ if !symmetric || !encrypt => KmsKeyState::Other(format!(
                "not a symmetric encryption key ({}, {})",
                meta.key_spec().map_or("?", |s| s.as_str()),
                meta.key_usage().map_or("?", |u| u.as_str())
            )),
            Some(KeyState::Enabled) => KmsKeyState::Enabled,
            Some(KeyState::Disabled) => KmsKeyState::Disabled,
            Some(KeyState::PendingDeletion | KeyState::PendingReplicaDeletion) => {
                KmsKeyState::PendingDeletion
            }
            Some(other) => KmsKeyState::Other(other.as_str().to_string()),
            None => KmsKeyState::Other("unknown".into()),
        };
        Ok(KmsKeyInfo {
            arn: meta.arn().unwrap_or(key).to_string(),
            state,
        })
    }

    /// Add the next generation, wrapped by the KMS key that wraps the active one; it
    /// becomes the active key here at once and on every replica within
    /// [`REFRESH_INTERVAL`]. Returns its id.
    pub async fn rotate(&self) -> Result<String, KmsError> {
        for _ in 0..3 {
            self.refresh().await?;
            let known = self.known();
            let next = known.generations.values().max().copied().unwrap_or(0) + 1;
            let kms_key = known
                .wrapping_key
                .unwrap_or_else(|| self.settings.key_id.clone());
            let (row, _) = self.generate(next, &kms_key).await?;
            if self.store.insert_wrapped_kek(&row).await? {
                self.refresh().await?;
                return Ok(row.id);
            }
            // Another rotation took this generation: look again.
        }
        Err(KmsError::Crypto(CryptoError::Provider(
            "another rotation keeps adding keys at the same time; try again".into(),
        )))
    }

    /// Remove a key from the table (no envelope uses it any more); never the active one.
    pub async fn retire(&self, id: &str) -> Result<bool, KmsError> {
        if id == self.snapshot().active_key_id() {
            return Err(KmsError::Crypto(CryptoError::Provider(format!(
                "key {id:?} is the active key and cannot be retired"
            ))));
        }
        Ok(self.store.delete_wrapped_kek(id).await?)
    }

    /// The key ids in the table, lowest generation first.
    pub async fn stored_key_ids(&self) -> Result<Vec<String>, KmsError> {
        Ok(self
            .store
            .list_wrapped_keks()
            .await?
            .into_iter()
            .map(|r| r.id)
            .collect())
    }

    /// Which KMS key wraps the stored keys (the active one's).
    pub fn wrapping_key(&self) -> Option<String> {
        self.known().wrapping_key
    }

    fn sdk_error<E, R>(&self, operation: &'static str, key: &str, e: SdkError<E, R>) -> KmsError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + 'static,
    {
        match &e {
            SdkError::ServiceError(s) => {
                let err = s.err();
                let code = err.code().unwrap_or("Unknown").to_string();
                let message = err.message().unwrap_or("").to_string();
                match code.as_str() {
                    "NotFoundException" => KmsError::NotFound { key: key.into() },
                    "DisabledException" => KmsError::NotUsable {
                        key: key.into(),
                        state: "disabled".into(),
                    },
                    "KMSInvalidStateException" => KmsError::NotUsable {
                        key: key.into(),
                        state: format!("in a state that does not allow {operation} ({message})"),
                    },
                    _ => KmsError::Refused {
                        operation,
                        key: key.into(),
                        code,
                        message,
                    },
                }
            }
            _ => KmsError::Unreachable {
                endpoint: match &self.settings.endpoint_url {
                    Some(u) => format!(" at {u}"),
                    None => String::new(),
                },
                detail: describe_dispatch(&e),
            },
        }
    }
}

/// The transport failure in words (the SDK's Display says only "dispatch failure").
fn describe_dispatch<E: std::error::Error + 'static, R: std::fmt::Debug + 'static>(
    e: &SdkError<E, R>,
) -> String {
    let what = match e {
        SdkError::TimeoutError(_) => "timed out",
        SdkError::DispatchFailure(f) if f.is_timeout() => "timed out",
        SdkError::DispatchFailure(f) if f.is_io() => "connection failed",
        SdkError::ConstructionFailure(_) => "the request could not be built (credentials?)",
        SdkError::ResponseError(_) => "the answer could not be read",
        _ => "request failed",
    };
    // The innermost cause names the real reason (connection refused, no credentials…).
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut last = String::new();
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    format!("{what}: {last}")
}

/// `key` cannot be used in `state`: say so, and what to do.
fn unusable(key: String, state: &KmsKeyState) -> KmsError {
    let advice = match state {
        KmsKeyState::PendingDeletion => {
            "cancel its deletion (aws kms cancel-key-deletion) and enable it, start the service, then move to another key with SetTokenVaultCMK"
        }
        KmsKeyState::Disabled => {
            "enable it (aws kms enable-key), or point kms_key_id at a usable key"
        }
        _ => "restore access to it, or point kms_key_id at a usable key",
    };
    KmsError::NotUsable {
        key,
        state: format!("{}: {advice}", describe_state(state)),
    }
}

fn describe_state(state: &KmsKeyState) -> String {
    match state {
        KmsKeyState::Enabled => "enabled".into(),
        KmsKeyState::Disabled => "disabled".into(),
        KmsKeyState::PendingDeletion => "pending deletion".into(),
        KmsKeyState::NotFound => "not found".into(),
        KmsKeyState::Other(s) => s.clone(),
    }
}

fn to_key(bytes: &[u8]) -> Result<Zeroizing<[u8; 32]>, KmsError> {
    let arr: [u8; 32] = bytes.try_into().map_err(|_| KmsError::Incomplete {
        operation: "Decrypt",
        what: "a 32-byte key",
    })?;
    Ok(Zeroizing::new(arr))
}

fn new_key_id() -> Result<String, CryptoError> {
    let mut suffix = [0u8; 6];
    aws_lc_rs::rand::fill(&mut suffix).map_err(|_| CryptoError::Random)?;
    Ok(format!("kms-{}", hex::encode(suffix)))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl KeyProvider for KmsKeyProvider {
    fn active_key_id(&self) -> String {
        self.snapshot().active_key_id()
    }

    fn wrap_data_key<'a>(
        &'a self,
        key_id: &'a str,
        dek: &'a [u8],
        aad: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<u8>, CryptoError>> {
        Box::pin(async move { self.snapshot().wrap_data_key(key_id, dek, aad).await })
    }

    fn unwrap_data_key<'a>(
        &'a self,
        key_id: &'a str,
        wrapped: &'a [u8],
        aad: &'a [u8],
    ) -> BoxFuture<'a, Result<Zeroizing<Vec<u8>>, CryptoError>> {
        Box::pin(async move {
            let keys = self.snapshot();
            match keys.unwrap_data_key(key_id, wrapped, aad).await {
                Err(CryptoError::UnknownKey(_)) => {
                    drop(keys);
                    // Another replica rotated and already sealed with its new key.
                    if self.may_force_refresh()
                        && let Err(error) = self.refresh().await
                    {
                        tracing::warn!(%error, key_id, "cannot look for a key-encryption key named by an envelope");
                    }
                    self.snapshot().unwrap_data_key(key_id, wrapped, aad).await
                }
                other => other,
            }
        })
    }
}

impl KmsRoot for KmsKeyProvider {
    fn service_key(&self) -> &str {
        &self.settings.key_id
    }

    fn describe_key<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<KmsKeyInfo, CryptoError>> {
        Box::pin(async move { Ok(self.describe(key).await?) })
    }

    fn wrap_keys_under<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<String, CryptoError>> {
        Box::pin(async move {
            let _one = self.refreshing.lock().await;
            let keys = self.snapshot();
            let rows = self
                .store
                .list_wrapped_keks()
                .await
                .map_err(KmsError::from)?;
            let mut arn = key.to_string();
            for row in &rows {
                let plaintext = keys.export_key(&row.id).ok_or_else(|| {
                    CryptoError::Provider(format!(
                        "the key-encryption key {} is not in memory; restart the service to load it",
                        row.id
                    ))
                })?;
                let call = self
                    .client
                    .encrypt()
                    .key_id(key)
                    .plaintext(Blob::new(plaintext.to_vec()))
                    .set_encryption_context(self.context(&row.id));
                let out = call
                    .send()
                    .await
                    .map_err(|e| self.sdk_error("Encrypt", key, e))?;
                let wrapped = out.ciphertext_blob().ok_or(KmsError::Incomplete {
                    operation: "Encrypt",
                    what: "CiphertextBlob",
                })?;
                arn = out.key_id().unwrap_or(key).to_string();
                if !self
                    .store
                    .rewrap_kek(&row.id, &row.wrapped, wrapped.as_ref(), &arn)
                    .await
                    .map_err(KmsError::from)?
                {
                    return Err(CryptoError::Provider(format!(
                        "the key-encryption key {} changed while it was re-wrapped; try again",
                        row.id
                    )));
                }
            }
            self.state
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .wrapping_key = Some(arn.clone());
            Ok(arn)
        })
    }
}
