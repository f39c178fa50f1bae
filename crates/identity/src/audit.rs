//! The audit sink: handlers record events without waiting on the database; a background
//! task appends them in batches, in order. A full queue applies back-pressure rather than
//! dropping events, and `flush` drains the queue (used at shutdown and in tests).
//!
//! Stored blocks form a tamper-evident chain (`latchkey_store::AuditChain`,
//! `latchkey_core::audit::chain`): at start the newest [`START_CHECK_BLOCKS`] blocks are
//! verified; a broken chain is logged as an error and shown by `/ping`, and the service
//! keeps serving and recording (refusing to start would let anyone who can write to the
//! database stop the service, and stop the evidence). `latchkey admin audit verify` checks
//! the whole chain.

use std::sync::Arc;

use latchkey_core::UserPrincipal;
use latchkey_core::audit::{AuditEvent, Outcome};
use latchkey_store::{AuditChain, GrantKey, Store};
use tokio::sync::{mpsc, oneshot};

use latchkey_core::clock::Clock;

use crate::caller::Caller;

enum Message {
    Event(Box<AuditEvent>),
    Flush(oneshot::Sender<()>),
}

#[derive(Debug, Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<Message>,
    chain: Arc<AuditChain>,
}

/// How many of the newest blocks are verified at start (all of them by
/// `latchkey admin audit verify`).
pub const START_CHECK_BLOCKS: u64 = 10_000;

/// Open the audit key (a wrong key file fails the start, as for every other secret) and
/// check the newest [`START_CHECK_BLOCKS`] blocks, logging the first fault as an error.
pub async fn check_at_start(store: &Store, chain: &AuditChain) -> anyhow::Result<()> {
    store.load_audit_key(chain).await?;
    let report = store.verify_audit(chain, Some(START_CHECK_BLOCKS)).await?;
    match &report.fault {
        Some(fault) => {
            chain.mark_broken();
            tracing::error!(
                seq = fault.seq,
                kind = %fault.kind,
                "AUDIT CHAIN BROKEN: {fault}; run `latchkey admin audit verify` and investigate"
            );
        }
        None => tracing::info!(
            checked = report.checked,
            newest = report.last_seq,
            unchained = report.unchained,
            head = report.head_hash.as_deref().unwrap_or(""),
            "audit chain intact"
        ),
    }
    Ok(())
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("audit message")
    }
}

/// The most events one flush takes from the queue (several audit blocks).
const BATCH: usize = 4096;
/// Under light load, wait this long for more events before a flush.
const GATHER: std::time::Duration = std::time::Duration::from_millis(20);

impl AuditSink {
    /// Start the writer task on the current runtime.
    pub fn start(store: Store, chain: Arc<AuditChain>) -> Self {
        let (tx, mut rx) = mpsc::channel::<Message>(16_384);
        let writer_chain = chain.clone();
        tokio::spawn(async move {
            let chain = writer_chain;
            let mut batch: Vec<AuditEvent> = Vec::with_capacity(BATCH);
            let mut waiters: Vec<oneshot::Sender<()>> = Vec::new();
            let mut last_flush = 0usize;
            while let Some(first) = rx.recv().await {
                // After a small flush, let a batch gather for a moment: under light load
                // this turns thousands of wake-ups and statements per second into a few
                // dozen. After a large one the queue is busy: flush again at once, so the
                // writer never falls behind by sleeping.
                if matches!(first, Message::Event(_)) && last_flush < BATCH / 2 {
                    tokio::time::sleep(GATHER).await;
                }
                let mut next = Some(first);
                while let Some(msg) = next.take() {
                    match msg {
                        Message::Event(e) => batch.push(*e),
                        Message::Flush(w) => waiters.push(w),
                    }
                    if batch.len() < BATCH {
                        next = rx.try_recv().ok();
                    }
                }
                // Retry until stored: audit events are not dropped while the database is down.
                let mut delay = std::time::Duration::from_millis(50);
                while let Err(e) = store.append_audit(&chain, &batch).await {
                    tracing::error!(error = %e, pending = batch.len(), "audit append failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(std::time::Duration::from_secs(5));
                }
                last_flush = batch.len();
                batch.clear();
                for w in waiters.drain(..) {
                    let _ = w.send(());
                }
            }
        });
        Self { tx, chain }
    }

    /// Whether this process found the audit chain broken.
    pub fn is_chain_broken(&self) -> bool {
        self.chain.is_broken()
    }

    pub async fn record(&self, event: AuditEvent) {
        if self.tx.send(Message::Event(Box::new(event))).await.is_err() {
            tracing::error!("audit writer has stopped; event lost");
        }
    }

    /// Wait until every event recorded before this call is stored.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Message::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// The audit sink with the clock that dates its events: what services record through.
#[derive(Debug, Clone)]
pub struct Auditor {
    sink: AuditSink,
    clock: Arc<dyn Clock>,
}

impl Auditor {
    pub fn new(sink: AuditSink, clock: Arc<dyn Clock>) -> Self {
        Self { sink, clock }
    }

    pub fn sink(&self) -> &AuditSink {
        &self.sink
    }

    /// Record an event about a caller's action (or the browser's, with no caller) on a
    /// workload/user/target, without waiting for the database.
    #[allow(clippy::too_many_arguments)]
    pub async fn record(
        &self,
        caller: Option<&Caller>,
        action: &str,
        workload: Option<&str>,
        user: Option<&UserPrincipal>,
        target: Option<&str>,
        outcome: Outcome,
        detail: serde_json::Value,
    ) {
        let mut e = event(self.clock.now_ms(), caller, action, outcome);
        e.workload = workload.map(str::to_string);
        set_user(&mut e, user);
        e.target = target.map(str::to_string);
        e.detail = detail;
        self.sink.record(e).await;
    }

    /// An event about one grant (workload, user, provider) by `caller`.
    pub async fn record_grant(
        &self,
        caller: &Caller,
        action: &str,
        key: &GrantKey,
        outcome: Outcome,
        detail: serde_json::Value,
    ) {
        self.record(
            Some(caller),
            action,
            Some(&key.workload),
            Some(&key.user),
            Some(&key.provider),
            outcome,
            detail,
        )
        .await;
    }

    /// A successful control-plane change by `caller` to `target`.
    pub async fn change(&self, caller: &Caller, action: &str, target: String) {
        let mut e = event(self.clock.now_ms(), Some(caller), action, Outcome::Success);
        e.target = Some(target);
        self.sink.record(e).await;
    }
}

/// Name the event's user: subject, and issuer for a user established by a token.
pub fn set_user(e: &mut AuditEvent, user: Option<&UserPrincipal>) {
    e.user_id = user.map(|u| u.subject().to_string());
    e.user_issuer = user.and_then(|u| u.issuer()).map(str::to_string);
}

/// Builder for the common case: an event about a caller's action.
pub fn event(now_ms: i64, caller: Option<&Caller>, action: &str, outcome: Outcome) -> AuditEvent {
    AuditEvent {
        id: uuid::Uuid::now_v7().to_string(),
        time_ms: now_ms,
        caller: caller.map(|c| c.access_key_id.clone()),
        role: caller.map(|c| c.role.as_string()),
        workload: None,
        user_id: None,
        user_issuer: None,
        action: action.to_string(),
        target: None,
        outcome,
        detail: serde_json::json!({}),
    }
}
