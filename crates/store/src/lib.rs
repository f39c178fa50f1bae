//! Latchkey's storage: one [`Store`] over SQLite (the embedded default) and PostgreSQL
//! (several replicas sharing one database). Both backends run the same SQL through sqlx's
//! `Any` driver; each has its own migration directory, applied at start.
//!
//! Secrets never reach this crate in the clear: columns named `*_envelope` hold envelopes
//! sealed by `latchkey_core::crypto`.

use std::str::FromStr;
use std::time::Duration;

use latchkey_core::ApiError;
use records::FromRow;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Row};

mod audit;
mod gateway_sessions;
mod keks;
mod records;
mod rewrap;
#[cfg(feature = "testing")]
pub mod testing;
mod vault;
pub use audit::AuditChain;
pub use gateway_sessions::{GatewaySessionRow, GatewaySessionStamp};
pub use keks::WrappedKekRecord;
pub use records::*;
pub use rewrap::*;
pub use vault::*;

/// Storage failures, mapped onto API errors by [`From<StoreError> for ApiError`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    Conflict,
    /// The database can't be reached right now (retry-safe).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::RowNotFound => Self::NotFound,
            sqlx::Error::Database(db) if db.is_unique_violation() => Self::Conflict,
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_) => Self::Unavailable(e.to_string()),
            _ => Self::Database(e.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::NotFound("resource not found".into()),
            StoreError::Conflict => {
                ApiError::Conflict("a resource with this name already exists".into())
            }
            StoreError::Unavailable(m) => ApiError::unavailable(m),
            StoreError::Database(m) => ApiError::internal(m),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The most events one audit block holds.
pub const AUDIT_BLOCK_MAX: usize = 1024;

/// Which database is behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl Store {
    /// Connect (`sqlite://PATH` or `postgres://…`) and apply migrations.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let store = Self::open(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Connect to a database where Latchkey's tables already exist, creating nothing:
    /// `None` when there are none (no SQLite file at the URL's path, or a database without
    /// Latchkey's migrations table). Migrations a newer binary brings are applied, as
    /// [`Store::connect`] does.
    pub async fn connect_existing(url: &str) -> StoreResult<Option<Self>> {
        if url.starts_with("sqlite:") {
            let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)
                .map_err(|e| StoreError::Database(format!("invalid database URL: {e}")))?;
            // `mode=rwc` would create the file: a missing one is no installation.
            if !options.get_filename().is_file() {
                return Ok(None);
            }
        }
        let store = Self::open(url).await?;
        if !store.has_migrations_table().await? {
            store.close().await;
            return Ok(None);
        }
        store.migrate().await?;
        Ok(Some(store))
    }

    /// Whether sqlx's migrations table exists (Latchkey set this database up).
    async fn has_migrations_table(&self) -> StoreResult<bool> {
        let sql = match self.backend {
            Backend::Sqlite => {
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"
            }
            Backend::Postgres => {
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = '_sqlx_migrations'"
            }
        };
        let count: i64 = sqlx::query(sql).fetch_one(&self.pool).await?.try_get(0)?;
        Ok(count > 0)
    }

    async fn migrate(&self) -> StoreResult<()> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Database(format!("migration failed: {e}")))
    }

    /// The connection pool, without migrations.
    async fn open(url: &str) -> StoreResult<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::Database(
                "database URL must start with sqlite: or postgres://".into(),
            ));
        };
        let options = AnyConnectOptions::from_str(url)
            .map_err(|e| StoreError::Database(format!("invalid database URL: {e}")))?;
        let mut pool_options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(3));
        pool_options = match backend {
            Backend::Sqlite => pool_options.max_connections(8).after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query("PRAGMA journal_mode=WAL")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA busy_timeout=5000")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA synchronous=NORMAL")
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            }),
            Backend::Postgres => pool_options.max_connections(16),
        };
        let pool = pool_options
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(Self { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Close every connection (at shutdown; tests use it to simulate an outage).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// `SELECT 1`, for health checks.
    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    // ---------------------------------------------------------------- credentials

    pub async fn create_credential(&self, c: &CredentialRecord) -> StoreResult<()> {
        sqlx::query("INSERT INTO credentials (access_key_id, role, secret_envelope, description, created_ms, revoked_ms) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&c.access_key_id)
            .bind(&c.role)
            .bind(&c.secret_envelope)
            .bind(&c.description)
            .bind(c.created_ms)
            .bind(c.revoked_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn find_credential(
        &self,
        access_key_id: &str,
    ) -> StoreResult<Option<CredentialRecord>> {
        self.fetch_optional("SELECT access_key_id, role, secret_envelope, description, created_ms, revoked_ms FROM credentials WHERE access_key_id = $1", access_key_id).await
    }

    pub async fn list_credentials(&self) -> StoreResult<Vec<CredentialRecord>> {
        self.fetch_all("SELECT access_key_id, role, secret_envelope, description, created_ms, revoked_ms FROM credentials ORDER BY created_ms, access_key_id").await
    }

    /// Marks a credential revoked. `NotFound` if it doesn't exist or is already revoked.
    pub async fn revoke_credential(&self, access_key_id: &str, now_ms: i64) -> StoreResult<()> {
        let update = sqlx::query("UPDATE credentials SET revoked_ms = $1 WHERE access_key_id = $2 AND revoked_ms IS NULL")
            .bind(now_ms)
            .bind(access_key_id);
        self.execute_found(update).await
    }

    // ---------------------------------------------------------- workload identities

    pub async fn create_workload(
        &self,
        w: &WorkloadRecord,
        tags: &[(String, String)],
        arn: &str,
    ) -> StoreResult<()> {
        let insert = sqlx::query("INSERT INTO workload_identities (name, return_urls, created_ms, updated_ms) VALUES ($1, $2, $3, $4)")
            .bind(&w.name)
            .bind(json_list(&w.return_urls))
            .bind(w.created_ms)
            .bind(w.updated_ms);
        self.create_tagged(insert, arn, tags).await
    }

    pub async fn find_workload(&self, name: &str) -> StoreResult<Option<WorkloadRecord>> {
        self.fetch_optional("SELECT name, return_urls, created_ms, updated_ms FROM workload_identities WHERE name = $1", name).await
    }

    pub async fn update_workload(
        &self,
        name: &str,
        return_urls: &[String],
        now_ms: i64,
    ) -> StoreResult<WorkloadRecord> {
        let update = sqlx::query(
            "UPDATE workload_identities SET return_urls = $1, updated_ms = $2 WHERE name = $3",
        )
        .bind(json_list(return_urls))
        .bind(now_ms)
        .bind(name);
        self.execute_found(update).await?;
        self.find_workload(name).await?.ok_or(StoreError::NotFound)
    }

    pub async fn delete_workload(&self, name: &str, arn: &str) -> StoreResult<()> {
        self.delete_named("workload_identities", name, arn).await
    }

    /// Names in order, strictly after `after`, at most `limit`.
    pub async fn list_workloads(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<WorkloadRecord>> {
        self.fetch_page("SELECT name, return_urls, created_ms, updated_ms FROM workload_identities WHERE name > $1 ORDER BY name LIMIT $2", after, limit).await
    }

    // ------------------------------------------------------------ oauth2 providers

    pub async fn create_oauth2_provider(
        &self,
        p: &Oauth2ProviderRecord,
        tags: &[(String, String)],
        arn: &str,
    ) -> StoreResult<()> {
        let insert = sqlx::query("INSERT INTO oauth2_providers (name, vendor, config, secret_envelope, callback_id, created_ms, updated_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(&p.name)
            .bind(&p.vendor)
            .bind(p.config.to_string())
            .bind(&p.secret_envelope)
            .bind(&p.callback_id)
            .bind(p.created_ms)
            .bind(p.updated_ms);
        self.create_tagged(insert, arn, tags).await
    }

    pub async fn find_oauth2_provider(
        &self,
        name: &str,
    ) -> StoreResult<Option<Oauth2ProviderRecord>> {
        self.fetch_optional("SELECT name, vendor, config, secret_envelope, callback_id, created_ms, updated_ms FROM oauth2_providers WHERE name = $1", name).await
    }

    pub async fn find_oauth2_provider_by_callback(
        &self,
        callback_id: &str,
    ) -> StoreResult<Option<Oauth2ProviderRecord>> {
        self.fetch_optional("SELECT name, vendor, config, secret_envelope, callback_id, created_ms, updated_ms FROM oauth2_providers WHERE callback_id = $1", callback_id).await
    }

    /// Replaces vendor, config and secret; keeps the callback id and creation time.
    pub async fn update_oauth2_provider(&self, p: &Oauth2ProviderRecord) -> StoreResult<()> {
        let update = sqlx::query("UPDATE oauth2_providers SET vendor = $1, config = $2, secret_envelope = $3, updated_ms = $4 WHERE name = $5")
            .bind(&p.vendor)
            .bind(p.config.to_string())
            .bind(&p.secret_envelope)
            .bind(p.updated_ms)
            .bind(&p.name);
        self.execute_found(update).await
    }

    pub async fn delete_oauth2_provider(&self, name: &str, arn: &str) -> StoreResult<()> {
        self.delete_named("oauth2_providers", name, arn).await
    }

    pub async fn list_oauth2_providers(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<Oauth2ProviderRecord>> {
        self.fetch_page("SELECT name, vendor, config, secret_envelope, callback_id, created_ms, updated_ms FROM oauth2_providers WHERE name > $1 ORDER BY name LIMIT $2", after, limit).await
    }

    // ----------------------------------------------------------- api key providers

    pub async fn create_api_key_provider(
        &self,
        p: &ApiKeyProviderRecord,
        tags: &[(String, String)],
        arn: &str,
    ) -> StoreResult<()> {
        let insert = sqlx::query("INSERT INTO api_key_providers (name, secret_envelope, created_ms, updated_ms) VALUES ($1, $2, $3, $4)")
            .bind(&p.name)
            .bind(&p.secret_envelope)
            .bind(p.created_ms)
            .bind(p.updated_ms);
        self.create_tagged(insert, arn, tags).await
    }

    pub async fn find_api_key_provider(
        &self,
        name: &str,
    ) -> StoreResult<Option<ApiKeyProviderRecord>> {
        self.fetch_optional("SELECT name, secret_envelope, created_ms, updated_ms FROM api_key_providers WHERE name = $1", name).await
    }

    pub async fn update_api_key_provider(&self, p: &ApiKeyProviderRecord) -> StoreResult<()> {
        let update = sqlx::query(
            "UPDATE api_key_providers SET secret_envelope = $1, updated_ms = $2 WHERE name = $3",
        )
        .bind(&p.secret_envelope)
        .bind(p.updated_ms)
        .bind(&p.name);
        self.execute_found(update).await
    }

    pub async fn delete_api_key_provider(&self, name: &str, arn: &str) -> StoreResult<()> {
        self.delete_named("api_key_providers", name, arn).await
    }

    pub async fn list_api_key_providers(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<ApiKeyProviderRecord>> {
        self.fetch_page("SELECT name, secret_envelope, created_ms, updated_ms FROM api_key_providers WHERE name > $1 ORDER BY name LIMIT $2", after, limit).await
    }

    async fn delete_named(&self, table: &'static str, name: &str, arn: &str) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE name = $1"
        )))
        .bind(name)
        .execute(&mut *tx)
        .await?;
        found(done)?;
        // A deleted workload or provider takes its grants and sessions with it.
        let owner = match table {
            "workload_identities" => Some("workload"),
            "oauth2_providers" => Some("provider"),
            _ => None,
        };
        if let Some(column) = owner {
            for dependent in ["grants", "auth_sessions"] {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM {dependent} WHERE {column} = $1"
                )))
                .bind(name)
                .execute(&mut *tx)
                .await?;
            }
        }
        sqlx::query("DELETE FROM tags WHERE resource_arn = $1")
            .bind(arn)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    // ------------------------------------------------------------------------ tags

    pub async fn tag(&self, arn: &str, tags: &[(String, String)]) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        put_tags(&mut tx, arn, tags).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn untag(&self, arn: &str, keys: &[String]) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        for key in keys {
            sqlx::query("DELETE FROM tags WHERE resource_arn = $1 AND tag_key = $2")
                .bind(arn)
                .bind(key)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn list_tags(&self, arn: &str) -> StoreResult<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT tag_key, tag_value FROM tags WHERE resource_arn = $1 ORDER BY tag_key",
        )
        .bind(arn)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<String, _>(1)?)))
            .collect()
    }

    // ------------------------------------------------------------------ token vault

    pub async fn find_token_vault(&self, id: &str) -> StoreResult<Option<TokenVaultRecord>> {
        self.fetch_optional(
            "SELECT id, key_type, kms_key_arn, updated_ms FROM token_vaults WHERE id = $1",
            id,
        )
        .await
    }

    pub async fn upsert_token_vault(&self, v: &TokenVaultRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO token_vaults (id, key_type, kms_key_arn, updated_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET key_type = excluded.key_type, kms_key_arn = excluded.kms_key_arn, updated_ms = excluded.updated_ms",
        )
        .bind(&v.id)
        .bind(&v.key_type)
        .bind(&v.kms_key_arn)
        .bind(v.updated_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    // ----------------------------------------------------------------- signing keys

    /// Inserts a key unless one with this kid exists.
    pub async fn create_signing_key(&self, k: &SigningKeyRecord) -> StoreResult<()> {
        sqlx::query("INSERT INTO signing_keys (kid, private_envelope, created_ms, retired_ms) VALUES ($1, $2, $3, $4)")
            .bind(&k.kid)
            .bind(&k.private_envelope)
            .bind(k.created_ms)
            .bind(k.retired_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// All keys not retired, newest first.
    pub async fn list_signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>> {
        let rows = sqlx::query("SELECT kid, private_envelope, created_ms, retired_ms FROM signing_keys WHERE retired_ms IS NULL ORDER BY created_ms DESC, kid")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(SigningKeyRecord {
                    kid: r.try_get(0)?,
                    private_envelope: r.try_get(1)?,
                    created_ms: r.try_get(2)?,
                    retired_ms: r.try_get(3)?,
                })
            })
            .collect()
    }
}

/// A query on the `Any` driver.
pub(crate) type AnyQuery<'q> =
    sqlx::query::Query<'q, sqlx::Any, <sqlx::Any as sqlx::Database>::Arguments>;

impl Store {
    /// The record `sql` selects by its one parameter `$1`, if any.
    async fn fetch_optional<R: FromRow>(
        &self,
        sql: &'static str,
        key: &str,
    ) -> StoreResult<Option<R>> {
        let row = sqlx::query(sql)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| R::from_row(&r)).transpose()
    }

    /// The records `sql` selects, with no parameter.
    async fn fetch_all<R: FromRow>(&self, sql: &'static str) -> StoreResult<Vec<R>> {
        let rows = sqlx::query(sql).fetch_all(&self.pool).await?;
        rows.iter().map(R::from_row).collect()
    }

    /// A page of records: `sql` takes the name to start after (`$1`) and the limit (`$2`).
    async fn fetch_page<R: FromRow>(
        &self,
        sql: &'static str,
        after: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<R>> {
        let rows = sqlx::query(sql)
            .bind(after.unwrap_or(""))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(R::from_row).collect()
    }

    /// Runs an `UPDATE` or `DELETE` by key: `NotFound` when it touched no row.
    pub(crate) async fn execute_found(&self, query: AnyQuery<'_>) -> StoreResult<()> {
        found(query.execute(&self.pool).await?)
    }

    /// Runs `insert` and stores the new resource's tags, in one transaction.
    async fn create_tagged(
        &self,
        insert: AnyQuery<'_>,
        arn: &str,
        tags: &[(String, String)],
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        insert.execute(&mut *tx).await?;
        put_tags(&mut tx, arn, tags).await?;
        tx.commit().await?;
        Ok(())
    }
}

async fn put_tags(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    arn: &str,
    tags: &[(String, String)],
) -> StoreResult<()> {
    for (k, v) in tags {
        sqlx::query(
            "INSERT INTO tags (resource_arn, tag_key, tag_value) VALUES ($1, $2, $3) \
             ON CONFLICT (resource_arn, tag_key) DO UPDATE SET tag_value = excluded.tag_value",
        )
        .bind(arn)
        .bind(k)
        .bind(v)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// An UPDATE/DELETE by key that touched no row means the row does not exist.
pub(crate) fn found(done: sqlx::any::AnyQueryResult) -> StoreResult<()> {
    if done.rows_affected() == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}

pub(crate) fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".into())
}
