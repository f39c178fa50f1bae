//! Workload identities: create, find, update, delete, list.

use std::collections::BTreeMap;

use latchkey_core::ApiError;
use latchkey_core::arn::ResourceKind;
use latchkey_store::WorkloadRecord;

use super::{Page, Registry, Target, tag_pairs};
use crate::caller::Caller;
use crate::error::Result;

const LABEL: &str = "workload identity";

impl Registry {
    fn workload_target<'a>(name: &'a str, arn: &'a str) -> Target<'a> {
        Target {
            kind: ResourceKind::WorkloadIdentity,
            arn,
            label: LABEL,
            name,
        }
    }

    pub async fn create_workload(
        &self,
        caller: &Caller,
        name: String,
        return_urls: Vec<String>,
        tags: Option<BTreeMap<String, String>>,
    ) -> Result<WorkloadRecord> {
        let now = self.clock.now_ms();
        let record = WorkloadRecord {
            name,
            return_urls,
            created_ms: now,
            updated_ms: now,
        };
        let arn = self.arn.workload_identity(&record.name);
        let target = Self::workload_target(&record.name, &arn);
        self.change(
            caller,
            "CreateWorkloadIdentity",
            target,
            self.store.create_workload(&record, &tag_pairs(tags), &arn),
        )
        .await?;
        Ok(record)
    }

    pub async fn find_workload(&self, name: &str) -> Result<WorkloadRecord> {
        Ok(self
            .store
            .find_workload(name)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("{LABEL} {name:?} not found")))?)
    }

    pub async fn update_workload(
        &self,
        caller: &Caller,
        name: &str,
        return_urls: &[String],
    ) -> Result<WorkloadRecord> {
        let arn = self.arn.workload_identity(name);
        let now = self.clock.now_ms();
        self.change(
            caller,
            "UpdateWorkloadIdentity",
            Self::workload_target(name, &arn),
            self.store.update_workload(name, return_urls, now),
        )
        .await
    }

    pub async fn delete_workload(&self, caller: &Caller, name: &str) -> Result<()> {
        let arn = self.arn.workload_identity(name);
        self.change(
            caller,
            "DeleteWorkloadIdentity",
            Self::workload_target(name, &arn),
            self.store.delete_workload(name, &arn),
        )
        .await
    }

    pub async fn list_workloads(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Page<WorkloadRecord>> {
        let rows = self.store.list_workloads(after, limit + 1).await?;
        Ok(Page::of(rows, limit, |w| &w.name))
    }
}
