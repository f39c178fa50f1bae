//! Key rotation support: every envelope column in the schema, paged by primary key, with a
//! compare-and-set replace, so envelopes can be re-wrapped under a new key-encryption key
//! while servers keep writing. This crate never decrypts: the caller re-wraps.

use std::collections::BTreeMap;

use latchkey_core::crypto;
use sqlx::Row;

use crate::{Store, StoreResult};

/// One column that holds envelopes. The list is the schema's: a new `*_envelope` column
/// must be added here (and its associated data in `latchkey_identity::rotation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EnvelopeColumn {
    /// `credentials.secret_envelope`, key `access_key_id`.
    CredentialSecret,
    /// `oauth2_providers.secret_envelope` (nullable), key `name`.
    Oauth2ProviderSecret,
    /// `api_key_providers.secret_envelope` (nullable), key `name`.
    ApiKeyProviderSecret,
    /// `signing_keys.private_envelope`, key `kid`.
    SigningKeyPrivate,
    /// `auth_sessions.secrets_envelope`, key `id`.
    SessionSecrets,
    /// `auth_sessions.code_envelope` (nullable), key `id`.
    SessionCode,
    /// `grants.access_envelope`, key `(workload, user_kind, user_issuer, user_id, provider)`.
    GrantAccess,
    /// `grants.refresh_envelope` (nullable), key `(workload, user_kind, user_issuer, user_id,
    /// provider)`.
    GrantRefresh,
    /// `audit_keys.key_envelope`, key `kid`.
    AuditKey,
}

impl EnvelopeColumn {
    pub const ALL: [Self; 9] = [
        Self::CredentialSecret,
        Self::Oauth2ProviderSecret,
        Self::ApiKeyProviderSecret,
        Self::SigningKeyPrivate,
        Self::SessionSecrets,
        Self::SessionCode,
        Self::GrantAccess,
        Self::GrantRefresh,
        Self::AuditKey,
    ];

    pub fn table(self) -> &'static str {
        match self {
            Self::CredentialSecret => "credentials",
            Self::Oauth2ProviderSecret => "oauth2_providers",
            Self::ApiKeyProviderSecret => "api_key_providers",
            Self::SigningKeyPrivate => "signing_keys",
            Self::SessionSecrets | Self::SessionCode => "auth_sessions",
            Self::GrantAccess | Self::GrantRefresh => "grants",
            Self::AuditKey => "audit_keys",
        }
    }

    pub fn column(self) -> &'static str {
        match self {
            Self::CredentialSecret | Self::Oauth2ProviderSecret | Self::ApiKeyProviderSecret => {
                "secret_envelope"
            }
            Self::SigningKeyPrivate => "private_envelope",
            Self::SessionSecrets => "secrets_envelope",
            Self::SessionCode => "code_envelope",
            Self::GrantAccess => "access_envelope",
            Self::GrantRefresh => "refresh_envelope",
            Self::AuditKey => "key_envelope",
        }
    }

    /// The primary-key columns, in order (the order of [`EnvelopeRow::key`]).
    pub fn key_columns(self) -> &'static [&'static str] {
        match self {
            Self::CredentialSecret => &["access_key_id"],
            Self::Oauth2ProviderSecret | Self::ApiKeyProviderSecret => &["name"],
            Self::SigningKeyPrivate | Self::AuditKey => &["kid"],
            Self::SessionSecrets | Self::SessionCode => &["id"],
            Self::GrantAccess | Self::GrantRefresh => &[
                "workload",
                "user_kind",
                "user_issuer",
                "user_id",
                "provider",
            ],
        }
    }

    /// Whether the column may be NULL (rows without a secret are skipped).
    pub fn nullable(self) -> bool {
        matches!(
            self,
            Self::Oauth2ProviderSecret
                | Self::ApiKeyProviderSecret
                | Self::SessionCode
                | Self::GrantRefresh
        )
    }

    /// `table.column`, for reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::CredentialSecret => "credentials.secret_envelope",
            Self::Oauth2ProviderSecret => "oauth2_providers.secret_envelope",
            Self::ApiKeyProviderSecret => "api_key_providers.secret_envelope",
            Self::SigningKeyPrivate => "signing_keys.private_envelope",
            Self::SessionSecrets => "auth_sessions.secrets_envelope",
            Self::SessionCode => "auth_sessions.code_envelope",
            Self::GrantAccess => "grants.access_envelope",
            Self::GrantRefresh => "grants.refresh_envelope",
            Self::AuditKey => "audit_keys.key_envelope",
        }
    }

    /// `k1 = $first AND k2 = $first+1 …`
    fn key_equals(self, first: usize) -> String {
        self.key_columns()
            .iter()
            .enumerate()
            .map(|(i, k)| format!("{k} = ${}", first + i))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    /// Row-after-key condition, spelled out (`k1 > $1 OR (k1 = $1 AND k2 > $2 …)`) so both
    /// backends read it the same way.
    fn key_after(self) -> String {
        fn build(keys: &[&str], n: usize) -> String {
            match keys {
                [] => String::from("1 = 0"),
                [k] => format!("{k} > ${n}"),
                [k, rest @ ..] => {
                    format!("({k} > ${n} OR ({k} = ${n} AND {}))", build(rest, n + 1))
                }
            }
        }
        build(self.key_columns(), 1)
    }
}

/// One stored envelope and the primary key of its row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeRow {
    /// The primary-key values, in [`EnvelopeColumn::key_columns`] order.
    pub key: Vec<String>,
    pub envelope: Vec<u8>,
}

/// How many envelopes of a column are sealed under each key id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvelopeKeyCount {
    pub by_key: BTreeMap<String, u64>,
    /// Envelopes whose header does not parse (they use no key).
    pub malformed: u64,
}

/// Rows fetched per page when counting.
const COUNT_PAGE: i64 = 1000;

impl Store {
    /// Non-NULL envelopes of `column` in primary-key order, strictly after `after` (a key
    /// as returned in [`EnvelopeRow::key`]), at most `limit`.
    pub async fn list_envelopes(
        &self,
        column: EnvelopeColumn,
        after: Option<&[String]>,
        limit: i64,
    ) -> StoreResult<Vec<EnvelopeRow>> {
        let keys = column.key_columns();
        if let Some(after) = after
            && after.len() != keys.len()
        {
            return Err(crate::StoreError::Database(format!(
                "{} is keyed by {} columns, got {}",
                column.name(),
                keys.len(),
                after.len()
            )));
        }
        let key_list = keys.join(", ");
        let (table, col) = (column.table(), column.column());
        let sql = match after {
            None => format!(
                "SELECT {key_list}, {col} FROM {table} WHERE {col} IS NOT NULL ORDER BY {key_list} LIMIT $1"
            ),
            Some(_) => format!(
                "SELECT {key_list}, {col} FROM {table} WHERE {col} IS NOT NULL AND {} ORDER BY {key_list} LIMIT ${}",
                column.key_after(),
                keys.len() + 1
            ),
        };
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for value in after.unwrap_or(&[]) {
            query = query.bind(value.as_str());
        }
        let rows = query.bind(limit).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let key = (0..keys.len())
                    .map(|i| r.try_get::<String, _>(i))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(EnvelopeRow {
                    key,
                    envelope: r.try_get(keys.len())?,
                })
            })
            .collect()
    }

    /// Compare-and-set: store `new` in the row `key` only while it still holds `old`.
    /// `false` when the row changed (or vanished) since it was read — a live server wrote
    /// it, and its write is kept.
    pub async fn replace_envelope(
        &self,
        column: EnvelopeColumn,
        key: &[String],
        old: &[u8],
        new: &[u8],
    ) -> StoreResult<bool> {
        let keys = column.key_columns();
        if key.len() != keys.len() {
            return Err(crate::StoreError::Database(format!(
                "{} is keyed by {} columns, got {}",
                column.name(),
                keys.len(),
                key.len()
            )));
        }
        let (table, col) = (column.table(), column.column());
        let sql = format!(
            "UPDATE {table} SET {col} = $1 WHERE {} AND {col} = ${}",
            column.key_equals(2),
            keys.len() + 2
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(new);
        for value in key {
            query = query.bind(value.as_str());
        }
        let done = query.bind(old).execute(&self.pool).await?;
        Ok(done.rows_affected() == 1)
    }

    /// How many envelopes of `column` are sealed under each key id (a full scan, paged).
    pub async fn count_envelopes_by_key(
        &self,
        column: EnvelopeColumn,
    ) -> StoreResult<EnvelopeKeyCount> {
        let mut count = EnvelopeKeyCount::default();
        let mut after: Option<Vec<String>> = None;
        loop {
            let page = self
                .list_envelopes(column, after.as_deref(), COUNT_PAGE)
                .await?;
            for row in &page {
                match crypto::envelope_key_id(&row.envelope) {
                    Ok(id) => *count.by_key.entry(id.to_string()).or_default() += 1,
                    Err(_) => count.malformed += 1,
                }
            }
            match page.last() {
                Some(last) if page.len() as i64 == COUNT_PAGE => after = Some(last.key.clone()),
                _ => break,
            }
        }
        Ok(count)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::{CredentialRecord, GrantKey, GrantTokens, SigningKeyRecord};
    use latchkey_core::UserPrincipal;

    /// A syntactically valid envelope header (what the store can see) for `key_id`.
    fn fake_envelope(key_id: &str, tail: &[u8]) -> Vec<u8> {
        let mut e = vec![1u8, key_id.len() as u8];
        e.extend_from_slice(key_id.as_bytes());
        e.extend_from_slice(&[0, 0]);
        e.extend_from_slice(tail);
        e
    }

    fn unique(prefix: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!("{prefix}-{}-{nanos}", std::process::id())
    }

    async fn suite(store: &Store) {
        let kid = unique("kek");
        let tag = unique("t");
        // Credentials: three rows, paged one at a time.
        let ids: Vec<String> = (0..3).map(|i| format!("{tag}-cred-{i}")).collect();
        for id in &ids {
            store
                .create_credential(&CredentialRecord {
                    access_key_id: id.clone(),
                    role: "admin".into(),
                    secret_envelope: fake_envelope(&kid, id.as_bytes()),
                    description: None,
                    created_ms: 1,
                    revoked_ms: None,
                })
                .await
                .unwrap();
        }
        let mut seen = vec![];
        let mut after: Option<Vec<String>> = None;
        loop {
            let page = store
                .list_envelopes(EnvelopeColumn::CredentialSecret, after.as_deref(), 1)
                .await
                .unwrap();
            let Some(last) = page.last() else { break };
            after = Some(last.key.clone());
            seen.extend(page);
        }
        let mine: Vec<_> = seen.iter().filter(|r| r.key[0].starts_with(&tag)).collect();
        assert_eq!(
            mine.iter().map(|r| r.key[0].clone()).collect::<Vec<_>>(),
            ids
        );
        assert_eq!(mine[1].envelope, fake_envelope(&kid, ids[1].as_bytes()));
        let mut keys: Vec<_> = seen.iter().map(|r| r.key.clone()).collect();
        keys.dedup();
        assert_eq!(keys.len(), seen.len(), "no row twice");

        // Compare-and-set: the old value must match.
        let new = fake_envelope(&format!("{kid}-new"), b"x");
        assert!(
            !store
                .replace_envelope(
                    EnvelopeColumn::CredentialSecret,
                    &mine[0].key,
                    b"other",
                    &new
                )
                .await
                .unwrap()
        );
        assert!(
            store
                .replace_envelope(
                    EnvelopeColumn::CredentialSecret,
                    &mine[0].key,
                    &mine[0].envelope,
                    &new
                )
                .await
                .unwrap()
        );
        assert_eq!(
            store
                .find_credential(&ids[0])
                .await
                .unwrap()
                .unwrap()
                .secret_envelope,
            new
        );

        // Grants: composite keys, a nullable column.
        let workload = format!("{tag}-wl");
        for (user, provider, refresh) in [("a", "p", true), ("a", "q", false), ("b", "p", true)] {
            let key = GrantKey {
                workload: workload.clone(),
                user: UserPrincipal::user_id(user).unwrap(),
                provider: provider.into(),
            };
            let tokens = GrantTokens {
                scopes: vec![],
                resources: vec![],
                token_type: "Bearer".into(),
                access_envelope: fake_envelope(&kid, b"access"),
                refresh_envelope: refresh.then(|| fake_envelope(&kid, b"refresh")),
                expires_ms: 1,
            };
            store.put_grant(&key, &tokens, 1).await.unwrap();
        }
        let mut grant_keys = vec![];
        let mut after: Option<Vec<String>> = None;
        loop {
            let page = store
                .list_envelopes(EnvelopeColumn::GrantAccess, after.as_deref(), 2)
                .await
                .unwrap();
            let Some(last) = page.last() else { break };
            after = Some(last.key.clone());
            grant_keys.extend(page.into_iter().map(|r| r.key));
        }
        let mine: Vec<_> = grant_keys.iter().filter(|k| k[0] == workload).collect();
        assert_eq!(
            mine,
            [
                &vec![
                    workload.clone(),
                    "user-id".into(),
                    "".into(),
                    "a".into(),
                    "p".into()
                ],
                &vec![
                    workload.clone(),
                    "user-id".into(),
                    "".into(),
                    "a".into(),
                    "q".into()
                ],
                &vec![
                    workload.clone(),
                    "user-id".into(),
                    "".into(),
                    "b".into(),
                    "p".into()
                ],
            ]
        );
        let refresh = store
            .list_envelopes(EnvelopeColumn::GrantRefresh, None, 1_000_000)
            .await
            .unwrap();
        assert_eq!(refresh.iter().filter(|r| r.key[0] == workload).count(), 2);
        let grant_key = vec![
            workload.clone(),
            "user-id".into(),
            "".into(),
            "b".into(),
            "p".into(),
        ];
        assert!(
            store
                .replace_envelope(
                    EnvelopeColumn::GrantRefresh,
                    &grant_key,
                    &fake_envelope(&kid, b"refresh"),
                    &new
                )
                .await
                .unwrap()
        );
        let g = store
            .find_grant(&GrantKey {
                workload: workload.clone(),
                user: UserPrincipal::user_id("b").unwrap(),
                provider: "p".into(),
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(g.refresh_envelope, Some(new.clone()));
        assert_eq!(g.version, 1, "a re-wrap does not fence out a refresh lease");

        // A malformed envelope is counted as such.
        store
            .create_signing_key(&SigningKeyRecord {
                kid: format!("{tag}-sk"),
                private_envelope: vec![9, 9, 9],
                created_ms: 1,
                // Retired, so a service sharing this test database never loads it.
                retired_ms: Some(1),
            })
            .await
            .unwrap();

        let creds = store
            .count_envelopes_by_key(EnvelopeColumn::CredentialSecret)
            .await
            .unwrap();
        assert_eq!(creds.by_key.get(&kid), Some(&2));
        assert_eq!(creds.by_key.get(&format!("{kid}-new")), Some(&1));
        let access = store
            .count_envelopes_by_key(EnvelopeColumn::GrantAccess)
            .await
            .unwrap();
        assert_eq!(access.by_key.get(&kid), Some(&3));
        let refresh = store
            .count_envelopes_by_key(EnvelopeColumn::GrantRefresh)
            .await
            .unwrap();
        assert_eq!(refresh.by_key.get(&kid), Some(&1));
        let signing = store
            .count_envelopes_by_key(EnvelopeColumn::SigningKeyPrivate)
            .await
            .unwrap();
        assert!(signing.malformed >= 1);
        for column in EnvelopeColumn::ALL {
            store.count_envelopes_by_key(column).await.unwrap();
        }
        assert!(
            store
                .list_envelopes(EnvelopeColumn::GrantAccess, Some(&["x".into()]), 1)
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn envelope_columns_on_sqlite() {
        let dir = std::env::temp_dir().join(unique("latchkey-rewrap-test"));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::connect(&format!("sqlite://{}?mode=rwc", dir.join("t.db").display()))
            .await
            .unwrap();
        suite(&store).await;
        store.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// PostgreSQL as in `tests/backends.rs`: `LATCHKEY_TEST_DATABASE_URL`, else
    /// 127.0.0.1:5432; unreachable fails the test.
    #[tokio::test]
    async fn envelope_columns_on_postgres() {
        let url = std::env::var("LATCHKEY_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let store = Store::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {url} is required for this test: {e}"));
        suite(&store).await;
    }
}
