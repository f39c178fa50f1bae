//! Gateway sessions shared by replicas (`gateway_sessions`): sealed rows, compare-and-set
//! on a version, a refresh lease. The gateway seals and opens; this module never sees a
//! token in clear.

use sqlx::Row as _;

use crate::{Store, StoreResult};

/// One session row.
#[derive(Clone, PartialEq, Eq)]
pub struct GatewaySessionRow {
    /// SHA-256 of the session id, hex.
    pub id_hash: String,
    /// The session, sealed by the gateway.
    pub sealed: Vec<u8>,
    pub version: i64,
    pub created_secs: i64,
    pub last_seen_secs: i64,
}

impl std::fmt::Debug for GatewaySessionRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewaySessionRow")
            .field("version", &self.version)
            .field("created_secs", &self.created_secs)
            .field("last_seen_secs", &self.last_seen_secs)
            .finish_non_exhaustive()
    }
}

/// What a replica checks when its copy of a session is older than its cache time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewaySessionStamp {
    pub version: i64,
    pub last_seen_secs: i64,
}

impl Store {
    pub async fn find_gateway_session(
        &self,
        id_hash: &str,
    ) -> StoreResult<Option<GatewaySessionRow>> {
        let row = sqlx::query(
            "SELECT id_hash, sealed, version, created_secs, last_seen_secs FROM gateway_sessions WHERE id_hash = $1",
        )
        .bind(id_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(GatewaySessionRow {
                id_hash: r.try_get(0)?,
                sealed: r.try_get(1)?,
                version: r.try_get(2)?,
                created_secs: r.try_get(3)?,
                last_seen_secs: r.try_get(4)?,
            })
        })
        .transpose()
    }

    /// The version and last use of a session, without its sealed value.
    pub async fn gateway_session_stamp(
        &self,
        id_hash: &str,
    ) -> StoreResult<Option<GatewaySessionStamp>> {
        let row =
            sqlx::query("SELECT version, last_seen_secs FROM gateway_sessions WHERE id_hash = $1")
                .bind(id_hash)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| {
            Ok(GatewaySessionStamp {
                version: r.try_get(0)?,
                last_seen_secs: r.try_get(1)?,
            })
        })
        .transpose()
    }

    pub async fn insert_gateway_session(&self, row: &GatewaySessionRow) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO gateway_sessions (id_hash, sealed, version, created_secs, last_seen_secs) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&row.id_hash)
        .bind(&row.sealed)
        .bind(row.version)
        .bind(row.created_secs)
        .bind(row.last_seen_secs)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Store a new sealed value (`row.version`) if the row still has `expected` version;
    /// releases the refresh lease. `false`: changed or gone.
    pub async fn replace_gateway_session(
        &self,
        row: &GatewaySessionRow,
        expected: i64,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE gateway_sessions SET sealed = $1, version = $2, last_seen_secs = $3, refresh_until_ms = NULL \
             WHERE id_hash = $4 AND version = $5",
        )
        .bind(&row.sealed)
        .bind(row.version)
        .bind(row.last_seen_secs)
        .bind(&row.id_hash)
        .bind(expected)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Record a use (never moves `last_seen_secs` back).
    pub async fn touch_gateway_session(
        &self,
        id_hash: &str,
        last_seen_secs: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE gateway_sessions SET last_seen_secs = $1 WHERE id_hash = $2 AND last_seen_secs < $1",
        )
        .bind(last_seen_secs)
        .bind(id_hash)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Take the refresh lease of version `version` until `until_ms`, unless another
    /// replica holds it (or the version moved on). `true`: this caller refreshes.
    pub async fn lease_gateway_session_refresh(
        &self,
        id_hash: &str,
        version: i64,
        now_ms: i64,
        until_ms: i64,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE gateway_sessions SET refresh_until_ms = $1 WHERE id_hash = $2 AND version = $3 \
             AND (refresh_until_ms IS NULL OR refresh_until_ms < $4)",
        )
        .bind(until_ms)
        .bind(id_hash)
        .bind(version)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn delete_gateway_session(&self, id_hash: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM gateway_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Delete sessions past their timeouts; how many.
    pub async fn purge_gateway_sessions(
        &self,
        created_before: i64,
        seen_before: i64,
    ) -> StoreResult<u64> {
        let done = sqlx::query(
            "DELETE FROM gateway_sessions WHERE created_secs < $1 OR last_seen_secs < $2",
        )
        .bind(created_before)
        .bind(seen_before)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
