//! API-key credential providers: the key sealed at rest, opened for `GetResourceApiKey`
//! (envelopes cached per replica).

use std::collections::BTreeMap;
use std::sync::Arc;

use latchkey_core::ApiError;
use latchkey_core::arn::ResourceKind;
use latchkey_core::crypto;
use latchkey_store::ApiKeyProviderRecord;
use secrecy::{ExposeSecret, SecretString};

use super::{Page, Registry, Target, tag_pairs};
use crate::aad;
use crate::caller::Caller;
use crate::error::{Error, Result};

const LABEL: &str = "API key credential provider";

/// A validated create or update request.
#[derive(Debug)]
pub struct ApiKeyProviderInput {
    pub name: String,
    pub api_key: SecretString,
    pub tags: Option<BTreeMap<String, String>>,
}

fn not_found(name: &str) -> ApiError {
    ApiError::NotFound(format!("{LABEL} {name:?} not found"))
}

impl Registry {
    fn api_key_target<'a>(label: &'static str, name: &'a str, arn: &'a str) -> Target<'a> {
        Target {
            kind: ResourceKind::ApiKeyProvider,
            arn,
            label,
            name,
        }
    }

    async fn seal_api_key(&self, input: &ApiKeyProviderInput) -> Result<Vec<u8>> {
        crypto::encrypt(
            self.keys.as_ref(),
            aad::api_key_provider(&input.name).as_bytes(),
            input.api_key.expose_secret().as_bytes(),
        )
        .await
        .map_err(|e| Error::internal(format!("could not seal an API key: {e}")))
    }

    pub async fn create_api_key_provider(
        &self,
        caller: &Caller,
        input: ApiKeyProviderInput,
    ) -> Result<ApiKeyProviderRecord> {
        let envelope = self.seal_api_key(&input).await?;
        let now = self.clock.now_ms();
        let record = ApiKeyProviderRecord {
            name: input.name,
            secret_envelope: Some(envelope),
            created_ms: now,
            updated_ms: now,
        };
        let arn = self.arn.api_key_provider(&record.name);
        self.change(
            caller,
            "CreateApiKeyCredentialProvider",
            Self::api_key_target("credential provider", &record.name, &arn),
            self.store
                .create_api_key_provider(&record, &tag_pairs(input.tags), &arn),
        )
        .await?;
        Ok(record)
    }

    pub async fn find_api_key_provider(&self, name: &str) -> Result<ApiKeyProviderRecord> {
        Ok(self
            .store
            .find_api_key_provider(name)
            .await?
            .ok_or_else(|| not_found(name))?)
    }

    pub async fn update_api_key_provider(
        &self,
        caller: &Caller,
        input: ApiKeyProviderInput,
    ) -> Result<ApiKeyProviderRecord> {
        let envelope = self.seal_api_key(&input).await?;
        let mut record = self.find_api_key_provider(&input.name).await?;
        record.secret_envelope = Some(envelope);
        record.updated_ms = self.clock.now_ms();
        let arn = self.arn.api_key_provider(&record.name);
        self.change(
            caller,
            "UpdateApiKeyCredentialProvider",
            Self::api_key_target(LABEL, &record.name, &arn),
            self.store.update_api_key_provider(&record),
        )
        .await?;
        Ok(record)
    }

    pub async fn delete_api_key_provider(&self, caller: &Caller, name: &str) -> Result<()> {
        let arn = self.arn.api_key_provider(name);
        self.change(
            caller,
            "DeleteApiKeyCredentialProvider",
            Self::api_key_target(LABEL, name, &arn),
            self.store.delete_api_key_provider(name, &arn),
        )
        .await
    }

    pub async fn list_api_key_providers(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Page<ApiKeyProviderRecord>> {
        let rows = self.store.list_api_key_providers(after, limit + 1).await?;
        Ok(Page::of(rows, limit, |p| &p.name))
    }

    /// The API key of provider `name` (`GetResourceApiKey`).
    pub async fn open_api_key(&self, name: &str) -> Result<SecretString> {
        let envelope = match self.api_keys.get(name) {
            Some(hit) => hit,
            None => {
                let envelope = self
                    .store
                    .find_api_key_provider(name)
                    .await?
                    .and_then(|r| r.secret_envelope)
                    .map(Arc::new);
                self.api_keys.put(name.to_string(), envelope.clone());
                envelope
            }
        };
        let envelope = envelope.ok_or_else(|| not_found(name))?;
        crypto::decrypt_string(
            self.keys.as_ref(),
            aad::api_key_provider(name).as_bytes(),
            &envelope,
        )
        .await
        .map_err(|e| {
            Error::internal(format!(
                "could not open the API key of the {LABEL} {name:?}: {e}"
            ))
        })
    }
}
