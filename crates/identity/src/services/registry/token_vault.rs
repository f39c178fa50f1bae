//! The token vault's settings. Latchkey has one vault, `default`. Its keys are wrapped by
//! the server's key-encryption keys; with `key_provider = "aws-kms"` those are themselves
//! wrapped by a KMS key, which `SetTokenVaultCMK` chooses: the deployment's own key
//! (`ServiceManagedKey`, `kms_key_id`) or a customer managed key.

use latchkey_core::ApiError;
use latchkey_core::arn::ResourceKind;
use latchkey_core::audit::Outcome;
use latchkey_core::crypto::{CryptoError, KmsKeyState, KmsRoot};
use latchkey_store::TokenVaultRecord;

use super::{Registry, Target};
use crate::caller::Caller;
use crate::error::Result;

/// The one token vault.
pub const DEFAULT_VAULT: &str = "default";

pub const SERVICE_MANAGED: &str = "ServiceManagedKey";
pub const CUSTOMER_MANAGED: &str = "CustomerManagedKey";

/// The key configuration a `SetTokenVaultCMK` sets (validated by the handler).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KmsInput {
    ServiceManagedKey,
    /// A KMS key id, ARN or alias.
    CustomerManagedKey(String),
}

/// The field a customer managed key's problems are reported on.
const ARN_FIELD: &str = "kmsConfiguration.kmsKeyArn";

impl Registry {
    /// The vault `id` (`ResourceNotFoundException` for any other than `default`), with its
    /// default settings until they were first set.
    pub async fn find_token_vault(&self, id: &str) -> Result<TokenVaultRecord> {
        if id != DEFAULT_VAULT {
            return Err(ApiError::NotFound(format!(
                "token vault {id:?} not found (Latchkey has one vault, \"default\")"
            ))
            .into());
        }
        Ok(self
            .store
            .find_token_vault(id)
            .await?
            .unwrap_or(TokenVaultRecord {
                id: id.into(),
                key_type: SERVICE_MANAGED.into(),
                kms_key_arn: None,
                updated_ms: 0,
            }))
    }

    fn kms_root(&self) -> Option<&dyn KmsRoot> {
        self.kms_root.as_deref()
    }

    pub async fn set_token_vault_key(
        &self,
        caller: &Caller,
        id: &str,
        key: KmsInput,
    ) -> Result<TokenVaultRecord> {
        self.find_token_vault(id).await?; // existence
        let (key_type, arn) = match (key, self.kms_root()) {
            (KmsInput::ServiceManagedKey, None) => (SERVICE_MANAGED, None),
            (KmsInput::CustomerManagedKey(_), None) => {
                return Err(ApiError::field(
                    ARN_FIELD,
                    "CustomerManagedKey is not available: this Latchkey server keeps its key-encryption keys in a key file; start it with key_provider = \"aws-kms\" to protect them with a KMS key",
                )
                .into());
            }
            (KmsInput::ServiceManagedKey, Some(root)) => {
                wrap_under(root, root.service_key()).await?;
                (SERVICE_MANAGED, None)
            }
            (KmsInput::CustomerManagedKey(key), Some(root)) => {
                let info = root.describe_key(&key).await.map_err(kms_failure(&key))?;
                if info.state != KmsKeyState::Enabled {
                    return Err(ApiError::field(
                        ARN_FIELD,
                        format!("the KMS key {key} {}", state_words(&info.state)),
                    )
                    .into());
                }
                (CUSTOMER_MANAGED, Some(wrap_under(root, &info.arn).await?))
            }
        };
        let record = TokenVaultRecord {
            id: id.to_string(),
            key_type: key_type.into(),
            kms_key_arn: arn,
            updated_ms: self.clock.now_ms(),
        };
        let arn = self.arn.token_vault(id);
        self.change(
            caller,
            "SetTokenVaultCMK",
            vault_target(&arn, id),
            self.store.upsert_token_vault(&record),
        )
        .await?;
        self.find_token_vault(id).await
    }

    /// `ResetTokenVaultKeyMaterial`: allowed only when the vault's customer managed key
    /// was deleted (scheduled for deletion, or gone). The stored OAuth tokens are wiped
    /// (users consent again), the providers are kept, and the key-encryption keys — still
    /// in this replica's memory — are wrapped by the deployment's own KMS key again.
    pub async fn reset_token_vault(&self, caller: &Caller, id: &str) -> Result<TokenVaultRecord> {
        let record = self.find_token_vault(id).await?;
        let refuse = |why: String| -> crate::error::Error {
            ApiError::field("tokenVaultId", format!("ResetTokenVaultKeyMaterial is only allowed after the vault's customer managed key was deleted; {why}")).into()
        };
        let Some(root) = self.kms_root() else {
            return Err(refuse(
                "this vault's keys are wrapped by the server's key file".into(),
            ));
        };
        let cmk = match (record.key_type.as_str(), &record.kms_key_arn) {
            (CUSTOMER_MANAGED, Some(arn)) => arn.clone(),
            _ => return Err(refuse("this vault uses the service managed key".into())),
        };
        let info = root.describe_key(&cmk).await.map_err(kms_failure(&cmk))?;
        if !matches!(
            info.state,
            KmsKeyState::PendingDeletion | KmsKeyState::NotFound
        ) {
            return Err(refuse(format!(
                "the key {cmk} {}",
                state_words(&info.state)
            )));
        }
        wrap_under(root, root.service_key()).await?;
        let wiped = self.store.delete_all_grants().await?;
        let new = TokenVaultRecord {
            id: id.to_string(),
            key_type: SERVICE_MANAGED.into(),
            kms_key_arn: None,
            updated_ms: self.clock.now_ms(),
        };
        self.store.upsert_token_vault(&new).await?;
        let arn = self.arn.token_vault(id);
        self.forget(ResourceKind::TokenVault, id);
        self.audit
            .record(
                Some(caller),
                "ResetTokenVaultKeyMaterial",
                None,
                None,
                Some(&arn),
                Outcome::Success,
                serde_json::json!({"deletedKey": cmk, "grantsWiped": wiped}),
            )
            .await;
        self.find_token_vault(id).await
    }
}

fn vault_target<'a>(arn: &'a str, id: &'a str) -> Target<'a> {
    Target {
        kind: ResourceKind::TokenVault,
        arn,
        label: "token vault",
        name: id,
    }
}

/// Wrap the key-encryption keys under `key`; its ARN.
async fn wrap_under(root: &dyn KmsRoot, key: &str) -> Result<String> {
    Ok(root.wrap_keys_under(key).await.map_err(kms_failure(key))?)
}

/// A KMS failure as the client sees it: which key, not KMS's own words (logged).
fn kms_failure(key: &str) -> impl FnOnce(CryptoError) -> ApiError + '_ {
    move |e| {
        tracing::error!(kms_key = key, error = %e, "a KMS call for the token vault failed");
        ApiError::EncryptionFailure(format!(
            "Latchkey could not use the KMS key {key}; the identity service's log says why (check the key's policy and state)"
        ))
    }
}

fn state_words(state: &KmsKeyState) -> String {
    match state {
        KmsKeyState::Enabled => "is enabled, not deleted".into(),
        KmsKeyState::Disabled => "is disabled".into(),
        KmsKeyState::PendingDeletion => "is pending deletion".into(),
        KmsKeyState::NotFound => "does not exist".into(),
        KmsKeyState::Other(s) => format!("is not usable ({s})"),
    }
}
