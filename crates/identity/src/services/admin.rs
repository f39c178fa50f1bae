//! Administration without a server: what `latchkey admin …` does, as calls on a store and
//! key material. Building an [`Admin`] spawns no task, creates no signing key and opens no
//! listener; every change is recorded in the audit chain before the call returns.
//!
//! ```ignore
//! let admin = Admin::new(store, keys, clock, outbound_policy)?;
//! let report = admin.revoke_grant(&key).await?;   // at the provider, then here; audited
//! admin.list_grants(&GrantFilter::default(), |g| { println!("{}", serde_json::to_string(g)?); Ok(()) }).await?;
//! let chain = admin.verify_audit(None).await?;
//! ```

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use latchkey_core::audit::chain::ChainReport;
use latchkey_core::audit::{AuditEvent, Outcome};
use latchkey_core::clock::Clock;
use latchkey_core::crypto::{self, KeyProvider};
use latchkey_store::{AuditChain, CredentialRecord, GrantKey, GrantRecord, Store, StoreError};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::aad;
use crate::audit::{event, set_user};
use crate::caller::Role;
use crate::outbound::{OutboundClient, OutboundPolicy};
use crate::services::providers::Providers;
use crate::services::vault::{FALLBACK_LIFETIME_SECS, RevokeReport, Vault, VaultSettings};

/// The administration service.
#[derive(Debug)]
pub struct Admin {
    store: Store,
    keys: Arc<dyn KeyProvider>,
    clock: Arc<dyn Clock>,
    chain: AuditChain,
    vault: Vault,
}

/// A credential just created; the secret is shown once.
#[derive(Debug)]
pub struct NewCredential {
    pub access_key_id: String,
    pub secret: Zeroizing<String>,
    pub role: Role,
}

/// Which grants [`Admin::list_grants`] lists.
#[derive(Debug, Clone, Default)]
pub struct GrantFilter {
    pub workload: Option<String>,
    /// A user's subject (any kind or issuer).
    pub user: Option<String>,
    /// At most this many (default 1000, at most 10,000,000).
    pub limit: Option<i64>,
}

/// One grant as `latchkey admin grants list` prints it (no token, sealed or not). Fields
/// in the order the CLI has always printed them (alphabetical).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GrantSummary {
    pub expires_time: i64,
    pub has_refresh_token: bool,
    pub provider: String,
    pub resources: Vec<String>,
    pub scopes: Vec<String>,
    /// `active`, `expired`, `expired-refreshable` or `needs-consent`.
    pub state: &'static str,
    pub updated_time: i64,
    pub user: String,
    pub user_issuer: Option<String>,
    pub user_kind: &'static str,
    pub workload: String,
}

impl GrantSummary {
    fn of(g: &GrantRecord, now_ms: i64) -> Self {
        let state = if g.needs_consent {
            "needs-consent"
        } else if g.expires_ms <= now_ms {
            if g.refresh_envelope.is_some() {
                "expired-refreshable"
            } else {
                "expired"
            }
        } else {
            "active"
        };
        Self {
            workload: g.key.workload.clone(),
            user: g.key.user.subject().to_string(),
            user_kind: g.key.user.kind().as_str(),
            user_issuer: g.key.user.issuer().map(str::to_string),
            provider: g.key.provider.clone(),
            scopes: g.scopes.clone(),
            resources: g.resources.clone(),
            expires_time: g.expires_ms / 1000,
            has_refresh_token: g.refresh_envelope.is_some(),
            state,
            updated_time: g.updated_ms / 1000,
        }
    }
}

/// `LK` + 18 characters of A–Z/2–7: the shape of an AWS access key id, never confused
/// with one.
pub fn new_access_key_id() -> anyhow::Result<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut raw = [0u8; 18];
    aws_lc_rs::rand::fill(&mut raw)
        .map_err(|_| anyhow::anyhow!("random number generator failed"))?;
    Ok(format!(
        "LK{}",
        raw.iter()
            .map(|b| ALPHABET[(b & 31) as usize] as char)
            .collect::<String>()
    ))
}

/// 40 characters, URL-safe, 240 bits.
pub fn new_secret() -> anyhow::Result<Zeroizing<String>> {
    let mut raw = Zeroizing::new([0u8; 30]);
    aws_lc_rs::rand::fill(raw.as_mut())
        .map_err(|_| anyhow::anyhow!("random number generator failed"))?;
    Ok(Zeroizing::new(
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw.as_ref()),
    ))
}

impl Admin {
    /// The service over `store` and `keys`; `outbound` is the policy for calls to
    /// providers (RFC 7009 revocation). Nothing starts running.
    pub fn new(
        store: Store,
        keys: Arc<dyn KeyProvider>,
        clock: Arc<dyn Clock>,
        outbound: OutboundPolicy,
    ) -> anyhow::Result<Self> {
        let outbound = OutboundClient::new(outbound)?;
        // The public URL only names callback URLs, which revocation does not use.
        let providers = Providers::new(store.clone(), keys.clone(), outbound, "http://127.0.0.1");
        let vault = Vault::new(
            store.clone(),
            keys.clone(),
            clock.clone(),
            providers,
            VaultSettings {
                cache_ttl: Duration::ZERO,
                refresh_lease_ms: 30_000,
                default_token_lifetime_secs: FALLBACK_LIFETIME_SECS,
            },
        );
        Ok(Self {
            chain: AuditChain::new(keys.clone()),
            store,
            keys,
            clock,
            vault,
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Append one event to the audit chain now.
    pub async fn record(&self, event: AuditEvent) -> Result<(), StoreError> {
        self.store.append_audit(&self.chain, &[event]).await
    }

    fn event(&self, action: &str) -> AuditEvent {
        event(self.clock.now_ms(), None, action, Outcome::Success)
    }

    /// Create a credential with `role`; audited as `CreateCredential`.
    pub async fn create_credential(
        &self,
        role: Role,
        description: Option<String>,
    ) -> anyhow::Result<NewCredential> {
        let id = new_access_key_id()?;
        let secret = new_secret()?;
        let envelope = crypto::encrypt(
            self.keys.as_ref(),
            aad::credential(&id).as_bytes(),
            secret.as_bytes(),
        )
        .await?;
        self.store
            .create_credential(&CredentialRecord {
                access_key_id: id.clone(),
                role: role.as_string(),
                secret_envelope: envelope,
                description,
                created_ms: self.clock.now_ms(),
                revoked_ms: None,
            })
            .await?;
        let mut e = self.event("CreateCredential");
        e.target = Some(id.clone());
        e.detail = serde_json::json!({"role": role.as_string(), "via": "cli"});
        self.record(e).await?;
        Ok(NewCredential {
            access_key_id: id,
            secret,
            role,
        })
    }

    /// Revoke a credential (`StoreError::NotFound`: no such active credential); audited as
    /// `RevokeCredential`. Running servers stop accepting it within their cache TTL.
    pub async fn revoke_credential(&self, access_key_id: &str) -> Result<(), StoreError> {
        self.store
            .revoke_credential(access_key_id, self.clock.now_ms())
            .await?;
        let mut e = self.event("RevokeCredential");
        e.target = Some(access_key_id.to_string());
        self.record(e).await
    }

    /// Revoke a grant at the provider (RFC 7009, when it has an endpoint) and delete it
    /// here whatever the provider said; audited as `RevokeGrant`.
    pub async fn revoke_grant(&self, key: &GrantKey) -> anyhow::Result<RevokeReport> {
        let report =
            self.vault
                .revoke_grant(key)
                .await
                .map_err(|e| match e.internal_message() {
                    Some(detail) => anyhow::anyhow!("{e} ({detail})"),
                    None => anyhow::anyhow!("{e}"),
                })?;
        let detail = serde_json::json!({"revokedAtProvider": report.revoked_at_provider, "providerErrors": report.provider_errors});
        self.record_revoked(key, detail).await?;
        Ok(report)
    }

    /// Delete here, without calling the provider, every grant `workload` holds from
    /// `provider`: for a provider that now names another authorization server, where its
    /// tokens mean nothing. Each is audited as `RevokeGrant` with `reason`. Returns how
    /// many were deleted.
    pub async fn forget_grants(
        &self,
        workload: &str,
        provider: &str,
        reason: &str,
    ) -> anyhow::Result<u64> {
        let mut keys = Vec::new();
        let filter = GrantFilter {
            workload: Some(workload.into()),
            user: None,
            limit: Some(i64::MAX),
        };
        self.each_grant(&filter, |g| {
            if g.key.provider == provider {
                keys.push(g.key.clone());
            }
            Ok(())
        })
        .await?;
        for key in &keys {
            match self.store.delete_grant(key).await {
                Ok(()) | Err(StoreError::NotFound) => {}
                Err(e) => return Err(e.into()),
            }
            let detail = serde_json::json!({"revokedAtProvider": [], "reason": reason});
            self.record_revoked(key, detail).await?;
        }
        Ok(keys.len() as u64)
    }

    /// The `RevokeGrant` event of `key` (`detail` gets `"via": "cli"`).
    async fn record_revoked(
        &self,
        key: &GrantKey,
        mut detail: serde_json::Value,
    ) -> anyhow::Result<()> {
        let mut e = self.event("RevokeGrant");
        e.workload = Some(key.workload.clone());
        set_user(&mut e, Some(&key.user));
        e.target = Some(key.provider.clone());
        detail["via"] = "cli".into();
        e.detail = detail;
        Ok(self.record(e).await?)
    }

    /// Every grant the filter selects, oldest key first, one page at a time; `each` is
    /// called per grant. Returns how many were listed.
    pub async fn list_grants(
        &self,
        filter: &GrantFilter,
        mut each: impl FnMut(&GrantSummary) -> anyhow::Result<()>,
    ) -> anyhow::Result<u64> {
        let now = self.clock.now_ms();
        self.each_grant(filter, |g| each(&GrantSummary::of(g, now)))
            .await
    }

    /// [`Admin::list_grants`] with the stored records.
    async fn each_grant(
        &self,
        filter: &GrantFilter,
        mut each: impl FnMut(&GrantRecord) -> anyhow::Result<()>,
    ) -> anyhow::Result<u64> {
        let mut after: Option<GrantKey> = None;
        let mut left = filter.limit.unwrap_or(1000).clamp(1, 10_000_000);
        let mut listed = 0;
        while left > 0 {
            let page = self
                .store
                .list_grants(
                    filter.workload.as_deref(),
                    filter.user.as_deref(),
                    after.as_ref(),
                    left.min(1000),
                )
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.key.clone());
            left -= page.len() as i64;
            for g in &page {
                each(g)?;
                listed += 1;
            }
        }
        Ok(listed)
    }

    /// Verify the audit chain (the newest `tail` blocks, or all of it).
    pub async fn verify_audit(&self, tail: Option<u64>) -> Result<ChainReport, StoreError> {
        self.store.verify_audit(&self.chain, tail).await
    }

    /// Write the events of blocks in `[since_ms, until_ms)` as JSON lines (each with its
    /// `block`); returns how many events were written.
    pub async fn export_audit(
        &self,
        since_ms: i64,
        until_ms: i64,
        out: &mut impl Write,
    ) -> anyhow::Result<u64> {
        anyhow::ensure!(until_ms > since_ms, "--until must be later than --since");
        let mut after = 0i64;
        let mut written = 0;
        loop {
            let page = self.store.export_audit(since_ms, until_ms, after).await?;
            let Some((last, _)) = page.last() else { break };
            after = *last;
            for (seq, events) in &page {
                for e in events {
                    let mut line = serde_json::to_value(e)?;
                    if let Some(o) = line.as_object_mut() {
                        o.insert("block".into(), (*seq).into());
                    }
                    serde_json::to_writer(&mut *out, &line)?;
                    out.write_all(b"\n")?;
                    written += 1;
                }
            }
        }
        out.flush()?;
        Ok(written)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use latchkey_core::UserPrincipal;
    use latchkey_core::clock::SystemClock;
    use latchkey_core::crypto::FileKeyProvider;
    use latchkey_store::GrantTokens;
    use latchkey_store::testing::TempStore;

    use super::*;

    /// An [`Admin`] over a fresh store (kept while the returned `TempStore` lives).
    async fn admin(name: &str) -> (Admin, TempStore, Arc<dyn KeyProvider>) {
        let temp = TempStore::new(name).await;
        let keys: Arc<dyn KeyProvider> = Arc::new(FileKeyProvider::generate().unwrap());
        let policy = OutboundPolicy::default();
        let admin = Admin::new(
            temp.store.clone(),
            keys.clone(),
            Arc::new(SystemClock),
            policy,
        );
        (admin.unwrap(), temp, keys)
    }

    /// A grant of (workload, user id, provider) with a sealed dummy access token.
    async fn put_grant(store: &Store, keys: &dyn KeyProvider, key: (&str, &str, &str)) -> GrantKey {
        let key = GrantKey {
            workload: key.0.into(),
            user: UserPrincipal::user_id(key.1).unwrap(),
            provider: key.2.into(),
        };
        let aad = aad::grant(&key, "access");
        let access = crypto::encrypt(keys, aad.as_bytes(), b"at").await.unwrap();
        let tokens = GrantTokens {
            scopes: vec!["repo".into()],
            resources: vec![],
            token_type: "Bearer".into(),
            access_envelope: access,
            refresh_envelope: None,
            expires_ms: 1,
        };
        store.put_grant(&key, &tokens, 1).await.unwrap();
        key
    }

    /// The CLI's whole grant lifecycle through [`Admin`] on a bare store: no server state,
    /// no signing key, and every change in the audit chain.
    #[tokio::test]
    async fn admin_works_on_a_store_without_a_server() {
        let (admin, temp, keys) = admin("admin-test").await;
        let store = temp.store.clone();

        let created = admin
            .create_credential(Role::Admin, Some("ops".into()))
            .await
            .unwrap();
        assert!(created.access_key_id.starts_with("LK"));
        assert_eq!(created.secret.len(), 40);
        admin
            .revoke_credential(&created.access_key_id)
            .await
            .unwrap();
        assert!(matches!(
            admin.revoke_credential(&created.access_key_id).await,
            Err(StoreError::NotFound)
        ));

        let key = put_grant(&store, keys.as_ref(), ("w", "alice", "gone")).await;
        let mut listed = vec![];
        let n = admin
            .list_grants(&GrantFilter::default(), |g| {
                listed.push(serde_json::to_string(g)?);
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(n, 1);
        // The same line `latchkey admin grants list` printed before (keys in order).
        assert_eq!(
            listed[0],
            serde_json::json!({
                "workload": "w", "user": "alice", "userKind": "user-id", "userIssuer": null,
                "provider": "gone", "scopes": ["repo"], "resources": [], "expiresTime": 0,
                "hasRefreshToken": false, "state": "expired", "updatedTime": 0,
            })
            .to_string()
        );

        // A provider that no longer exists: nothing to call, the grant is deleted here.
        let report = admin.revoke_grant(&key).await.unwrap();
        assert!(!report.provider_endpoint);
        assert!(store.find_grant(&key).await.unwrap().is_none());
        assert!(admin.revoke_grant(&key).await.is_err(), "already gone");
        assert!(store.list_signing_keys().await.unwrap().is_empty());

        let chain = admin.verify_audit(None).await.unwrap();
        assert!(chain.fault.is_none());
        let mut out = Vec::new();
        let events = admin.export_audit(0, i64::MAX, &mut out).await.unwrap();
        assert_eq!(events, 3, "{}", String::from_utf8_lossy(&out));
        let text = String::from_utf8(out).unwrap();
        for action in ["CreateCredential", "RevokeCredential", "RevokeGrant"] {
            assert!(text.contains(action), "{action} in {text}");
        }
        store.close().await;
    }
    /// Forgetting a provider's grants (a provider switched to another authorization
    /// server) deletes exactly that workload's grants of that provider, each audited.
    #[tokio::test]
    async fn forget_grants_deletes_only_that_workloads_grants_of_that_provider() {
        let (admin, temp, keys) = admin("admin-forget").await;
        let store = temp.store.clone();
        let keys = keys.as_ref();
        let gone = [("w", "alice", "github"), ("w", "bob", "github")];
        let kept = [("w", "alice", "slack"), ("w2", "alice", "github")];
        for key in gone.iter().chain(&kept) {
            put_grant(&store, keys, *key).await;
        }
        let forgotten = admin.forget_grants("w", "github", "switched").await;
        assert_eq!(forgotten.unwrap(), 2);
        let mut left = vec![];
        let all = GrantFilter::default();
        let each = |g: &GrantSummary| {
            left.push((g.workload.clone(), g.provider.clone()));
            Ok(())
        };
        admin.list_grants(&all, each).await.unwrap();
        assert_eq!(
            left,
            [("w", "slack"), ("w2", "github")].map(|(w, p)| (w.into(), p.into()))
        );
        let mut out = Vec::new();
        assert_eq!(admin.export_audit(0, i64::MAX, &mut out).await.unwrap(), 2);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches("\"reason\":\"switched\"").count(), 2, "{text}");
        store.close().await;
    }
}
