//! The keys of `serve binding`, `serve agent` and `serve gateway`, each declared once, and
//! their resolution into the services' own validated settings.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use latchkey_agent::config as ac;
use latchkey_authn::outbound::OutboundPolicy;
use latchkey_authn::{AlbConfig, OidcConfig, UserSources};
use latchkey_gateway::RouteConfig;
use latchkey_gateway::config as gc;
use secrecy::{ExposeSecret as _, SecretString};

use super::layers::{Layers, Section, Value, from_toml, keys};

impl Value for Vec<RouteConfig> {
    const MANY: bool = true;
    fn parse(text: &[String]) -> Result<Self, String> {
        text.iter().map(|r| RouteConfig::parse(r)).collect()
    }
    fn from_file(value: toml::Value) -> Result<Self, String> {
        from_toml(value)
    }
}

keys! {
    /// Who the signed-in user is (`serve binding` and `serve agent`).
    pub struct UserKeys {
        /// ALB source: the load balancer's ARN, which must sign `x-amzn-oidc-data`.
        alb_signer: String,
        /// ALB public-key URL with `{kid}` (and optionally `{region}`).
        /// Default `https://public-keys.auth.elb.{region}.amazonaws.com/{kid}`.
        alb_key_url_template: String,
        /// Region for `{region}`. Default: the region in --alb-signer.
        alb_region: String,
        /// When set, the ALB token's `iss` claim must equal it.
        alb_issuer: String,
        /// Clock skew tolerated on the ALB token's `exp`, in seconds. Default 60.
        alb_leeway_seconds: u64,
        /// OIDC source: the issuer of the users' ID tokens (discovery + JWKS).
        oidc_issuer: String,
        /// OIDC source: the audience (client id) the ID token must be issued to.
        oidc_audience: String,
    }
}

/// The user sources; `cookie` (binding only) also reads the ID token from a cookie.
fn user_sources(l: &Layers, u: UserKeys, cookie: Option<String>) -> anyhow::Result<UserSources> {
    let alb = match u.alb_signer {
        Some(signer) => Some(AlbConfig {
            key_url_template: u
                .alb_key_url_template
                .unwrap_or(latchkey_authn::user::DEFAULT_ALB_KEY_URL_TEMPLATE.into()),
            region: u.alb_region,
            issuer: u.alb_issuer,
            leeway_seconds: u
                .alb_leeway_seconds
                .unwrap_or(latchkey_authn::user::DEFAULT_ALB_LEEWAY_SECONDS),
            ..AlbConfig::new(signer)
        }),
        None => {
            for (key, set) in [
                ("alb_key_url_template", u.alb_key_url_template.is_some()),
                ("alb_region", u.alb_region.is_some()),
                ("alb_issuer", u.alb_issuer.is_some()),
                ("alb_leeway_seconds", u.alb_leeway_seconds.is_some()),
            ] {
                if set {
                    let signer = l.display("alb_signer");
                    return Err(l.error(key, format!("has no effect without {signer}")));
                }
            }
            None
        }
    };
    let (issuer, audience) = (l.display("oidc_issuer"), l.display("oidc_audience"));
    let oidc = match (u.oidc_issuer, u.oidc_audience) {
        (Some(issuer), Some(audience)) => Some(OidcConfig {
            cookie_name: cookie,
            ..OidcConfig::new(issuer, audience)
        }),
        (Some(_), None) => {
            let why = format!("missing: {issuer} needs {audience} (the ID token's audience)");
            return Err(l.error("oidc_audience", why));
        }
        (None, Some(_)) => {
            return Err(l.error("oidc_issuer", format!("missing: {audience} needs {issuer}")));
        }
        (None, None) if cookie.is_some() => {
            let why = format!(
                "missing: {} needs {issuer} and {audience}",
                l.display("id_token_cookie")
            );
            return Err(l.error("oidc_issuer", why));
        }
        (None, None) => None,
    };
    Ok(UserSources { alb, oidc })
}

// ---------------------------------------------------------------------------------------
// `serve binding`

/// `serve binding`: file `[binding]`, `LATCHKEY_BINDING_*`.
#[derive(Debug)]
pub enum Binding {}
impl Section for Binding {
    const NAME: &'static str = "binding";
    type Keys = (BindingKeys, UserKeys);
}

keys! {
    /// Settings of `serve binding`.
    pub struct BindingKeys {
        /// Address to listen on (`127.0.0.1:0` picks a free port). Default 127.0.0.1:8081.
        listen: SocketAddr = ([127, 0, 0, 1], 8081),
        /// Base URL of the identity service, e.g. `http://identity.internal:8080`.
        identity_url: String => "the identity service's base URL is required",
        /// File holding this service's `binding` credential as `ACCESS_KEY_ID:SECRET`
        /// (`latchkey admin credentials create --role binding`). Alternatively set the
        /// credential itself in the environment variable LATCHKEY_BINDING_CREDENTIAL.
        credential_file: PathBuf,
        /// OIDC source: also read the ID token from this cookie (after `Authorization: Bearer`).
        id_token_cookie: String,
        /// Allow key, discovery and JWKS fetches to loopback/private addresses and plain http.
        /// Tests and dev only.
        allow_private_addresses: bool = false,
    }
}

/// Settings of `serve binding`, validated.
#[derive(Debug, Clone)]
pub struct BindingServeConfig {
    pub listen: SocketAddr,
    pub binding: latchkey_binding::BindingConfig,
}

impl BindingServeConfig {
    pub fn resolve(l: &Layers) -> anyhow::Result<Self> {
        let (k, users): (BindingKeys, UserKeys) = l.read()?;
        let credential = l.required_secret(
            "credential",
            "ACCESS_KEY_ID:SECRET of a `binding` credential",
        )?;
        let credential =
            latchkey_binding::BindingCredential::parse(credential.value.expose_secret())
                .map_err(|e| l.error(&credential.key, e))?;
        let mut config = latchkey_binding::BindingConfig::new(k.identity_url, credential);
        config.users = user_sources(l, users, k.id_token_cookie)?;
        config.outbound.allow_private_addresses = k.allow_private_addresses;
        config.validate().map_err(|e| l.error(e.key, e.reason))?;
        Ok(Self {
            listen: k.listen,
            binding: config,
        })
    }
}

// ---------------------------------------------------------------------------------------
// `serve agent`

/// `serve agent`: file `[agent]` (with `[agent.llm]` and `[agent.store]`), `LATCHKEY_AGENT_*`.
#[derive(Debug)]
pub enum Agent {}
impl Section for Agent {
    const NAME: &'static str = "agent";
    const TABLES: &'static [&'static str] = &["llm", "store"];
    type Keys = (AgentKeys, UserKeys);
}

keys! {
    /// Settings of `serve agent`.
    pub struct AgentKeys {
        /// Address to listen on (`127.0.0.1:0` picks a free port). Default 127.0.0.1:8082.
        listen: SocketAddr = ([127, 0, 0, 1], 8082),
        /// Base URL of the identity service.
        identity_url: String => "the identity service's base URL is required",
        /// File holding this agent's `workload:<name>` credential as `ACCESS_KEY_ID:SECRET`.
        /// Alternatively set the credential itself in LATCHKEY_AGENT_CREDENTIAL.
        credential_file: PathBuf,
        /// The workload identity name (the credential's role is `workload:<name>`).
        workload_name: String => "the workload identity name is required",
        /// `resourceOauth2ReturnUrl`: the session binding service's URL.
        return_url: String => "the session binding service's URL (resourceOauth2ReturnUrl) is required",
        /// Allow key, discovery and JWKS fetches to loopback/private addresses. Tests and dev only.
        allow_private_addresses: bool = false,
        /// `openai`, `anthropic` or `bedrock`.
        llm_provider: String => "openai, anthropic or bedrock is required",
        /// Model id.
        llm_model: String => "the model id is required",
        /// Model API base URL. Default: the provider's public endpoint.
        llm_base_url: String,
        /// The model API key (file or LATCHKEY_AGENT_LLM_API_KEY only).
        #[no_flag]
        llm_api_key: SecretString,
        /// File holding the model API key (or set LATCHKEY_AGENT_LLM_API_KEY).
        llm_api_key_file: PathBuf,
        /// AWS region (Bedrock).
        llm_region: String,
        /// Timeout of one model call, in seconds. Default 120.
        llm_timeout_seconds: u64 = 120u64,
        /// Retries of a model call before any event streamed. Default 2.
        llm_max_retries: u32 = 2u32,
        /// System prompt.
        system_prompt: String = ac::DEFAULT_SYSTEM_PROMPT,
        /// Model calls ending in tool use allowed per turn. Default 8.
        max_tool_iterations: u32 = ac::DEFAULT_MAX_TOOL_ITERATIONS,
        /// Wait this long for a user's consent inside the turn (0: end the turn). Default 0.
        consent_wait_seconds: u64 = 0u64,
        /// GitHub REST API base URL. Default https://api.github.com.
        github_base_url: String = ac::DEFAULT_GITHUB_BASE_URL,
        /// Credential provider of the built-in GitHub tools. Default `github`.
        github_provider: String = "github",
        /// Time allowed for one tool HTTP call, in seconds. Default 15.
        tool_timeout_seconds: u64 = ac::DEFAULT_TOOL_TIMEOUT.as_secs(),
        /// Largest tool HTTP response body read, in bytes. Default 262144.
        tool_max_response_bytes: usize = ac::DEFAULT_TOOL_MAX_RESPONSE_BYTES,
        /// Largest `POST /invocations` body, in bytes. Default 65536.
        max_body_bytes: usize = ac::DEFAULT_MAX_BODY_BYTES,
        /// Longest `message`, in characters. Default 16384.
        max_message_chars: usize = ac::DEFAULT_MAX_MESSAGE_CHARS,
        /// `max_tokens` of one model call. Default 1024.
        max_output_tokens: u32 = ac::DEFAULT_MAX_OUTPUT_TOKENS,
        /// Time allowed for one call to the identity service, in seconds. Default 30.
        identity_timeout_seconds: u64 = 30u64,
        /// Tools declared without code, as a JSON array of `[[agent.tools]]` tables (replaces
        /// the file's).
        tools: Vec<latchkey_agent::HttpToolConfig> = Vec::new(),
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

/// Settings of `serve agent`, validated.
#[derive(Debug, Clone)]
pub struct AgentServeConfig {
    pub listen: SocketAddr,
    pub agent: latchkey_agent::AgentConfig,
}

impl AgentServeConfig {
    pub fn resolve(l: &Layers, data_dir: &std::path::Path) -> anyhow::Result<Self> {
        let (k, users): (AgentKeys, UserKeys) = l.read()?;
        let credential = l.required_secret(
            "credential",
            "ACCESS_KEY_ID:SECRET of a `workload:<name>` credential",
        )?;
        let credential = latchkey_agent::AgentCredential::parse(credential.value.expose_secret())
            .map_err(|e| l.error(&credential.key, e))?;
        let users = user_sources(l, users, None)?;

        let provider = match k.llm_provider.as_str() {
            "openai" => latchkey_llm::Provider::Openai,
            "anthropic" => latchkey_llm::Provider::Anthropic,
            "bedrock" => latchkey_llm::Provider::Bedrock,
            other => {
                let why = format!("{other:?} is not openai, anthropic or bedrock");
                return Err(l.error("llm_provider", why));
            }
        };
        // No key is fine: OpenAI-compatible servers such as Ollama or vLLM need none.
        let llm = latchkey_llm::LlmConfig {
            provider,
            model: k.llm_model,
            base_url: k.llm_base_url,
            api_key: l.secret("llm_api_key")?.map(|s| s.value),
            region: k.llm_region,
            timeout: Duration::from_secs(k.llm_timeout_seconds),
            max_retries: k.llm_max_retries,
        };

        let s3_keys = [
            ("store_bucket", k.store_bucket.is_some()),
            ("store_prefix", k.store_prefix.is_some()),
            ("store_region", k.store_region.is_some()),
            ("store_endpoint", k.store_endpoint.is_some()),
            ("store_access_key_id", k.store_access_key_id.is_some()),
            (
                "store_secret_access_key_file",
                k.store_secret_access_key_file.is_some(),
            ),
        ];
        let kind = l.display("store_kind");
        let store = match k.store_kind.as_str() {
            "local" => {
                if let Some((key, _)) = s3_keys.iter().find(|(_, set)| *set) {
                    return Err(l.error(key, format!("only applies to {kind} = \"s3\"")));
                }
                latchkey_agent::StoreConfig::Local {
                    dir: k.store_dir.unwrap_or_else(|| data_dir.join("agent")),
                }
            }
            "s3" => {
                if k.store_dir.is_some() {
                    return Err(l.error("store_dir", format!("only applies to {kind} = \"local\"")));
                }
                let needed = "missing: required with kind = \"s3\"";
                let bucket = k
                    .store_bucket
                    .ok_or_else(|| l.error("store_bucket", needed))?;
                let region = k
                    .store_region
                    .ok_or_else(|| l.error("store_region", needed))?;
                let secret = l.secret("store_secret_access_key")?;
                if k.store_access_key_id.is_some() != secret.is_some() {
                    let why = format!(
                        "{} and the secret access key go together",
                        l.display("store_access_key_id")
                    );
                    return Err(l.error("store_access_key_id", why));
                }
                latchkey_agent::StoreConfig::S3 {
                    bucket,
                    prefix: k.store_prefix,
                    region,
                    endpoint: k.store_endpoint,
                    allow_http: k.store_allow_http,
                    access_key_id: k.store_access_key_id,
                    secret_access_key: secret.map(|s| s.value),
                    session_token: None,
                }
            }
            other => {
                let why = format!("{other:?} is not \"local\" or \"s3\"");
                return Err(l.error("store_kind", why));
            }
        };

        let config = latchkey_agent::AgentConfig {
            identity_url: k.identity_url,
            credential,
            workload_name: k.workload_name,
            return_url: k.return_url,
            users,
            outbound: OutboundPolicy {
                allow_private_addresses: k.allow_private_addresses,
                ..Default::default()
            },
            llm,
            system_prompt: k.system_prompt,
            max_output_tokens: k.max_output_tokens,
            max_tool_iterations: k.max_tool_iterations,
            consent_wait_seconds: k.consent_wait_seconds,
            store,
            github_base_url: k.github_base_url,
            github_provider: k.github_provider,
            tools: k.tools,
            tool_timeout: Duration::from_secs(k.tool_timeout_seconds),
            tool_max_response_bytes: k.tool_max_response_bytes,
            max_body_bytes: k.max_body_bytes,
            max_message_chars: k.max_message_chars,
            identity_timeout: Duration::from_secs(k.identity_timeout_seconds),
        };
        config.validate().map_err(|e| l.error(e.key, e.reason))?;
        Ok(Self {
            listen: k.listen,
            agent: config,
        })
    }
}

// ---------------------------------------------------------------------------------------
// `serve gateway`

/// `serve gateway`: file `[gateway]`, `LATCHKEY_GATEWAY_*`.
#[derive(Debug)]
pub enum Gateway {}
impl Section for Gateway {
    const NAME: &'static str = "gateway";
    type Keys = GatewayKeys;
}

keys! {
    /// Settings of `serve gateway`.
    pub struct GatewayKeys {
        /// Address to listen on (`127.0.0.1:0` picks a free port). Default 127.0.0.1:8443.
        listen: SocketAddr = ([127, 0, 0, 1], 8443),
        /// The URL browsers use to reach the gateway, e.g. https://app.example.com. Default
        /// `http://<listen address>`.
        public_url: String,
        /// The OpenID Provider's issuer.
        oidc_issuer: String => "the OpenID Provider's issuer is required",
        /// The gateway's client id at the provider.
        oidc_client_id: String => "the gateway's client id is required",
        /// File holding the client secret (or set LATCHKEY_GATEWAY_OIDC_CLIENT_SECRET).
        oidc_client_secret_file: PathBuf,
        /// Space-separated scopes. Default "openid email profile".
        oidc_scopes: String = gc::DEFAULT_SCOPES,
        /// A route `PREFIX=UPSTREAM_URL;MODE` (MODE login, api or public); repeatable. The
        /// environment variable takes several, comma-separated. Replaces the file's routes.
        #[flag = "route"]
        routes: Vec<RouteConfig> = Vec::new(),
        /// The ARN written as `signer` into every `x-amzn-oidc-data` header.
        alb_signer: String = gc::DEFAULT_ALB_SIGNER,
        /// Absolute session lifetime, in seconds. Default 28800.
        session_absolute_seconds: u64 = gc::DEFAULT_SESSION_ABSOLUTE_SECONDS,
        /// Idle session timeout, in seconds. Default 3600.
        session_idle_seconds: u64 = gc::DEFAULT_SESSION_IDLE_SECONDS,
        /// Allow calls to the provider at loopback/private addresses and over plain http. Tests and dev only.
        allow_private_addresses: bool = false,
        /// Time allowed to connect to an upstream, in milliseconds. Default 5000.
        upstream_connect_timeout_ms: u64 = gc::DEFAULT_UPSTREAM_CONNECT_TIMEOUT.as_millis() as u64,
        /// TLS certificate chain (PEM). With --tls-key, the gateway serves https.
        tls_cert: PathBuf,
        /// TLS private key (PEM).
        tls_key: PathBuf,
        /// Also listen for plain HTTP here (e.g. 0.0.0.0:80) and redirect GET/HEAD to the https
        /// public URL (308); other methods get 400. Needs --tls-cert and --tls-key.
        http_redirect_listen: SocketAddr,
        /// Requests per second per client IP, e.g. `20/s` (burst: twice the rate).
        rate_limit_per_ip: String,
        /// Requests per second per signed-in user, e.g. `10/s` (burst: twice the rate).
        rate_limit_per_user: String,
        /// Largest request body, in bytes. Default 10485760.
        max_body_bytes: usize = gc::DEFAULT_MAX_BODY_BYTES,
        /// Time allowed until the response head, in seconds (bodies may stream longer). Default 60.
        request_timeout_seconds: u64 = gc::DEFAULT_RESPONSE_TIMEOUT.as_secs(),
        /// Access log: `stdout` (default), `off`, or a file path (JSON lines).
        access_log: String = "stdout",
        /// Worker threads serving connections (1-256). Default: one per CPU.
        workers: usize,
        /// Keep sessions across restarts, sealed in the data directory (default true); false:
        /// in memory only, and a snapshot left from before is deleted.
        keep_sessions: bool = true,
    }
}

/// Settings of `serve gateway`, validated (except `public_url`, which may depend on the
/// bound address).
#[derive(Debug, Clone)]
pub struct GatewayServeConfig {
    pub listen: SocketAddr,
    pub public_url: Option<String>,
    pub gateway: latchkey_gateway::GatewayConfig,
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Plain-HTTP listener that redirects to the https public URL (only with `tls`).
    pub http_redirect_listen: Option<SocketAddr>,
    /// Worker threads serving connections.
    pub workers: usize,
}

impl GatewayServeConfig {
    pub fn resolve(l: &Layers, data_dir: &std::path::Path) -> anyhow::Result<Self> {
        let k: GatewayKeys = l.read()?;
        let listen = k.listen;
        let secret = l.required_secret("oidc_client_secret", "the OIDC client secret")?;
        let tls = match (k.tls_cert, k.tls_key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            (Some(_), None) => return Err(l.error("tls_key", "missing: tls_cert needs tls_key")),
            (None, Some(_)) => return Err(l.error("tls_cert", "missing: tls_key needs tls_cert")),
        };
        let public_url = k.public_url;
        let http_redirect_listen = k.http_redirect_listen;
        if let Some(addr) = http_redirect_listen {
            let why = if tls.is_none() {
                "needs TLS: set gateway.tls_cert and gateway.tls_key, or remove it".to_string()
            } else if public_url
                .as_deref()
                .is_some_and(|u| !u.starts_with("https://"))
            {
                "needs an https gateway.public_url to redirect to".to_string()
            } else if addr == listen && addr.port() != 0 {
                format!("{addr} is already gateway.listen")
            } else {
                String::new()
            };
            if !why.is_empty() {
                return Err(l.error("http_redirect_listen", why));
            }
        }
        // `N/s` (or `N`) as requests per second, at least 1.
        let rate = |key: &str, text: Option<String>| match text {
            None => Ok(None),
            Some(text) => match text.trim().trim_end_matches("/s").trim().parse::<u32>() {
                Ok(n) if n > 0 => Ok(Some(n)),
                _ => Err(l.error(key, format!("{text:?} is not a rate like 20/s"))),
            },
        };
        let gateway = latchkey_gateway::GatewayConfig {
            // Replaced by the bound address when not configured.
            public_url: public_url
                .clone()
                .unwrap_or_else(|| format!("http://{listen}")),
            oidc_issuer: k.oidc_issuer,
            oidc_client_id: k.oidc_client_id,
            oidc_client_secret: secret.value,
            oidc_scopes: k.oidc_scopes,
            routes: k.routes,
            alb_signer: k.alb_signer,
            session_absolute: Duration::from_secs(k.session_absolute_seconds),
            session_idle: Duration::from_secs(k.session_idle_seconds),
            data_dir: data_dir.to_path_buf(),
            outbound: OutboundPolicy {
                allow_private_addresses: k.allow_private_addresses,
                ..Default::default()
            },
            upstream_connect_timeout: Duration::from_millis(k.upstream_connect_timeout_ms),
            is_tls: tls.is_some(),
            rate_limit_per_ip: rate("rate_limit_per_ip", k.rate_limit_per_ip)?,
            rate_limit_per_user: rate("rate_limit_per_user", k.rate_limit_per_user)?,
            max_body_bytes: k.max_body_bytes,
            response_timeout: Duration::from_secs(k.request_timeout_seconds),
            access_log: gc::AccessLogTarget::parse(&k.access_log),
            keep_sessions: k.keep_sessions,
        };
        gateway.validate().map_err(|e| l.error(e.key, e.reason))?;
        let workers = k
            .workers
            .unwrap_or_else(latchkey_gateway::server::default_workers);
        if !(1..=256).contains(&workers) {
            return Err(l.error("workers", "must be between 1 and 256"));
        }
        Ok(Self {
            listen,
            public_url,
            gateway,
            tls,
            http_redirect_listen,
            workers,
        })
    }
}
