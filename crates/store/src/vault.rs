//! Authorization sessions and the token vault.
//!
//! Every state change of a session is a compare-and-set on its `status`, so a callback or a
//! completion happens at most once however many requests race, and nothing moves a session
//! that another request has claimed: a session being exchanged (EXCHANGING) leaves that
//! state only through its own exchange, which stores the grant and marks the session
//! COMPLETED in one transaction ([`Store::complete_session`]). A grant's refresh is guarded
//! by a lease (`lease_owner`, `lease_until_ms`) and fenced by `version`: whoever holds the
//! lease writes only while the version is the one its lease produced, so a replica that
//! lost its lease (paused, partitioned, killed) can never overwrite a newer grant.

use latchkey_core::UserPrincipal;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::records::FromRow;
use crate::{Store, StoreError, StoreResult, found, json_list};

/// Where an authorization session is in the flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStatus {
    /// Created; the user has not come back from the provider yet.
    Pending,
    /// The provider redirected back with a code; waiting for `CompleteResourceTokenAuth`.
    Callback,
    /// The binding was accepted and the code is being exchanged.
    Exchanging,
    Completed,
    Failed,
}

impl SessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Callback => "CALLBACK",
            Self::Exchanging => "EXCHANGING",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
        }
    }

    fn parse(s: &str) -> StoreResult<Self> {
        Ok(match s {
            "PENDING" => Self::Pending,
            "CALLBACK" => Self::Callback,
            "EXCHANGING" => Self::Exchanging,
            "COMPLETED" => Self::Completed,
            "FAILED" => Self::Failed,
            other => {
                return Err(StoreError::Database(format!(
                    "corrupt session status {other:?}"
                )));
            }
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The random part of the `sessionUri`.
    pub id: String,
    /// Hex SHA-256 of the OAuth `state` sent to the provider.
    pub state_hash: String,
    pub workload: String,
    /// The user who started the session; only the same user (kind, issuer, subject) may
    /// complete it.
    pub user: UserPrincipal,
    pub provider: String,
    /// Non-secret request facts (JSON: scopes, resources, audiences, return URL…).
    pub request: serde_json::Value,
    /// PKCE verifier, custom state and custom parameters, sealed together.
    pub secrets_envelope: Vec<u8>,
    pub code_envelope: Option<Vec<u8>>,
    pub status: SessionStatus,
    pub failure: Option<String>,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub updated_ms: i64,
}

const SESSION_COLUMNS: &str = "id, state_hash, workload, user_id, provider, request, secrets_envelope, code_envelope, status, failure, created_ms, expires_ms, updated_ms, user_kind, user_issuer";

/// A user from its stored columns (`user_kind`, `user_issuer`, `user_id`).
fn user_columns(
    r: &AnyRow,
    kind: usize,
    issuer: usize,
    subject: usize,
) -> StoreResult<UserPrincipal> {
    let k: String = r.try_get(kind)?;
    let i: String = r.try_get(issuer)?;
    let s: String = r.try_get(subject)?;
    UserPrincipal::from_parts(&k, &i, &s)
        .map_err(|e| StoreError::Database(format!("corrupt user columns: {e}")))
}

impl FromRow for SessionRecord {
    fn from_row(r: &AnyRow) -> StoreResult<Self> {
        let request: String = r.try_get(5)?;
        let status: String = r.try_get(8)?;
        Ok(Self {
            id: r.try_get(0)?,
            state_hash: r.try_get(1)?,
            workload: r.try_get(2)?,
            user: user_columns(r, 13, 14, 3)?,
            provider: r.try_get(4)?,
            request: serde_json::from_str(&request)
                .map_err(|e| StoreError::Database(format!("corrupt session request: {e}")))?,
            secrets_envelope: r.try_get(6)?,
            code_envelope: r.try_get(7)?,
            status: SessionStatus::parse(&status)?,
            failure: r.try_get(9)?,
            created_ms: r.try_get(10)?,
            expires_ms: r.try_get(11)?,
            updated_ms: r.try_get(12)?,
        })
    }
}

/// The key of a grant: the user is the whole principal (kind, issuer, subject), so the
/// same `sub` at two inbound issuers, or as an asserted user id, are separate grants.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GrantKey {
    pub workload: String,
    pub user: UserPrincipal,
    pub provider: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRecord {
    pub key: GrantKey,
    pub scopes: Vec<String>,
    pub resources: Vec<String>,
    pub token_type: String,
    pub access_envelope: Vec<u8>,
    pub refresh_envelope: Option<Vec<u8>>,
    pub expires_ms: i64,
    /// The provider refused the refresh token: the next request asks the user again.
    pub needs_consent: bool,
    pub version: i64,
    pub lease_owner: Option<String>,
    pub lease_until_ms: Option<i64>,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// The user's last consent (`None`: stored before migration 0007).
    pub consented_ms: Option<i64>,
    /// The vault's last refresh (`None`: never refreshed).
    pub refreshed_ms: Option<i64>,
    /// The last time a workload received the token, to the minute (`None`: never).
    pub last_used_ms: Option<i64>,
}

const GRANT_COLUMNS: &str = "workload, user_id, provider, scopes, resources, token_type, access_envelope, refresh_envelope, expires_ms, needs_consent, version, lease_owner, lease_until_ms, created_ms, updated_ms, user_kind, user_issuer, consented_ms, refreshed_ms, last_used_ms";

/// A used grant's `last_used_ms` is written at most this often.
pub const LAST_USED_GRANULARITY_MS: i64 = 60_000;

/// `WHERE` over a grant's primary key, parameters `$first` … `$first+4`.
fn grant_key_equals(first: usize) -> String {
    format!(
        "workload = ${} AND user_kind = ${} AND user_issuer = ${} AND user_id = ${} AND provider = ${}",
        first,
        first + 1,
        first + 2,
        first + 3,
        first + 4
    )
}

/// Bind a grant key in [`grant_key_equals`] order.
fn bind_key<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    key: &'q GrantKey,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    q.bind(key.workload.as_str())
        .bind(key.user.kind().as_str())
        .bind(key.user.stored_issuer())
        .bind(key.user.subject())
        .bind(key.provider.as_str())
}

fn list_column(r: &AnyRow, i: usize, what: &str) -> StoreResult<Vec<String>> {
    let s: String = r.try_get(i)?;
    serde_json::from_str(&s).map_err(|e| StoreError::Database(format!("corrupt {what}: {e}")))
}

impl FromRow for GrantRecord {
    fn from_row(r: &AnyRow) -> StoreResult<Self> {
        Ok(Self {
            key: GrantKey {
                workload: r.try_get(0)?,
                user: user_columns(r, 15, 16, 1)?,
                provider: r.try_get(2)?,
            },
            scopes: list_column(r, 3, "grant scopes")?,
            resources: list_column(r, 4, "grant resources")?,
            token_type: r.try_get(5)?,
            access_envelope: r.try_get(6)?,
            refresh_envelope: r.try_get(7)?,
            expires_ms: r.try_get(8)?,
            needs_consent: r.try_get::<i64, _>(9)? != 0,
            version: r.try_get(10)?,
            lease_owner: r.try_get(11)?,
            lease_until_ms: r.try_get(12)?,
            created_ms: r.try_get(13)?,
            updated_ms: r.try_get(14)?,
            consented_ms: r.try_get(17)?,
            refreshed_ms: r.try_get(18)?,
            last_used_ms: r.try_get(19)?,
        })
    }
}

/// The secret part of a grant, as written after a code exchange or a refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantTokens {
    pub scopes: Vec<String>,
    pub resources: Vec<String>,
    pub token_type: String,
    pub access_envelope: Vec<u8>,
    pub refresh_envelope: Option<Vec<u8>>,
    pub expires_ms: i64,
}

impl Store {
    // --------------------------------------------------------------- sessions

    pub async fn create_session(&self, s: &SessionRecord) -> StoreResult<()> {
        sqlx::query(sqlx::AssertSqlSafe(format!("INSERT INTO auth_sessions ({SESSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)")))
            .bind(&s.id)
            .bind(&s.state_hash)
            .bind(&s.workload)
            .bind(s.user.subject())
            .bind(&s.provider)
            .bind(s.request.to_string())
            .bind(&s.secrets_envelope)
            .bind(&s.code_envelope)
            .bind(s.status.as_str())
            .bind(&s.failure)
            .bind(s.created_ms)
            .bind(s.expires_ms)
            .bind(s.updated_ms)
            .bind(s.user.kind().as_str())
            .bind(s.user.stored_issuer())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn find_session(&self, id: &str) -> StoreResult<Option<SessionRecord>> {
        self.find_session_by("id", id).await
    }

    pub async fn find_session_by_state(
        &self,
        state_hash: &str,
    ) -> StoreResult<Option<SessionRecord>> {
        self.find_session_by("state_hash", state_hash).await
    }

    /// The session whose one-time completion URN hashes to `completion_hash` (set at the
    /// callback by [`Store::receive_callback`]; a session before its callback has none).
    pub async fn find_session_by_completion(
        &self,
        completion_hash: &str,
    ) -> StoreResult<Option<SessionRecord>> {
        self.find_session_by("completion_hash", completion_hash)
            .await
    }

    async fn find_session_by(
        &self,
        column: &'static str,
        value: &str,
    ) -> StoreResult<Option<SessionRecord>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS} FROM auth_sessions WHERE {column} = $1"
        )))
        .bind(value)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| SessionRecord::from_row(&r)).transpose()
    }

    /// Move a session from `from` to `to` (optionally storing the code or a failure), only
    /// if it is still in `from`. `NotFound` when another request moved it first.
    pub async fn transition_session(
        &self,
        id: &str,
        from: SessionStatus,
        to: SessionStatus,
        code_envelope: Option<&[u8]>,
        failure: Option<&str>,
        now_ms: i64,
    ) -> StoreResult<()> {
        let update = sqlx::query("UPDATE auth_sessions SET status = $1, code_envelope = COALESCE($2, code_envelope), failure = COALESCE($3, failure), updated_ms = $4 WHERE id = $5 AND status = $6")
            .bind(to.as_str())
            .bind(code_envelope)
            .bind(failure)
            .bind(now_ms)
            .bind(id)
            .bind(from.as_str());
        self.execute_found(update).await
    }

    /// PENDING → CALLBACK: keep the code (sealed) and the SHA-256 of the one-time completion
    /// URN issued to the browser. `NotFound` when another request moved the session first.
    pub async fn receive_callback(
        &self,
        id: &str,
        code_envelope: &[u8],
        completion_hash: &str,
        now_ms: i64,
    ) -> StoreResult<()> {
        let update = sqlx::query("UPDATE auth_sessions SET status = 'CALLBACK', code_envelope = $1, completion_hash = $2, updated_ms = $3 WHERE id = $4 AND status = 'PENDING'")
            .bind(code_envelope)
            .bind(completion_hash)
            .bind(now_ms)
            .bind(id);
        self.execute_found(update).await
    }

    /// Fail a session that is still in `from` (the code is dropped). `NotFound` when
    /// another request moved it first: a session being exchanged or completed is never
    /// failed from outside its own exchange.
    pub async fn fail_session(
        &self,
        id: &str,
        from: SessionStatus,
        failure: &str,
        now_ms: i64,
    ) -> StoreResult<()> {
        if matches!(from, SessionStatus::Completed | SessionStatus::Failed) {
            return Err(StoreError::NotFound);
        }
        let update = sqlx::query("UPDATE auth_sessions SET status = 'FAILED', code_envelope = NULL, failure = $1, updated_ms = $2 WHERE id = $3 AND status = $4")
            .bind(failure)
            .bind(now_ms)
            .bind(id)
            .bind(from.as_str());
        self.execute_found(update).await
    }

    /// EXCHANGING → COMPLETED and the grant stored, in one transaction: either both
    /// happen or neither. `NotFound` (and nothing stored) when the session is not
    /// EXCHANGING any more.
    pub async fn complete_session(
        &self,
        id: &str,
        key: &GrantKey,
        t: &GrantTokens,
        now_ms: i64,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("UPDATE auth_sessions SET status = 'COMPLETED', code_envelope = NULL, updated_ms = $1 WHERE id = $2 AND status = 'EXCHANGING'")
            .bind(now_ms)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() != 1 {
            tx.rollback().await?;
            return Err(StoreError::NotFound);
        }
        insert_grant(GRANT_REPLACE, key, t, now_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Delete sessions that expired before `before_ms`; returns how many.
    pub async fn purge_sessions(&self, before_ms: i64) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM auth_sessions WHERE expires_ms < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    // ----------------------------------------------------------------- grants

    pub async fn find_grant(&self, key: &GrantKey) -> StoreResult<Option<GrantRecord>> {
        let row = bind_key(
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {GRANT_COLUMNS} FROM grants WHERE {}",
                grant_key_equals(1)
            ))),
            key,
        )
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| GrantRecord::from_row(&r)).transpose()
    }

    /// Store the tokens of a completed consent, replacing any previous grant of the same
    /// key (and any lease on it: a fresh consent supersedes a refresh in flight).
    pub async fn put_grant(&self, key: &GrantKey, t: &GrantTokens, now_ms: i64) -> StoreResult<()> {
        insert_grant(GRANT_REPLACE, key, t, now_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Take the refresh lease of a grant last seen at `seen_version`, if nobody holds a
    /// live lease. Returns the fencing version on success, `None` when someone else
    /// changed the grant or holds the lease.
    pub async fn acquire_refresh_lease(
        &self,
        key: &GrantKey,
        seen_version: i64,
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> StoreResult<Option<i64>> {
        let sql = format!(
            "UPDATE grants SET lease_owner = $1, lease_until_ms = $2, version = version + 1 WHERE {} AND version = $8 AND (lease_until_ms IS NULL OR lease_until_ms < $9)",
            grant_key_equals(3)
        );
        let q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(owner)
            .bind(now_ms + lease_ms);
        let done = bind_key(q, key)
            .bind(seen_version)
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        Ok((done.rows_affected() == 1).then_some(seen_version + 1))
    }

    /// Write refreshed tokens under the lease that `fence` names and release it. `NotFound`
    /// when the lease was lost (the grant moved on without us).
    pub async fn finish_refresh(
        &self,
        key: &GrantKey,
        fence: i64,
        t: &GrantTokens,
        now_ms: i64,
    ) -> StoreResult<()> {
        let sql = format!(
            "UPDATE grants SET scopes = $1, resources = $2, token_type = $3, access_envelope = $4, refresh_envelope = $5, expires_ms = $6, needs_consent = 0, version = version + 1, lease_owner = NULL, lease_until_ms = NULL, updated_ms = $7, refreshed_ms = $7 WHERE {} AND version = $13",
            grant_key_equals(8)
        );
        let q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(json_list(&t.scopes))
            .bind(json_list(&t.resources))
            .bind(&t.token_type)
            .bind(&t.access_envelope)
            .bind(&t.refresh_envelope)
            .bind(t.expires_ms)
            .bind(now_ms);
        let done = bind_key(q, key).bind(fence).execute(&self.pool).await?;
        found(done)
    }

    /// Release the lease `fence` names without new tokens; with `needs_consent` the grant
    /// is marked as needing the user again (the provider refused the refresh token).
    pub async fn release_refresh(
        &self,
        key: &GrantKey,
        fence: i64,
        needs_consent: bool,
        now_ms: i64,
    ) -> StoreResult<()> {
        let sql = format!(
            "UPDATE grants SET needs_consent = CASE WHEN $1 = 1 THEN 1 ELSE needs_consent END, version = version + 1, lease_owner = NULL, lease_until_ms = NULL, updated_ms = $2 WHERE {} AND version = $8",
            grant_key_equals(3)
        );
        let q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(i64::from(needs_consent))
            .bind(now_ms);
        let done = bind_key(q, key).bind(fence).execute(&self.pool).await?;
        found(done)
    }

    pub async fn delete_grant(&self, key: &GrantKey) -> StoreResult<()> {
        let done = bind_key(
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM grants WHERE {}",
                grant_key_equals(1)
            ))),
            key,
        )
        .execute(&self.pool)
        .await?;
        found(done)
    }

    /// Record that a workload received `key`'s token at `now_ms`, unless that was already
    /// recorded less than [`LAST_USED_GRANULARITY_MS`] before (a vault hit writes at most
    /// once a minute per grant). Not a change of the grant: its version stays.
    pub async fn mark_grant_used(&self, key: &GrantKey, now_ms: i64) -> StoreResult<()> {
        let sql = format!(
            "UPDATE grants SET last_used_ms = $1 WHERE {} AND (last_used_ms IS NULL OR last_used_ms < $7)",
            grant_key_equals(2)
        );
        let q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now_ms);
        bind_key(q, key)
            .bind(now_ms - LAST_USED_GRANULARITY_MS)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every grant of one user (kind, issuer and subject: exactly this principal), in
    /// (workload, provider) order, at most `limit`.
    pub async fn user_grants(
        &self,
        user: &UserPrincipal,
        limit: i64,
    ) -> StoreResult<Vec<GrantRecord>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {GRANT_COLUMNS} FROM grants WHERE user_kind = $1 AND user_issuer = $2 AND user_id = $3 \
             ORDER BY workload, provider LIMIT $4"
        )))
        .bind(user.kind().as_str())
        .bind(user.stored_issuer())
        .bind(user.subject())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(GrantRecord::from_row).collect()
    }

    /// Grants in key order (workload, user kind, issuer, subject, provider), strictly after
    /// `after`, at most `limit`; optionally one workload's, or one subject's (in every
    /// namespace: the same subject at two issuers is listed twice, as two users).
    pub async fn list_grants(
        &self,
        workload: Option<&str>,
        user_id: Option<&str>,
        after: Option<&GrantKey>,
        limit: i64,
    ) -> StoreResult<Vec<GrantRecord>> {
        let (aw, ak, ai, au, ap) = after
            .map(|k| {
                (
                    k.workload.as_str(),
                    k.user.kind().as_str(),
                    k.user.stored_issuer(),
                    k.user.subject(),
                    k.provider.as_str(),
                )
            })
            .unwrap_or(("", "", "", "", ""));
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {GRANT_COLUMNS} FROM grants \
             WHERE ($1 = '' OR workload = $1) AND ($2 = '' OR user_id = $2) \
             AND (workload > $3 OR (workload = $3 AND (user_kind > $4 OR (user_kind = $4 AND (user_issuer > $5 OR (user_issuer = $5 AND (user_id > $6 OR (user_id = $6 AND provider > $7)))))))) \
             ORDER BY workload, user_kind, user_issuer, user_id, provider LIMIT $8"
        )))
        .bind(workload.unwrap_or(""))
        .bind(user_id.unwrap_or(""))
        .bind(aw)
        .bind(ak)
        .bind(ai)
        .bind(au)
        .bind(ap)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(GrantRecord::from_row).collect()
    }

    /// Insert many grants at once (the benchmark's seeding command); existing keys are kept.
    pub async fn seed_grants(
        &self,
        grants: &[(GrantKey, GrantTokens)],
        now_ms: i64,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        for (key, t) in grants {
            insert_grant(
                "ON CONFLICT (workload, user_kind, user_issuer, user_id, provider) DO NOTHING",
                key,
                t,
                now_ms,
            )
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// After a bulk load: fold SQLite's write-ahead log into the database (so the first
    /// requests afterwards don't pay for it) / refresh PostgreSQL's planner statistics.
    pub async fn after_bulk_load(&self) -> StoreResult<()> {
        let sql = match self.backend {
            crate::Backend::Sqlite => "PRAGMA wal_checkpoint(TRUNCATE)",
            crate::Backend::Postgres => "ANALYZE grants",
        };
        sqlx::query(sql).execute(&self.pool).await?;
        Ok(())
    }

    /// How many grants there are.
    pub async fn count_grants(&self) -> StoreResult<i64> {
        let row = sqlx::query("SELECT COUNT(*) FROM grants")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }
}

/// The conflict clause of a fresh consent: it replaces the grant of the same key (and any
/// lease on it: a fresh consent supersedes a refresh in flight).
const GRANT_REPLACE: &str = "ON CONFLICT (workload, user_kind, user_issuer, user_id, provider) DO UPDATE SET scopes = excluded.scopes, resources = excluded.resources, token_type = excluded.token_type, \
     access_envelope = excluded.access_envelope, refresh_envelope = excluded.refresh_envelope, expires_ms = excluded.expires_ms, needs_consent = 0, \
     version = grants.version + 1, lease_owner = NULL, lease_until_ms = NULL, updated_ms = excluded.updated_ms, consented_ms = excluded.consented_ms";

/// `INSERT` of a fresh grant (version 1, no lease) with the given conflict clause.
fn insert_grant<'q>(
    on_conflict: &'static str,
    key: &'q GrantKey,
    t: &'q GrantTokens,
    now_ms: i64,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO grants (workload, user_id, provider, scopes, resources, token_type, access_envelope, refresh_envelope, expires_ms, needs_consent, version, lease_owner, lease_until_ms, created_ms, updated_ms, user_kind, user_issuer, consented_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, 1, NULL, NULL, $10, $10, $11, $12, $10) {on_conflict}"
    )))
    .bind(key.workload.as_str())
    .bind(key.user.subject())
    .bind(key.provider.as_str())
    .bind(json_list(&t.scopes))
    .bind(json_list(&t.resources))
    .bind(t.token_type.as_str())
    .bind(t.access_envelope.as_slice())
    .bind(t.refresh_envelope.as_deref())
    .bind(t.expires_ms)
    .bind(now_ms)
    .bind(key.user.kind().as_str())
    .bind(key.user.stored_issuer())
}
