//! The token vault's settings. Latchkey has one vault, `default`, whose keys are wrapped
//! with the server's key-encryption key.

use latchkey_core::ApiError;
use latchkey_core::arn::ResourceKind;
use latchkey_store::TokenVaultRecord;

use super::{Registry, Target};
use crate::caller::Caller;
use crate::error::Result;

/// The one token vault.
pub const DEFAULT_VAULT: &str = "default";

/// The key configuration a `SetTokenVaultCMK` may set (validated: only the service
/// managed key is available).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KmsInput {
    ServiceManagedKey,
}

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
                key_type: "ServiceManagedKey".into(),
                kms_key_arn: None,
                updated_ms: 0,
            }))
    }

    pub async fn set_token_vault_key(
        &self,
        caller: &Caller,
        id: &str,
        key: KmsInput,
    ) -> Result<TokenVaultRecord> {
        self.find_token_vault(id).await?; // existence
        let KmsInput::ServiceManagedKey = key;
        let record = TokenVaultRecord {
            id: id.to_string(),
            key_type: "ServiceManagedKey".into(),
            kms_key_arn: None,
            updated_ms: self.clock.now_ms(),
        };
        let arn = self.arn.token_vault(id);
        self.change(
            caller,
            "SetTokenVaultCMK",
            Target {
                kind: ResourceKind::TokenVault,
                arn: &arn,
                label: "token vault",
                name: id,
            },
            self.store.upsert_token_vault(&record),
        )
        .await?;
        self.find_token_vault(id).await
    }
}
