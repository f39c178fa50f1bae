//! `GET /identities/oauth2/callback/{id}`: the provider's answer for one of its sessions.
//! PENDING → CALLBACK with the sealed code and a one-time completion URN for this browser,
//! or PENDING → FAILED on a provider error; a `state` seen where it should not be is burnt.

use latchkey_core::audit::Outcome;
use latchkey_core::crypto;
use latchkey_store::SessionRecord;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use super::state::{Session, TransitionError};
use super::{
    BrowserError, SESSION_URI_PREFIX, Sessions, browser_error, random_b64, session_request,
    sha256_hex,
};
use crate::aad;
use crate::error::Error;
use crate::services::providers::ProviderLookup;

/// The provider's answer (the callback's query).
#[derive(Debug)]
pub(crate) struct CallbackParams {
    pub code: Option<SecretString>,
    pub state: Option<SecretString>,
    pub iss: Option<String>,
    pub error: Option<String>,
}

/// Where the browser goes next: on to the return URL with `session_id` (and `state` =
/// the custom state, `error`), or, without a return URL, Latchkey's own page.
#[derive(Debug)]
pub(crate) struct CallbackOutcome {
    pub return_url: Option<String>,
    /// The one-time completion URN after a consent; the polling `sessionUri` after a
    /// provider error (that session can no longer be completed).
    pub session_id: String,
    pub custom_state: Option<String>,
    pub error: Option<String>,
}

fn lost(e: TransitionError) -> BrowserError {
    match e {
        TransitionError::Lost => BrowserError::AlreadyUsed,
        TransitionError::Store(e) => browser_error(e),
    }
}

impl Sessions {
    /// A state seen where it should not be is burnt: the session fails, and that is audited.
    async fn deny_callback(
        &self,
        session: Session,
        provider: &str,
        why: BrowserError,
        now: i64,
    ) -> BrowserError {
        let record: SessionRecord = session.record().clone();
        session
            .fail_if_waiting(&self.store, why.as_str(), now)
            .await;
        latchkey_telemetry::authorization_session(
            latchkey_telemetry::SessionOutcome::CallbackRefused,
        );
        self.record_session(
            None,
            "OAuth2Callback",
            &record,
            Outcome::Denied,
            json!({"provider": provider, "reason": why.as_str()}),
        )
        .await;
        why
    }

    pub(crate) async fn callback(
        &self,
        callback_id: &str,
        q: CallbackParams,
    ) -> Result<CallbackOutcome, BrowserError> {
        if callback_id.len() > 64 {
            return Err(BrowserError::BadRequest);
        }
        let oauth_state = q
            .state
            .filter(|s| !s.expose_secret().is_empty() && s.expose_secret().len() <= 512)
            .ok_or(BrowserError::BadRequest)?;
        let provider = self
            .providers
            .runtime(ProviderLookup::Callback(callback_id))
            .await
            .map_err(browser_error)?
            .ok_or(BrowserError::UnknownSession)?;
        let session = Session::from(
            self.store
                .find_session_by_state(&sha256_hex(oauth_state.expose_secret()))
                .await
                .map_err(browser_error)?
                .ok_or(BrowserError::UnknownSession)?,
        );
        let now = self.clock.now_ms();
        // Mix-up defence: the state must belong to a session of *this* provider.
        if session.record().provider != provider.name {
            return Err(self
                .deny_callback(session, &provider.name, BrowserError::WrongProvider, now)
                .await);
        }
        let Session::Pending(pending) = session else {
            // A replayed callback (code replay): leave the session as it is.
            return Err(BrowserError::AlreadyUsed);
        };
        // RFC 9207: when the provider names itself, it must be the issuer we know.
        let issuer_mismatch = match &q.iss {
            Some(iss) => iss != &provider.metadata.issuer,
            None => provider.iss_parameter_supported,
        };
        let refusal = if pending.record().expires_ms <= now {
            Some(BrowserError::Expired)
        } else if issuer_mismatch {
            Some(BrowserError::IssuerMismatch)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            let session = Session::Pending(pending);
            return Err(self
                .deny_callback(session, &provider.name, refusal, now)
                .await);
        }
        let request = session_request(pending.record()).map_err(browser_error)?;
        let secrets = self
            .open_secrets(pending.record())
            .await
            .map_err(browser_error)?;
        let record = pending.record().clone();
        if let Some(error) = q.error {
            let error: String = error
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(64)
                .collect();
            let error = if error.is_empty() {
                "server_error".to_string()
            } else {
                error
            };
            pending
                .fail(&self.store, &format!("provider error: {error}"), now)
                .await
                .map_err(lost)?;
            latchkey_telemetry::authorization_session(
                latchkey_telemetry::SessionOutcome::ProviderError,
            );
            self.record_session(
                None,
                "OAuth2Callback",
                &record,
                Outcome::Failed,
                json!({"provider": provider.name, "error": error}),
            )
            .await;
            return Ok(CallbackOutcome {
                return_url: request.return_url,
                session_id: format!("{SESSION_URI_PREFIX}{}", record.id),
                custom_state: secrets.custom_state,
                error: Some(error),
            });
        }
        let code = q
            .code
            .filter(|c| !c.expose_secret().is_empty() && c.expose_secret().len() <= 4096)
            .ok_or(BrowserError::BadRequest)?;
        let code_envelope = crypto::encrypt(
            self.keys.as_ref(),
            aad::session_code(&record.id).as_bytes(),
            code.expose_secret().as_bytes(),
        )
        .await
        .map_err(|e| {
            browser_error(Error::internal(format!(
                "could not seal the code of a session: {e}"
            )))
        })?;
        // The one-time completion URN: only this browser gets it, only its hash is kept.
        let completion = format!(
            "{SESSION_URI_PREFIX}{}",
            random_b64(32).map_err(browser_error)?
        );
        pending
            .receive_callback(&self.store, code_envelope, &sha256_hex(&completion), now)
            .await
            .map_err(lost)?;
        latchkey_telemetry::authorization_session(
            latchkey_telemetry::SessionOutcome::CallbackReceived,
        );
        self.record_session(
            None,
            "OAuth2Callback",
            &record,
            Outcome::Success,
            json!({"provider": provider.name}),
        )
        .await;
        Ok(CallbackOutcome {
            return_url: request.return_url,
            session_id: completion,
            custom_state: secrets.custom_state,
            error: None,
        })
    }
}
