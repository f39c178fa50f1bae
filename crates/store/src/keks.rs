//! Key-encryption keys wrapped by a KMS (`key_encryption_keys`): the rows only, never a
//! plaintext key. The KMS key provider (`latchkey-kms`) unwraps them.

use sqlx::Row as _;

use crate::{Store, StoreResult};

/// One key-encryption key as stored: KMS's ciphertext of it.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedKekRecord {
    pub id: String,
    /// The active key is the one with the highest generation.
    pub generation: i64,
    /// KMS `CiphertextBlob`.
    pub wrapped: Vec<u8>,
    /// The KMS key that wrapped it (its ARN as KMS answered).
    pub kms_key_arn: String,
    pub created_ms: i64,
}

impl std::fmt::Debug for WrappedKekRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WrappedKekRecord")
            .field("id", &self.id)
            .field("generation", &self.generation)
            .field("wrapped_len", &self.wrapped.len())
            .field("kms_key_arn", &self.kms_key_arn)
            .finish()
    }
}

impl Store {
    /// Every wrapped key, lowest generation first.
    pub async fn list_wrapped_keks(&self) -> StoreResult<Vec<WrappedKekRecord>> {
        let rows = sqlx::query(
            "SELECT id, generation, wrapped, kms_key_arn, created_ms FROM key_encryption_keys ORDER BY generation",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(WrappedKekRecord {
                    id: r.try_get(0)?,
                    generation: r.try_get(1)?,
                    wrapped: r.try_get(2)?,
                    kms_key_arn: r.try_get(3)?,
                    created_ms: r.try_get(4)?,
                })
            })
            .collect()
    }

    /// Insert a key unless its id or generation exists: `false` when another writer (a
    /// replica's first start, a concurrent rotation) took the generation first.
    pub async fn insert_wrapped_kek(&self, k: &WrappedKekRecord) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO key_encryption_keys (id, generation, wrapped, kms_key_arn, created_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(&k.id)
        .bind(k.generation)
        .bind(&k.wrapped)
        .bind(&k.kms_key_arn)
        .bind(k.created_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Replace a key's wrapping (the same key under another KMS key), compare-and-set on
    /// the old ciphertext. `false` when the row changed or is gone.
    pub async fn rewrap_kek(
        &self,
        id: &str,
        old: &[u8],
        wrapped: &[u8],
        kms_key_arn: &str,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE key_encryption_keys SET wrapped = $1, kms_key_arn = $2 WHERE id = $3 AND wrapped = $4",
        )
        .bind(wrapped)
        .bind(kms_key_arn)
        .bind(id)
        .bind(old)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Remove a key no envelope uses any more (never the active one: the caller checks).
    pub async fn delete_wrapped_kek(&self, id: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM key_encryption_keys WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Whether any wrapped key exists (a database set up with the KMS provider).
    pub async fn has_wrapped_keks(&self) -> StoreResult<bool> {
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM key_encryption_keys")
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        Ok(n > 0)
    }
}

impl Store {
    /// Delete every grant (its tokens): `ResetTokenVaultKeyMaterial`. Returns how many.
    pub async fn delete_all_grants(&self) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM grants")
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
