//! `GetResourceOauth2Token` with `USER_FEDERATION`: poll a session, answer from the vault,
//! or start a new authorization session and hand out its authorization URL.

use std::collections::BTreeMap;

use latchkey_authn::pkce::PkceVerifier;
use latchkey_core::ApiError;
use latchkey_core::audit::Outcome;
use latchkey_core::audit::chain::{session_ref, vend_id};
use latchkey_core::crypto;
use latchkey_store::{GrantKey, SessionRecord, SessionStatus};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::{SESSION_URI_PREFIX, SessionRequest, SessionSecrets, Sessions, random_b64, sha256_hex};
use crate::aad;
use crate::caller::Caller;
use crate::error::{Error, Reason, Result};
use crate::services::providers::ProviderRuntime;
use crate::services::vault::VaultAnswer;

/// A validated user-federation token request for one grant key.
#[derive(Debug)]
pub struct UserFederation<'a> {
    pub key: GrantKey,
    pub scopes: Vec<String>,
    pub resources: Vec<String>,
    pub audiences: Vec<String>,
    /// Polling a session started before (its `sessionUri`).
    pub session_uri: Option<&'a str>,
    pub return_url: Option<&'a str>,
    pub force_authentication: bool,
    pub custom_state: Option<&'a SecretString>,
    pub custom_parameters: Option<&'a BTreeMap<String, SecretString>>,
}

/// What `GetResourceOauth2Token` answers.
#[derive(Debug)]
pub enum TokenAnswer {
    /// The vaulted (or refreshed) access token.
    Token(SecretString),
    /// A polled session's status (`IN_PROGRESS` or `FAILED`); a `FAILED` one says why.
    Status {
        session_uri: String,
        status: &'static str,
        reason: Option<Reason>,
    },
    /// Consent needed: a new session and the URL to send the user to.
    Started {
        session_uri: String,
        authorization_url: String,
    },
}

const ACTION: &str = "GetResourceOauth2Token";

impl Sessions {
    async fn audit_token(&self, caller: &Caller, key: &GrantKey, outcome: Outcome, detail: Value) {
        self.audit
            .record_grant(caller, ACTION, key, outcome, detail)
            .await;
    }

    /// Poll, read the vault, or start a session.
    pub async fn user_federation(
        &self,
        caller: &Caller,
        req: UserFederation<'_>,
    ) -> Result<TokenAnswer> {
        let key = &req.key;
        let name = key.provider.as_str();
        // Polling a session: its status until it completes, then the vault.
        if let Some(uri) = req.session_uri {
            let id = uri.trim_start_matches(SESSION_URI_PREFIX);
            let session = self
                .store
                .find_session(id)
                .await?
                .ok_or_else(super::unknown_session)?;
            if session.workload != key.workload
                || session.user != key.user
                || session.provider != key.provider
            {
                self.audit_token(
                    caller,
                    key,
                    Outcome::Denied,
                    json!({"provider": name, "reason": "session of another workload, user or provider"}),
                )
                .await;
                return Err(ApiError::AccessDenied(
                    "this authorization session belongs to another workload, user or provider"
                        .into(),
                )
                .into());
            }
            let expired = session.expires_ms <= self.clock.now_ms();
            let status = |status, reason| TokenAnswer::Status {
                session_uri: uri.to_string(),
                status,
                reason,
            };
            match session.status {
                SessionStatus::Completed => {}
                SessionStatus::Failed => {
                    return Ok(status("FAILED", Some(super::failure_reason(&session))));
                }
                _ if expired => return Ok(status("FAILED", Some(Reason::SessionExpired))),
                _ => return Ok(status("IN_PROGRESS", None)),
            }
        }
        let answer = if req.force_authentication && req.session_uri.is_none() {
            VaultAnswer::NeedsConsent {
                scopes: req.scopes.clone(),
                reason: "forceAuthentication",
            }
        } else {
            self.vault.get(key, &req.scopes, &req.resources).await?
        };
        match answer {
            VaultAnswer::Token(token) => {
                // The vend id joins this event to the agent's tool call that uses the token.
                self.audit_token(
                    caller,
                    key,
                    Outcome::Success,
                    json!({"provider": name, "flow": "USER_FEDERATION", "scopes": req.scopes,
                        "vendId": vend_id(token.expose_secret()),
                        "session": req.session_uri.map(|u| session_ref(u.trim_start_matches(SESSION_URI_PREFIX)))}),
                )
                .await;
                Ok(TokenAnswer::Token(token))
            }
            VaultAnswer::NeedsConsent {
                scopes: wanted,
                reason,
            } => {
                let provider = self.providers.require(name).await?;
                let (uri, url) = self.start_session(&provider, &req, wanted.clone()).await?;
                self.audit_token(
                    caller,
                    key,
                    Outcome::Success,
                    json!({"provider": name, "flow": "USER_FEDERATION", "scopes": wanted, "consent": reason,
                        "session": session_ref(uri.trim_start_matches(SESSION_URI_PREFIX))}),
                )
                .await;
                Ok(TokenAnswer::Started {
                    session_uri: uri,
                    authorization_url: url,
                })
            }
        }
    }

    /// Create an authorization session; returns its `sessionUri` and authorization URL.
    async fn start_session(
        &self,
        provider: &ProviderRuntime,
        req: &UserFederation<'_>,
        scopes: Vec<String>,
    ) -> Result<(String, String)> {
        let id = random_b64(32)?;
        let oauth_state = random_b64(32)?;
        let secrets = SessionSecrets {
            state: oauth_state.clone(),
            verifier: PkceVerifier::generate()
                .map_err(|_| Error::internal("random source failed"))?,
            custom_state: req.custom_state.map(|s| s.expose_secret().to_string()),
            custom_parameters: req
                .custom_parameters
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.expose_secret().to_string()))
                .collect(),
        };
        let sealed = serde_json::to_vec(&secrets).map_err(Error::internal)?;
        let secrets_envelope = crypto::encrypt(
            self.keys.as_ref(),
            aad::session_secrets(&id).as_bytes(),
            &sealed,
        )
        .await
        .map_err(|e| Error::internal(format!("could not seal an authorization session: {e}")))?;
        let request = SessionRequest {
            scopes,
            resources: req.resources.clone(),
            audiences: req.audiences.clone(),
            return_url: req.return_url.map(str::to_string),
        };
        let now = self.clock.now_ms();
        self.store
            .create_session(&SessionRecord {
                id: id.clone(),
                state_hash: sha256_hex(&oauth_state),
                workload: req.key.workload.clone(),
                user: req.key.user.clone(),
                provider: provider.name.clone(),
                request: serde_json::to_value(&request).map_err(Error::internal)?,
                secrets_envelope,
                code_envelope: None,
                status: SessionStatus::Pending,
                failure: None,
                created_ms: now,
                expires_ms: now + self.settings.ttl_secs * 1000,
                updated_ms: now,
            })
            .await?;
        latchkey_telemetry::authorization_session(latchkey_telemetry::SessionOutcome::Created);
        let uri = format!("{SESSION_URI_PREFIX}{id}");
        let url = format!(
            "{}/identities/oauth2/authorize?request_uri={}",
            self.settings.public_url,
            url::form_urlencoded::byte_serialize(uri.as_bytes()).collect::<String>()
        );
        Ok((uri, url))
    }
}
