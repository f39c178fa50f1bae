//! The last step of a completion: exchange the session's code (with its PKCE verifier) at
//! the provider, seal the answer as the grant, and store it while the session moves
//! EXCHANGING → COMPLETED in one transaction: success means stored, failure means nothing
//! stored (and the session FAILED).

use latchkey_core::ApiError;
use latchkey_core::audit::Outcome;
use latchkey_core::crypto;
use latchkey_store::{GrantKey, GrantTokens};
use secrecy::ExposeSecret;
use serde_json::json;

use super::state::{Exchanging, TransitionError};
use super::{SessionRequest, Sessions};
use crate::aad;
use crate::caller::Caller;
use crate::error::{Error, Reason, Result};
use crate::services::vault::token_error;

impl Sessions {
    pub(super) async fn exchange_and_store(
        &self,
        caller: &Caller,
        session: Exchanging,
        request: &SessionRequest,
    ) -> Result<()> {
        let record = session.record().clone();
        // On failure: the error, and the session to fail (none when another request
        // moved it: then there is nothing of ours to fail).
        let stored: Result<(), (Option<Exchanging>, Error)> = match self
            .exchange(&session, request)
            .await
        {
            Ok((key, tokens)) => match session
                .complete(&self.store, &key, &tokens, self.clock.now_ms())
                .await
            {
                Ok(_) => {
                    self.vault.invalidate(&key);
                    Ok(())
                }
                Err((_, TransitionError::Lost)) => Err((
                    None,
                    Error::new(ApiError::cannot_parse(
                        "authorization session no longer valid: nothing was stored; start the authorization again",
                    )),
                )),
                // The transaction did not commit: the session is still EXCHANGING.
                Err((session, TransitionError::Store(e))) => Err((Some(session), e.into())),
            },
            Err(e) => Err((Some(session), e)),
        };
        let action = "CompleteResourceTokenAuth";
        match stored {
            Ok(()) => {
                latchkey_telemetry::authorization_session(
                    latchkey_telemetry::SessionOutcome::Completed,
                );
                self.record_session(
                    Some(caller),
                    action,
                    &record,
                    Outcome::Success,
                    json!({"provider": record.provider, "scopes": request.scopes}),
                )
                .await;
                Ok(())
            }
            Err((session, e)) => {
                latchkey_telemetry::authorization_session(
                    latchkey_telemetry::SessionOutcome::ExchangeFailed,
                );
                if let Some(session) = session {
                    let _ = session
                        .fail(&self.store, "code exchange failed", self.clock.now_ms())
                        .await;
                }
                self.record_session(
                    Some(caller),
                    action,
                    &record,
                    Outcome::Failed,
                    // The client's words, as before; the detail is logged with the answer.
                    json!({"provider": record.provider, "reason": e.client_message()}),
                )
                .await;
                Err(e.with_reason(Reason::ExchangeFailed))
            }
        }
    }

    /// Exchange the session's code and seal the provider's answer as the grant to store.
    async fn exchange(
        &self,
        session: &Exchanging,
        request: &SessionRequest,
    ) -> Result<(GrantKey, GrantTokens)> {
        let session = session.record();
        let provider = self.providers.require(&session.provider).await?;
        let secrets = self.open_secrets(session).await?;
        let code_envelope = session
            .code_envelope
            .as_ref()
            .ok_or_else(|| Error::internal("session in CALLBACK without a code"))?;
        let code = crypto::decrypt_string(
            self.keys.as_ref(),
            aad::session_code(&session.id).as_bytes(),
            code_envelope,
        )
        .await
        .map_err(|e| {
            Error::internal(format!(
                "could not open the code of an authorization session: {e}"
            ))
        })?;
        let mut form = vec![
            ("grant_type", "authorization_code".to_string()),
            ("code", code.expose_secret().to_string()),
            ("redirect_uri", provider.callback_url.clone()),
            (
                "code_verifier",
                secrets.verifier.into_secret().expose_secret().to_string(),
            ),
        ];
        for r in &request.resources {
            form.push(("resource", r.clone()));
        }
        let resp = self
            .vault
            .token_client(&provider)
            .await?
            .request(form)
            .await
            .map_err(|e| token_error(&e))?;
        let key = GrantKey {
            workload: session.workload.clone(),
            user: session.user.clone(),
            provider: session.provider.clone(),
        };
        let tokens = self
            .vault
            .seal(
                &key,
                &provider,
                &resp,
                &request.scopes,
                &request.resources,
                None,
            )
            .await?;
        Ok((key, tokens))
    }
}
