//! Audit blocks and their tamper-evident chain (the rules and the key are in
//! `latchkey_core::audit::chain`).
//!
//! Appends are serialised across processes and replicas: each append transaction first
//! updates the single `audit_lock` row (a row lock on PostgreSQL, the write lock on
//! SQLite), then reads the newest block and writes the next sequence numbers. Two writers
//! therefore never pick the same predecessor, and the sequence has no gaps; the primary key
//! on `seq` backs this up.
//!
//! The audit key is created by the first append that finds none (under the same lock, so
//! once across replicas), sealed under the key-encryption key; this crate only ever holds
//! it opened inside [`ChainKey`], which never gives the key out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use latchkey_core::audit::AuditEvent;
use latchkey_core::audit::chain::{
    BlockContent, ChainFault, ChainKey, ChainReport, FaultKind, GENESIS, HASH_LEN,
};
use latchkey_core::crypto::KeyProvider;
use sqlx::Row;

use crate::{AUDIT_BLOCK_MAX, Store, StoreError, StoreResult};

/// Blocks read per page when verifying or exporting.
const PAGE: i64 = 64;

/// A process's handle on the audit chain: the key-encryption keys that open the audit key,
/// the opened key, and what this process has seen (to notice blocks removed from the end
/// while it runs, which the rows themselves cannot show).
pub struct AuditChain {
    keys: Arc<dyn KeyProvider>,
    current: Mutex<Option<Arc<ChainKey>>>,
    last_seq: AtomicI64,
    broken: AtomicBool,
}

impl std::fmt::Debug for AuditChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditChain")
            .field("last_seq", &self.last_seq.load(Ordering::Relaxed))
            .field("broken", &self.is_broken())
            .finish_non_exhaustive()
    }
}

impl AuditChain {
    pub fn new(keys: Arc<dyn KeyProvider>) -> Self {
        Self {
            keys,
            current: Mutex::new(None),
            last_seq: AtomicI64::new(0),
            broken: AtomicBool::new(false),
        }
    }

    /// Whether this process found the chain broken (at start or while appending).
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }

    pub fn mark_broken(&self) {
        self.broken.store(true, Ordering::Relaxed);
    }

    fn current(&self) -> Option<Arc<ChainKey>> {
        self.current.lock().ok().and_then(|g| g.clone())
    }

    fn set_current(&self, key: Arc<ChainKey>) {
        if let Ok(mut g) = self.current.lock() {
            *g = Some(key);
        }
    }
}

/// One stored block.
struct BlockRow {
    seq: i64,
    first_time_ms: i64,
    last_time_ms: i64,
    event_count: i64,
    events: String,
    key_id: Option<String>,
    prev_hash: Option<Vec<u8>>,
    hash: Option<Vec<u8>>,
}

impl BlockRow {
    const COLUMNS: &'static str =
        "seq, first_time_ms, last_time_ms, event_count, events, key_id, prev_hash, hash";

    fn read(r: &sqlx::any::AnyRow) -> StoreResult<Self> {
        Ok(Self {
            seq: r.try_get(0)?,
            first_time_ms: r.try_get(1)?,
            last_time_ms: r.try_get(2)?,
            event_count: r.try_get(3)?,
            events: r.try_get(4)?,
            key_id: r.try_get(5)?,
            prev_hash: r.try_get(6)?,
            hash: r.try_get(7)?,
        })
    }

    fn content<'a>(&'a self, key_id: &'a str, prev_hash: &'a [u8]) -> BlockContent<'a> {
        BlockContent {
            key_id,
            prev_hash,
            first_time_ms: self.first_time_ms,
            last_time_ms: self.last_time_ms,
            event_count: self.event_count,
            events: &self.events,
        }
    }
}

fn crypto_error(what: &str, e: latchkey_core::crypto::CryptoError) -> StoreError {
    StoreError::Database(format!("{what}: {e} (is this the right key file?)"))
}

impl Store {
    /// Append events in order, as blocks of at most [`AUDIT_BLOCK_MAX`] events (one row
    /// each, the events as a JSON array), each chained to the one before (see the module
    /// doc). All of one call's blocks commit together.
    pub async fn append_audit(&self, chain: &AuditChain, events: &[AuditEvent]) -> StoreResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        // Take the append lock first: on SQLite this write makes the transaction the
        // writer before it reads the head.
        let locked = sqlx::query("UPDATE audit_lock SET appends = appends + 1 WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        if locked.rows_affected() == 0 {
            sqlx::query("INSERT INTO audit_lock (id, appends) VALUES (1, 1)")
                .execute(&mut *tx)
                .await?;
        }
        let head = sqlx::query("SELECT seq, hash FROM audit_blocks ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?;
        let (head_seq, head_hash): (i64, Option<Vec<u8>>) = match &head {
            Some(r) => (r.try_get(0)?, r.try_get(1)?),
            None => (0, None),
        };
        let seen = chain.last_seq.load(Ordering::Relaxed);
        if head_seq < seen {
            chain.mark_broken();
            tracing::error!(
                newest = head_seq,
                written = seen,
                "audit chain: blocks this process wrote are gone from the end of the chain (removed from the database)"
            );
        }
        let mut new_key = None;
        let key = match chain.current() {
            Some(k) => k,
            None => {
                let stored = sqlx::query(
                    "SELECT kid, key_envelope FROM audit_keys ORDER BY created_ms DESC, kid DESC LIMIT 1",
                )
                .fetch_optional(&mut *tx)
                .await?;
                let key = match stored {
                    Some(r) => {
                        let kid: String = r.try_get(0)?;
                        let envelope: Vec<u8> = r.try_get(1)?;
                        ChainKey::open(chain.keys.as_ref(), &kid, &envelope)
                            .await
                            .map_err(|e| crypto_error("cannot open the audit key", e))?
                    }
                    None => {
                        let (key, envelope) = ChainKey::create(chain.keys.as_ref(), head_seq + 1)
                            .await
                            .map_err(|e| crypto_error("cannot create the audit key", e))?;
                        sqlx::query(
                            "INSERT INTO audit_keys (kid, key_envelope, created_ms) VALUES ($1, $2, $3)",
                        )
                        .bind(key.kid())
                        .bind(&envelope)
                        .bind(events[0].time_ms)
                        .execute(&mut *tx)
                        .await?;
                        if head_hash.is_some() {
                            tracing::error!(
                                start = head_seq + 1,
                                "audit chain: chained blocks exist but no audit key does; a new chain starts here"
                            );
                        } else {
                            tracing::info!(
                                start = head_seq + 1,
                                "audit chain: new audit key; the chain starts here"
                            );
                        }
                        key
                    }
                };
                let key = Arc::new(key);
                new_key = Some(key.clone());
                key
            }
        };
        let mut seq = head_seq.max(key.start_seq() - 1);
        let mut prev: Vec<u8> = match head_hash {
            Some(h) if head_seq >= key.start_seq() => h,
            _ => GENESIS.to_vec(),
        };
        for block in events.chunks(AUDIT_BLOCK_MAX) {
            seq += 1;
            let first = block.iter().map(|e| e.time_ms).min().unwrap_or_default();
            let last = block.iter().map(|e| e.time_ms).max().unwrap_or_default();
            let json = serde_json::to_string(block)
                .map_err(|e| StoreError::Database(format!("cannot encode audit events: {e}")))?;
            let content = BlockContent {
                key_id: key.kid(),
                prev_hash: &prev,
                first_time_ms: first,
                last_time_ms: last,
                event_count: block.len() as i64,
                events: &json,
            };
            let hash = key.hash(&content, seq);
            sqlx::query(
                "INSERT INTO audit_blocks (seq, first_time_ms, last_time_ms, event_count, events, key_id, prev_hash, hash) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(seq)
            .bind(first)
            .bind(last)
            .bind(block.len() as i64)
            .bind(&json)
            .bind(key.kid())
            .bind(&prev)
            .bind(hash.to_vec())
            .execute(&mut *tx)
            .await?;
            prev = hash.to_vec();
        }
        tx.commit().await?;
        if let Some(k) = new_key {
            chain.set_current(k);
        }
        chain.last_seq.fetch_max(seq, Ordering::Relaxed);
        Ok(())
    }

    /// Open the newest audit key now (if one exists), so a wrong key file is noticed at
    /// start rather than at the first event.
    pub async fn load_audit_key(&self, chain: &AuditChain) -> StoreResult<()> {
        let stored = sqlx::query(
            "SELECT kid, key_envelope FROM audit_keys ORDER BY created_ms DESC, kid DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        if let Some(r) = stored {
            let kid: String = r.try_get(0)?;
            let envelope: Vec<u8> = r.try_get(1)?;
            let key = ChainKey::open(chain.keys.as_ref(), &kid, &envelope)
                .await
                .map_err(|e| crypto_error("cannot open the audit key", e))?;
            chain.set_current(Arc::new(key));
        }
        Ok(())
    }

    /// Check the chain: every block from its start, or only the newest `tail` blocks.
    /// Reports the first bad block and what happened to it ([`FaultKind`]). Storage errors
    /// are errors; a broken chain is a report with a fault.
    pub async fn verify_audit(
        &self,
        chain: &AuditChain,
        tail: Option<u64>,
    ) -> StoreResult<ChainReport> {
        let mut report = ChainReport::default();
        // Every audit key (normally one). A key that does not open is left out: blocks
        // that name it are reported.
        let mut keys: HashMap<String, Arc<ChainKey>> = HashMap::new();
        for r in sqlx::query("SELECT kid, key_envelope FROM audit_keys")
            .fetch_all(&self.pool)
            .await?
        {
            let kid: String = r.try_get(0)?;
            let envelope: Vec<u8> = r.try_get(1)?;
            match ChainKey::open(chain.keys.as_ref(), &kid, &envelope).await {
                Ok(k) => {
                    keys.insert(kid, Arc::new(k));
                }
                Err(e) => {
                    tracing::error!(kid = %kid, error = %e, "audit chain: an audit key does not open")
                }
            }
        }
        let first_sealed: Option<i64> = sqlx::query(
            "SELECT MIN(seq) FROM audit_blocks WHERE hash IS NOT NULL OR key_id IS NOT NULL",
        )
        .fetch_one(&self.pool)
        .await?
        .try_get(0)?;
        let key_start = keys.values().map(|k| k.start_seq()).min();
        let start = match (key_start, first_sealed) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (None, None) => i64::MAX,
        };
        let head: Option<i64> = sqlx::query("SELECT MAX(seq) FROM audit_blocks")
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        let unchained: i64 = sqlx::query("SELECT COUNT(*) FROM audit_blocks WHERE seq < $1")
            .bind(start)
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        report.unchained = unchained.max(0) as u64;
        let Some(head) = head.filter(|h| *h >= start) else {
            // Nothing chained yet (or everything before the key's start was removed).
            report.complete = true;
            if let Some(k) = key_start
                && self.count_audit_blocks().await? > 0
                && head.unwrap_or(0) < k - 1
            {
                report.fault = Some(ChainFault {
                    seq: head.unwrap_or(0) + 1,
                    kind: FaultKind::Removed,
                    message: format!(
                        "the chain starts at block {k} but the newest block is {}",
                        head.unwrap_or(0)
                    ),
                });
            }
            return Ok(report);
        };
        let from = match tail {
            Some(n) if n > 0 => start.max(head.saturating_sub(n as i64 - 1)),
            _ => start,
        };
        report.complete = from == start;
        // The hash the first checked block must name: the genesis value at the start,
        // else the stored hash of the block before (not itself checked in a tail pass).
        let mut prev: Vec<u8> = if from == start {
            GENESIS.to_vec()
        } else {
            sqlx::query("SELECT hash FROM audit_blocks WHERE seq < $1 ORDER BY seq DESC LIMIT 1")
                .bind(from)
                .fetch_optional(&self.pool)
                .await?
                .map(|r| r.try_get::<Option<Vec<u8>>, _>(0))
                .transpose()?
                .flatten()
                .unwrap_or_default()
        };
        let mut expected = from;
        let mut after = from - 1;
        'pages: loop {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {} FROM audit_blocks WHERE seq > $1 ORDER BY seq LIMIT $2",
                BlockRow::COLUMNS
            )))
            .bind(after)
            .bind(PAGE)
            .fetch_all(&self.pool)
            .await?;
            if rows.is_empty() {
                break;
            }
            for r in &rows {
                let row = BlockRow::read(r)?;
                after = row.seq;
                if report.first_seq.is_none() {
                    report.first_seq = Some(row.seq);
                }
                if let Some(fault) = self
                    .check_block(&keys, start, head, expected, &prev, &row)
                    .await?
                {
                    report.fault = Some(fault);
                    break 'pages;
                }
                report.checked += 1;
                report.last_seq = Some(row.seq);
                prev = row.hash.unwrap_or_default();
                expected = row.seq + 1;
            }
        }
        if report.fault.is_none() {
            report.head_hash = Some(hex(&prev));
        }
        Ok(report)
    }

    async fn count_audit_blocks(&self) -> StoreResult<i64> {
        Ok(sqlx::query("SELECT COUNT(*) FROM audit_blocks")
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?)
    }

    /// One block against the chain so far: `None` when it is the next genuine block.
    async fn check_block(
        &self,
        keys: &HashMap<String, Arc<ChainKey>>,
        start: i64,
        head: i64,
        expected: i64,
        prev: &[u8],
        row: &BlockRow,
    ) -> StoreResult<Option<ChainFault>> {
        let fault = |seq: i64, kind: FaultKind, message: String| {
            Ok(Some(ChainFault { seq, kind, message }))
        };
        if row.seq > expected {
            let missing = if row.seq - 1 == expected {
                format!("block {expected} is missing")
            } else {
                format!("blocks {expected} to {} are missing", row.seq - 1)
            };
            return fault(expected, FaultKind::Removed, missing);
        }
        let (Some(kid), Some(hash), Some(row_prev)) = (&row.key_id, &row.hash, &row.prev_hash)
        else {
            return fault(
                row.seq,
                FaultKind::Altered,
                "the block has no hash (its chain columns were cleared)".into(),
            );
        };
        let Some(key) = keys.get(kid) else {
            return fault(
                row.seq,
                FaultKind::Altered,
                "the block names an audit key that is not in the database or does not open".into(),
            );
        };
        let content = row.content(kid, row_prev);
        let links = row_prev.as_slice() == prev;
        if key.is_authentic(&content, row.seq, hash) {
            if links {
                return Ok(None);
            }
            return fault(
                row.seq,
                FaultKind::Reordered,
                format!(
                    "the block is genuine but does not follow block {}",
                    row.seq - 1
                ),
            );
        }
        // The hash fails here. Was the block written at another place?
        let span = (head - start).clamp(0, 4_000_000);
        let last_candidate = head.saturating_add(span).saturating_add(1);
        let elsewhere = key.written_at(
            &content,
            hash,
            (start..=last_candidate).filter(|s| *s != row.seq),
        );
        match elsewhere {
            Some(written) if written > row.seq => {
                let predecessor_present = self.has_block_with_hash(row_prev).await?;
                if predecessor_present {
                    fault(
                        row.seq,
                        FaultKind::Reordered,
                        format!("block {written} was moved here"),
                    )
                } else {
                    fault(
                        row.seq,
                        FaultKind::Removed,
                        format!(
                            "block {written} is found here: {} block(s) before it were removed and the later ones renumbered",
                            written - row.seq
                        ),
                    )
                }
            }
            Some(written) => fault(
                row.seq,
                FaultKind::Inserted,
                format!("the block is a copy of block {written}"),
            ),
            None => {
                let next = sqlx::query(
                    "SELECT prev_hash FROM audit_blocks WHERE seq > $1 ORDER BY seq LIMIT 1",
                )
                .bind(row.seq)
                .fetch_optional(&self.pool)
                .await?
                .map(|r| r.try_get::<Option<Vec<u8>>, _>(0))
                .transpose()?
                .flatten();
                let (kind, message) = match next {
                    Some(n) if n == prev => (
                        FaultKind::Inserted,
                        format!(
                            "the block is not part of the chain: block {} follows block {} directly",
                            row.seq + 1,
                            row.seq - 1
                        ),
                    ),
                    Some(n) if n == *hash => (
                        FaultKind::Altered,
                        "its contents changed: the hash does not match".to_string(),
                    ),
                    _ if links => (
                        FaultKind::Altered,
                        "the hash does not match".to_string(),
                    ),
                    _ => (
                        FaultKind::Inserted,
                        "the block is not part of the chain: its hash fails and it does not follow the block before".to_string(),
                    ),
                };
                fault(row.seq, kind, message)
            }
        }
    }

    async fn has_block_with_hash(&self, hash: &[u8]) -> StoreResult<bool> {
        if hash.len() != HASH_LEN {
            return Ok(false);
        }
        Ok(
            sqlx::query("SELECT seq FROM audit_blocks WHERE hash = $1 LIMIT 1")
                .bind(hash.to_vec())
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }

    /// Events with `since_ms <= time_ms < until_ms`, in chain order, with the sequence
    /// number of their block; a page of blocks after `after_seq` (pass the last returned
    /// block's number to continue; an empty page ends).
    pub async fn export_audit(
        &self,
        since_ms: i64,
        until_ms: i64,
        after_seq: i64,
    ) -> StoreResult<Vec<(i64, Vec<AuditEvent>)>> {
        let rows = sqlx::query(
            "SELECT seq, events FROM audit_blocks WHERE seq > $1 AND last_time_ms >= $2 AND first_time_ms < $3 ORDER BY seq LIMIT $4",
        )
        .bind(after_seq)
        .bind(since_ms)
        .bind(until_ms)
        .bind(PAGE)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let seq: i64 = r.try_get(0)?;
            let text: String = r.try_get(1)?;
            let events: Vec<AuditEvent> = serde_json::from_str(&text)
                .map_err(|e| StoreError::Database(format!("corrupt audit block {seq}: {e}")))?;
            out.push((
                seq,
                events
                    .into_iter()
                    .filter(|e| e.time_ms >= since_ms && e.time_ms < until_ms)
                    .collect(),
            ));
        }
        Ok(out)
    }

    /// The most recent events, oldest first.
    pub async fn list_audit(&self, limit: i64) -> StoreResult<Vec<AuditEvent>> {
        let limit = usize::try_from(limit.max(0)).unwrap_or(usize::MAX);
        let mut blocks: Vec<Vec<AuditEvent>> = Vec::new();
        let mut have = 0usize;
        let mut before = i64::MAX;
        // Newest blocks first until there are enough events.
        while have < limit {
            let rows = sqlx::query(
                "SELECT seq, events FROM audit_blocks WHERE seq < $1 ORDER BY seq DESC LIMIT 64",
            )
            .bind(before)
            .fetch_all(&self.pool)
            .await?;
            if rows.is_empty() {
                break;
            }
            for r in &rows {
                before = r.try_get(0)?;
                let text: String = r.try_get(1)?;
                let events: Vec<AuditEvent> = serde_json::from_str(&text).map_err(|e| {
                    StoreError::Database(format!("corrupt audit block {before}: {e}"))
                })?;
                have += events.len();
                blocks.push(events);
                if have >= limit {
                    break;
                }
            }
        }
        let mut out: Vec<AuditEvent> = blocks.into_iter().rev().flatten().collect();
        let skip = out.len().saturating_sub(limit);
        out.drain(..skip);
        Ok(out)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
