//! `latchkey dev`: the whole secured agent in one process, offline, on loopback.
//!
//! One data directory (SQLite, the key file, the development providers' state) and six
//! listeners: the gateway (the one URL a person opens), the identity service, the session
//! binding service, the agent, the development OpenID provider and the sandbox OAuth
//! provider (GitHub stand-in). Everything is wired on start: the credentials of the binding
//! service and the agent, the workload identity with its allowed return URL, the `github`
//! credential provider pointing at the sandbox (or at GitHub, [`github`]), the gateway's
//! OIDC client at the development provider. The model is the agent's ([`llm`]). The services are the same code `latchkey serve` runs, configured
//! through the same keys; only the two development providers (crate `latchkey-devkit`) and
//! the scripted planner are dev-only, and nothing in `serve` can enable them.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, anyhow, bail};
use latchkey_config::{ConfigFile, Env, Flags, Layers};
use latchkey_core::clock::{Clock, SystemClock};
use latchkey_devkit::idp::{self, IdpOptions};
use latchkey_devkit::sandbox::{self, SandboxOptions};
use latchkey_devkit::{Client, SigningKey, persist};
use latchkey_identity::admin::Admin;
use latchkey_identity::auth::Role;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::config::{Identity, IdentityConfig, StorageConfig};
use crate::serve;

pub(crate) mod github;
mod llm;

/// The workload identity of the dev agent.
pub const WORKLOAD: &str = "dev-agent";
/// The credential provider of the sandbox (the agent's built-in GitHub tools use it).
pub const PROVIDER: &str = "github";
const GATEWAY_CLIENT_ID: &str = "latchkey-dev-gateway";
const SANDBOX_CLIENT_ID: &str = "latchkey-dev-agent";
/// The file `latchkey dev` keeps its wiring in; also the mark that a directory is a dev
/// data directory (`--reset` refuses any other).
const STATE_FILE: &str = "dev.json";

/// `latchkey dev` options.
#[derive(Debug, clap::Args)]
pub(crate) struct DevArgs {
    /// Address of the gateway, the URL to open. The other services take the next five
    /// ports (with port 0, free ports). Default 127.0.0.1:8000.
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,
    /// Delete the dev data directory's contents first (only a directory `latchkey dev`
    /// created).
    #[arg(long)]
    pub reset: bool,
    /// Lifetime of the sandbox's access tokens, in seconds (short, to watch refresh).
    #[arg(long, default_value_t = 300)]
    pub sandbox_token_lifetime: i64,
    /// The agent's model, as `serve agent` takes it; without it, OPENAI_API_KEY or
    /// ANTHROPIC_API_KEY, else the offline scripted planner.
    #[command(flatten)]
    pub llm: Flags<latchkey_agent::config::AgentLlm>,
    /// Real GitHub instead of the sandbox.
    #[command(flatten)]
    pub github: Flags<github::Dev>,
}

/// What `latchkey dev` keeps between starts (`dev.json`, 0600). No `Debug`: it holds the
/// client secrets.
#[derive(Default, Serialize, Deserialize)]
struct DevState {
    /// The gateway's client secret at the development provider.
    gateway_client_secret: String,
    /// Latchkey's client secret at the sandbox.
    sandbox_client_secret: String,
    /// The access key ids created at the last start (revoked at the next).
    #[serde(default)]
    credentials: Vec<String>,
    /// What the `github` provider named at the last start.
    #[serde(default)]
    upstream: github::Upstream,
}

fn random_secret() -> anyhow::Result<String> {
    Ok(latchkey_identity::admin::new_secret()?.to_string())
}

fn load_state(dir: &Path) -> anyhow::Result<DevState> {
    let mut state: DevState = persist::load(&dir.join(STATE_FILE))?;
    if state.gateway_client_secret.is_empty() {
        state.gateway_client_secret = random_secret()?;
    }
    if state.sandbox_client_secret.is_empty() {
        state.sandbox_client_secret = random_secret()?;
    }
    Ok(state)
}

fn save_state(dir: &Path, state: &DevState) -> anyhow::Result<()> {
    Ok(persist::save(&dir.join(STATE_FILE), state)?)
}

/// `--reset`: empty the data directory, if it is one `latchkey dev` made.
fn reset(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let empty = std::fs::read_dir(dir)?.next().is_none();
    if !empty && !dir.join(STATE_FILE).exists() {
        bail!(
            "--reset: {} has no {STATE_FILE}, so it is not a latchkey dev data directory; nothing was deleted",
            dir.display()
        );
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        }
        .with_context(|| format!("--reset: cannot delete {}", path.display()))?;
    }
    Ok(())
}

/// The six listeners: the gateway's address, then the next ports (or free ports).
async fn bind_all(gateway: SocketAddr) -> anyhow::Result<[TcpListener; 6]> {
    const NAMES: [&str; 6] = ["gateway", "identity", "binding", "agent", "idp", "sandbox"];
    let mut listeners = Vec::with_capacity(6);
    for (i, name) in NAMES.iter().enumerate() {
        let mut addr = gateway;
        if gateway.port() != 0 {
            let port = gateway.port().checked_add(i as u16);
            addr.set_port(port.ok_or_else(|| anyhow!("--listen: the port is too high"))?);
        }
        let listener = TcpListener::bind(addr).await.with_context(|| {
            format!("cannot listen on {addr} ({name}); choose other ports with --listen, e.g. --listen 127.0.0.1:9000")
        })?;
        listeners.push(listener);
    }
    listeners.try_into().map_err(|_| anyhow!("six listeners"))
}

fn url_of(listener: &TcpListener) -> anyhow::Result<String> {
    Ok(format!("http://{}", listener.local_addr()?))
}

/// A control-plane call with the setup credential (the AgentCore API, as any client).
async fn control(
    http: &reqwest::Client,
    identity: &str,
    bearer: &str,
    operation: &str,
    body: Value,
) -> anyhow::Result<(u16, Value)> {
    let response = http
        .post(format!("{identity}/identities/{operation}"))
        .bearer_auth(bearer)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("{operation}: the identity service did not answer"))?;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    Ok((status, body))
}

/// Create, or update when it exists (ConflictException), so a restart with other ports
/// keeps every grant.
async fn create_or_update(
    http: &reqwest::Client,
    identity: &str,
    bearer: &str,
    (create, update): (&str, &str),
    body: Value,
) -> anyhow::Result<Value> {
    let (status, out) = control(http, identity, bearer, create, body.clone()).await?;
    if (200..300).contains(&status) {
        return Ok(out);
    }
    if status != 409 {
        bail!("{create} failed ({status}): {out}");
    }
    let (status, out) = control(http, identity, bearer, update, body).await?;
    if !(200..300).contains(&status) {
        bail!("{update} failed ({status}): {out}");
    }
    Ok(out)
}

pub(crate) async fn run(
    storage: StorageConfig,
    (user_file, user_env): (&ConfigFile, &Env),
    args: DevArgs,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let model = llm::model(&args.llm, user_file, user_env)?;
    let github_app = github::app(&args.github, user_file, user_env)?;
    let upstream = match github_app {
        Some(_) => github::Upstream::Github,
        None => github::Upstream::Sandbox,
    };
    let dir = storage.data_dir.clone();
    if args.reset {
        reset(&dir)?;
    }
    crate::keyfile::ensure_private_dir(&dir)?;
    let mut state = load_state(&dir)?;
    let [gateway_l, identity_l, binding_l, agent_l, idp_l, sandbox_l] =
        bind_all(args.listen).await?;
    let gateway_url = url_of(&gateway_l)?;
    let identity_url = url_of(&identity_l)?;
    let binding_url = url_of(&binding_l)?;
    let agent_url = url_of(&agent_l)?;
    let idp_url = url_of(&idp_l)?;
    let sandbox_url = url_of(&sandbox_l)?;
    let return_url = format!("{gateway_url}/oauth2/session-binding");

    // The identity service, with credentials for the setup, the binding service and the
    // agent (new at every start; the previous start's are revoked).
    let no_flags = Flags::<Identity>::default();
    // The sandbox is on loopback; GitHub is public.
    let private = (upstream == github::Upstream::Sandbox).to_string();
    let (file, env) = (
        ConfigFile::default(),
        Env::fixed(&[("LATCHKEY_OUTBOUND_ALLOW_PRIVATE_ADDRESSES", &private)]),
    );
    let identity_config = IdentityConfig::resolve(&Layers::new(&no_flags, &file, &env)?)?;
    let identity = serve::identity_state(&storage, &identity_config, &identity_l).await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let admin = Admin::new(
        identity.store.clone(),
        identity.keys.clone(),
        clock.clone(),
        identity_config.outbound(),
    )?;
    for old in std::mem::take(&mut state.credentials) {
        // Already revoked or deleted: nothing to do.
        let _ = admin.revoke_credential(&old).await;
    }
    let setup = admin
        .create_credential(Role::Admin, Some("latchkey dev setup".into()))
        .await?;
    let binding_cred = admin
        .create_credential(Role::Binding, Some("latchkey dev binding service".into()))
        .await?;
    let agent_cred = admin
        .create_credential(
            Role::Workload(WORKLOAD.into()),
            Some("latchkey dev agent".into()),
        )
        .await?;
    // The setup credential too: revoked once set-up is done, and at the next start if a
    // failure stopped this one before that.
    state.credentials = vec![
        setup.access_key_id.clone(),
        binding_cred.access_key_id.clone(),
        agent_cred.access_key_id.clone(),
    ];
    save_state(&dir, &state)?;
    let mut tasks: tokio::task::JoinSet<(&'static str, anyhow::Result<()>)> =
        tokio::task::JoinSet::new();
    tasks.spawn(named(
        "identity service",
        serve::run_identity(identity_l, identity.clone()),
    ));

    // The workload and the sandbox provider, through the AgentCore API.
    let http = reqwest::Client::new();
    let bearer = format!("{}:{}", setup.access_key_id, setup.secret.as_str());
    create_or_update(
        &http,
        &identity_url,
        &bearer,
        ("CreateWorkloadIdentity", "UpdateWorkloadIdentity"),
        json!({"name": WORKLOAD, "allowedResourceOauth2ReturnUrls": [return_url]}),
    )
    .await?;
    // TagResource: `POST /tags/{resourceArn}`, the ARN percent-encoded.
    let arn = identity.config.arn.workload_identity(WORKLOAD);
    let arn: String = url::form_urlencoded::byte_serialize(arn.as_bytes()).collect();
    let tagged = http
        .post(format!("{identity_url}/tags/{arn}"))
        .bearer_auth(&bearer)
        .json(&json!({"tags": {"latchkey:allow-user-id": "true"}}))
        .send()
        .await
        .context("TagResource: the identity service did not answer")?;
    if !tagged.status().is_success() {
        bail!("TagResource failed ({})", tagged.status());
    }
    // The sandbox's endpoints first (it is not serving yet, and its client needs the
    // callback URL this call returns); once it answers, its RFC 8414 metadata, which also
    // names the RFC 7009 revocation endpoint the connections page's Revoke calls.
    let sandbox_provider = |discovery: Value| {
        json!({
            "name": PROVIDER,
            "credentialProviderVendor": "CustomOauth2",
            "oauth2ProviderConfigInput": {"customOauth2ProviderConfig": {
                "oauthDiscovery": discovery,
                "clientId": SANDBOX_CLIENT_ID,
                "clientSecret": state.sandbox_client_secret,
            }},
        })
    };
    let provider_request = match &github_app {
        Some(app) => app.provider_request(PROVIDER),
        None => sandbox_provider(json!({"authorizationServerMetadata": {
            "issuer": sandbox_url,
            "authorizationEndpoint": format!("{sandbox_url}/login/oauth/authorize"),
            "tokenEndpoint": format!("{sandbox_url}/login/oauth/access_token"),
            "responseTypes": ["code"],
            "tokenEndpointAuthMethods": ["client_secret_basic"],
        }})),
    };
    let provider = create_or_update(
        &http,
        &identity_url,
        &bearer,
        (
            "CreateOauth2CredentialProvider",
            "UpdateOauth2CredentialProvider",
        ),
        provider_request,
    )
    .await?;
    github::switched(&admin, (WORKLOAD, PROVIDER), state.upstream, upstream).await?;
    state.upstream = upstream;
    save_state(&dir, &state)?;
    let callback_url = provider["callbackUrl"]
        .as_str()
        .ok_or_else(|| anyhow!("CreateOauth2CredentialProvider answered without callbackUrl"))?
        .to_string();

    // The development providers.
    let idp = idp::router(IdpOptions {
        issuer: idp_url.clone(),
        clients: vec![Client {
            id: GATEWAY_CLIENT_ID.into(),
            secret: state.gateway_client_secret.clone(),
            name: "Latchkey dev".into(),
            redirect_uris: vec![format!("{gateway_url}/oauth2/idpresponse")],
        }],
        key: SigningKey::load_or_create(&dir.join("dev-idp-key.p8"))?,
        state_file: Some(dir.join("dev-idp-tokens.json")),
        token_lifetime_seconds: 3600,
        refresh_lifetime_seconds: 30 * 24 * 3600,
        clock: clock.clone(),
    })?;
    let sandbox = sandbox::router(SandboxOptions {
        base_url: sandbox_url.clone(),
        clients: vec![Client {
            id: SANDBOX_CLIENT_ID.into(),
            secret: state.sandbox_client_secret.clone(),
            name: format!("Latchkey dev agent (workload {WORKLOAD})"),
            redirect_uris: vec![callback_url.clone()],
        }],
        state_file: Some(dir.join("dev-sandbox-tokens.json")),
        access_token_lifetime_seconds: args.sandbox_token_lifetime,
        refresh_token_lifetime_seconds: 30 * 24 * 3600,
        clock: clock.clone(),
    })?;
    tasks.spawn(named(
        "development identity provider",
        serve::plain(idp_l, idp),
    ));
    tasks.spawn(named("sandbox provider", serve::plain(sandbox_l, sandbox)));
    if upstream == github::Upstream::Sandbox {
        let discovery = json!({"discoveryUrl": format!("{sandbox_url}/.well-known/oauth-authorization-server")});
        let (status, out) = control(
            &http,
            &identity_url,
            &bearer,
            "UpdateOauth2CredentialProvider",
            sandbox_provider(discovery),
        )
        .await?;
        if !(200..300).contains(&status) {
            bail!("UpdateOauth2CredentialProvider (sandbox discovery) failed ({status}): {out}");
        }
    }
    let _ = admin.revoke_credential(&setup.access_key_id).await;

    // The binding service, the agent and the gateway, through their own keys.
    let alb_keys = format!("{gateway_url}/.well-known/alb-keys/{{kid}}");
    let github_api = match upstream {
        github::Upstream::Github => github::GITHUB_API,
        github::Upstream::Sandbox => sandbox_url.as_str(),
    };
    let binding_credential = format!(
        "{}:{}",
        binding_cred.access_key_id,
        binding_cred.secret.as_str()
    );
    let agent_credential = format!(
        "{}:{}",
        agent_cred.access_key_id,
        agent_cred.secret.as_str()
    );
    let agent_store = dir.join("agent").display().to_string();
    let pairs: BTreeMap<&str, &str> = BTreeMap::from([
        ("LATCHKEY_BINDING_IDENTITY_URL", identity_url.as_str()),
        ("LATCHKEY_BINDING_CREDENTIAL", binding_credential.as_str()),
        ("LATCHKEY_BINDING_ALB_KEY_URL_TEMPLATE", alb_keys.as_str()),
        (
            "LATCHKEY_BINDING_ALB_SIGNER",
            latchkey_gateway::config::DEFAULT_ALB_SIGNER,
        ),
        ("LATCHKEY_BINDING_ALB_ISSUER", idp_url.as_str()),
        ("LATCHKEY_BINDING_OUTBOUND_ALLOW_PRIVATE_ADDRESSES", "true"),
        ("LATCHKEY_AGENT_IDENTITY_URL", identity_url.as_str()),
        ("LATCHKEY_AGENT_CREDENTIAL", agent_credential.as_str()),
        ("LATCHKEY_AGENT_WORKLOAD_NAME", WORKLOAD),
        ("LATCHKEY_AGENT_RETURN_URL", return_url.as_str()),
        ("LATCHKEY_AGENT_ALB_KEY_URL_TEMPLATE", alb_keys.as_str()),
        (
            "LATCHKEY_AGENT_ALB_SIGNER",
            latchkey_gateway::config::DEFAULT_ALB_SIGNER,
        ),
        ("LATCHKEY_AGENT_ALB_ISSUER", idp_url.as_str()),
        ("LATCHKEY_AGENT_OUTBOUND_ALLOW_PRIVATE_ADDRESSES", "true"),
        // Set for the configuration's sake; the model is chosen by `llm::model`.
        ("LATCHKEY_AGENT_LLM_PROVIDER", "openai"),
        ("LATCHKEY_AGENT_LLM_MODEL", "offline-scripted-planner"),
        ("LATCHKEY_AGENT_CONSENT_WAIT_SECONDS", "300"),
        ("LATCHKEY_AGENT_GITHUB_BASE_URL", github_api),
        ("LATCHKEY_AGENT_GITHUB_PROVIDER", PROVIDER),
        ("LATCHKEY_AGENT_STORE_DIR", agent_store.as_str()),
        ("LATCHKEY_GATEWAY_PUBLIC_URL", gateway_url.as_str()),
        ("LATCHKEY_GATEWAY_OIDC_ISSUER", idp_url.as_str()),
        ("LATCHKEY_GATEWAY_OIDC_CLIENT_ID", GATEWAY_CLIENT_ID),
        (
            "LATCHKEY_GATEWAY_OIDC_CLIENT_SECRET",
            state.gateway_client_secret.as_str(),
        ),
        ("LATCHKEY_GATEWAY_OUTBOUND_ALLOW_PRIVATE_ADDRESSES", "true"),
        ("LATCHKEY_GATEWAY_ACCESS_LOG", "off"),
        ("LATCHKEY_GATEWAY_WORKERS", "1"),
    ]);
    let routes = format!(
        "/={agent_url};login,/oauth2/session-binding={binding_url};login,/connections={binding_url};login"
    );
    let mut pairs: Vec<(&str, &str)> = pairs.into_iter().collect();
    pairs.push(("LATCHKEY_GATEWAY_ROUTES", routes.as_str()));
    // The gateway's metrics listener is the one gateway key dev takes from the user
    // (`[gateway] metrics_listen`, LATCHKEY_GATEWAY_METRICS_LISTEN): off unless asked for.
    let user_gateway = Flags::<latchkey_gateway::config::Gateway>::default();
    let metrics_listen: Option<String> =
        Layers::new(&user_gateway, user_file, user_env)?.get("metrics_listen")?;
    if let Some(addr) = &metrics_listen {
        pairs.push(("LATCHKEY_GATEWAY_METRICS_LISTEN", addr.as_str()));
    }
    let env = Env::fixed(&pairs);
    let binding_flags = Flags::<latchkey_binding::config::Binding>::default();
    let (_, binding) =
        latchkey_binding::BindingConfig::resolve(&Layers::new(&binding_flags, &file, &env)?)?;
    let agent_flags = Flags::<latchkey_agent::config::Agent>::default();
    let mut agent =
        latchkey_agent::AgentConfig::resolve(&Layers::new(&agent_flags, &file, &env)?, &dir)?;
    let gateway_flags = Flags::<latchkey_gateway::config::Gateway>::default();
    let gateway = latchkey_gateway::GatewayConfig::resolve(
        &Layers::new(&gateway_flags, &file, &env)?,
        &dir.join("gateway"),
    )?;
    if let Some(config) = model.config {
        agent.llm = config;
    }

    tasks.spawn(named(
        "binding service",
        serve::binding_on(binding_l, binding),
    ));
    tasks.spawn(named("agent", serve::agent_on(agent_l, agent, model.chat)));
    tasks.spawn(named("gateway", serve::gateway_on(gateway_l, gateway)));

    println!();
    println!(
        "latchkey dev ready in {} ms: open {gateway_url}",
        started.elapsed().as_millis()
    );
    println!("  sign in as alice or bob (development identity provider, no password)");
    println!("  ask the agent \"who am I on GitHub?\" or \"list my repositories\"");
    println!("  model:              {}", model.label);
    println!("  identity service:   {identity_url}");
    println!("  your connections:   {gateway_url}/connections (grants you gave agents; Revoke)");
    println!("  binding service:    {binding_url} (behind the gateway at {return_url})");
    println!(
        "  agent:              {agent_url} (API docs behind the gateway at {gateway_url}/docs)"
    );
    println!("  dev OpenID provider: {idp_url} (development only)");
    match &github_app {
        None => println!("  sandbox GitHub:     {sandbox_url} (development only)"),
        Some(app) => {
            println!(
                "  GitHub:             github.com, OAuth app {} (the sandbox at {sandbox_url} is not used)",
                app.client_id
            );
            println!(
                "  callback URL:       {callback_url} (register it as the OAuth app's authorization callback URL)"
            );
        }
    }
    println!("  data:               {}", dir.display());
    println!("Ctrl-C stops everything.");
    std::io::stdout().flush()?;

    // Every service stops on Ctrl-C (or SIGTERM) by itself; dev ends when all have
    // stopped, or at once when one fails.
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((_, Ok(()))) => {}
            Ok((what, Err(e))) => return Err(e.context(format!("{what} failed"))),
            Err(e) => return Err(anyhow!("a service task failed: {e}")),
        }
    }
    println!("latchkey dev stopped");
    Ok(())
}

/// A service's future, named for the report of how it ended.
async fn named(
    what: &'static str,
    service: impl std::future::Future<Output = anyhow::Result<()>>,
) -> (&'static str, anyhow::Result<()>) {
    (what, service.await)
}

/// Where `latchkey dev` keeps its data when no `--data-dir` is given.
pub(crate) const DEFAULT_DIR: &str = "latchkey-dev";
