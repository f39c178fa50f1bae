//! The token vault: grants per (workload, user, provider), sealed with associated data
//! naming the grant; read with on-demand refresh that happens **once** per grant at a time
//! across every replica sharing the database; client-credentials tokens cached per replica.
//!
//! Refresh, in order: one task per grant per replica (an in-process lock), then one
//! replica per grant (a lease row in the database, taken by compare-and-set on the grant's
//! `version`, which is also the fencing token of the write that ends the lease). Whoever
//! does not hold the lease waits for the grant to change and reads the new token.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use latchkey_core::ApiError;
use latchkey_core::clock::Clock;
use latchkey_core::crypto::{self, KeyProvider};
use latchkey_store::{GrantKey, GrantRecord, GrantTokens, Store, StoreError};
use latchkey_telemetry::{self as telemetry, VaultLookup, VaultRefresh};
use secrecy::{ExposeSecret, SecretString};

use crate::aad;
use crate::cache::TtlCache;
use crate::error::{Error, Result};
use crate::services::providers::{ProviderRuntime, Providers};
use crate::token_client::{TokenClient, TokenError, TokenResponse};

/// A vaulted token is used only while it has at least this much life left.
pub const EXPIRY_SKEW_MS: i64 = 60_000;
/// Lifetime assumed when neither the response nor the provider's config gives one.
pub const FALLBACK_LIFETIME_SECS: i64 = 3600;

/// Timings of a [`Vault`].
#[derive(Debug, Clone, Copy)]
pub struct VaultSettings {
    /// How long grants and opened tokens are cached per replica.
    pub cache_ttl: Duration,
    /// How long a replica holds a grant's refresh lease (ms).
    pub refresh_lease_ms: i64,
    /// Token lifetime assumed when neither the provider's response nor its config says.
    pub default_token_lifetime_secs: i64,
}

/// The vault service and its per-replica state.
#[derive(Debug)]
pub struct Vault {
    store: Store,
    keys: Arc<dyn KeyProvider>,
    clock: Arc<dyn Clock>,
    providers: Providers,
    settings: VaultSettings,
    /// This replica's name in refresh leases.
    owner: String,
    /// One refresh at a time per grant in this replica.
    locks: Mutex<HashMap<GrantKey, Arc<tokio::sync::Mutex<()>>>>,
    /// Grants read recently (only present ones: an absent grant is always re-read).
    grants: TtlCache<GrantKey, Arc<GrantRecord>>,
    /// Opened access tokens of cached grants, by grant version (like the credential cache,
    /// a decrypted secret kept in memory for at most the cache TTL).
    opened: TtlCache<GrantKey, (i64, SecretString)>,
    /// Client-credentials tokens: key → (token, expiry ms).
    m2m: Mutex<HashMap<M2mKey, (SecretString, i64)>>,
    /// Grants whose use this replica recorded in the last minute (so a vault hit writes
    /// `last_used_ms` at most once a minute per grant, off the request's path).
    used: TtlCache<GrantKey, ()>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct M2mKey {
    provider: String,
    provider_updated_ms: i64,
    scopes: Vec<String>,
    resources: Vec<String>,
    audiences: Vec<String>,
}

const M2M_CAP: usize = 10_000;

/// What the vault can say about a request.
#[derive(Debug)]
pub(crate) enum VaultAnswer {
    Token(SecretString),
    /// Ask the user: consent for these scopes (the union with what was granted before).
    NeedsConsent {
        scopes: Vec<String>,
        reason: &'static str,
    },
}

/// What revoking a grant did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RevokeReport {
    /// Whether the provider has an RFC 7009 endpoint we called.
    pub provider_endpoint: bool,
    /// Tokens the provider confirmed revoked (`refresh_token`, `access_token`).
    pub revoked_at_provider: Vec<&'static str>,
    /// Provider errors (the grant is deleted here regardless).
    pub provider_errors: Vec<String>,
}

fn union(a: &[String], b: &[String]) -> Vec<String> {
    a.iter()
        .chain(b)
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

fn covers(have: &[String], want: &[String]) -> bool {
    want.iter().all(|w| have.contains(w))
}

fn consent_needed(g: &GrantRecord, scopes: &[String], resources: &[String]) -> Option<VaultAnswer> {
    let reason = if g.needs_consent {
        "the provider refused the refresh token"
    } else if !covers(&g.scopes, scopes) {
        "more scopes requested"
    } else if !covers(&g.resources, resources) {
        "another resource requested"
    } else {
        return None;
    };
    Some(VaultAnswer::NeedsConsent {
        scopes: union(&g.scopes, scopes),
        reason,
    })
}

/// How a failed provider call reaches the API caller: the provider's OAuth error code and
/// description (text the provider meant for its client); an unreachable provider is a
/// retry-safe 503 whose transport detail stays in the log.
pub(crate) fn token_error(e: &TokenError) -> Error {
    match e {
        TokenError::Upstream(_) => Error::unavailable(e),
        _ => ApiError::cannot_parse(e.to_string()).into(),
    }
}

impl Vault {
    pub fn new(
        store: Store,
        keys: Arc<dyn KeyProvider>,
        clock: Arc<dyn Clock>,
        providers: Providers,
        settings: VaultSettings,
    ) -> Self {
        Self {
            store,
            keys,
            clock,
            providers,
            settings,
            owner: format!("replica-{}", uuid::Uuid::new_v4().simple()),
            locks: Mutex::new(HashMap::new()),
            grants: TtlCache::new(settings.cache_ttl, 100_000),
            opened: TtlCache::new(settings.cache_ttl, 100_000),
            m2m: Mutex::new(HashMap::new()),
            used: TtlCache::new(
                Duration::from_millis(latchkey_store::LAST_USED_GRANULARITY_MS as u64),
                100_000,
            ),
        }
    }

    /// Note that a workload received `key`'s token: the grant's `last_used_ms`, written in
    /// the background at most once a minute per grant (a failed write only loses a date).
    fn note_used(&self, key: &GrantKey) {
        if self.used.get(key).is_some() {
            return;
        }
        self.used.put(key.clone(), ());
        let (store, key, now) = (self.store.clone(), key.clone(), self.clock.now_ms());
        tokio::spawn(async move {
            if let Err(e) = store.mark_grant_used(&key, now).await {
                tracing::warn!(error = %e, provider = %key.provider, "could not record a grant's last use");
            }
        });
    }

    /// Forget a grant this replica may have cached (after a change made here).
    pub fn invalidate(&self, key: &GrantKey) {
        self.grants.invalidate(key);
        self.opened.invalidate(key);
    }

    fn lock_for(&self, key: &GrantKey) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key.clone()).or_default().clone()
    }

    fn unlock(&self, key: &GrantKey, lock: Arc<tokio::sync::Mutex<()>>) {
        let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        // Only the map and this handle left: nobody waits, drop the entry.
        if Arc::strong_count(&lock) <= 2 {
            map.remove(key);
        }
    }

    async fn open_part(&self, key: &GrantKey, part: &str, envelope: &[u8]) -> Result<SecretString> {
        crypto::decrypt_string(
            self.keys.as_ref(),
            aad::grant(key, part).as_bytes(),
            envelope,
        )
        .await
        .map_err(|e| {
            Error::internal(format!(
                "could not open the {part} token of the grant for provider {:?}: {e}",
                key.provider
            ))
        })
    }

    async fn open_access(&self, g: &GrantRecord) -> Result<SecretString> {
        self.open_part(&g.key, "access", &g.access_envelope).await
    }

    /// The token's lifetime: `expires_in`, else the provider's configured default, else
    /// the service default — never "forever".
    fn lifetime_secs(&self, provider: &ProviderRuntime, resp: &TokenResponse) -> i64 {
        resp.expires_in.unwrap_or_else(|| {
            provider
                .config
                .default_token_lifetime_secs
                .and_then(|s| i64::try_from(s).ok())
                .unwrap_or(self.settings.default_token_lifetime_secs)
        })
    }

    /// The provider's token endpoint, client secret opened.
    pub(crate) async fn token_client<'a>(
        &'a self,
        provider: &'a ProviderRuntime,
    ) -> Result<TokenClient<'a>> {
        TokenClient::open(provider, self.keys.as_ref(), self.providers.outbound()).await
    }

    /// Seal a token response as a grant. `previous_refresh` is kept when the provider did
    /// not send a new refresh token; a missing `expires_in` means the provider's default.
    pub(crate) async fn seal(
        &self,
        key: &GrantKey,
        provider: &ProviderRuntime,
        resp: &TokenResponse,
        requested_scopes: &[String],
        resources: &[String],
        previous_refresh: Option<Vec<u8>>,
    ) -> Result<GrantTokens> {
        let enc = |part: &'static str, value: &str| {
            let aad = aad::grant(key, part);
            let value = value.to_string();
            async move {
                crypto::encrypt(self.keys.as_ref(), aad.as_bytes(), value.as_bytes())
                    .await
                    .map_err(|e| {
                        Error::internal(format!("could not seal the {part} token of a grant: {e}"))
                    })
            }
        };
        let access_envelope = enc("access", resp.access_token.expose_secret()).await?;
        let refresh_envelope = match &resp.refresh_token {
            Some(r) => Some(enc("refresh", r.expose_secret()).await?),
            None => previous_refresh,
        };
        let lifetime = self.lifetime_secs(provider, resp);
        Ok(GrantTokens {
            scopes: resp
                .scope
                .clone()
                .unwrap_or_else(|| requested_scopes.to_vec()),
            resources: resources.to_vec(),
            token_type: resp.token_type.clone(),
            access_envelope,
            refresh_envelope,
            expires_ms: self.clock.now_ms() + lifetime.saturating_mul(1000),
        })
    }

    /// The vaulted token for `key` covering `scopes` (and `resources`), refreshed if needed.
    pub(crate) async fn get(
        &self,
        key: &GrantKey,
        scopes: &[String],
        resources: &[String],
    ) -> Result<VaultAnswer> {
        let grant = match self.grants.get(key) {
            Some(g) => Some(g),
            None => {
                let g = self.store.find_grant(key).await?.map(Arc::new);
                if let Some(g) = &g {
                    self.grants.put(key.clone(), g.clone());
                }
                g
            }
        };
        let Some(grant) = grant else {
            telemetry::vault_lookup(VaultLookup::Miss);
            return Ok(VaultAnswer::NeedsConsent {
                scopes: scopes.to_vec(),
                reason: "no grant",
            });
        };
        if let Some(answer) = consent_needed(&grant, scopes, resources) {
            telemetry::vault_lookup(VaultLookup::Miss);
            return Ok(answer);
        }
        let (answer, found) = if grant.expires_ms - EXPIRY_SKEW_MS > self.clock.now_ms() {
            let token = match self.opened.get(key) {
                Some((version, token)) if version == grant.version => token,
                _ => {
                    let token = self.open_access(&grant).await?;
                    self.opened.put(key.clone(), (grant.version, token.clone()));
                    token
                }
            };
            (VaultAnswer::Token(token), VaultLookup::Hit)
        } else {
            (
                self.refresh(key, scopes, resources).await?,
                VaultLookup::Refreshed,
            )
        };
        if matches!(answer, VaultAnswer::Token(_)) {
            telemetry::vault_lookup(found);
            self.note_used(key);
        } else {
            telemetry::vault_lookup(VaultLookup::Miss);
        }
        Ok(answer)
    }

    /// Refresh `key`'s grant, once across replicas; everyone else waits for the result.
    async fn refresh(
        &self,
        key: &GrantKey,
        scopes: &[String],
        resources: &[String],
    ) -> Result<VaultAnswer> {
        let lock = self.lock_for(key);
        let result = {
            let _guard = lock.lock().await;
            self.refresh_locked(key, scopes, resources).await
        };
        self.unlock(key, lock);
        result
    }

    async fn refresh_locked(
        &self,
        key: &GrantKey,
        scopes: &[String],
        resources: &[String],
    ) -> Result<VaultAnswer> {
        let lease_ms = self.settings.refresh_lease_ms;
        let deadline = self.clock.now_ms() + 2 * lease_ms + 5_000;
        loop {
            let now = self.clock.now_ms();
            if now > deadline {
                return Err(Error::unavailable(
                    "a refresh of this grant by another replica did not finish in time",
                ));
            }
            // Always the database here: another replica may have refreshed already.
            let Some(grant) = self.store.find_grant(key).await? else {
                self.invalidate(key);
                return Ok(VaultAnswer::NeedsConsent {
                    scopes: scopes.to_vec(),
                    reason: "no grant",
                });
            };
            let grant = Arc::new(grant);
            self.grants.put(key.clone(), grant.clone());
            if let Some(answer) = consent_needed(&grant, scopes, resources) {
                return Ok(answer);
            }
            if grant.expires_ms - EXPIRY_SKEW_MS > now {
                return Ok(VaultAnswer::Token(self.open_access(&grant).await?));
            }
            let Some(refresh_envelope) = grant.refresh_envelope.clone() else {
                return Ok(VaultAnswer::NeedsConsent {
                    scopes: union(&grant.scopes, scopes),
                    reason: "the token expired and the provider gave no refresh token",
                });
            };
            if grant.lease_until_ms.is_some_and(|until| until >= now) {
                tokio::time::sleep(Duration::from_millis(25)).await;
                continue;
            }
            let Some(fence) = self
                .store
                .acquire_refresh_lease(key, grant.version, &self.owner, now, lease_ms)
                .await?
            else {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            };
            return self
                .refresh_under_lease(key, &grant, fence, refresh_envelope, scopes)
                .await;
        }
    }

    async fn refresh_under_lease(
        &self,
        key: &GrantKey,
        grant: &GrantRecord,
        fence: i64,
        refresh_envelope: Vec<u8>,
        scopes: &[String],
    ) -> Result<VaultAnswer> {
        let outcome = self
            .refresh_upstream(key, grant, fence, refresh_envelope)
            .await;
        // Every way out that did not write new tokens releases the lease here, once.
        let (needs_consent, result) = match &outcome {
            Ok(Some(_)) => (None, VaultRefresh::Ok),
            Ok(None) => (Some(true), VaultRefresh::Refused),
            Err(_) => (Some(false), VaultRefresh::Failed),
        };
        telemetry::vault_refresh(result);
        if let Some(needs_consent) = needs_consent {
            match self
                .store
                .release_refresh(key, fence, needs_consent, self.clock.now_ms())
                .await
            {
                Ok(()) | Err(StoreError::NotFound) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "could not release a refresh lease; it expires on its own")
                }
            }
        }
        self.invalidate(key);
        match outcome? {
            Some(token) => Ok(VaultAnswer::Token(token)),
            None => Ok(VaultAnswer::NeedsConsent {
                scopes: union(&grant.scopes, scopes),
                reason: "the provider refused the refresh token",
            }),
        }
    }

    /// Refresh at the provider and write the result under the lease `fence` names: the
    /// new access token, or `None` when the provider refused the refresh token.
    async fn refresh_upstream(
        &self,
        key: &GrantKey,
        grant: &GrantRecord,
        fence: i64,
        refresh_envelope: Vec<u8>,
    ) -> Result<Option<SecretString>> {
        let provider = self.providers.require(&key.provider).await?;
        let refresh_token = self.open_part(key, "refresh", &refresh_envelope).await?;
        let mut form = vec![
            ("grant_type", "refresh_token".to_string()),
            ("refresh_token", refresh_token.expose_secret().to_string()),
        ];
        // RFC 8707: the resource stays on every token request.
        for r in &grant.resources {
            form.push(("resource", r.clone()));
        }
        let resp = match self.token_client(&provider).await?.request(form).await {
            Ok(resp) => resp,
            Err(TokenError::InvalidGrant(detail)) => {
                tracing::info!(workload = %key.workload, provider = %key.provider, "refresh token refused{detail}; the grant needs consent again");
                return Ok(None);
            }
            Err(e) => return Err(token_error(&e)),
        };
        let tokens = self
            .seal(
                key,
                &provider,
                &resp,
                &grant.scopes,
                &grant.resources,
                Some(refresh_envelope),
            )
            .await?;
        match self
            .store
            .finish_refresh(key, fence, &tokens, self.clock.now_ms())
            .await
        {
            Ok(()) => {}
            Err(StoreError::NotFound) => {
                // Our lease ended before we wrote (we were too slow); the token we hold is
                // still valid, the grant has moved on without us.
                tracing::warn!(provider = %key.provider, "refresh finished after its lease was lost; result not stored");
            }
            Err(e) => return Err(e.into()),
        }
        Ok(Some(resp.access_token))
    }

    /// A client-credentials token for `provider`, from this replica's cache when it has
    /// one with more than the skew left.
    pub(crate) async fn m2m_token(
        &self,
        provider: &ProviderRuntime,
        scopes: &[String],
        resources: &[String],
        audiences: &[String],
    ) -> Result<SecretString> {
        let mut sorted_scopes = scopes.to_vec();
        sorted_scopes.sort();
        sorted_scopes.dedup();
        let key = M2mKey {
            provider: provider.name.clone(),
            provider_updated_ms: provider.updated_ms,
            scopes: sorted_scopes,
            resources: resources.to_vec(),
            audiences: audiences.to_vec(),
        };
        let now = self.clock.now_ms();
        {
            let cache = self.m2m.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((token, exp)) = cache.get(&key)
                && exp - EXPIRY_SKEW_MS > now
            {
                return Ok(token.clone());
            }
        }
        let mut form = vec![("grant_type", "client_credentials".to_string())];
        if !scopes.is_empty() {
            form.push((
                "scope",
                scopes.join(&provider.config.quirks.scope_separator),
            ));
        }
        for r in resources {
            form.push(("resource", r.clone()));
        }
        for a in audiences {
            form.push(("audience", a.clone()));
        }
        let resp = self
            .token_client(provider)
            .await?
            .request(form)
            .await
            .map_err(|e| token_error(&e))?;
        let lifetime = self.lifetime_secs(provider, &resp);
        let mut cache = self.m2m.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= M2M_CAP {
            cache.clear();
        }
        cache.insert(
            key,
            (
                resp.access_token.clone(),
                now + lifetime.saturating_mul(1000),
            ),
        );
        Ok(resp.access_token)
    }

    /// Revoke a grant: at the provider first (RFC 7009, refresh token then access token,
    /// when it has an endpoint), then delete it here whatever the provider said.
    pub async fn revoke_grant(&self, key: &GrantKey) -> Result<RevokeReport> {
        let grant = self.store.find_grant(key).await?.ok_or_else(|| {
            Error::new(ApiError::NotFound(
                "no grant for this user, workload identity and credential provider".into(),
            ))
        })?;
        let mut report = RevokeReport {
            provider_endpoint: false,
            revoked_at_provider: vec![],
            provider_errors: vec![],
        };
        let provider = self
            .providers
            .runtime(crate::services::providers::ProviderLookup::Name(
                &key.provider,
            ))
            .await?;
        if let Some(provider) = provider
            .as_ref()
            .filter(|p| p.revocation_endpoint.is_some())
        {
            report.provider_endpoint = true;
            let client = self.token_client(provider).await?;
            let parts = [
                ("refresh_token", "refresh", grant.refresh_envelope.as_ref()),
                ("access_token", "access", Some(&grant.access_envelope)),
            ];
            for (hint, part, envelope) in parts {
                let Some(envelope) = envelope else { continue };
                let token = self.open_part(key, part, envelope).await?;
                match client.revoke(token.expose_secret(), hint).await {
                    Ok(()) => report.revoked_at_provider.push(hint),
                    Err(e) => report.provider_errors.push(format!("{hint}: {e}")),
                }
            }
        }
        match self.store.delete_grant(key).await {
            Ok(()) | Err(StoreError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
        self.invalidate(key);
        self.used.invalidate(key);
        Ok(report)
    }
}
