//! Rotation of the key-encryption key (KEK): re-wrap every stored envelope under the
//! provider's active key, and count which keys the stored envelopes still use.
//!
//! Each envelope's data key is opened with the key named in the envelope and sealed again
//! under the active key (`crypto::rewrap`); the secret itself is never decrypted. Rows are
//! replaced with a compare-and-set, so a row a live server changed in the meantime keeps
//! the server's value (it was sealed under the key that server had at that moment; the
//! next pass or [`key_usage`] shows it).

use std::collections::BTreeMap;

use latchkey_core::UserPrincipal;
use latchkey_core::crypto::{self, KeyProvider};
use latchkey_store::{EnvelopeColumn, GrantKey, Store, StoreError};
use serde::Serialize;

use crate::aad;

/// Rows re-wrapped per page.
const PAGE: i64 = 500;

/// The associated data an envelope of `column` in the row `key` was sealed with — the same
/// strings ([`crate::aad`]) the services use. `None` when `key` does not have the column's shape.
pub fn envelope_aad(column: EnvelopeColumn, key: &[String]) -> Option<String> {
    Some(match (column, key) {
        (EnvelopeColumn::CredentialSecret, [id]) => aad::credential(id),
        (EnvelopeColumn::Oauth2ProviderSecret, [name]) => aad::oauth2_provider(name),
        (EnvelopeColumn::ApiKeyProviderSecret, [name]) => aad::api_key_provider(name),
        (EnvelopeColumn::SigningKeyPrivate, [kid]) => aad::signing_key(kid),
        (EnvelopeColumn::AuditKey, [kid]) => latchkey_core::audit::chain::audit_key_aad(kid),
        (EnvelopeColumn::SessionSecrets, [id]) => aad::session_secrets(id),
        (EnvelopeColumn::SessionCode, [id]) => aad::session_code(id),
        (EnvelopeColumn::GrantAccess | EnvelopeColumn::GrantRefresh, [w, k, i, u, p]) => {
            let part = if column == EnvelopeColumn::GrantAccess {
                "access"
            } else {
                "refresh"
            };
            aad::grant(
                &GrantKey {
                    workload: w.clone(),
                    user: UserPrincipal::from_parts(k, i, u).ok()?,
                    provider: p.clone(),
                },
                part,
            )
        }
        _ => return None,
    })
}

/// What a re-wrap pass did to one column.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ColumnReport {
    /// Non-NULL envelopes read.
    pub scanned: u64,
    /// Re-wrapped under the active key and stored.
    pub rewrapped: u64,
    /// Already under the active key.
    pub already_current: u64,
    /// Changed by someone else between read and write: left as that writer stored it.
    pub skipped_changed: u64,
    /// Could not be re-wrapped (unknown key, wrong binding, malformed): left untouched.
    pub failed: u64,
}

impl ColumnReport {
    fn add(&mut self, other: &ColumnReport) {
        self.scanned += other.scanned;
        self.rewrapped += other.rewrapped;
        self.already_current += other.already_current;
        self.skipped_changed += other.skipped_changed;
        self.failed += other.failed;
    }
}

/// What [`rewrap_all`] did, per column (`table.column`) and in total.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RewrapReport {
    pub active_key_id: String,
    pub columns: BTreeMap<String, ColumnReport>,
    pub total: ColumnReport,
}

impl RewrapReport {
    /// Fold another pass into this report.
    pub fn merge(&mut self, other: &RewrapReport) {
        self.active_key_id.clone_from(&other.active_key_id);
        for (name, c) in &other.columns {
            self.columns.entry(name.clone()).or_default().add(c);
        }
        self.total.add(&other.total);
    }
}

/// Re-wrap every envelope in storage under `keys`' active key. Storage errors abort (the
/// pass can simply be run again); envelopes that cannot be re-wrapped are counted as
/// failed and logged (without any secret), and the pass goes on.
pub async fn rewrap_all(store: &Store, keys: &dyn KeyProvider) -> Result<RewrapReport, StoreError> {
    let mut report = RewrapReport {
        active_key_id: keys.active_key_id(),
        ..RewrapReport::default()
    };
    for column in EnvelopeColumn::ALL {
        let c = rewrap_column(store, keys, column).await?;
        report.total.add(&c);
        report.columns.insert(column.name().to_string(), c);
    }
    Ok(report)
}

/// Re-wrap one column (see [`rewrap_all`]).
pub async fn rewrap_column(
    store: &Store,
    keys: &dyn KeyProvider,
    column: EnvelopeColumn,
) -> Result<ColumnReport, StoreError> {
    let mut report = ColumnReport::default();
    let mut after: Option<Vec<String>> = None;
    loop {
        let page = store.list_envelopes(column, after.as_deref(), PAGE).await?;
        for row in &page {
            report.scanned += 1;
            let Some(aad) = envelope_aad(column, &row.key) else {
                report.failed += 1;
                tracing::warn!(
                    column = column.name(),
                    "unexpected primary key shape; envelope left as is"
                );
                continue;
            };
            match crypto::rewrap(keys, aad.as_bytes(), &row.envelope).await {
                Ok(None) => report.already_current += 1,
                Ok(Some(new)) => {
                    if store
                        .replace_envelope(column, &row.key, &row.envelope, &new)
                        .await?
                    {
                        report.rewrapped += 1;
                    } else {
                        report.skipped_changed += 1;
                    }
                }
                Err(e) => {
                    report.failed += 1;
                    tracing::warn!(
                        column = column.name(),
                        row = %describe_row(column, &row.key),
                        error = %e,
                        "could not re-wrap an envelope; left as is"
                    );
                }
            }
        }
        match page.last() {
            Some(last) if page.len() as i64 == PAGE => after = Some(last.key.clone()),
            _ => break,
        }
    }
    Ok(report)
}

/// A row's key for logs. Session ids are part of a user's authorization URL: not logged.
fn describe_row(column: EnvelopeColumn, key: &[String]) -> String {
    match column {
        EnvelopeColumn::SessionSecrets | EnvelopeColumn::SessionCode => "(session)".into(),
        _ => serde_json::to_string(key).unwrap_or_default(),
    }
}

/// Whether a key provider can open what the database holds (see [`check_keys`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyCheck {
    /// Envelopes whose header names a key id, all columns.
    pub envelopes: u64,
    /// Key ids named by envelopes that the provider does not hold → number of envelopes.
    pub missing: BTreeMap<String, u64>,
    /// Key ids the provider holds under which an envelope did not open (another key with
    /// the same id).
    pub wrong: Vec<String>,
}

impl KeyCheck {
    /// Every key id in use is held and opened its trial envelope.
    pub fn is_ok(&self) -> bool {
        self.missing.is_empty() && self.wrong.is_empty()
    }
}

/// Check `keys` against the database: every key id an envelope names must be held, and
/// for each key id one envelope must open (its data key is unwrapped as for a re-wrap;
/// no secret is decrypted). A full scan of the envelope headers, like [`key_usage`].
pub async fn check_keys(store: &Store, keys: &dyn KeyProvider) -> Result<KeyCheck, StoreError> {
    let mut check = KeyCheck::default();
    let mut tried: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    for column in EnvelopeColumn::ALL {
        let mut after: Option<Vec<String>> = None;
        loop {
            let page = store.list_envelopes(column, after.as_deref(), PAGE).await?;
            for row in &page {
                let Ok(id) = crypto::envelope_key_id(&row.envelope) else {
                    continue;
                };
                check.envelopes += 1;
                if let Some(n) = check.missing.get_mut(id) {
                    *n += 1;
                    continue;
                }
                if tried.contains(id) {
                    continue;
                }
                let Some(aad) = envelope_aad(column, &row.key) else {
                    continue;
                };
                // Opened under its own key id, re-sealed under the same key: a trial.
                match crypto::open_data_key(keys, aad.as_bytes(), &row.envelope).await {
                    Ok(()) => {
                        tried.insert(id.to_string());
                    }
                    Err(crypto::CryptoError::UnknownKey(_)) => {
                        check.missing.insert(id.to_string(), 1);
                    }
                    Err(e) => {
                        // One altered row is not a wrong key file: try another envelope
                        // under this key id; the key counts as wrong only when none opens.
                        tracing::warn!(
                            column = column.name(),
                            row = %describe_row(column, &row.key),
                            key_id = id,
                            error = %e,
                            "a stored envelope does not open"
                        );
                        if !check.wrong.iter().any(|w| w == id) {
                            check.wrong.push(id.to_string());
                        }
                    }
                }
            }
            match page.last() {
                Some(last) if page.len() as i64 == PAGE => after = Some(last.key.clone()),
                _ => break,
            }
        }
    }
    // A key id that opened any envelope is the right key; single bad rows are not.
    check.wrong.retain(|id| !tried.contains(id));
    Ok(check)
}

/// Envelopes per key id, per column and in total.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyUsage {
    /// Key id → number of envelopes sealed under it, all columns.
    pub total: BTreeMap<String, u64>,
    /// `table.column` → key id → count.
    pub columns: BTreeMap<String, BTreeMap<String, u64>>,
    /// Envelopes whose header does not parse (they use no key).
    pub malformed: u64,
}

/// Envelopes per key id across every envelope column (a full scan).
pub async fn key_usage(store: &Store) -> Result<BTreeMap<String, u64>, StoreError> {
    Ok(key_usage_by_column(store).await?.total)
}

/// [`key_usage`], with the per-column breakdown and the malformed count.
pub async fn key_usage_by_column(store: &Store) -> Result<KeyUsage, StoreError> {
    let mut usage = KeyUsage::default();
    for column in EnvelopeColumn::ALL {
        let count = store.count_envelopes_by_key(column).await?;
        for (id, n) in &count.by_key {
            *usage.total.entry(id.clone()).or_default() += n;
        }
        usage.malformed += count.malformed;
        usage
            .columns
            .insert(column.name().to_string(), count.by_key);
    }
    Ok(usage)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use latchkey_core::crypto::FileKeyProvider;
    use latchkey_store::{CredentialRecord, GrantTokens};

    #[test]
    fn aad_per_column() {
        let k = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            envelope_aad(EnvelopeColumn::CredentialSecret, &k(&["LKA"])).unwrap(),
            "credential:LKA"
        );
        assert_eq!(
            envelope_aad(EnvelopeColumn::Oauth2ProviderSecret, &k(&["gh"])).unwrap(),
            "oauth2-provider:gh"
        );
        assert_eq!(
            envelope_aad(EnvelopeColumn::ApiKeyProviderSecret, &k(&["k"])).unwrap(),
            "apikey-provider:k"
        );
        assert_eq!(
            envelope_aad(EnvelopeColumn::SigningKeyPrivate, &k(&["wat-1"])).unwrap(),
            "signing-key:wat-1"
        );
        assert_eq!(
            envelope_aad(EnvelopeColumn::SessionSecrets, &k(&["s"])).unwrap(),
            "auth-session:s"
        );
        assert_eq!(
            envelope_aad(EnvelopeColumn::SessionCode, &k(&["s"])).unwrap(),
            "auth-session-code:s"
        );
        assert_eq!(
            envelope_aad(
                EnvelopeColumn::GrantRefresh,
                &k(&["w", "user-id", "", "u", "p"])
            )
            .unwrap(),
            r#"grant:["w","u","p"]:refresh"#
        );
        assert_eq!(
            envelope_aad(
                EnvelopeColumn::GrantAccess,
                &k(&["w", "jwt", "https://idp.example", "u", "p"])
            )
            .unwrap(),
            r#"grant:["w","u","p","jwt","https://idp.example"]:access"#
        );
        assert!(envelope_aad(EnvelopeColumn::GrantAccess, &k(&["w"])).is_none());
        assert!(envelope_aad(EnvelopeColumn::GrantAccess, &k(&["w", "u", "p"])).is_none());
        // Columns that name no valid user (a JWT user without an issuer) have no AAD.
        assert!(
            envelope_aad(EnvelopeColumn::GrantAccess, &k(&["w", "jwt", "", "u", "p"])).is_none()
        );
    }

    #[tokio::test]
    async fn rewrap_all_moves_everything_to_the_active_key() {
        let temp = latchkey_store::testing::TempStore::new("rotation-test").await;
        let store = temp.store.clone();
        let mut keys = FileKeyProvider::generate().unwrap();
        let old = keys.active_key_id();
        let cred_env = crypto::encrypt(&keys, b"credential:LK1", b"secret")
            .await
            .unwrap();
        store
            .create_credential(&CredentialRecord {
                access_key_id: "LK1".into(),
                role: "admin".into(),
                secret_envelope: cred_env,
                description: None,
                created_ms: 1,
                revoked_ms: None,
            })
            .await
            .unwrap();
        let gk = GrantKey {
            workload: "w".into(),
            user: UserPrincipal::jwt("https://idp.example", "u").unwrap(),
            provider: "p".into(),
        };
        let access = crypto::encrypt(&keys, aad::grant(&gk, "access").as_bytes(), b"at")
            .await
            .unwrap();
        // A refresh envelope sealed for another record: it must fail, not be laundered.
        let misplaced = crypto::encrypt(&keys, b"grant:elsewhere", b"rt")
            .await
            .unwrap();
        store
            .put_grant(
                &gk,
                &GrantTokens {
                    scopes: vec![],
                    resources: vec![],
                    token_type: "Bearer".into(),
                    access_envelope: access,
                    refresh_envelope: Some(misplaced),
                    expires_ms: 1,
                },
                1,
            )
            .await
            .unwrap();
        assert_eq!(key_usage(&store).await.unwrap().get(&old), Some(&3));

        let new = keys.rotate().unwrap();
        let report = rewrap_all(&store, &keys).await.unwrap();
        assert_eq!(report.active_key_id, new);
        assert_eq!(report.total.scanned, 3);
        assert_eq!(report.total.rewrapped, 2);
        assert_eq!(report.total.failed, 1);
        assert_eq!(report.columns["grants.refresh_envelope"].failed, 1);
        let usage = key_usage_by_column(&store).await.unwrap();
        assert_eq!(usage.total.get(&new), Some(&2));
        assert_eq!(usage.total.get(&old), Some(&1));

        // A second pass finds nothing more to do; the data still opens.
        let again = rewrap_all(&store, &keys).await.unwrap();
        assert_eq!(again.total.already_current, 2);
        assert_eq!(again.total.rewrapped, 0);
        let c = store.find_credential("LK1").await.unwrap().unwrap();
        assert_eq!(
            &*crypto::decrypt(&keys, b"credential:LK1", &c.secret_envelope)
                .await
                .unwrap(),
            b"secret"
        );
        store.close().await;
    }
}
