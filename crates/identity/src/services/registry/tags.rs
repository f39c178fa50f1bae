//! Tags of any resource, named by its ARN.

use std::collections::BTreeMap;

use latchkey_core::ApiError;
use latchkey_core::arn::ResourceKind;

use super::{DEFAULT_VAULT, Registry, Target, tag_pairs};
use crate::caller::Caller;
use crate::error::Result;

/// An existing resource, found by its ARN.
#[derive(Debug)]
pub struct TaggedResource {
    pub arn: String,
    pub kind: ResourceKind,
    pub name: String,
}

impl TaggedResource {
    fn target(&self) -> Target<'_> {
        Target {
            kind: self.kind,
            arn: &self.arn,
            label: "resource",
            name: &self.name,
        }
    }
}

impl Registry {
    /// The resource `arn` names (`ResourceNotFoundException` unless it exists).
    pub async fn tagged_resource(&self, arn: String) -> Result<TaggedResource> {
        let not_found = || ApiError::NotFound(format!("resource {arn:?} not found"));
        let (kind, name) = self.arn.parse(&arn).ok_or_else(not_found)?;
        let exists = match kind {
            ResourceKind::WorkloadIdentity => self.store.find_workload(&name).await?.is_some(),
            ResourceKind::Oauth2Provider => self.store.find_oauth2_provider(&name).await?.is_some(),
            ResourceKind::ApiKeyProvider => {
                self.store.find_api_key_provider(&name).await?.is_some()
            }
            ResourceKind::TokenVault => name == DEFAULT_VAULT,
        };
        if !exists {
            return Err(not_found().into());
        }
        Ok(TaggedResource { arn, kind, name })
    }

    pub async fn tag(
        &self,
        caller: &Caller,
        resource: &TaggedResource,
        tags: BTreeMap<String, String>,
    ) -> Result<()> {
        self.change(
            caller,
            "TagResource",
            resource.target(),
            self.store.tag(&resource.arn, &tag_pairs(Some(tags))),
        )
        .await
    }

    pub async fn untag(
        &self,
        caller: &Caller,
        resource: &TaggedResource,
        keys: &[String],
    ) -> Result<()> {
        self.change(
            caller,
            "UntagResource",
            resource.target(),
            self.store.untag(&resource.arn, keys),
        )
        .await
    }

    pub async fn list_tags(&self, resource: &TaggedResource) -> Result<BTreeMap<String, String>> {
        Ok(self
            .store
            .list_tags(&resource.arn)
            .await?
            .into_iter()
            .collect())
    }
}
