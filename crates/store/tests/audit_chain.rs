//! The tamper-evident audit chain on SQLite and PostgreSQL: rows edited directly in the
//! database (altered, removed, inserted, reordered) are reported at the first bad block
//! with the right kind; the chain survives a key-encryption-key rotation; two writers on
//! one PostgreSQL database never fork it. Each PostgreSQL test uses a database of its own
//! (created from `LATCHKEY_TEST_DATABASE_URL`, else 127.0.0.1:5432), dropped at the end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use latchkey_core::audit::chain::FaultKind;
use latchkey_core::audit::{AuditEvent, Outcome};
use latchkey_core::crypto::{FileKeyProvider, KeyProvider};
use latchkey_store::*;
use sqlx::AnyPool;

/// A name no other test of this run (tests run in parallel threads) or earlier run uses:
/// the process, a counter, and the time. The time alone repeated within one process (the
/// clock's steps are coarser than two threads apart): two tests then created the same
/// database.
fn unique() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}_{n}_{}", std::process::id(), nanos % 1_000_000_000_000)
}

/// A database for one test: its URL, and what to do at the end.
struct Db {
    url: String,
    drop_sql: Option<(String, String)>,
    dir: Option<std::path::PathBuf>,
}

impl Db {
    fn sqlite() -> Self {
        let dir = std::env::temp_dir().join(format!("latchkey-audit-{}", unique()));
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            url: format!("sqlite://{}?mode=rwc", dir.join("a.db").display()),
            drop_sql: None,
            dir: Some(dir),
        }
    }

    async fn postgres() -> Self {
        sqlx::any::install_default_drivers();
        let base = std::env::var("LATCHKEY_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let admin = AnyPool::connect(&base)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {base} is required for this test: {e}"));
        let name = format!("lk_audit_{}", unique());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let (prefix, _) = base.rsplit_once('/').unwrap();
        Self {
            url: format!("{prefix}/{name}"),
            drop_sql: Some((base, format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))),
            dir: None,
        }
    }

    async fn cleanup(self) {
        if let Some((base, sql)) = &self.drop_sql {
            let admin = AnyPool::connect(base).await.unwrap();
            let _ = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .execute(&admin)
                .await;
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn event(n: usize) -> AuditEvent {
    AuditEvent {
        id: format!("ev-{n}"),
        time_ms: 1_700_000_000_000 + n as i64,
        caller: Some("AKID".into()),
        role: Some("admin".into()),
        workload: Some("wl".into()),
        user_issuer: Some("https://idp.example".into()),
        user_id: Some("alice".into()),
        action: format!("Action{n}"),
        target: None,
        outcome: Outcome::Success,
        detail: serde_json::json!({"n": n}),
    }
}

/// A store with six blocks (one event each) and a raw pool to edit its rows.
async fn six_blocks(db: &Db) -> (Store, AuditChain, AnyPool) {
    let store = Store::connect(&db.url).await.unwrap();
    let keys: Arc<dyn KeyProvider> = Arc::new(FileKeyProvider::generate().unwrap());
    let chain = AuditChain::new(keys);
    for n in 1..=6 {
        store.append_audit(&chain, &[event(n)]).await.unwrap();
    }
    let report = store.verify_audit(&chain, None).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(
        (report.first_seq, report.last_seq, report.checked),
        (Some(1), Some(6), 6)
    );
    let raw = AnyPool::connect(&db.url).await.unwrap();
    (store, chain, raw)
}

async fn exec(raw: &AnyPool, sql: &str) {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(raw)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn expect_fault(store: &Store, chain: &AuditChain, seq: i64, kind: FaultKind) {
    let report = store.verify_audit(chain, None).await.unwrap();
    let fault = report
        .fault
        .unwrap_or_else(|| panic!("expected {kind} at block {seq}, chain reported intact"));
    assert_eq!((fault.seq, fault.kind), (seq, kind), "{fault}");
    // The start-up check (newest blocks only) sees it too.
    let tail = store.verify_audit(chain, Some(5)).await.unwrap();
    assert!(tail.fault.is_some(), "tail check missed {kind}");
}

async fn tampering(db: Db) {
    // Altered: an event's text changed in place.
    {
        let (store, chain, raw) = six_blocks(&db).await;
        exec(
            &raw,
            "UPDATE audit_blocks SET events = replace(events, 'Action3', 'Action9') WHERE seq = 3",
        )
        .await;
        expect_fault(&store, &chain, 3, FaultKind::Altered).await;
        exec(&raw, "DELETE FROM audit_blocks").await;
        exec(&raw, "DELETE FROM audit_keys").await;
    }
    // Altered: the hash column rewritten.
    {
        let (store, chain, raw) = six_blocks(&db).await;
        exec(&raw, "UPDATE audit_blocks SET hash = (SELECT hash FROM audit_blocks WHERE seq = 5) WHERE seq = 4").await;
        expect_fault(&store, &chain, 4, FaultKind::Altered).await;
        exec(&raw, "DELETE FROM audit_blocks").await;
        exec(&raw, "DELETE FROM audit_keys").await;
    }
    // Removed: a block deleted (a gap).
    {
        let (store, chain, raw) = six_blocks(&db).await;
        exec(&raw, "DELETE FROM audit_blocks WHERE seq = 3").await;
        expect_fault(&store, &chain, 3, FaultKind::Removed).await;
        exec(&raw, "DELETE FROM audit_blocks").await;
        exec(&raw, "DELETE FROM audit_keys").await;
    }
    // Removed: a block deleted and the later ones renumbered (no gap).
    {
        let (store, chain, raw) = six_blocks(&db).await;
        exec(&raw, "DELETE FROM audit_blocks WHERE seq = 3").await;
        exec(
            &raw,
            "UPDATE audit_blocks SET seq = seq + 100 WHERE seq > 3",
        )
        .await;
        exec(
            &raw,
            "UPDATE audit_blocks SET seq = seq - 101 WHERE seq > 100",
        )
        .await;
        expect_fault(&store, &chain, 3, FaultKind::Removed).await;
        exec(&raw, "DELETE FROM audit_blocks").await;
        exec(&raw, "DELETE FROM audit_keys").await;
    }
    // Inserted: a forged block at 4, the later ones moved up by one.
    {
        let (store, chain, raw) = six_blocks(&db).await;
        exec(
            &raw,
            "UPDATE audit_blocks SET seq = seq + 100 WHERE seq >= 4",
        )
        .await;
        exec(
            &raw,
            "UPDATE audit_blocks SET seq = seq - 99 WHERE seq > 100",
        )
        .await;
        exec(
            &raw,
            "INSERT INTO audit_blocks (seq, first_time_ms, last_time_ms, event_count, events, key_id, prev_hash, hash) \
             SELECT 4, first_time_ms, last_time_ms, event_count, replace(events, 'Action3', 'Forged'), key_id, hash, hash FROM audit_blocks WHERE seq = 3",
        )
        .await;
        expect_fault(&store, &chain, 4, FaultKind::Inserted).await;
        exec(&raw, "DELETE FROM audit_blocks").await;
        exec(&raw, "DELETE FROM audit_keys").await;
    }
    // Inserted: a copy of a genuine block replayed at the end.
    {
        let (store, chain, raw) = six_blocks(&db).await;
        exec(
            &raw,
            "INSERT INTO audit_blocks (seq, first_time_ms, last_time_ms, event_count, events, key_id, prev_hash, hash) \
             SELECT 7, first_time_ms, last_time_ms, event_count, events, key_id, prev_hash, hash FROM audit_blocks WHERE seq = 2",
        )
        .await;
        expect_fault(&store, &chain, 7, FaultKind::Inserted).await;
        exec(&raw, "DELETE FROM audit_blocks").await;
        exec(&raw, "DELETE FROM audit_keys").await;
    }
    // Reordered: blocks 3 and 4 swapped.
    {
        let (store, chain, raw) = six_blocks(&db).await;
        exec(&raw, "UPDATE audit_blocks SET seq = 100 WHERE seq = 3").await;
        exec(&raw, "UPDATE audit_blocks SET seq = 3 WHERE seq = 4").await;
        exec(&raw, "UPDATE audit_blocks SET seq = 4 WHERE seq = 100").await;
        expect_fault(&store, &chain, 3, FaultKind::Reordered).await;
        exec(&raw, "DELETE FROM audit_blocks").await;
        exec(&raw, "DELETE FROM audit_keys").await;
    }
    // The chain's first blocks deleted: the start is sealed in the audit key.
    {
        let (store, chain, raw) = six_blocks(&db).await;
        exec(&raw, "DELETE FROM audit_blocks WHERE seq <= 2").await;
        expect_fault(&store, &chain, 1, FaultKind::Removed).await;
        exec(&raw, "DELETE FROM audit_blocks").await;
        exec(&raw, "DELETE FROM audit_keys").await;
    }
    // Hash columns cleared, to pass a block off as written before the chain.
    {
        let (store, chain, raw) = six_blocks(&db).await;
        exec(
            &raw,
            "UPDATE audit_blocks SET hash = NULL, prev_hash = NULL, key_id = NULL WHERE seq <= 2",
        )
        .await;
        expect_fault(&store, &chain, 1, FaultKind::Altered).await;
    }
    db.cleanup().await;
}

#[tokio::test]
async fn sqlite_tampering_is_found_at_the_first_bad_block() {
    tampering(Db::sqlite()).await;
}

#[tokio::test]
async fn postgres_tampering_is_found_at_the_first_bad_block() {
    tampering(Db::postgres().await).await;
}

/// Blocks written before the chain existed are counted as not covered; the chain starts
/// after them; a key file that is not the one the audit key was sealed with cannot append.
async fn legacy_blocks_and_wrong_key_file(db: Db) {
    let store = Store::connect(&db.url).await.unwrap();
    let raw = AnyPool::connect(&db.url).await.unwrap();
    for n in 1..=2 {
        exec(
            &raw,
            &format!(
                "INSERT INTO audit_blocks (seq, first_time_ms, last_time_ms, event_count, events) VALUES ({n}, 1, 1, 1, '[]')"
            ),
        )
        .await;
    }
    let keys = Arc::new(FileKeyProvider::generate().unwrap());
    let chain = AuditChain::new(keys.clone());
    store
        .append_audit(&chain, &[event(1), event(2)])
        .await
        .unwrap();
    let report = store.verify_audit(&chain, None).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(
        (report.unchained, report.first_seq, report.checked),
        (2, Some(3), 1)
    );
    assert_eq!(store.list_audit(10).await.unwrap().len(), 2);

    let stranger = AuditChain::new(Arc::new(FileKeyProvider::generate().unwrap()));
    assert!(store.append_audit(&stranger, &[event(3)]).await.is_err());
    assert!(store.load_audit_key(&stranger).await.is_err());
    db.cleanup().await;
}

#[tokio::test]
async fn sqlite_legacy_blocks_and_wrong_key_file() {
    legacy_blocks_and_wrong_key_file(Db::sqlite()).await;
}

#[tokio::test]
async fn postgres_legacy_blocks_and_wrong_key_file() {
    legacy_blocks_and_wrong_key_file(Db::postgres().await).await;
}

/// After the key-encryption key is rotated (every envelope re-wrapped, the old key
/// retired), the audit key still opens and the whole chain verifies and grows.
#[tokio::test]
async fn chain_survives_key_encryption_key_rotation() {
    let db = Db::sqlite();
    let store = Store::connect(&db.url).await.unwrap();
    let mut file = FileKeyProvider::generate().unwrap();
    let old = file.active_key_id();
    let chain = AuditChain::new(Arc::new(
        FileKeyProvider::from_json(&file.to_json()).unwrap(),
    ));
    store.append_audit(&chain, &[event(1)]).await.unwrap();
    file.rotate().unwrap();
    let rows = store
        .list_envelopes(EnvelopeColumn::AuditKey, None, 10)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let aad = latchkey_core::audit::chain::audit_key_aad(&rows[0].key[0]);
    let new = latchkey_core::crypto::rewrap(&file, aad.as_bytes(), &rows[0].envelope)
        .await
        .unwrap()
        .expect("re-wrapped");
    assert!(
        store
            .replace_envelope(
                EnvelopeColumn::AuditKey,
                &rows[0].key,
                &rows[0].envelope,
                &new
            )
            .await
            .unwrap()
    );
    file.retire(&old).unwrap();
    let rotated = AuditChain::new(Arc::new(
        FileKeyProvider::from_json(&file.to_json()).unwrap(),
    ));
    store.append_audit(&rotated, &[event(2)]).await.unwrap();
    let report = store.verify_audit(&rotated, None).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.checked, 2);
    db.cleanup().await;
}

/// Two writers (two pools, as two replicas) appending at once on one PostgreSQL
/// database: one unbroken chain, no gaps, every event stored.
#[tokio::test]
async fn postgres_concurrent_writers_never_fork_the_chain() {
    let db = Db::postgres().await;
    let keys: Arc<dyn KeyProvider> = Arc::new(FileKeyProvider::generate().unwrap());
    let a = Store::connect(&db.url).await.unwrap();
    let b = Store::connect(&db.url).await.unwrap();
    let write = |store: Store, offset: usize| {
        let chain = AuditChain::new(keys.clone());
        tokio::spawn(async move {
            for n in 0..40 {
                store
                    .append_audit(&chain, &[event(offset + n), event(offset + n + 1000)])
                    .await
                    .unwrap();
            }
        })
    };
    let (ra, rb) = tokio::join!(write(a.clone(), 0), write(b.clone(), 10_000));
    ra.unwrap();
    rb.unwrap();
    let report = a
        .verify_audit(&AuditChain::new(keys.clone()), None)
        .await
        .unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(
        (report.first_seq, report.last_seq, report.checked),
        (Some(1), Some(80), 80)
    );
    assert_eq!(a.list_audit(1000).await.unwrap().len(), 160);
    a.close().await;
    b.close().await;
    db.cleanup().await;
}

/// Export: events in a time range, with their block's number.
#[tokio::test]
async fn export_by_time_range() {
    let db = Db::sqlite();
    let (store, _chain, _raw) = six_blocks(&db).await;
    let base = 1_700_000_000_000;
    let page = store.export_audit(base + 2, base + 5, 0).await.unwrap();
    let got: Vec<(i64, String)> = page
        .iter()
        .flat_map(|(seq, events)| events.iter().map(move |e| (*seq, e.action.clone())))
        .collect();
    assert_eq!(
        got,
        vec![
            (2, "Action2".into()),
            (3, "Action3".into()),
            (4, "Action4".into())
        ]
    );
    db.cleanup().await;
}
