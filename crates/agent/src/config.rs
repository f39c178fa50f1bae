//! The agent's keys (file `[agent]` with `[agent.llm]` and `[agent.store]`,
//! `LATCHKEY_AGENT_*`, flags of `serve agent`), declared once, and its validated settings.
//! [`AgentConfig::validate`] names the first failing key without the `agent.` prefix;
//! errors from [`AgentConfig::resolve`] add it and where the value came from.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use latchkey_authn::UserSources;
use latchkey_authn::config::ServiceKeys;
use latchkey_authn::outbound::OutboundPolicy;
pub use latchkey_config::ConfigError;
use latchkey_config::{
    Layers, ListItem, at_most, ensure, from_toml, http_url, keys, positive, within,
};
use latchkey_conversations::StoreConfig;
use latchkey_core::protocol::WorkloadName;
use latchkey_llm::{LlmConfig, Provider};
use secrecy::SecretString;
use serde::Deserialize;

use crate::tools::is_tool_name;

/// Default system prompt.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are a helpful assistant. Use the tools to act on the user's behalf in third-party services. When a tool needs the user's authorization, say so briefly.";
/// Largest accepted `consent_wait_seconds`.
pub const MAX_CONSENT_WAIT_SECONDS: u64 = 600;

/// The agent's own Latchkey credential (role `workload:<name>`): `ACCESS_KEY_ID:SECRET`.
/// `Debug` shows the access key id only.
pub type AgentCredential = latchkey_authn::ServiceCredential;

/// HTTP method of a configured tool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// GET: arguments not used in the URL are ignored.
    #[default]
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
    #[serde(default)]
    pub method: HttpMethod,
    /// URL template: literal `scheme://host[:port]`, then a path and query whose
    /// `{param}` placeholders are filled from arguments (each one percent-encoded path
    /// segment or query value; `.`, `..` and empty path arguments refused).
    pub url: String,
    /// JSON Schema of the arguments object (default: an object without properties).
    #[serde(default)]
    pub parameters: Option<serde_json::Value>,
}

impl ListItem for HttpToolConfig {}

keys! {
    /// `serve agent`: file `[agent]` (with `[agent.llm]` and `[agent.store]`), `LATCHKEY_AGENT_*`.
    pub section Agent = "agent", tables ["llm", "store", "outbound"], with (ServiceKeys, LlmKeys);
    /// Settings of `serve agent`.
    pub struct AgentKeys {
        /// Address to listen on (`127.0.0.1:0` picks a free port). Default 127.0.0.1:8082.
        listen: SocketAddr = ([127, 0, 0, 1], 8082),
        /// The workload identity name (the credential's role is `workload:<name>`).
        workload_name: String => "the workload identity name is required",
        /// `resourceOauth2ReturnUrl`: the session binding service's URL.
        return_url: String => "the session binding service's URL (resourceOauth2ReturnUrl) is required",
        /// System prompt.
        system_prompt: String = DEFAULT_SYSTEM_PROMPT,
        /// Model calls ending in tool use allowed per turn. Default 8.
        max_tool_iterations: u32 = 8u32,
        /// Wait this long for a user's consent inside the turn (0: end the turn). Default 0.
        consent_wait_seconds: u64 = 0u64,
        /// GitHub REST API base URL. Default https://api.github.com.
        github_base_url: String = "https://api.github.com",
        /// Credential provider of the built-in GitHub tools. Default `github`.
        github_provider: String = "github",
        /// Time allowed for one tool HTTP call, in seconds. Default 15.
        tool_timeout_seconds: u64 = 15u64,
        /// Largest tool HTTP response body read, in bytes. Default 262144.
        tool_max_response_bytes: usize = 256 * 1024usize,
        /// Largest `POST /invocations` body, in bytes. Default 65536.
        max_body_bytes: usize = 64 * 1024usize,
        /// Longest `message`, in characters. Default 16384.
        max_message_chars: usize = 16 * 1024usize,
        /// `max_tokens` of one model call. Default 1024.
        max_output_tokens: u32 = 1024u32,
        /// Time allowed for one call to the identity service, in seconds. Default 30.
        identity_timeout_seconds: u64 = 30u64,
        /// Tools declared without code, as a JSON array of `[[agent.tools]]` tables (replaces
        /// the file's).
        tools: Vec<HttpToolConfig> = Vec::new(),
        /// Conversation store: `local` (default) or `s3`.
        store_kind: String = "local",
        /// Local conversation directory. Default `<data_dir>/agent`.
        store_dir: PathBuf,
        /// S3 bucket (store kind `s3`).
        store_bucket: String,
        /// S3 key prefix.
        store_prefix: String,
        /// S3 region.
        store_region: String,
        /// S3-compatible endpoint, e.g. `http://127.0.0.1:9000`.
        store_endpoint: String,
        /// Allow a plain-http S3 endpoint (tests and dev only).
        store_allow_http: bool = false,
        /// S3 access key id (with the secret from a file or LATCHKEY_AGENT_STORE_SECRET_ACCESS_KEY);
        /// default: the AWS credential chain.
        store_access_key_id: String,
        /// File holding the S3 secret access key.
        store_secret_access_key_file: PathBuf,
    }
}

keys! {
    /// The model keys of `serve agent` alone (file `[agent.llm]`, `LATCHKEY_AGENT_LLM_*`,
    /// flags `--llm-…`): `latchkey dev` takes them too.
    pub section AgentLlm = "agent", tables ["llm"];
    /// The model, resolved by [`LlmKeys::config`].
    pub struct LlmKeys {
        /// `openai`, `anthropic` or `bedrock`.
        llm_provider: String,
        /// Model id.
        llm_model: String,
        /// Model API base URL. Default: the provider's public endpoint.
        llm_base_url: String,
        /// The model API key (file or LATCHKEY_AGENT_LLM_API_KEY only).
        llm_api_key as "": SecretString,
        /// File holding the model API key (or set LATCHKEY_AGENT_LLM_API_KEY).
        llm_api_key_file: PathBuf,
        /// AWS region (Bedrock).
        llm_region: String,
        /// Timeout of one model call, in seconds. Default 120.
        llm_timeout_seconds: u64 = 120u64,
        /// Retries of a model call before any event streamed. Default 2.
        llm_max_retries: u32 = 2u32,
    }
}

impl LlmKeys {
    /// The model these keys configure, validated; `llm_provider` and `llm_model` must be
    /// set. No API key is fine: OpenAI-compatible servers such as Ollama or vLLM need none.
    pub fn config(&self, l: &Layers) -> anyhow::Result<LlmConfig> {
        let missing = |key, why| l.error(key, format!("missing: {why}"));
        let provider = (self.llm_provider.as_deref())
            .ok_or_else(|| missing("llm_provider", "openai, anthropic or bedrock is required"))?;
        let provider = from_toml::<Provider>(provider.into()).map_err(|_| {
            let why = format!("{provider:?} is not openai, anthropic or bedrock");
            l.error("llm_provider", why)
        })?;
        let model = (self.llm_model.clone())
            .ok_or_else(|| missing("llm_model", "the model id is required"))?;
        let llm = LlmConfig {
            provider,
            model,
            base_url: self.llm_base_url.clone(),
            api_key: l.secret("llm_api_key")?.map(|s| s.value),
            region: self.llm_region.clone(),
            timeout: Duration::from_secs(self.llm_timeout_seconds),
            max_retries: self.llm_max_retries,
        };
        l.check(validate_llm(&llm))?;
        Ok(llm)
    }
}

/// Check the model's keys, naming the first that fails.
pub fn validate_llm(llm: &LlmConfig) -> Result<(), ConfigError> {
    let model = !llm.model.trim().is_empty();
    ensure(model, "llm.model", "missing: the model id is required")?;
    (llm.base_url.iter()).try_for_each(|url| http_url("llm.base_url", url, true).map(drop))?;
    at_most("llm.max_retries", llm.max_retries.into(), 10)?;
    positive(&[("llm.timeout_seconds", llm.timeout.as_secs())])
}

/// Everything the agent needs: its keys, and what they resolve to.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub keys: AgentKeys,
    /// The identity service, the credential's file, the user sources as configured.
    pub service: ServiceKeys,
    /// The agent's `workload:<name>` credential.
    pub credential: AgentCredential,
    /// Who the signed-in user is: the ALB source, tried first, and/or OIDC bearer ID tokens
    /// (never a cookie: `POST /invocations` must not be reachable cross-site).
    pub users: UserSources,
    /// The model.
    pub llm: LlmConfig,
    /// Conversation storage.
    pub store: StoreConfig,
}

impl AgentConfig {
    /// The settings of `serve agent`, validated (the local store in `<data_dir>/agent`).
    pub fn resolve(l: &Layers, data_dir: &Path) -> anyhow::Result<Self> {
        let (k, (service, llm)): (AgentKeys, (ServiceKeys, LlmKeys)) = l.read()?;
        let credential = service.credential(l, "workload:<name>")?;
        let users = service.clone().users(l, None)?;
        let llm = llm.config(l)?;
        let store = Self::store(l, &k, data_dir)?;
        let config = Self {
            keys: k,
            service,
            credential,
            users,
            llm,
            store,
        };
        l.check(config.validate())?;
        Ok(config)
    }

    fn store(l: &Layers, k: &AgentKeys, data_dir: &Path) -> anyhow::Result<StoreConfig> {
        let only = |kind: &str| format!("only applies to {} = \"{kind}\"", l.display("store_kind"));
        match k.store_kind.as_str() {
            "local" => {
                let s3 = [
                    "store_bucket",
                    "store_prefix",
                    "store_region",
                    "store_endpoint",
                    "store_access_key_id",
                    "store_secret_access_key_file",
                ];
                l.refuse(&s3, only("s3"))?;
                let dir = (k.store_dir.clone()).unwrap_or_else(|| data_dir.join("agent"));
                Ok(StoreConfig::Local { dir })
            }
            "s3" => {
                l.refuse(&["store_dir"], only("local"))?;
                let needed = |key| l.error(key, "missing: required with kind = \"s3\"");
                let bucket = k.store_bucket.clone().ok_or_else(|| needed("store_bucket"));
                let region = k.store_region.clone().ok_or_else(|| needed("store_region"));
                let (bucket, region) = (bucket?, region?);
                let secret = l.secret("store_secret_access_key")?;
                if k.store_access_key_id.is_some() != secret.is_some() {
                    let id = l.display("store_access_key_id");
                    let why = format!("{id} and the secret access key go together");
                    return Err(l.error("store_access_key_id", why));
                }
                Ok(StoreConfig::S3 {
                    bucket,
                    prefix: k.store_prefix.clone(),
                    region,
                    endpoint: k.store_endpoint.clone(),
                    allow_http: k.store_allow_http,
                    access_key_id: k.store_access_key_id.clone(),
                    secret_access_key: secret.map(|s| s.value),
                    session_token: None,
                })
            }
            other => {
                let why = format!("{other:?} is not \"local\" or \"s3\"");
                Err(l.error("store_kind", why))
            }
        }
    }

    /// Check every key, naming the first that fails.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let (k, llm) = (&self.keys, &self.llm);
        // The identity URL and the user sources: the same rules as the binding service's.
        http_url("identity_url", &self.service.identity_url, false)?;
        self.users.validate()?;
        let name = WorkloadName::parse(&k.workload_name).is_ok();
        ensure(name, "workload_name", WORKLOAD_NAME)?;
        http_url("return_url", &k.return_url, true)?;
        http_url("github_base_url", &k.github_base_url, true)?;
        let provider = !k.github_provider.trim().is_empty();
        ensure(provider, "github_provider", "must not be empty")?;
        validate_llm(llm)?;
        let wait = k.consent_wait_seconds;
        at_most("consent_wait_seconds", wait, MAX_CONSENT_WAIT_SECONDS)?;
        let (iterations, tokens) = (k.max_tool_iterations.into(), k.max_output_tokens.into());
        within(&[
            ("max_tool_iterations", iterations, (1, 64)),
            ("max_output_tokens", tokens, (1, 100_000)),
        ])?;
        positive(&[
            ("tool_timeout_seconds", k.tool_timeout_seconds),
            ("tool_max_response_bytes", k.tool_max_response_bytes as u64),
            ("max_message_chars", k.max_message_chars as u64),
        ])?;
        let body = k.max_body_bytes >= 256;
        ensure(body, "max_body_bytes", "must be at least 256")?;
        let mut names: BTreeSet<&str> = crate::tools::BUILTIN_TOOL_NAMES.iter().copied().collect();
        for tool in &k.tools {
            let why = |why: &str| format!("tool {:?}: {why}", tool.name);
            let pattern = format!("{:?} must match ^[a-zA-Z0-9_-]{{1,64}}$", tool.name);
            ensure(is_tool_name(&tool.name), "tools.name", pattern)?;
            let described = !tool.description.trim().is_empty();
            ensure(described, "tools.description", why("must not be empty"))?;
            let provider = !tool.provider.trim().is_empty();
            ensure(provider, "tools.provider", why(PROVIDER))?;
            let scope = |s: &String| !s.is_empty() && !s.chars().any(char::is_whitespace);
            ensure(tool.scopes.iter().all(scope), "tools.scopes", why(SCOPES))?;
            // Scheme, host and port literal; path and query placeholders only (see `template`).
            crate::template::UrlTemplate::parse(&tool.url)
                .map_err(|e| ConfigError::new("tools.url", why(&e.to_string())))?;
            let kind = (tool.parameters.as_ref()).map(|p| p.get("type").and_then(|t| t.as_str()));
            let object = kind.is_none_or(|kind| kind == Some("object"));
            ensure(object, "tools.parameters", why(SCHEMA))?;
            let duplicate = format!("duplicate tool name {:?}", tool.name);
            ensure(names.insert(&tool.name), "tools.name", duplicate)?;
        }
        Ok(())
    }

    /// Policy of the guarded client used for ALB keys, OIDC discovery and JWKS.
    pub fn outbound(&self) -> OutboundPolicy {
        OutboundPolicy {
            allow_private_addresses: self.service.outbound_allow_private_addresses,
            ..Default::default()
        }
    }
}

const WORKLOAD_NAME: &str = "must be 3 to 255 characters of [A-Za-z0-9_.-]";
const PROVIDER: &str = "must name a credential provider";
const SCOPES: &str = "scopes must be non-empty and without spaces";
const SCHEMA: &str = "must be a JSON Schema with \"type\": \"object\"";

#[cfg(test)]
impl AgentConfig {
    /// A valid configuration for unit tests from a fixed environment (`LATCHKEY_AGENT_*`,
    /// `more` over loopback URLs, an ALB user source, no tools).
    #[allow(clippy::unwrap_used)]
    pub(crate) fn for_tests(more: &[(&str, &str)]) -> Self {
        use latchkey_config::{ConfigFile, Env, Flags};
        let base = [
            ("LATCHKEY_AGENT_IDENTITY_URL", "http://127.0.0.1:9"),
            ("LATCHKEY_AGENT_CREDENTIAL", "LKTEST:secret"),
            ("LATCHKEY_AGENT_WORKLOAD_NAME", "test-agent"),
            (
                "LATCHKEY_AGENT_RETURN_URL",
                "http://127.0.0.1:9/oauth2/session-binding",
            ),
            (
                "LATCHKEY_AGENT_ALB_SIGNER",
                "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/x/1",
            ),
            (
                "LATCHKEY_AGENT_ALB_KEY_URL_TEMPLATE",
                "http://127.0.0.1:9/{kid}",
            ),
            ("LATCHKEY_AGENT_LLM_PROVIDER", "openai"),
            ("LATCHKEY_AGENT_LLM_MODEL", "m"),
            ("LATCHKEY_AGENT_LLM_TIMEOUT_SECONDS", "5"),
            ("LATCHKEY_AGENT_LLM_MAX_RETRIES", "0"),
            ("LATCHKEY_AGENT_SYSTEM_PROMPT", "s"),
            ("LATCHKEY_AGENT_MAX_OUTPUT_TOKENS", "100"),
            ("LATCHKEY_AGENT_MAX_TOOL_ITERATIONS", "4"),
            ("LATCHKEY_AGENT_IDENTITY_TIMEOUT_SECONDS", "5"),
        ];
        // Later pairs win.
        let pairs: std::collections::BTreeMap<_, _> = base.iter().chain(more).copied().collect();
        let env = Env::fixed(&pairs.into_iter().collect::<Vec<_>>());
        let (flags, file) = (Flags::<Agent>::default(), ConfigFile::default());
        let layers = Layers::new(&flags, &file, &env).unwrap();
        Self::resolve(&layers, &std::env::temp_dir()).unwrap()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config(url: &str) -> AgentConfig {
        let mut config = AgentConfig::for_tests(&[]);
        config.keys.tools = vec![HttpToolConfig {
            name: "repo_issues".into(),
            description: "d".into(),
            provider: "github".into(),
            scopes: vec!["repo".into()],
            method: HttpMethod::Get,
            url: url.into(),
            parameters: None,
        }];
        config
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
