//! Audit events: who did what to which resource, with what outcome — never a secret.
//! Events are appended in order, in blocks chained by a keyed hash ([`chain`]).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Denied,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Denied => "denied",
            Self::Failed => "failed",
        }
    }
}

/// One audit event. Fields are identifiers and outcomes only; `detail` holds non-secret
/// context (scopes, provider, error name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub id: String,
    /// Unix milliseconds.
    pub time_ms: i64,
    /// The authenticated caller (access key id), if any.
    pub caller: Option<String>,
    /// The caller's role (`admin`, `workload:<name>`, `binding`).
    pub role: Option<String>,
    pub workload: Option<String>,
    /// The user's subject (a user id, or a token's `sub`).
    pub user_id: Option<String>,
    /// The inbound issuer of a user established by a token (`…ForJWT`, `userToken`);
    /// absent for a user id asserted by the caller. Issuer and subject name the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_issuer: Option<String>,
    /// The operation, e.g. `CreateWorkloadIdentity`.
    pub action: String,
    /// The resource acted on (an ARN or name).
    pub target: Option<String>,
    pub outcome: Outcome,
    pub detail: serde_json::Value,
}

pub mod chain;
