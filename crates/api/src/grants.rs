//! Latchkey's own operations on one user's grants (not AgentCore operations, so not in
//! `spec/models`): `POST /latchkey/ListUserGrants` and `POST /latchkey/RevokeUserGrant`,
//! for the `binding` role (the connections page) and `admin`. The user is named exactly as
//! `CompleteResourceTokenAuth` names them (`userIdentifier`), so a page lists and revokes
//! precisely the grants that completing an authorization stores for that user.

use serde::{Deserialize, Serialize};

use crate::data::UserIdentifier;

/// `ListUserGrants`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListUserGrantsRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_identifier: Option<UserIdentifier>,
}

/// The answer of `ListUserGrants`: every grant held for the user, never a token.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListUserGrantsResponse {
    pub grants: Vec<UserGrant>,
}

/// One grant as its user sees it. Times are epoch seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserGrant {
    pub credential_provider_name: String,
    /// When the user last consented.
    pub granted_time: f64,
    /// When the vault last refreshed the token (absent: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refreshed_time: Option<f64>,
    /// When a workload last received the token, to the minute (absent: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_time: Option<f64>,
    /// The provider refused the refresh token: the next use asks the user again.
    pub needs_consent: bool,
    pub scopes: Vec<String>,
    pub workload_identity_name: String,
}

/// `RevokeUserGrant`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevokeUserGrantRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_identifier: Option<UserIdentifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_identity_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_provider_name: Option<String>,
}

/// What revoking did at the provider. The grant is gone from the vault in every case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProviderRevocation {
    /// The provider confirmed the revocation (RFC 7009).
    Revoked,
    /// The provider has a revocation endpoint but refused or could not be reached.
    Failed,
    /// The provider offers no revocation endpoint.
    NotOffered,
}

/// The answer of `RevokeUserGrant`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevokeUserGrantResponse {
    pub provider_revocation: ProviderRevocation,
}
