//! The agent's validated settings and its `workload:<name>` credential.
//!
//! The binary assembles an [`AgentConfig`] from its TOML file (`[agent]`), environment
//! (`LATCHKEY_AGENT_*`) and flags, and calls [`AgentConfig::validate`], which names the
//! first failing key without the `agent.` prefix.

use std::collections::BTreeSet;
use std::time::Duration;

use latchkey_authn::UserSources;
use latchkey_authn::outbound::OutboundPolicy;
use latchkey_conversations::StoreConfig;
use latchkey_core::protocol::WorkloadName;
use latchkey_llm::LlmConfig;
use serde::Deserialize;

pub use latchkey_authn::ConfigError;

/// Default GitHub REST API base URL.
pub const DEFAULT_GITHUB_BASE_URL: &str = "https://api.github.com";
/// Default bound on model calls that end in tool use, per turn.
pub const DEFAULT_MAX_TOOL_ITERATIONS: u32 = 8;
/// Default time allowed for one tool's HTTP call.
pub const DEFAULT_TOOL_TIMEOUT: Duration = Duration::from_secs(15);
/// Default cap on a tool's HTTP response body.
pub const DEFAULT_TOOL_MAX_RESPONSE_BYTES: usize = 256 * 1024;
/// Default cap on a `POST /invocations` body.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
/// Default cap on `message`, in characters.
pub const DEFAULT_MAX_MESSAGE_CHARS: usize = 16 * 1024;
/// Default `max_tokens` of one model call.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u32 = 1024;
/// Default system prompt.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are a helpful assistant. Use the tools to act on the user's behalf in third-party services. When a tool needs the user's authorization, say so briefly.";
/// Largest accepted `consent_wait_seconds`.
pub const MAX_CONSENT_WAIT_SECONDS: u64 = 600;

/// The agent's own Latchkey credential (role `workload:<name>`): `ACCESS_KEY_ID:SECRET`.
/// `Debug` shows the access key id only.
pub type AgentCredential = latchkey_authn::ServiceCredential;

/// HTTP method of a configured tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// GET: arguments not used in the URL are ignored.
    Get,
    /// POST: arguments not used in the URL are sent as a JSON body.
    Post,
    /// PUT, like POST.
    Put,
    /// PATCH, like POST.
    Patch,
    /// DELETE: arguments not used in the URL are ignored.
    Delete,
}

/// A tool declared in configuration (`[[agent.tools]]`), without code.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpToolConfig {
    /// `^[a-zA-Z0-9_-]{1,64}$`, unique among tools.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// Credential provider name at the identity service.
    pub provider: String,
    /// Scopes this tool (and only this tool) asks for.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// HTTP method (default GET).
    #[serde(default = "default_method")]
    pub method: HttpMethod,
    /// URL template: literal `scheme://host[:port]`, then a path and query whose
    /// `{param}` placeholders are filled from arguments (each one percent-encoded path
    /// segment or query value; `.`, `..` and empty path arguments refused).
    pub url: String,
    /// JSON Schema of the arguments object (default: an object without properties).
    #[serde(default)]
    pub parameters: Option<serde_json::Value>,
}

fn default_method() -> HttpMethod {
    HttpMethod::Get
}

/// Everything the agent needs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Base URL of the identity service.
    pub identity_url: String,
    /// The agent's `workload:<name>` credential.
    pub credential: AgentCredential,
    /// The workload identity name.
    pub workload_name: String,
    /// `resourceOauth2ReturnUrl`: the session binding service's URL.
    pub return_url: String,
    /// Who the signed-in user is: the ALB source, tried first, and/or OIDC bearer ID tokens
    /// (never a cookie: `POST /invocations` must not be reachable cross-site).
    pub users: UserSources,
    /// Policy of the guarded client used for ALB keys, OIDC discovery and JWKS.
    pub outbound: OutboundPolicy,
    /// The model.
    pub llm: LlmConfig,
    /// System prompt.
    pub system_prompt: String,
    /// `max_tokens` of one model call.
    pub max_output_tokens: u32,
    /// Bound on model calls ending in tool use, per turn.
    pub max_tool_iterations: u32,
    /// 0: end the turn with `authorization_required`; otherwise poll that long.
    pub consent_wait_seconds: u64,
    /// Conversation storage.
    pub store: StoreConfig,
    /// GitHub REST API base URL for the built-in tools.
    pub github_base_url: String,
    /// Credential provider of the built-in GitHub tools.
    pub github_provider: String,
    /// Tools declared in configuration.
    pub tools: Vec<HttpToolConfig>,
    /// Time allowed for one tool HTTP call.
    pub tool_timeout: Duration,
    /// Cap on a tool's HTTP response body.
    pub tool_max_response_bytes: usize,
    /// Cap on a request body.
    pub max_body_bytes: usize,
    /// Cap on `message`, in characters.
    pub max_message_chars: usize,
    /// Time allowed for one call to the identity service.
    pub identity_timeout: Duration,
}

impl AgentConfig {
    /// Check every key, naming the first that fails.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // The identity URL and the user sources: the same rules as the binding service's.
        latchkey_authn::config::service_url("identity_url", &self.identity_url)?;
        self.users.validate()?;
        if WorkloadName::parse(&self.workload_name).is_err() {
            return Err(ConfigError::new(
                "workload_name",
                "must be 3 to 255 characters of [A-Za-z0-9_.-]",
            ));
        }
        http_url("return_url", &self.return_url)?;
        http_url("github_base_url", &self.github_base_url)?;
        if self.github_provider.trim().is_empty() {
            return Err(ConfigError::new("github_provider", "must not be empty"));
        }
        if self.llm.model.trim().is_empty() {
            return Err(ConfigError::new(
                "llm.model",
                "missing: the model id is required",
            ));
        }
        if let Some(base) = &self.llm.base_url {
            http_url("llm.base_url", base)?;
        }
        if self.llm.timeout.is_zero() {
            return Err(ConfigError::new("llm.timeout_seconds", "must be positive"));
        }
        if self.llm.max_retries > 10 {
            return Err(ConfigError::new("llm.max_retries", "must be at most 10"));
        }
        if !(1..=64).contains(&self.max_tool_iterations) {
            return Err(ConfigError::new(
                "max_tool_iterations",
                "must be between 1 and 64",
            ));
        }
        if self.consent_wait_seconds > MAX_CONSENT_WAIT_SECONDS {
            return Err(ConfigError::new(
                "consent_wait_seconds",
                format!("must be at most {MAX_CONSENT_WAIT_SECONDS}"),
            ));
        }
        if !(1..=100_000).contains(&self.max_output_tokens) {
            return Err(ConfigError::new(
                "max_output_tokens",
                "must be between 1 and 100000",
            ));
        }
        if self.tool_timeout.is_zero() {
            return Err(ConfigError::new("tool_timeout_seconds", "must be positive"));
        }
        if self.tool_max_response_bytes == 0 {
            return Err(ConfigError::new(
                "tool_max_response_bytes",
                "must be positive",
            ));
        }
        if self.max_body_bytes < 256 {
            return Err(ConfigError::new("max_body_bytes", "must be at least 256"));
        }
        if self.max_message_chars == 0 {
            return Err(ConfigError::new("max_message_chars", "must be positive"));
        }
        let mut names: BTreeSet<&str> = crate::tools::BUILTIN_TOOL_NAMES.iter().copied().collect();
        for tool in &self.tools {
            validate_tool(tool)?;
            if !names.insert(&tool.name) {
                return Err(ConfigError::new(
                    "tools.name",
                    format!("duplicate tool name {:?}", tool.name),
                ));
            }
        }
        Ok(())
    }
}

fn validate_tool(tool: &HttpToolConfig) -> Result<(), ConfigError> {
    if !crate::tools::is_tool_name(&tool.name) {
        return Err(ConfigError::new(
            "tools.name",
            format!("{:?} must match ^[a-zA-Z0-9_-]{{1,64}}$", tool.name),
        ));
    }
    if tool.description.trim().is_empty() {
        return Err(ConfigError::new(
            "tools.description",
            format!("tool {:?}: must not be empty", tool.name),
        ));
    }
    if tool.provider.trim().is_empty() {
        return Err(ConfigError::new(
            "tools.provider",
            format!("tool {:?}: must name a credential provider", tool.name),
        ));
    }
    if tool
        .scopes
        .iter()
        .any(|s| s.is_empty() || s.chars().any(char::is_whitespace))
    {
        return Err(ConfigError::new(
            "tools.scopes",
            format!(
                "tool {:?}: scopes must be non-empty and without spaces",
                tool.name
            ),
        ));
    }
    // Scheme, host and port literal; path and query placeholders only (see `template`).
    crate::template::UrlTemplate::parse(&tool.url)
        .map_err(|e| ConfigError::new("tools.url", format!("tool {:?}: {e}", tool.name)))?;
    if let Some(parameters) = &tool.parameters
        && parameters.get("type").and_then(|t| t.as_str()) != Some("object")
    {
        return Err(ConfigError::new(
            "tools.parameters",
            format!(
                "tool {:?}: must be a JSON Schema with \"type\": \"object\"",
                tool.name
            ),
        ));
    }
    Ok(())
}

fn http_url(key: &'static str, text: &str) -> Result<(), ConfigError> {
    let url = url::Url::parse(text)
        .map_err(|e| ConfigError::new(key, format!("not an absolute URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host().is_none()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(ConfigError::new(
            key,
            "must be an http(s) URL with a host and without credentials or fragment",
        ));
    }
    Ok(())
}

#[cfg(test)]
impl AgentConfig {
    /// A valid configuration for unit tests: loopback URLs, an ALB user source, no tools.
    #[allow(clippy::unwrap_used)]
    pub(crate) fn for_tests() -> Self {
        AgentConfig {
            identity_url: "http://127.0.0.1:9".into(),
            credential: AgentCredential::parse("LKTEST:secret").unwrap(),
            workload_name: "test-agent".into(),
            return_url: "http://127.0.0.1:9/oauth2/session-binding".into(),
            users: UserSources {
                alb: Some(latchkey_authn::AlbConfig {
                    key_url_template: "http://127.0.0.1:9/{kid}".into(),
                    ..latchkey_authn::AlbConfig::new(
                        "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/x/1",
                    )
                }),
                oidc: None,
            },
            outbound: Default::default(),
            llm: LlmConfig {
                provider: latchkey_llm::Provider::Openai,
                model: "m".into(),
                base_url: None,
                api_key: None,
                region: None,
                timeout: Duration::from_secs(5),
                max_retries: 0,
            },
            system_prompt: "s".into(),
            max_output_tokens: 100,
            max_tool_iterations: 4,
            consent_wait_seconds: 0,
            store: StoreConfig::Local {
                dir: std::env::temp_dir(),
            },
            github_base_url: DEFAULT_GITHUB_BASE_URL.into(),
            github_provider: "github".into(),
            tools: vec![],
            tool_timeout: DEFAULT_TOOL_TIMEOUT,
            tool_max_response_bytes: DEFAULT_TOOL_MAX_RESPONSE_BYTES,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_message_chars: DEFAULT_MAX_MESSAGE_CHARS,
            identity_timeout: Duration::from_secs(5),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config(url: &str) -> AgentConfig {
        AgentConfig {
            tools: vec![HttpToolConfig {
                name: "repo_issues".into(),
                description: "d".into(),
                provider: "github".into(),
                scopes: vec!["repo".into()],
                method: HttpMethod::Get,
                url: url.into(),
                parameters: None,
            }],
            ..AgentConfig::for_tests()
        }
    }

    #[test]
    fn a_tool_url_must_have_a_literal_scheme_host_and_port() {
        for (url, part) in [
            ("https://{host}/repos/{owner}", "host"),
            ("https://api.{tld}/repos/{owner}", "host"),
            ("https://api.github.com:{port}/repos/{owner}", "port"),
            ("{scheme}://api.github.com/repos/{owner}", "scheme"),
            ("https://{user}@api.github.com/repos/{owner}", "userinfo"),
            ("{base}/repos/{owner}", "scheme"),
        ] {
            let error = config(url).validate().unwrap_err();
            assert_eq!(error.key, "tools.url", "{url}");
            assert!(
                error.reason.contains("\"repo_issues\"")
                    && error.reason.contains(&format!("placeholder in the {part}")),
                "{url}: {error}"
            );
        }
        for url in [
            "https://api.github.com/repos/../{owner}",
            "https://api.github.com/repos/{owner}#{frag}",
        ] {
            let error = config(url).validate().unwrap_err();
            assert_eq!(error.key, "tools.url", "{url}");
        }
        config("https://api.github.com/repos/{owner}/{repo}/issues?state={state}")
            .validate()
            .unwrap();
    }
}
