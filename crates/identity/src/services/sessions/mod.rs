//! Authorization sessions: the service behind `GetResourceOauth2Token` (user federation),
//! the browser endpoints (`/identities/oauth2/authorize`, `/identities/oauth2/callback/{id}`)
//! and `CompleteResourceTokenAuth` (session binding). One module per step:
//! [`start`] (poll, vault, start a session), [`authorize`], [`callback`], [`complete`]
//! (bind the consent to the session's user, then [`exchange`] the code). The states and
//! their transitions are types ([`state`]).
//!
//! A session goes PENDING → (callback with a code) CALLBACK → (the session's own user
//! completes it) EXCHANGING → COMPLETED, or to FAILED. Each step is a compare-and-set on
//! the status, so a replayed `state`, code or completion finds the session already moved,
//! and nothing but its own exchange moves a session out of EXCHANGING.
//!
//! Two URNs name a session. The `sessionUri` (polling) is known to the workload that
//! started it, and so to whoever it shows the authorization link. The **completion URN**
//! is issued at the callback, only to the browser that came back from the provider, in the
//! `session_id` of the redirect to the return URL; `CompleteResourceTokenAuth` accepts only
//! it. So the initiator of a flow cannot complete a consent someone else gave on his link
//! (browser swapping), however fast he reloads the binding URL.

pub(crate) mod authorize;
pub(crate) mod callback;
pub(crate) mod complete;
pub(crate) mod exchange;
pub(crate) mod start;
pub(crate) mod state;

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use latchkey_authn::pkce::PkceVerifier;
use latchkey_core::ApiError;
use latchkey_core::audit::Outcome;
use latchkey_core::audit::chain::session_ref;
use latchkey_core::clock::Clock;
use latchkey_core::crypto::{self, KeyProvider};
use latchkey_store::{SessionRecord, Store};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::aad;
use crate::audit::Auditor;
use crate::caller::Caller;
use crate::error::{Error, Reason, Result};
use crate::inbound::InboundVerifier;
use crate::services::providers::Providers;
use crate::services::vault::Vault;

pub use complete::CompletingUser;
pub use start::{TokenAnswer, UserFederation};

pub use latchkey_core::protocol::SESSION_URI_PREFIX;

/// The failure stored when a session expires before its completion.
pub(crate) const EXPIRED_BEFORE_COMPLETION: &str = "expired before completion";

/// The failure stored when another user tried to complete a session: it is cancelled so
/// that the consent given on its link can never be bound to anyone.
pub(crate) const CANCELLED_BY_ANOTHER_USER: &str = "user mismatch at completion";

/// Why a `FAILED` session failed, typed for the callers (from its stored failure).
pub(crate) fn failure_reason(record: &SessionRecord) -> Reason {
    match record.failure.as_deref() {
        Some(EXPIRED_BEFORE_COMPLETION) => Reason::SessionExpired,
        Some(CANCELLED_BY_ANOTHER_USER) => Reason::SessionCancelled,
        _ => Reason::SessionFailed,
    }
}

/// The authorization-session service and its dependencies.
#[derive(Debug, Clone)]
pub struct Sessions {
    store: Store,
    keys: Arc<dyn KeyProvider>,
    clock: Arc<dyn Clock>,
    providers: Providers,
    vault: Arc<Vault>,
    audit: Auditor,
    inbound: InboundVerifier,
    settings: SessionSettings,
}

/// Where sessions point browsers and how long they live.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// Public base URL (no trailing slash) of the authorization URLs.
    pub public_url: String,
    /// How long an authorization session lives (seconds).
    pub ttl_secs: i64,
}

/// The reasons a browser step fails (each has its page in [`crate::pages`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BrowserError {
    BadRequest,
    UnknownSession,
    Expired,
    AlreadyUsed,
    /// Another user tried to complete the session, so it was cancelled.
    Cancelled,
    WrongProvider,
    IssuerMismatch,
    Unavailable,
}

impl BrowserError {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "malformed request",
            Self::UnknownSession => "unknown authorization session or state",
            Self::Expired => "authorization session expired",
            Self::AlreadyUsed => "authorization session already used",
            Self::Cancelled => "authorization session cancelled: another user opened its link",
            Self::WrongProvider => "state belongs to another provider's session",
            Self::IssuerMismatch => "the authorization response came from another issuer",
            Self::Unavailable => "service unavailable",
        }
    }
}

/// Any failure of a dependency during a browser step: logged (unless merely unavailable),
/// and the browser is asked to try again.
pub(crate) fn browser_error(e: impl Into<Error>) -> BrowserError {
    let e: Error = e.into();
    if !matches!(e.public(), ApiError::Unavailable { .. }) {
        tracing::error!(error = %e, context = e.internal_message().unwrap_or_default(), "browser flow step failed");
    }
    BrowserError::Unavailable
}

/// Non-secret facts of a session (stored as JSON).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SessionRequest {
    pub scopes: Vec<String>,
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default)]
    pub return_url: Option<String>,
}

/// Secret facts of a session, sealed together.
#[derive(Serialize, Deserialize)]
pub(crate) struct SessionSecrets {
    /// The OAuth `state` (only its hash is a lookup column).
    pub state: String,
    /// The PKCE verifier, stored as its plain string (the format of the sealed JSON).
    #[serde(with = "latchkey_authn::pkce::stored")]
    pub verifier: PkceVerifier,
    #[serde(default)]
    pub custom_state: Option<String>,
    #[serde(default)]
    pub custom_parameters: BTreeMap<String, String>,
}

pub(crate) fn random_b64(n: usize) -> Result<String> {
    let mut buf = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut buf).map_err(|_| Error::internal("random source failed"))?;
    Ok(B64.encode(buf))
}

pub(crate) fn sha256_hex(s: &str) -> String {
    hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        s.as_bytes(),
    ))
}

/// The answer for a session that does not exist, or a URN that is not a completion URN.
pub(crate) fn unknown_session() -> Error {
    Error::new(ApiError::NotFound(
        "authorization session not found (unknown or purged)".into(),
    ))
    .with_reason(Reason::SessionUnknown)
}

pub(crate) fn already_used() -> Error {
    Error::new(ApiError::cannot_parse(
        "authorization session already used: it was completed before",
    ))
    .with_reason(Reason::SessionAlreadyUsed)
}

impl Sessions {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        keys: Arc<dyn KeyProvider>,
        clock: Arc<dyn Clock>,
        providers: Providers,
        vault: Arc<Vault>,
        audit: Auditor,
        inbound: InboundVerifier,
        settings: SessionSettings,
    ) -> Self {
        Self {
            store,
            keys,
            clock,
            providers,
            vault,
            audit,
            inbound,
            settings,
        }
    }

    /// An event about an authorization session: its workload, user and provider.
    async fn record_session(
        &self,
        caller: Option<&Caller>,
        action: &str,
        session: &SessionRecord,
        outcome: Outcome,
        mut detail: Value,
    ) {
        // Joinable without a bearer value: the session's digest, never its id.
        if let Some(d) = detail.as_object_mut() {
            d.insert("session".into(), session_ref(&session.id).into());
        }
        self.audit
            .record(
                caller,
                action,
                Some(&session.workload),
                Some(&session.user),
                Some(&session.provider),
                outcome,
                detail,
            )
            .await;
    }

    async fn open_secrets(&self, s: &SessionRecord) -> Result<SessionSecrets> {
        let bytes = crypto::decrypt(
            self.keys.as_ref(),
            aad::session_secrets(&s.id).as_bytes(),
            &s.secrets_envelope,
        )
        .await
        .map_err(|e| {
            Error::internal(format!(
                "could not open the secrets of an authorization session: {e}"
            ))
        })?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::internal(format!(
                "the secrets of an authorization session are unreadable: {e}"
            ))
        })
    }
}

pub(crate) fn session_request(s: &SessionRecord) -> Result<SessionRequest> {
    serde_json::from_value(s.request.clone()).map_err(|e| {
        Error::internal(format!(
            "the request of an authorization session is unreadable: {e}"
        ))
    })
}
