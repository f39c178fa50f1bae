//! Workload identities as the data plane uses them: facts cached per replica (does the
//! workload exist, may it assert user ids, its allowed return URLs), workload access
//! tokens issued for a caller (and a user), and WATs verified on every data-plane call.
//! Every token issued and every refusal is an audit event.

use std::sync::Arc;
use std::time::Duration;

use latchkey_core::arn::ArnContext;
use latchkey_core::audit::Outcome;
use latchkey_core::clock::Clock;
use latchkey_core::wat::{WatAuthority, WatClaims, WatError};
use latchkey_core::{ApiError, UserPrincipal};
use latchkey_store::Store;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::audit::Auditor;
use crate::cache::TtlCache;
use crate::caller::Caller;
use crate::error::{Error, Result, user_token_rejected};
use crate::inbound::InboundVerifier;

/// Tag that lets a workload credential call `GetWorkloadAccessTokenForUserId`.
pub const ALLOW_USER_ID_TAG: &str = "latchkey:allow-user-id";

/// Facts about a workload needed on every data-plane call, cached briefly.
#[derive(Debug, Clone)]
pub struct WorkloadFacts {
    pub allow_user_id: bool,
    /// `allowedResourceOauth2ReturnUrls` (exact matches).
    pub return_urls: Arc<Vec<String>>,
}

/// Who a workload access token is for, as the request asserts it (validated).
#[derive(Debug)]
pub enum UserAssertion {
    /// No user (`GetWorkloadAccessToken`).
    None,
    /// A user id the workload asserts (`GetWorkloadAccessTokenForUserId`).
    UserId(String),
    /// A user token to verify (`GetWorkloadAccessTokenForJWT`).
    Token(SecretString),
}

/// The workload service.
#[derive(Debug)]
pub struct Workloads {
    store: Store,
    arn: ArnContext,
    clock: Arc<dyn Clock>,
    wat: Arc<WatAuthority>,
    wat_ttl_seconds: i64,
    inbound: InboundVerifier,
    audit: Auditor,
    /// Workload facts by name (`None`: no such workload).
    facts: TtlCache<String, Option<WorkloadFacts>>,
    /// Verified workload access tokens (checked again for expiry on every hit).
    verified: TtlCache<String, Arc<WatClaims>>,
}

/// The workload service's settings.
#[derive(Debug, Clone)]
pub struct WorkloadSettings {
    pub arn: ArnContext,
    pub wat_ttl_seconds: i64,
    pub cache_ttl: Duration,
    pub cache_cap: usize,
}

impl Workloads {
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        wat: Arc<WatAuthority>,
        inbound: InboundVerifier,
        audit: Auditor,
        settings: WorkloadSettings,
    ) -> Self {
        Self {
            store,
            arn: settings.arn,
            clock,
            wat,
            wat_ttl_seconds: settings.wat_ttl_seconds,
            inbound,
            audit,
            facts: TtlCache::new(settings.cache_ttl, settings.cache_cap),
            verified: TtlCache::new(settings.cache_ttl, settings.cache_cap),
        }
    }

    /// Forget the cached facts of a workload (after a change made here).
    pub fn invalidate(&self, name: &str) {
        self.facts.invalidate(name);
    }

    #[allow(clippy::too_many_arguments)]
    async fn record(
        &self,
        caller: &Caller,
        action: &str,
        workload: Option<&str>,
        user: Option<&UserPrincipal>,
        outcome: Outcome,
        detail: Value,
    ) {
        self.audit
            .record(Some(caller), action, workload, user, None, outcome, detail)
            .await;
    }

    /// Workload facts, or `ResourceNotFoundException`.
    pub async fn facts(&self, name: &str) -> Result<WorkloadFacts> {
        let facts = match self.facts.get(name) {
            Some(f) => f,
            None => {
                let facts = match self.store.find_workload(name).await? {
                    Some(workload) => {
                        let tags = self
                            .store
                            .list_tags(&self.arn.workload_identity(name))
                            .await?;
                        Some(WorkloadFacts {
                            allow_user_id: tags
                                .iter()
                                .any(|(k, v)| k == ALLOW_USER_ID_TAG && v == "true"),
                            return_urls: Arc::new(workload.return_urls),
                        })
                    }
                    None => None,
                };
                self.facts.put(name.to_string(), facts.clone());
                facts
            }
        };
        facts.ok_or_else(|| {
            Error::new(ApiError::NotFound(format!(
                "workload identity {name:?} not found"
            )))
        })
    }

    /// Issue a workload access token for `workload` (and the asserted user) to `caller`.
    pub async fn issue(
        &self,
        caller: &Caller,
        action: &str,
        workload: &str,
        user: &UserAssertion,
    ) -> Result<String> {
        if let Err(e) = caller.require_workload(workload) {
            self.record(
                caller,
                action,
                Some(workload),
                None,
                Outcome::Denied,
                json!({"reason": "workload not allowed for caller"}),
            )
            .await;
            return Err(e.into());
        }
        let facts = self.facts(workload).await?;
        let user: Option<UserPrincipal> = match user {
            UserAssertion::None => None,
            UserAssertion::UserId(id) => {
                // Validated by the handler: 1 to 128 characters.
                let asserted = Some(UserPrincipal::user_id(id.as_str()).map_err(|_| {
                    ApiError::field("userId", "Member must have length between 1 and 128")
                })?);
                if !caller.is_admin() && !facts.allow_user_id {
                    self.record(
                        caller,
                        action,
                        Some(workload),
                        asserted.as_ref(),
                        Outcome::Denied,
                        json!({"reason": "user id trust not enabled for workload"}),
                    )
                    .await;
                    return Err(ApiError::AccessDenied(format!(
                        "workload {workload:?} may not assert user ids: use GetWorkloadAccessTokenForJWT, or have an admin set the tag {}=true on the workload identity",
                        ALLOW_USER_ID_TAG
                    ))
                    .into());
                }
                asserted
            }
            UserAssertion::Token(token) => {
                match self
                    .inbound
                    .verify(token.expose_secret())
                    .await
                    .and_then(|u| u.principal())
                {
                    Ok(user) => Some(user),
                    Err(e) => {
                        self.record(
                            caller,
                            action,
                            Some(workload),
                            None,
                            Outcome::Denied,
                            json!({"reason": e.to_string()}),
                        )
                        .await;
                        return Err(user_token_rejected(&e));
                    }
                }
            }
        };
        let now = self.clock.now_secs();
        let (token, claims) = self
            .wat
            .issue(workload, user.as_ref(), now, self.wat_ttl_seconds)
            .map_err(Error::internal)?;
        self.record(
            caller,
            action,
            Some(workload),
            claims.user.as_ref(),
            Outcome::Success,
            json!({"jti": claims.jti, "exp": claims.exp}),
        )
        .await;
        Ok(token)
    }

    /// Verify a WAT presented to the data plane: signature, issuer, expiry, the caller may act
    /// for its workload, and the workload still exists.
    pub async fn verify_wat(
        &self,
        caller: &Caller,
        token: &str,
        action: &str,
    ) -> Result<Arc<WatClaims>> {
        let now = self.clock.now_secs();
        let verified = match self.verified.get(token) {
            // A cached verification still has to be unexpired now.
            Some(claims) if claims.exp > now => Ok(claims),
            _ => self.wat.verify(token, now).map(|claims| {
                let claims = Arc::new(claims);
                self.verified.put(token.to_string(), claims.clone());
                claims
            }),
        };
        let claims = match verified {
            Ok(c) => c,
            Err(e) => {
                self.record(
                    caller,
                    action,
                    None,
                    None,
                    Outcome::Denied,
                    json!({"reason": e.to_string()}),
                )
                .await;
                // Every refusal names the failed check; a key fault is the service's, not the
                // token's, and its text stays in the log.
                let public = match &e {
                    WatError::Key(_) => "the workload access token was rejected".to_string(),
                    e => format!("the workload access token was rejected: {e}"),
                };
                return Err(Error::new(ApiError::AccessDenied(public)).with_internal(e));
            }
        };
        if let Err(e) = caller.require_workload(&claims.sub) {
            self.record(
                caller,
                action,
                Some(&claims.sub),
                claims.user.as_ref(),
                Outcome::Denied,
                json!({"reason": "token belongs to another workload"}),
            )
            .await;
            return Err(e.into());
        }
        // Only a missing workload voids the token; a database outage stays a retry-safe 503.
        if let Err(e) = self.facts(&claims.sub).await {
            if !matches!(e.public(), ApiError::NotFound(_)) {
                return Err(e);
            }
            self.record(
                caller,
                action,
                Some(&claims.sub),
                claims.user.as_ref(),
                Outcome::Denied,
                json!({"reason": "workload no longer exists"}),
            )
            .await;
            return Err(ApiError::AccessDenied(
                "the workload access token was rejected: its workload identity no longer exists"
                    .into(),
            )
            .into());
        }
        Ok(claims)
    }
}
