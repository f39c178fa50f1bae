//! OAuth2 credential providers: parsed, discovered and sealed by [`Providers::prepare`],
//! then stored.
//!
//! [`Providers::prepare`]: crate::services::providers::Providers

use std::collections::BTreeMap;

use latchkey_core::arn::ResourceKind;
use latchkey_store::Oauth2ProviderRecord;
use serde_json::Value;

use super::{Page, Registry, Target, tag_pairs};
use crate::caller::Caller;
use crate::error::{Error, Result};
use crate::services::providers::{PreparedProvider, not_found};

/// A create or update request (the name and tags validated).
#[derive(Debug)]
pub struct Oauth2ProviderInput {
    pub name: String,
    pub vendor: Value,
    pub config_input: Value,
    pub tags: Option<BTreeMap<String, String>>,
}

impl Registry {
    fn oauth2_target<'a>(label: &'static str, name: &'a str, arn: &'a str) -> Target<'a> {
        Target {
            kind: ResourceKind::Oauth2Provider,
            arn,
            label,
            name,
        }
    }

    async fn prepare_oauth2(&self, input: &Oauth2ProviderInput) -> Result<PreparedProvider> {
        self.providers
            .prepare(&input.name, &input.vendor, &input.config_input)
            .await
    }

    pub async fn create_oauth2_provider(
        &self,
        caller: &Caller,
        input: Oauth2ProviderInput,
    ) -> Result<Oauth2ProviderRecord> {
        let prepared = self.prepare_oauth2(&input).await?;
        let now = self.clock.now_ms();
        let record = Oauth2ProviderRecord {
            name: input.name,
            vendor: prepared.vendor,
            config: serde_json::to_value(&prepared.config).map_err(Error::internal)?,
            secret_envelope: prepared.secret_envelope,
            callback_id: uuid::Uuid::new_v4().to_string(),
            created_ms: now,
            updated_ms: now,
        };
        let arn = self.arn.oauth2_provider(&record.name);
        self.change(
            caller,
            "CreateOauth2CredentialProvider",
            Self::oauth2_target("credential provider", &record.name, &arn),
            self.store
                .create_oauth2_provider(&record, &tag_pairs(input.tags), &arn),
        )
        .await?;
        Ok(record)
    }

    pub async fn find_oauth2_provider(&self, name: &str) -> Result<Oauth2ProviderRecord> {
        self.store
            .find_oauth2_provider(name)
            .await?
            .ok_or_else(|| not_found(name))
    }

    /// Existence first: an update of a missing provider must not fetch its discovery URL.
    pub async fn update_oauth2_provider(
        &self,
        caller: &Caller,
        input: Oauth2ProviderInput,
    ) -> Result<Oauth2ProviderRecord> {
        let mut record = self.find_oauth2_provider(&input.name).await?;
        let prepared = self.prepare_oauth2(&input).await?;
        record.vendor = prepared.vendor;
        record.config = serde_json::to_value(&prepared.config).map_err(Error::internal)?;
        record.secret_envelope = prepared.secret_envelope;
        record.updated_ms = self.clock.now_ms();
        let arn = self.arn.oauth2_provider(&record.name);
        self.change(
            caller,
            "UpdateOauth2CredentialProvider",
            Self::oauth2_target("OAuth2 credential provider", &record.name, &arn),
            self.store.update_oauth2_provider(&record),
        )
        .await?;
        Ok(record)
    }

    pub async fn delete_oauth2_provider(&self, caller: &Caller, name: &str) -> Result<()> {
        let arn = self.arn.oauth2_provider(name);
        self.change(
            caller,
            "DeleteOauth2CredentialProvider",
            Self::oauth2_target("OAuth2 credential provider", name, &arn),
            self.store.delete_oauth2_provider(name, &arn),
        )
        .await
    }

    pub async fn list_oauth2_providers(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Page<Oauth2ProviderRecord>> {
        let rows = self.store.list_oauth2_providers(after, limit + 1).await?;
        Ok(Page::of(rows, limit, |p| &p.name))
    }
}
