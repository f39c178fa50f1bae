//! An authorization session's states as types. A session read from the store is a
//! [`Session`]; each state offers only its legal transitions, each a compare-and-set on
//! the stored status that consumes the old state and returns the new one:
//!
//! ```text
//! Pending ──receive_callback──▶ Callback ──claim──▶ Exchanging ──complete──▶ Completed
//!    └──fail──▶ Failed            └──fail──▶ Failed     └──fail──▶ Failed
//! ```
//!
//! So `Callback → Completed` (skipping the exchange) or any move out of `Completed` does
//! not compile. A transition another request made first is [`TransitionError::Lost`]:
//! the replayed `state`, code or completion finds the session already moved.

use latchkey_store::{GrantKey, GrantTokens, SessionRecord, SessionStatus, Store, StoreError};

/// Why a transition did not happen.
#[derive(Debug)]
pub(crate) enum TransitionError {
    /// Another request moved the session first.
    Lost,
    Store(StoreError),
}

impl From<StoreError> for TransitionError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::Lost,
            e => Self::Store(e),
        }
    }
}

macro_rules! state {
    ($(#[$doc:meta])* $name:ident, may fail) => {
        state!($(#[$doc])* $name);

        impl $name {
            /// → FAILED (the code is dropped).
            pub async fn fail(
                self,
                store: &Store,
                failure: &str,
                now_ms: i64,
            ) -> Result<Failed, TransitionError> {
                fail(store, self.0, failure, now_ms).await
            }
        }
    };
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub(crate) struct $name(SessionRecord);

        impl $name {
            pub fn record(&self) -> &SessionRecord {
                &self.0
            }
        }
    };
}

state!(
    /// Started; waiting for the browser to come back from the provider.
    Pending,
    may fail
);
state!(
    /// The provider answered with a code; waiting for the session's user to complete it.
    Callback,
    may fail
);
state!(
    /// Claimed by one completion, which is exchanging the code.
    Exchanging,
    may fail
);
state!(
    /// The grant is stored.
    Completed
);
state!(
    /// Failed (provider error, wrong user, expiry, failed exchange).
    Failed
);

/// A session as read from the store, in its state.
#[derive(Debug)]
pub(crate) enum Session {
    Pending(Pending),
    Callback(Callback),
    Exchanging(Exchanging),
    Completed(Completed),
    Failed(Failed),
}

impl From<SessionRecord> for Session {
    fn from(r: SessionRecord) -> Self {
        match r.status {
            SessionStatus::Pending => Self::Pending(Pending(r)),
            SessionStatus::Callback => Self::Callback(Callback(r)),
            SessionStatus::Exchanging => Self::Exchanging(Exchanging(r)),
            SessionStatus::Completed => Self::Completed(Completed(r)),
            SessionStatus::Failed => Self::Failed(Failed(r)),
        }
    }
}

impl Session {
    pub fn record(&self) -> &SessionRecord {
        match self {
            Self::Pending(s) => s.record(),
            Self::Callback(s) => s.record(),
            Self::Exchanging(s) => s.record(),
            Self::Completed(s) => s.record(),
            Self::Failed(s) => s.record(),
        }
    }

    /// Fail the session if it is still waiting (PENDING or CALLBACK), by compare-and-set
    /// on that state; a session claimed since (or finished) stays as it is.
    pub async fn fail_if_waiting(self, store: &Store, failure: &str, now_ms: i64) {
        let result = match self {
            Self::Pending(s) => s.fail(store, failure, now_ms).await.map(drop),
            Self::Callback(s) => s.fail(store, failure, now_ms).await.map(drop),
            _ => Ok(()),
        };
        if let Err(TransitionError::Store(e)) = result {
            tracing::warn!(error = %e, "could not fail an authorization session");
        }
    }
}

async fn fail(
    store: &Store,
    mut record: SessionRecord,
    failure: &str,
    now_ms: i64,
) -> Result<Failed, TransitionError> {
    store
        .fail_session(&record.id, record.status, failure, now_ms)
        .await?;
    record.status = SessionStatus::Failed;
    record.failure = Some(failure.to_string());
    record.code_envelope = None;
    record.updated_ms = now_ms;
    Ok(Failed(record))
}

impl Pending {
    /// PENDING → CALLBACK: keep the sealed code and the hash of the completion URN.
    pub async fn receive_callback(
        self,
        store: &Store,
        code_envelope: Vec<u8>,
        completion_hash: &str,
        now_ms: i64,
    ) -> Result<Callback, TransitionError> {
        let mut r = self.0;
        store
            .receive_callback(&r.id, &code_envelope, completion_hash, now_ms)
            .await?;
        r.status = SessionStatus::Callback;
        r.code_envelope = Some(code_envelope);
        r.updated_ms = now_ms;
        Ok(Callback(r))
    }
}

impl Callback {
    /// CALLBACK → EXCHANGING: exactly one completion gets past this.
    pub async fn claim(self, store: &Store, now_ms: i64) -> Result<Exchanging, TransitionError> {
        let mut r = self.0;
        store
            .transition_session(
                &r.id,
                SessionStatus::Callback,
                SessionStatus::Exchanging,
                None,
                None,
                now_ms,
            )
            .await?;
        r.status = SessionStatus::Exchanging;
        r.updated_ms = now_ms;
        Ok(Exchanging(r))
    }
}

impl Exchanging {
    /// EXCHANGING → COMPLETED with the grant stored, in one transaction. On failure the
    /// session is handed back (still EXCHANGING unless the error is `Lost`), to be failed.
    pub async fn complete(
        self,
        store: &Store,
        key: &GrantKey,
        tokens: &GrantTokens,
        now_ms: i64,
    ) -> Result<Completed, (Exchanging, TransitionError)> {
        if let Err(e) = store
            .complete_session(&self.0.id, key, tokens, now_ms)
            .await
        {
            return Err((self, e.into()));
        }
        let mut r = self.0;
        r.status = SessionStatus::Completed;
        r.code_envelope = None;
        r.updated_ms = now_ms;
        Ok(Completed(r))
    }
}
