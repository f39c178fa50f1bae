//! The data plane (`/identities/…`): the operations `latchkey-client` implements.
//!
//! Requests keep the member order the Python SDK sends; optional members are omitted when
//! unset.

use std::collections::BTreeMap;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::secret;

/// `GetWorkloadAccessToken`, `GetWorkloadAccessTokenForJWT` (with `userToken`) and
/// `GetWorkloadAccessTokenForUserId` (with `userId`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadAccessTokenRequest {
    pub workload_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "secret::expose_option"
    )]
    pub user_token: Option<SecretString>,
}

/// The answer of the three `GetWorkloadAccessToken*` operations.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadAccessTokenResponse {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "secret::expose_option"
    )]
    pub workload_access_token: Option<SecretString>,
}

/// `GetResourceOauth2Token`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetResourceOauth2TokenRequest {
    #[serde(serialize_with = "secret::expose")]
    pub workload_identity_token: SecretString,
    pub resource_credential_provider_name: String,
    /// Required by the model (the service says so when it is missing); `[]` is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// `USER_FEDERATION`, `M2M` or `ON_BEHALF_OF_TOKEN_EXCHANGE` (checked by the service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth2_flow: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_oauth2_return_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_authentication: Option<bool>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "secret::expose_option"
    )]
    pub custom_state: Option<SecretString>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "secret::expose_map"
    )]
    pub custom_parameters: Option<BTreeMap<String, SecretString>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audiences: Option<Vec<String>>,
}

/// The answer of `GetResourceOauth2Token`: a token, or a session to send the user to or
/// to poll.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetResourceOauth2TokenResponse {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "secret::expose_option"
    )]
    pub access_token: Option<SecretString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_url: Option<String>,
    /// `IN_PROGRESS` or `FAILED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_uri: Option<String>,
}

/// `CompleteResourceTokenAuth`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompleteResourceTokenAuthRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_identifier: Option<UserIdentifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_uri: Option<String>,
}

/// The `userIdentifier` union: exactly one member is set (checked by the service).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserIdentifier {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "secret::expose_option"
    )]
    pub user_token: Option<SecretString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

/// The (empty) answer of `CompleteResourceTokenAuth`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct CompleteResourceTokenAuthResponse {}

/// `GetResourceApiKey`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetResourceApiKeyRequest {
    #[serde(serialize_with = "secret::expose")]
    pub workload_identity_token: SecretString,
    pub resource_credential_provider_name: String,
}

/// The answer of `GetResourceApiKey`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetResourceApiKeyResponse {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "secret::expose_option"
    )]
    pub api_key: Option<SecretString>,
}
