//! `CompleteResourceTokenAuth`: bind the consent to the session's user, then (and only
//! then) claim the session, exchange the code and store the grant.

use latchkey_core::audit::Outcome;
use latchkey_core::{ApiError, UserPrincipal, UserSource};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::state::{Session, TransitionError};
use super::{
    CANCELLED_BY_ANOTHER_USER, EXPIRED_BEFORE_COMPLETION, Sessions, already_used, failure_reason,
    sha256_hex, unknown_session,
};
use crate::caller::Caller;
use crate::error::{Error, Reason, Result, user_token_refusal};

const ACTION: &str = "CompleteResourceTokenAuth";

/// Who completes a session (`userIdentifier`, validated: exactly one of the two).
#[derive(Debug)]
pub enum CompletingUser {
    /// A user id the binding service vouches for.
    UserId(String),
    /// A user token, verified against the configured inbound issuers.
    UserToken(SecretString),
}

/// A user as audit events name it: kind, issuer (token users) and subject.
fn user_ref(user: &UserPrincipal) -> Value {
    json!({"kind": user.kind().as_str(), "issuer": user.issuer(), "subject": user.subject()})
}

/// Whether the user completing a session is the user who started it: same kind, same
/// issuer, same subject. `Err` says which part differs (no values, so nothing of either
/// user is echoed to the caller).
pub(crate) fn same_user(
    started: &UserPrincipal,
    completing: &UserPrincipal,
) -> Result<(), &'static str> {
    match (started.kind(), completing.kind()) {
        (UserSource::UserId, UserSource::Jwt) => Err(
            "the authorization session was started for a user id (GetWorkloadAccessTokenForUserId): it can only be completed with userIdentifier.userId, not a user token",
        ),
        (UserSource::Jwt, UserSource::UserId) => Err(
            "the authorization session was started for a user token (GetWorkloadAccessTokenForJWT): it can only be completed with userIdentifier.userToken from the same issuer, not a user id",
        ),
        _ if started.issuer() != completing.issuer() => Err(
            "the user token comes from another issuer than the one that started the authorization session",
        ),
        _ if started.subject() != completing.subject() => {
            Err("the user does not match the user who started this authorization session")
        }
        _ => Ok(()),
    }
}

impl Sessions {
    /// The user named by `userIdentifier`. `Err` is the refusal: the client's words and
    /// the detail for the log.
    pub(crate) async fn completing_user(
        &self,
        identifier: &CompletingUser,
    ) -> Result<UserPrincipal, (String, String)> {
        match identifier {
            CompletingUser::UserId(u) => {
                UserPrincipal::user_id(u.as_str()).map_err(|e| (e.to_string(), e.to_string()))
            }
            CompletingUser::UserToken(t) => self
                .inbound
                .verify(t.expose_secret())
                .await
                .and_then(|u| u.principal())
                .map_err(|e| {
                    (
                        user_token_refusal(&e),
                        format!("the user token was rejected: {e}"),
                    )
                }),
        }
    }

    /// Complete the session named by its one-time completion URN for `identifier`.
    pub async fn complete(
        &self,
        caller: &Caller,
        completion_uri: &str,
        identifier: &CompletingUser,
    ) -> Result<()> {
        // Only the one-time completion URN issued at the callback names a session here.
        // The polling `sessionUri`, a URN of a session before its callback, or anything
        // else gets the answer of an unknown session, and nothing changes.
        let session = Session::from(
            self.store
                .find_session_by_completion(&sha256_hex(completion_uri))
                .await?
                .ok_or_else(unknown_session)?,
        );
        let record = session.record().clone();
        let now = self.clock.now_ms();
        let audit = |outcome: Outcome, detail: Value| {
            self.record_session(Some(caller), ACTION, &record, outcome, detail)
        };
        match &session {
            // Waiting for completion, or already claimed: the user is checked first, so a
            // wrong user is told so (and changes nothing) whenever they come.
            Session::Callback(_) | Session::Exchanging(_) | Session::Completed(_) => {}
            // A completion URN exists only from the callback on.
            Session::Pending(_) => return Err(unknown_session()),
            Session::Failed(_) => {
                latchkey_telemetry::authorization_session(
                    latchkey_telemetry::SessionOutcome::AlreadyUsed,
                );
                let reason = failure_reason(&record);
                let message = if reason == Reason::SessionCancelled {
                    "authorization session cancelled: another account opened this authorization link, so it was cancelled to protect the user who started it; nothing was granted. Start the authorization again".to_string()
                } else {
                    let failure = record.failure.as_deref().unwrap_or("unknown reason");
                    format!("authorization session failed: {failure}")
                };
                return Err(Error::new(ApiError::cannot_parse(message)).with_reason(reason));
            }
        }
        let session = match session {
            Session::Callback(waiting) if record.expires_ms <= now => {
                if let Err(TransitionError::Store(e)) = waiting
                    .fail(&self.store, EXPIRED_BEFORE_COMPLETION, now)
                    .await
                {
                    tracing::warn!(error = %e, "could not fail an expired authorization session");
                }
                latchkey_telemetry::authorization_session(
                    latchkey_telemetry::SessionOutcome::Expired,
                );
                audit(Outcome::Denied, json!({"reason": "session expired"})).await;
                return Err(Error::new(ApiError::cannot_parse(
                    "authorization session expired: start the authorization again",
                ))
                .with_reason(Reason::SessionExpired));
            }
            other => other,
        };
        let request = super::session_request(&record)?;
        // [flows-identity] Who is completing? The same user (kind, issuer, subject) who
        // started the flow, or nobody.
        let completing = self.completing_user(identifier).await;
        let mismatch: Option<(String, String)> = match &completing {
            Ok(user) => same_user(&record.user, user)
                .err()
                .map(|why| (why.to_string(), why.to_string())),
            Err(refusal) => Some(refusal.clone()),
        };
        // [/flows-identity]
        if let Some((public, internal)) = mismatch {
            latchkey_telemetry::authorization_session(
                latchkey_telemetry::SessionOutcome::UserMismatch,
            );
            // Fail the session only if nobody claimed it meanwhile (compare-and-set from
            // CALLBACK): a wrong user never breaks the exchange of the right one.
            let failed = match session {
                Session::Callback(waiting) => {
                    match waiting
                        .fail(&self.store, CANCELLED_BY_ANOTHER_USER, now)
                        .await
                    {
                        Ok(_) => true,
                        Err(TransitionError::Lost) => false,
                        Err(TransitionError::Store(e)) => return Err(e.into()),
                    }
                }
                _ => false,
            };
            audit(
                Outcome::Denied,
                // A refused binding records both users: the session's and the completing one.
                json!({"reason": internal,
                    "provider": record.provider, "session_failed": failed,
                    "sessionUser": user_ref(&record.user),
                    "completingUser": completing.as_ref().ok().map(user_ref)}),
            )
            .await;
            let outcome = if failed {
                "the authorization session has failed and nothing was stored"
            } else {
                "nothing was stored for this user"
            };
            return Err(
                Error::new(ApiError::AccessDenied(format!("{public}; {outcome}")))
                    .with_internal(internal)
                    .with_reason(Reason::UserMismatch),
            );
        }
        let Session::Callback(waiting) = session else {
            audit(Outcome::Denied, json!({"reason": "session already used"})).await;
            latchkey_telemetry::authorization_session(
                latchkey_telemetry::SessionOutcome::AlreadyUsed,
            );
            return Err(already_used());
        };
        // Claim the session: exactly one completion gets past this line.
        let exchanging = match waiting.claim(&self.store, now).await {
            Ok(s) => s,
            Err(TransitionError::Lost) => {
                audit(Outcome::Denied, json!({"reason": "session already used"})).await;
                latchkey_telemetry::authorization_session(
                    latchkey_telemetry::SessionOutcome::AlreadyUsed,
                );
                return Err(already_used());
            }
            Err(TransitionError::Store(e)) => return Err(e.into()),
        };
        self.exchange_and_store(caller, exchanging, &request).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod same_user_tests {
    use super::*;

    #[test]
    fn completion_needs_the_same_kind_issuer_and_subject() {
        let id = |s: &str| UserPrincipal::user_id(s).unwrap();
        let jwt = |i: &str, s: &str| UserPrincipal::jwt(i, s).unwrap();
        let a = "https://a.example";
        let b = "https://b.example";
        assert_eq!(same_user(&id("alice"), &id("alice")), Ok(()));
        assert_eq!(same_user(&jwt(a, "alice"), &jwt(a, "alice")), Ok(()));
        // Issue 12 item 4, both directions: a JWT-started session and a bare user id of
        // the same subject; a user-id session and a token of the same subject.
        assert!(
            same_user(&jwt(a, "alice"), &id("alice"))
                .unwrap_err()
                .contains("userToken")
        );
        assert!(
            same_user(&id("alice"), &jwt(b, "alice"))
                .unwrap_err()
                .contains("userId")
        );
        assert!(
            same_user(&jwt(a, "alice"), &jwt(b, "alice"))
                .unwrap_err()
                .contains("another issuer")
        );
        assert!(same_user(&jwt(a, "alice"), &jwt(a, "bob")).is_err());
        assert!(same_user(&id("alice"), &id("bob")).is_err());
    }
}
