//! ARNs in AgentCore's form, with a configurable partition, region and account.

use serde::{Deserialize, Serialize};

/// Where this deployment says it lives, for ARNs (defaults `aws`, `us-east-1`, `000000000000`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArnContext {
    pub partition: String,
    pub region: String,
    pub account: String,
}

impl Default for ArnContext {
    fn default() -> Self {
        Self {
            partition: "aws".into(),
            region: "us-east-1".into(),
            account: "000000000000".into(),
        }
    }
}

/// The kinds of resource that have ARNs (and can carry tags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    WorkloadIdentity,
    Oauth2Provider,
    ApiKeyProvider,
    TokenVault,
}

impl ResourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WorkloadIdentity => "workload-identity",
            Self::Oauth2Provider => "oauth2-provider",
            Self::ApiKeyProvider => "apikey-provider",
            Self::TokenVault => "token-vault",
        }
    }
}

impl ArnContext {
    fn prefix(&self) -> String {
        format!(
            "arn:{}:bedrock-agentcore:{}:{}:",
            self.partition, self.region, self.account
        )
    }

    pub fn workload_identity(&self, name: &str) -> String {
        format!(
            "{}workload-identity-directory/default/workload-identity/{name}",
            self.prefix()
        )
    }

    pub fn oauth2_provider(&self, name: &str) -> String {
        format!(
            "{}token-vault/default/oauth2credentialprovider/{name}",
            self.prefix()
        )
    }

    pub fn api_key_provider(&self, name: &str) -> String {
        format!(
            "{}token-vault/default/apikeycredentialprovider/{name}",
            self.prefix()
        )
    }

    pub fn token_vault(&self, id: &str) -> String {
        format!("{}token-vault/{id}", self.prefix())
    }

    /// The managed-secret ARN AgentCore reports for a provider's secret (`oauth2` or `apikey`).
    pub fn managed_secret(&self, kind: &str, name: &str) -> String {
        format!(
            "arn:{}:secretsmanager:{}:{}:secret:bedrock-agentcore-identity!default/{kind}/{name}",
            self.partition, self.region, self.account
        )
    }

    /// Parse one of our ARNs back into (kind, name). Anything else is `None`.
    pub fn parse(&self, arn: &str) -> Option<(ResourceKind, String)> {
        let rest = arn.strip_prefix(&self.prefix())?;
        let (kind, name) = if let Some(n) =
            rest.strip_prefix("workload-identity-directory/default/workload-identity/")
        {
            (ResourceKind::WorkloadIdentity, n)
        } else if let Some(n) = rest.strip_prefix("token-vault/default/oauth2credentialprovider/") {
            (ResourceKind::Oauth2Provider, n)
        } else if let Some(n) = rest.strip_prefix("token-vault/default/apikeycredentialprovider/") {
            (ResourceKind::ApiKeyProvider, n)
        } else if let Some(n) = rest.strip_prefix("token-vault/") {
            (ResourceKind::TokenVault, n)
        } else {
            return None;
        };
        (!name.is_empty() && !name.contains('/')).then(|| (kind, name.to_string()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let c = ArnContext::default();
        let arn = c.workload_identity("wl1");
        assert_eq!(
            arn,
            "arn:aws:bedrock-agentcore:us-east-1:000000000000:workload-identity-directory/default/workload-identity/wl1"
        );
        assert_eq!(
            c.parse(&arn),
            Some((ResourceKind::WorkloadIdentity, "wl1".into()))
        );
        assert_eq!(
            c.parse(&c.oauth2_provider("gh")),
            Some((ResourceKind::Oauth2Provider, "gh".into()))
        );
        assert_eq!(
            c.parse("arn:aws:bedrock-agentcore:eu-west-1:000000000000:token-vault/default"),
            None
        );
        assert_eq!(c.parse(&format!("{}/x", c.workload_identity("a"))), None);
    }
}
