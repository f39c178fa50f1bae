//! `latchkey`: serves the identity service and runs admin commands against its storage.

mod config;
mod keyfile;

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use base64::Engine as _;
use clap::{Parser, Subcommand};
use latchkey_core::clock::{Clock, SystemClock};
use latchkey_core::crypto::{self, KeyProvider};
use latchkey_identity::auth::{Role, credential_aad};
use latchkey_identity::outbound::OutboundPolicy;
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
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
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
        Command::Admin { command } => admin(&storage, command).await,
    }
}

fn init_logging(storage: &StorageConfig) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&storage.log_level))
        .map_err(|e| anyhow!("invalid configuration key `log_level`: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if storage.log_format == "json" {
        builder.json().init()
    } else {
        builder.init()
    }
    Ok(())
}

/// Open (creating on first start) the data directory, key file and store.
async fn open_storage(storage: &StorageConfig) -> anyhow::Result<(Store, Arc<dyn KeyProvider>)> {
    keyfile::ensure_private_dir(&storage.data_dir)?;
    let keys = keyfile::load_or_create(&storage.key_file)?;
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

async fn serve_identity(
    storage: &StorageConfig,
    file: &FileConfig,
    o: &ServeOverrides,
) -> anyhow::Result<()> {
    let serve = ServeConfig::resolve(o, file)?;
    let (store, keys) = open_storage(storage).await?;
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
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    state.audit.flush().await;
    state.store.close().await;
    tracing::info!("identity service stopped");
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

async fn admin(storage: &StorageConfig, command: AdminCommand) -> anyhow::Result<()> {
    let (store, keys) = open_storage(storage).await?;
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
            store.append_audit(&[event]).await?;
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
            store.append_audit(&[event]).await?;
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
    }
    Ok(())
}
