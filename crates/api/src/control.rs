//! Control-plane responses (`/identities/…`, `/credentialproviders/…`, `/tokenvault/…`,
//! `/tags/…`), as the identity service returns them.
//!
//! Members in alphabetical order (see the crate documentation). Timestamps are epoch
//! seconds ([`crate::epoch_seconds`]); `createdTime` and `lastUpdatedTime` are absent from
//! the answers of the `Create*` operations.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A workload identity: the answer of `CreateWorkloadIdentity` (without times),
/// `GetWorkloadIdentity` and `UpdateWorkloadIdentity`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadIdentityResponse {
    pub allowed_resource_oauth2_return_urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_time: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated_time: Option<f64>,
    pub name: String,
    pub workload_identity_arn: String,
}

/// One entry of `ListWorkloadIdentities` (the model's `WorkloadIdentityType`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadIdentitySummary {
    pub name: String,
    pub workload_identity_arn: String,
}

/// The answer of `ListWorkloadIdentities`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListWorkloadIdentitiesResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
    pub workload_identities: Vec<WorkloadIdentitySummary>,
}

/// A secret the service keeps (the model's `Secret`): Latchkey names it by an ARN of its
/// own; the value never leaves the service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretReference {
    pub secret_arn: String,
}

/// Where a provider's secret is kept: Latchkey always keeps it itself.
pub const MANAGED: &str = "MANAGED";

/// An API-key credential provider: the answer of `CreateApiKeyCredentialProvider`
/// (without times), `GetApiKeyCredentialProvider` and `UpdateApiKeyCredentialProvider`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyCredentialProviderResponse {
    pub api_key_secret_arn: SecretReference,
    /// Always [`MANAGED`].
    pub api_key_secret_source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_time: Option<f64>,
    pub credential_provider_arn: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated_time: Option<f64>,
    pub name: String,
}

/// One entry of `ListApiKeyCredentialProviders` (the model's
/// `ApiKeyCredentialProviderItem`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyCredentialProviderSummary {
    pub created_time: f64,
    pub credential_provider_arn: String,
    pub last_updated_time: f64,
    pub name: String,
}

/// An OAuth2 credential provider: the answer of `CreateOauth2CredentialProvider` (without
/// vendor and times), `GetOauth2CredentialProvider` and `UpdateOauth2CredentialProvider`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Oauth2CredentialProviderResponse {
    pub callback_url: String,
    pub client_secret_arn: SecretReference,
    /// Always [`MANAGED`].
    pub client_secret_source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_time: Option<f64>,
    pub credential_provider_arn: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_provider_vendor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated_time: Option<f64>,
    pub name: String,
    /// The vendor's `Oauth2ProviderConfigOutput` union (rendered by `latchkey-core`).
    pub oauth2_provider_config_output: serde_json::Value,
    /// Always `READY`.
    pub status: String,
}

/// One entry of `ListOauth2CredentialProviders` (the model's
/// `Oauth2CredentialProviderItem`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Oauth2CredentialProviderSummary {
    pub created_time: f64,
    pub credential_provider_arn: String,
    pub credential_provider_vendor: String,
    pub last_updated_time: f64,
    pub name: String,
}

/// The answer of `ListApiKeyCredentialProviders` (`T` =
/// [`ApiKeyCredentialProviderSummary`]) and `ListOauth2CredentialProviders` (`T` =
/// [`Oauth2CredentialProviderSummary`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListCredentialProvidersResponse<T> {
    pub credential_providers: Vec<T>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// A token vault's key configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KmsConfiguration {
    /// `ServiceManagedKey` or `CustomerManagedKey`.
    pub key_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_arn: Option<String>,
}

/// A token vault: the answer of `GetTokenVault`, `SetTokenVaultCMK` and
/// `ResetTokenVaultKeyMaterial`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenVaultResponse {
    pub kms_configuration: KmsConfiguration,
    pub last_modified_date: f64,
    pub token_vault_id: String,
}

/// The answer of `ListTagsForResource`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListTagsForResourceResponse {
    pub tags: BTreeMap<String, String>,
}
