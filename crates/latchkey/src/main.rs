//! `latchkey`: serves the identity service and runs admin commands against its storage.

/// mimalloc instead of the system allocator: the request path allocates many small,
/// short-lived buffers, and glibc malloc spent about a fifth of the server's CPU on them
/// (see bench/README and docs/architecture.md, "Hot path").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod config;
mod keyfile;
mod logging;

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use axum::serve::ListenerExt as _;
use base64::Engine as _;
use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use latchkey_authn::outbound::OutboundPolicy;
use latchkey_core::clock::{Clock, SystemClock};
use latchkey_core::crypto::{self, KeyProvider};
use latchkey_identity::auth::{Role, credential_aad};
use latchkey_identity::{AppState, ServiceConfig};
use latchkey_store::{CredentialRecord, Store};

use crate::config::{FileConfig, Overrides, ServeConfig, ServeOverrides, StorageConfig};

#[derive(Debug, Parser)]
#[command(
    name = "latchkey",
    version,
    about = "Self-hosted identity for AI agents, wire-compatible with Amazon Bedrock AgentCore Identity"
)]
struct Cli {
    #[command(flatten)]
    overrides: Overrides,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a service.
    Serve {
        #[command(subcommand)]
        service: Service,
    },
    /// Administer credentials and inspect audit events (works directly on the storage).
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Debug, Subcommand)]
enum Service {
    /// The identity service: AgentCore-compatible control and data planes.
    Identity(ServeOverrides),
    /// The session binding service: binds an OAuth consent to the signed-in browser user
    /// (`GET /oauth2/session-binding?session_id=…`) via `CompleteResourceTokenAuth`.
    Binding(config::BindingOverrides),
    /// The agent workload: `POST /invocations` streaming Server-Sent Events, an LLM tool
    /// loop whose tools act as the signed-in user with per-tool scopes.
    Agent(Box<config::AgentOverrides>),
    /// The gateway: OIDC login in front of the services, routing by path prefix, and the
    /// ALB's signed `x-amzn-oidc-data` header for every upstream.
    Gateway(Box<config::GatewayOverrides>),
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// API credentials (SigV4 access keys, also usable as bearer keys).
    Credentials {
        #[command(subcommand)]
        command: CredentialsCommand,
    },
    /// Audit events.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Grants in the token vault (never their tokens).
    Grants {
        #[command(subcommand)]
        command: GrantsCommand,
    },
    /// The key-encryption key that seals every stored secret: status and online rotation.
    Vault {
        #[command(subcommand)]
        command: VaultCommand,
    },
}

#[derive(Debug, Subcommand)]
enum GrantsCommand {
    /// List grants, one JSON object per line: workload, user, provider, scopes, expiry, state.
    List {
        #[arg(long)]
        workload: Option<String>,
        #[arg(long)]
        user: Option<String>,
        #[arg(long, default_value_t = 1000)]
        limit: i64,
    },
    /// Revoke a grant: at the provider (RFC 7009, when it has a revocation endpoint), then here.
    Revoke {
        #[arg(long)]
        workload: String,
        /// The user's subject: a user id, or with --user-issuer a token's `sub`.
        #[arg(long)]
        user: String,
        /// The inbound issuer of a user established by a token (`userIssuer` in `grants
        /// list`); without it, `--user` is a user id.
        #[arg(long)]
        user_issuer: Option<String>,
        #[arg(long)]
        provider: String,
        #[command(flatten)]
        serve: Box<ServeOverrides>,
    },
    /// Benchmarks only: insert COUNT synthetic grants (users PREFIX0…) with sealed dummy tokens.
    Seed {
        #[arg(long)]
        workload: String,
        #[arg(long)]
        provider: String,
        #[arg(long)]
        count: u64,
        #[arg(long, default_value = "seed-user-")]
        user_prefix: String,
        /// Space-separated granted scopes.
        #[arg(long, default_value = "")]
        scopes: String,
    },
}

#[derive(Debug, Subcommand)]
enum CredentialsCommand {
    /// Create a credential. The secret is printed once and stored encrypted.
    Create {
        /// `admin`, `binding`, or `workload:<name>`.
        #[arg(long)]
        role: String,
        /// A note for humans.
        #[arg(long)]
        description: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List credentials (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a credential.
    Revoke { access_key_id: String },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// The most recent audit events, oldest first, one JSON object per line.
    List {
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Check the whole tamper-evident chain. Exit 0 when intact; otherwise exit 1 and
    /// name the first altered, removed, inserted or reordered block.
    Verify {
        /// Check only the newest N blocks (what a server checks at start).
        #[arg(long)]
        tail: Option<u64>,
        /// Print the report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Audit events with `--since <= time < --until`, in chain order, as JSON lines on
    /// stdout (each with `block`, its block's sequence number).
    Export {
        /// RFC 3339 time, e.g. 2026-01-31T00:00:00Z.
        #[arg(long, value_parser = parse_rfc3339_ms)]
        since: i64,
        /// RFC 3339 time (default: no upper bound).
        #[arg(long, value_parser = parse_rfc3339_ms)]
        until: Option<i64>,
    },
}

/// An RFC 3339 time as Unix milliseconds.
fn parse_rfc3339_ms(s: &str) -> Result<i64, String> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|_| format!("{s:?} is not an RFC 3339 time (e.g. 2026-01-31T00:00:00Z)"))?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).map_err(|_| "time out of range".into())
}

/// Global storage flags a service does not use, by `serve` subcommand: the gateway keeps
/// only its cookie key in the data directory, and the session binding service keeps
/// nothing. Their help leaves them out; given anyway, they are accepted and ignored.
const UNUSED_GLOBALS: [(&str, &[&str]); 2] = [
    (
        "gateway",
        &["database_url", "database_url_file", "key_file"],
    ),
    (
        "binding",
        &["data_dir", "database_url", "database_url_file", "key_file"],
    ),
];

/// The command line: [`Cli`], with the storage flags a service does not use hidden from
/// its `--help` ([`UNUSED_GLOBALS`]).
///
/// clap copies a global flag into a subcommand only when the subcommand has no argument
/// with the same id; giving the subcommand hidden copies stops the visible ones from
/// arriving there, and values given there still reach the top level (same id), so parsing
/// is unchanged everywhere.
fn cli_command() -> clap::Command {
    let mut command = Cli::command();
    for (service, unused) in UNUSED_GLOBALS {
        let hidden: Vec<clap::Arg> = command
            .get_arguments()
            .filter(|a| unused.contains(&a.get_id().as_str()))
            .map(|a| a.clone().global(false).hide(true))
            .collect();
        command = command.mut_subcommand("serve", |serve| {
            serve.mut_subcommand(service, |sub| sub.args(hidden))
        });
    }
    command
}

fn parse_cli() -> Cli {
    let mut matches = cli_command().get_matches();
    Cli::from_arg_matches_mut(&mut matches).unwrap_or_else(|e| e.format(&mut cli_command()).exit())
}

fn main() -> std::process::ExitCode {
    let cli = parse_cli();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("latchkey: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("latchkey: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let file = config::load_file(cli.overrides.config.as_deref())?;
    let storage = StorageConfig::resolve(&cli.overrides, &file)?;
    init_logging(&storage)?;
    match cli.command {
        Command::Serve {
            service: Service::Identity(o),
        } => serve_identity(&storage, &file, &o).await,
        Command::Serve {
            service: Service::Binding(o),
        } => serve_binding(&file, &o).await,
        Command::Serve {
            service: Service::Agent(o),
        } => serve_agent(&storage, &file, &o).await,
        Command::Serve {
            service: Service::Gateway(o),
        } => serve_gateway(&storage, &file, &o).await,
        Command::Admin { command } => admin(&storage, &file, command).await,
    }
}

fn init_logging(storage: &StorageConfig) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&storage.log_level))
        .map_err(|e| anyhow!("invalid configuration key `log_level`: {e}"))?;
    logging::init(filter, storage.log_format == "json");
    Ok(())
}

/// Open (creating on first start) the data directory, key file and store.
async fn open_storage(storage: &StorageConfig) -> anyhow::Result<(Store, Arc<dyn KeyProvider>)> {
    keyfile::ensure_private_dir(&storage.data_dir)?;
    let keys = keyfile::ReloadingKeyProvider::open(&storage.key_file)?;
    let store = Store::connect(&storage.database_url)
        .await
        .with_context(|| {
            format!(
                "cannot open the database {}",
                storage.database_url_redacted()
            )
        })?;
    Ok((store, Arc::new(keys)))
}

/// Refuse to run with a key file that does not open what the database holds (a key file
/// from another installation, a backup of the wrong day): every key id the stored
/// envelopes name must be in the file, and one envelope per key id must open. Otherwise
/// requests would fail one by one, and new data would be sealed under a key the rest of
/// the data does not share.
async fn check_key_file(
    storage: &StorageConfig,
    store: &Store,
    keys: &dyn KeyProvider,
) -> anyhow::Result<()> {
    let check = latchkey_identity::rotation::check_keys(store, keys)
        .await
        .with_context(|| {
            format!(
                "cannot read the database {} to check the key file",
                storage.database_url_redacted()
            )
        })?;
    if check.is_ok() {
        return Ok(());
    }
    let path = storage.key_file.display();
    let database = storage.database_url_redacted();
    if !check.missing.is_empty() {
        let envelopes: u64 = check.missing.values().sum();
        let ids: Vec<&String> = check.missing.keys().collect();
        anyhow::bail!(
            "the key file {path} does not hold the key-encryption key(s) {ids:?} that {envelopes} sealed value(s) in the database {database} use: it is not the key file this database was sealed with. Restore the right key file (or point `key_file` / --key-file at it); `latchkey admin vault status` lists the key ids in use"
        );
    }
    anyhow::bail!(
        "the key file {path} holds key-encryption key id(s) {:?} with other key material than the one the database {database} was sealed with: it is not the key file of this database. Restore the right key file (or point `key_file` / --key-file at it)",
        check.wrong
    )
}

async fn serve_identity(
    storage: &StorageConfig,
    file: &FileConfig,
    o: &ServeOverrides,
) -> anyhow::Result<()> {
    let serve = ServeConfig::resolve(o, file)?;
    let (store, keys) = open_storage(storage).await?;
    check_key_file(storage, &store, keys.as_ref()).await?;
    let listener = tokio::net::TcpListener::bind(serve.listen)
        .await
        .with_context(|| format!("cannot listen on {}", serve.listen))?;
    let bound = listener.local_addr()?;
    let public_url = serve
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{bound}"));
    let mut config = ServiceConfig::new(public_url.clone());
    config.arn = serve.arn.clone();
    config.wat_ttl_seconds = serve.wat_ttl_seconds;
    config.cache_ttl = Duration::from_secs(serve.cache_ttl_seconds);
    config.session_ttl_secs = serve.session_ttl_seconds;
    config.refresh_lease_ms = serve.refresh_lease_seconds * 1000;
    config.default_token_lifetime_secs = serve.default_token_lifetime_seconds;
    config.inbound_issuers = serve.inbound_issuers.clone();
    config.outbound = OutboundPolicy {
        allow_private_addresses: serve.allow_private_addresses,
        request_timeout: Duration::from_millis(serve.outbound_timeout_ms),
        max_response_bytes: serve.outbound_max_response_bytes,
        ..OutboundPolicy::default()
    };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let state = AppState::start(config, store, keys, clock).await?;
    tracing::info!(%public_url, database = %storage.database_url_redacted(), "identity service starting");
    println!("latchkey identity listening on http://{bound} (public URL {public_url})");
    std::io::stdout().flush()?;
    let app = latchkey_identity::app(state.clone());
    axum::serve(listener.tap_io(no_delay), app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    state.audit.flush().await;
    state.store.close().await;
    tracing::info!("identity service stopped");
    Ok(())
}

/// Every accepted connection sends at once (`TCP_NODELAY`): responses written in several
/// pieces (Server-Sent Events, a chunked body) otherwise wait for the peer's delayed ACK,
/// about 40 ms per event on Linux.
fn no_delay(tcp: &mut tokio::net::TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "could not set TCP_NODELAY");
    }
}

async fn serve_binding(file: &FileConfig, o: &config::BindingOverrides) -> anyhow::Result<()> {
    let serve = config::BindingServeConfig::resolve(o, file)?;
    let sources = match (&serve.binding.users.alb, &serve.binding.users.oidc) {
        (Some(_), Some(_)) => "alb+oidc",
        (Some(_), None) => "alb",
        _ => "oidc",
    };
    let identity_url = serve.binding.identity_url.clone();
    let access_key_id = serve.binding.credential.access_key_id().to_string();
    let state = latchkey_binding::BindingState::new(serve.binding, Arc::new(SystemClock))
        .map_err(|e| anyhow!("{e}"))?;
    let listener = tokio::net::TcpListener::bind(serve.listen)
        .await
        .with_context(|| format!("cannot listen on {}", serve.listen))?;
    let bound = listener.local_addr()?;
    tracing::info!(%identity_url, sources, %access_key_id, "session binding service starting");
    println!("latchkey binding listening on http://{bound}");
    std::io::stdout().flush()?;
    axum::serve(listener.tap_io(no_delay), latchkey_binding::app(state))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("session binding service stopped");
    Ok(())
}

async fn serve_agent(
    storage: &StorageConfig,
    file: &FileConfig,
    o: &config::AgentOverrides,
) -> anyhow::Result<()> {
    if o.print_openapi {
        println!("{}", latchkey_agent::openapi().to_pretty_json()?);
        return Ok(());
    }
    let serve = config::AgentServeConfig::resolve(o, file, storage)?;
    let model = latchkey_llm::build(&serve.agent.llm)
        .map_err(|e| anyhow!("invalid configuration key `agent.llm`: {e}"))?;
    let identity_url = serve.agent.identity_url.clone();
    let workload = serve.agent.workload_name.clone();
    let access_key_id = serve.agent.credential.access_key_id().to_string();
    let provider = format!("{:?}", serve.agent.llm.provider).to_ascii_lowercase();
    let has_api_key = serve.agent.llm.api_key.is_some();
    let state = latchkey_agent::AgentState::new(serve.agent, model, Arc::new(SystemClock))
        .map_err(|e| anyhow!("{e}"))?;
    let listener = tokio::net::TcpListener::bind(serve.listen)
        .await
        .with_context(|| format!("cannot listen on {}", serve.listen))?;
    let bound = listener.local_addr()?;
    tracing::info!(%identity_url, %workload, %access_key_id, llm = %provider, has_api_key, "agent starting");
    println!("latchkey agent listening on http://{bound}");
    std::io::stdout().flush()?;
    axum::serve(listener.tap_io(no_delay), latchkey_agent::app(state))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("agent stopped");
    Ok(())
}

async fn serve_gateway(
    storage: &StorageConfig,
    file: &FileConfig,
    o: &config::GatewayOverrides,
) -> anyhow::Result<()> {
    let mut serve = config::GatewayServeConfig::resolve(o, file, storage)?;
    let tls = match &serve.tls {
        Some((cert, key)) => Some(
            latchkey_gateway::server::load_tls(cert, key)
                .map_err(|e| anyhow!("invalid configuration key `gateway.tls_cert`: {e}"))?,
        ),
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let listener = tokio::net::TcpListener::bind(serve.listen)
        .await
        .with_context(|| format!("cannot listen on {}", serve.listen))?;
    let bound = listener.local_addr()?;
    let redirect = match serve.http_redirect_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
                format!("cannot listen on {addr} (gateway.http_redirect_listen)")
            })?;
            let bound = listener.local_addr()?;
            Some((listener, bound))
        }
        None => None,
    };
    if serve.public_url.is_none() {
        serve.gateway.public_url = format!("{scheme}://{bound}");
    }
    let public_url = serve.gateway.public_url.clone();
    let issuer = serve.gateway.oidc_issuer.clone();
    let routes = serve.gateway.routes.len();
    let workers = serve.workers;
    let state = latchkey_gateway::GatewayState::new(serve.gateway, Arc::new(SystemClock))
        .map_err(|e| anyhow!("{e}"))?;
    tracing::info!(%public_url, %issuer, routes, kid = state.alb_kid(), "gateway starting");
    println!("latchkey gateway listening on {scheme}://{bound}");
    if let Some((_, redirect_bound)) = &redirect {
        println!("latchkey gateway redirecting http://{redirect_bound} to {public_url}");
    }
    std::io::stdout().flush()?;
    // One shutdown for both listeners: the signal, or either of them ending (failing).
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut stop: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|stopping| *stopping).await;
    };
    let signal = async {
        tokio::select! {
            () = shutdown_signal() => {}
            () = stopped(stop_rx.clone()) => {}
        }
        stop_tx.send_replace(true);
    };
    let main = async {
        let result = latchkey_gateway::server::serve(
            listener,
            state.clone(),
            tls,
            workers,
            stopped(stop_rx.clone()),
        )
        .await;
        stop_tx.send_replace(true);
        result.context("gateway server failed")
    };
    let redirect = async {
        let Some((listener, _)) = redirect else {
            return Ok(());
        };
        let result = latchkey_gateway::redirect::serve_redirect(
            listener,
            public_url.clone(),
            stopped(stop_rx.clone()),
        )
        .await;
        stop_tx.send_replace(true);
        result.context("gateway HTTP redirect listener failed")
    };
    let saver = tokio::spawn(
        state
            .clone()
            .save_sessions_every(latchkey_gateway::snapshot::SAVE_INTERVAL),
    );
    let ((), main, redirect) = tokio::join!(signal, main, redirect);
    saver.abort();
    // The sessions as they are now, for the next start.
    if let Err(error) = state.save_sessions().await {
        tracing::error!(%error, "cannot write the session snapshot");
    }
    tokio::task::block_in_place(|| state.edge().access_log.flush());
    main?;
    redirect?;
    tracing::info!("gateway stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// `LK` + 18 characters of A–Z/2–7: the shape of an AWS access key id, never confused with one.
fn new_access_key_id() -> anyhow::Result<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut raw = [0u8; 18];
    aws_lc_rs::rand::fill(&mut raw).map_err(|_| anyhow!("random number generator failed"))?;
    Ok(format!(
        "LK{}",
        raw.iter()
            .map(|b| ALPHABET[(b & 31) as usize] as char)
            .collect::<String>()
    ))
}

/// 40 characters, URL-safe, 240 bits.
fn new_secret() -> anyhow::Result<zeroize::Zeroizing<String>> {
    let mut raw = zeroize::Zeroizing::new([0u8; 30]);
    aws_lc_rs::rand::fill(raw.as_mut()).map_err(|_| anyhow!("random number generator failed"))?;
    Ok(zeroize::Zeroizing::new(
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw.as_ref()),
    ))
}

async fn admin(
    storage: &StorageConfig,
    file: &FileConfig,
    command: AdminCommand,
) -> anyhow::Result<()> {
    let (store, keys) = open_storage(storage).await?;
    // `vault status` and `rotate-key` report and repair a mismatch themselves.
    if !matches!(
        command,
        AdminCommand::Vault { .. } | AdminCommand::Audit { .. }
    ) {
        check_key_file(storage, &store, keys.as_ref()).await?;
    }
    let chain = latchkey_store::AuditChain::new(keys.clone());
    let clock = SystemClock;
    match command {
        AdminCommand::Credentials {
            command:
                CredentialsCommand::Create {
                    role,
                    description,
                    json,
                },
        } => {
            let role = Role::parse(&role).map_err(|e| anyhow!("--role: {e}"))?;
            let id = new_access_key_id()?;
            let secret = new_secret()?;
            let envelope = crypto::encrypt(
                keys.as_ref(),
                credential_aad(&id).as_bytes(),
                secret.as_bytes(),
            )
            .await?;
            store
                .create_credential(&CredentialRecord {
                    access_key_id: id.clone(),
                    role: role.as_string(),
                    secret_envelope: envelope,
                    description,
                    created_ms: clock.now_ms(),
                    revoked_ms: None,
                })
                .await?;
            let mut event = latchkey_identity::audit::event(
                clock.now_ms(),
                None,
                "CreateCredential",
                latchkey_core::audit::Outcome::Success,
            );
            event.target = Some(id.clone());
            event.detail = serde_json::json!({"role": role.as_string(), "via": "cli"});
            store.append_audit(&chain, &[event]).await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"accessKeyId": id, "secretAccessKey": secret.as_str(), "role": role.as_string()})
                );
            } else {
                println!(
                    "Access key id:     {id}\nSecret access key: {}\nRole:              {role}\n\nThe secret is shown only now. Use it for SigV4, or as `Authorization: Bearer {id}:<secret>`.",
                    secret.as_str()
                );
            }
        }
        AdminCommand::Credentials {
            command: CredentialsCommand::List { json },
        } => {
            let creds = store.list_credentials().await?;
            if json {
                let items: Vec<_> = creds
                    .iter()
                    .map(|c| serde_json::json!({"accessKeyId": c.access_key_id, "role": c.role, "description": c.description, "createdTime": c.created_ms / 1000, "revoked": c.revoked_ms.is_some(), "revokedTime": c.revoked_ms.map(|m| m / 1000)}))
                    .collect();
                println!("{}", serde_json::Value::Array(items));
            } else {
                println!(
                    "{:<22} {:<28} {:<8} DESCRIPTION",
                    "ACCESS KEY ID", "ROLE", "STATE"
                );
                for c in creds {
                    println!(
                        "{:<22} {:<28} {:<8} {}",
                        c.access_key_id,
                        c.role,
                        if c.revoked_ms.is_some() {
                            "revoked"
                        } else {
                            "active"
                        },
                        c.description.unwrap_or_default()
                    );
                }
            }
        }
        AdminCommand::Credentials {
            command: CredentialsCommand::Revoke { access_key_id },
        } => {
            store
                .revoke_credential(&access_key_id, clock.now_ms())
                .await
                .map_err(|e| match e {
                    latchkey_store::StoreError::NotFound => {
                        anyhow!("no active credential {access_key_id:?}")
                    }
                    e => e.into(),
                })?;
            let mut event = latchkey_identity::audit::event(
                clock.now_ms(),
                None,
                "RevokeCredential",
                latchkey_core::audit::Outcome::Success,
            );
            event.target = Some(access_key_id.clone());
            store.append_audit(&chain, &[event]).await?;
            println!(
                "revoked {access_key_id} (running servers stop accepting it within their cache TTL, 5 s by default)"
            );
        }
        AdminCommand::Audit {
            command: AuditCommand::List { limit },
        } => {
            for e in store.list_audit(limit.clamp(1, 100_000)).await? {
                println!("{}", serde_json::to_string(&e)?);
            }
        }
        AdminCommand::Audit {
            command: AuditCommand::Verify { tail, json },
        } => {
            let report = store.verify_audit(&chain, tail).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                let range = match (report.first_seq, report.last_seq) {
                    (Some(a), Some(b)) => format!("blocks {a} to {b}"),
                    _ => "no chained blocks".to_string(),
                };
                let scope = if report.complete {
                    "whole chain"
                } else {
                    "newest blocks only"
                };
                if report.fault.is_none() {
                    println!(
                        "audit chain intact: {} block(s) checked ({range}, {scope}); head {}; {} block(s) from before the chain not covered",
                        report.checked,
                        report.head_hash.as_deref().unwrap_or("-"),
                        report.unchained
                    );
                }
            }
            if let Some(fault) = &report.fault {
                return Err(anyhow!("audit chain broken at {fault}"));
            }
        }
        AdminCommand::Audit {
            command: AuditCommand::Export { since, until },
        } => {
            let until = until.unwrap_or(i64::MAX);
            if until <= since {
                return Err(anyhow!("--until must be later than --since"));
            }
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let mut after = 0i64;
            loop {
                let page = store.export_audit(since, until, after).await?;
                let Some((last, _)) = page.last() else { break };
                after = *last;
                for (seq, events) in &page {
                    for e in events {
                        let mut line = serde_json::to_value(e)?;
                        if let Some(o) = line.as_object_mut() {
                            o.insert("block".into(), (*seq).into());
                        }
                        serde_json::to_writer(&mut out, &line)?;
                        out.write_all(b"\n")?;
                    }
                }
            }
            out.flush()?;
        }
        AdminCommand::Grants { command } => grants(store, keys, file, command).await?,
        AdminCommand::Vault { command } => vault_admin(storage, &store, command).await?,
    }
    Ok(())
}

async fn grants(
    store: Store,
    keys: Arc<dyn KeyProvider>,
    file: &FileConfig,
    command: GrantsCommand,
) -> anyhow::Result<()> {
    let clock = SystemClock;
    match command {
        GrantsCommand::List {
            workload,
            user,
            limit,
        } => {
            let mut after: Option<latchkey_store::GrantKey> = None;
            let mut left = limit.clamp(1, 10_000_000);
            while left > 0 {
                let page = store
                    .list_grants(
                        workload.as_deref(),
                        user.as_deref(),
                        after.as_ref(),
                        left.min(1000),
                    )
                    .await?;
                let Some(last) = page.last() else { break };
                after = Some(last.key.clone());
                left -= page.len() as i64;
                for g in &page {
                    let state = if g.needs_consent {
                        "needs-consent"
                    } else if g.expires_ms <= clock.now_ms() {
                        if g.refresh_envelope.is_some() {
                            "expired-refreshable"
                        } else {
                            "expired"
                        }
                    } else {
                        "active"
                    };
                    println!(
                        "{}",
                        serde_json::json!({
                            "workload": g.key.workload,
                            "user": g.key.user.subject(),
                            "userKind": g.key.user.kind().as_str(),
                            "userIssuer": g.key.user.issuer(),
                            "provider": g.key.provider,
                            "scopes": g.scopes,
                            "resources": g.resources,
                            "expiresTime": g.expires_ms / 1000,
                            "hasRefreshToken": g.refresh_envelope.is_some(),
                            "state": state,
                            "updatedTime": g.updated_ms / 1000,
                        })
                    );
                }
            }
        }
        GrantsCommand::Revoke {
            workload,
            user,
            user_issuer,
            provider,
            serve,
        } => {
            let user = match user_issuer {
                None => latchkey_core::UserPrincipal::user_id(user),
                Some(issuer) => latchkey_core::UserPrincipal::jwt(issuer, user),
            }
            .map_err(|e| anyhow!("--user/--user-issuer: {e}"))?;
            let serve = ServeConfig::resolve(&serve, file)?;
            let mut config = ServiceConfig::new("http://127.0.0.1");
            config.arn = serve.arn.clone();
            config.outbound = OutboundPolicy {
                allow_private_addresses: serve.allow_private_addresses,
                request_timeout: Duration::from_millis(serve.outbound_timeout_ms),
                max_response_bytes: serve.outbound_max_response_bytes,
                ..OutboundPolicy::default()
            };
            let state = AppState::start(config, store.clone(), keys, Arc::new(SystemClock)).await?;
            let key = latchkey_store::GrantKey {
                workload,
                user,
                provider,
            };
            let report = latchkey_identity::vault::revoke_grant(&state, &key)
                .await
                .map_err(|e| anyhow!("{e}"))?;
            let mut event = latchkey_identity::audit::event(
                clock.now_ms(),
                None,
                "RevokeGrant",
                latchkey_core::audit::Outcome::Success,
            );
            event.workload = Some(key.workload.clone());
            latchkey_identity::audit::set_user(&mut event, Some(&key.user));
            event.target = Some(key.provider.clone());
            event.detail = serde_json::json!({"via": "cli", "revokedAtProvider": report.revoked_at_provider, "providerErrors": report.provider_errors});
            store
                .append_audit(
                    &latchkey_store::AuditChain::new(state.keys.clone()),
                    &[event],
                )
                .await?;
            println!("{}", serde_json::to_string(&report)?);
        }
        GrantsCommand::Seed {
            workload,
            provider,
            count,
            user_prefix,
            scopes,
        } => {
            if store.find_oauth2_provider(&provider).await?.is_none() {
                return Err(anyhow!("no OAuth2 credential provider {provider:?}"));
            }
            let scopes: Vec<String> = scopes.split_whitespace().map(str::to_string).collect();
            let expires_ms = clock.now_ms() + 86_400_000;
            let mut batch = Vec::with_capacity(1000);
            for i in 0..count {
                let key = latchkey_store::GrantKey {
                    workload: workload.clone(),
                    user: latchkey_core::UserPrincipal::user_id(format!("{user_prefix}{i}"))
                        .map_err(|e| anyhow!("--user-prefix: {e}"))?,
                    provider: provider.clone(),
                };
                let token = format!("seeded-access-token-{i}");
                let access_envelope = crypto::encrypt(
                    keys.as_ref(),
                    latchkey_identity::vault::grant_aad(&key, "access").as_bytes(),
                    token.as_bytes(),
                )
                .await?;
                batch.push((
                    key,
                    latchkey_store::GrantTokens {
                        scopes: scopes.clone(),
                        resources: vec![],
                        token_type: "Bearer".into(),
                        access_envelope,
                        refresh_envelope: None,
                        expires_ms,
                    },
                ));
                if batch.len() == 1000 || i + 1 == count {
                    store.seed_grants(&batch, clock.now_ms()).await?;
                    batch.clear();
                }
            }
            store.after_bulk_load().await?;
            println!(
                "{}",
                serde_json::json!({"seeded": count, "grants": store.count_grants().await?})
            );
        }
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
enum VaultCommand {
    /// Rotate the key-encryption key while servers run: add a new active key to the key
    /// file, wait for running servers to pick it up, re-wrap every stored envelope under
    /// it, then remove keys no envelope uses any more. Prints a JSON report.
    RotateKey {
        /// Seconds to wait after writing the new key before re-wrapping, so every running
        /// server has reloaded the key file (they check it every 2 s) and stopped sealing
        /// with the old key. Longer than your slowest request.
        #[arg(long, default_value_t = 10)]
        grace_seconds: u64,
        /// Keep every old key in the key file, even unused ones.
        #[arg(long)]
        no_retire: bool,
    },
    /// JSON: the active key id, the key ids in the key file, envelopes per key id.
    Status,
}

/// Re-wrap passes while rows keep changing under us (a live server rewrote them).
const MAX_REWRAP_PASSES: u32 = 3;

async fn vault_admin(
    storage: &StorageConfig,
    store: &Store,
    command: VaultCommand,
) -> anyhow::Result<()> {
    use latchkey_identity::rotation;
    let path = &storage.key_file;
    match command {
        VaultCommand::Status => {
            let keys = keyfile::load(path)?;
            let usage = rotation::key_usage_by_column(store).await?;
            let missing: Vec<&String> = usage.total.keys().filter(|id| !keys.has_key(id)).collect();
            println!(
                "{}",
                serde_json::json!({
                    "activeKeyId": keys.active_key_id(),
                    "keyIds": keys.key_ids(),
                    "envelopesByKeyId": usage.total,
                    "columns": usage.columns,
                    "malformedEnvelopes": usage.malformed,
                    "keyIdsMissingFromKeyFile": missing,
                })
            );
        }
        VaultCommand::RotateKey {
            grace_seconds,
            no_retire,
        } => {
            let clock = SystemClock;
            let _lock = keyfile::RotationLock::acquire(path)?;
            // (a) A new active key; the old ones stay for opening.
            let mut keys = keyfile::load(path)?;
            let previous = keys.active_key_id();
            let active = keys.rotate()?;
            keyfile::write_atomic(path, &keys)?;
            eprintln!(
                "latchkey: new active key-encryption key {active} written to {}; waiting {grace_seconds} s for running servers to reload it",
                path.display()
            );
            // (b) Servers seal with the old key until they notice the new file.
            tokio::time::sleep(Duration::from_secs(grace_seconds)).await;
            // (c) Re-wrap; rows a server changed meanwhile are left to the next pass.
            let mut report = rotation::RewrapReport::default();
            let mut passes = 0;
            loop {
                passes += 1;
                let pass = rotation::rewrap_all(store, &keys).await?;
                report.merge(&pass);
                if pass.total.skipped_changed == 0 || passes >= MAX_REWRAP_PASSES {
                    break;
                }
            }
            // (d) Keys no envelope uses any more leave the file.
            let usage = rotation::key_usage_by_column(store).await?;
            let mut retired = vec![];
            if !no_retire {
                // Re-read: whatever is in the file now is what we edit.
                let mut current = keyfile::load(path)?;
                let current_active = current.active_key_id();
                for id in current.key_ids() {
                    if id != current_active && !usage.total.contains_key(&id) {
                        current.retire(&id)?;
                        retired.push(id);
                    }
                }
                if !retired.is_empty() {
                    keyfile::write_atomic(path, &current)?;
                }
            }
            let file_ids = keyfile::load(path)?.key_ids();
            let in_use: std::collections::BTreeMap<&String, &u64> = usage
                .total
                .iter()
                .filter(|(id, _)| **id != active)
                .collect();
            let missing: Vec<&String> = usage
                .total
                .keys()
                .filter(|id| !file_ids.contains(id))
                .collect();
            let mut event = latchkey_identity::audit::event(
                clock.now_ms(),
                None,
                "RotateKeyEncryptionKey",
                latchkey_core::audit::Outcome::Success,
            );
            event.target = Some(active.clone());
            event.detail = serde_json::json!({
                "via": "cli",
                "previousKeyId": previous,
                "activeKeyId": active,
                "passes": passes,
                "rewrap": report.total,
                "retiredKeyIds": retired,
                "oldKeysStillInUse": in_use,
            });
            let chain = latchkey_store::AuditChain::new(Arc::new(keyfile::load(path)?));
            store.append_audit(&chain, &[event]).await?;
            println!(
                "{}",
                serde_json::json!({
                    "activeKeyId": active,
                    "previousKeyId": previous,
                    "graceSeconds": grace_seconds,
                    "passes": passes,
                    "rewrap": report,
                    "envelopesByKeyId": usage.total,
                    "malformedEnvelopes": usage.malformed,
                    "retiredKeyIds": retired,
                    "oldKeysStillInUse": in_use,
                    "keyIdsMissingFromKeyFile": missing,
                    "keyIds": file_ids,
                })
            );
            if report.total.failed > 0 {
                eprintln!(
                    "latchkey: {} envelope(s) could not be re-wrapped (see the warnings above); their keys were kept",
                    report.total.failed
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod cli_tests {
    use super::*;

    fn help(path: &[&str]) -> String {
        let mut command = cli_command();
        command.build();
        let mut sub = &mut command;
        for name in path {
            sub = sub.find_subcommand_mut(name).unwrap();
        }
        sub.render_long_help().to_string()
    }

    #[test]
    fn gateway_and_binding_help_leave_out_storage_flags() {
        cli_command().debug_assert();
        let gateway = help(&["serve", "gateway"]);
        assert!(gateway.contains("--http-redirect-listen"), "{gateway}");
        assert!(gateway.contains("--data-dir"), "{gateway}");
        let binding = help(&["serve", "binding"]);
        assert!(!binding.contains("--data-dir"), "{binding}");
        assert!(binding.contains("--log-level"), "{binding}");
        for flag in ["--database-url", "--database-url-file", "--key-file"] {
            assert!(!gateway.contains(flag), "{flag} in {gateway}");
            assert!(!binding.contains(flag), "{flag} in {binding}");
            assert!(help(&["serve", "identity"]).contains(flag), "{flag}");
            assert!(
                help(&["admin", "credentials", "list"]).contains(flag),
                "{flag}"
            );
            assert!(help(&[]).contains(flag), "{flag}");
        }
    }

    #[test]
    fn storage_flags_still_parse_everywhere() {
        let parse = |args: &[&str]| {
            let matches = cli_command()
                .try_get_matches_from(std::iter::once("latchkey").chain(args.iter().copied()))
                .unwrap();
            Cli::from_arg_matches(&matches).unwrap()
        };
        for args in [
            &[
                "serve",
                "gateway",
                "--database-url",
                "sqlite://x",
                "--key-file",
                "/k",
            ][..],
            &[
                "--database-url",
                "sqlite://x",
                "--key-file",
                "/k",
                "serve",
                "gateway",
            ][..],
            &[
                "serve",
                "binding",
                "--database-url",
                "sqlite://x",
                "--key-file",
                "/k",
            ][..],
            &[
                "serve",
                "identity",
                "--database-url",
                "sqlite://x",
                "--key-file",
                "/k",
            ][..],
        ] {
            let cli = parse(args);
            assert_eq!(
                cli.overrides.database_url.as_deref(),
                Some("sqlite://x"),
                "{args:?}"
            );
            assert_eq!(cli.overrides.key_file, Some("/k".into()), "{args:?}");
        }
        let cli = parse(&["serve", "gateway", "--http-redirect-listen", "127.0.0.1:0"]);
        let Command::Serve {
            service: Service::Gateway(o),
        } = cli.command
        else {
            panic!("not serve gateway");
        };
        assert_eq!(o.http_redirect_listen.as_deref(), Some("127.0.0.1:0"));
    }
}
