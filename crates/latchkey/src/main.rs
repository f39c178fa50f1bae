//! `latchkey`: serves the identity service and runs admin commands against its storage.
//! [`cli`] parses the command line, [`serve`] runs a service, [`admin`] runs an admin
//! command; [`config`] resolves every service's configuration.

/// mimalloc instead of the system allocator: the request path allocates many small,
/// short-lived buffers, and glibc malloc spent about a fifth of the server's CPU on them
/// (see bench/README and docs/architecture.md, "Hot path").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod admin;
mod cli;
mod config;
mod dev;
mod keyfile;
mod logging;
mod probe;
mod serve;

use std::sync::Arc;

use anyhow::{Context, anyhow};
use latchkey_core::crypto::KeyProvider;
use latchkey_store::Store;

use crate::cli::{Cli, Command, Service, parse_cli};
use latchkey_agent::AgentConfig;
use latchkey_authn::config::check_outbound_urls;
use latchkey_gateway::GatewayConfig;
use latchkey_gateway::config::SessionStoreKind;

use crate::config::{ConfigFile, Env, IdentityConfig, KeyRoot, Layers, StorageConfig};

fn main() -> std::process::ExitCode {
    let cli = parse_cli();
    if let Command::Probe(args) = &cli.command {
        return probe::run(&args.url, std::time::Duration::from_millis(args.timeout_ms));
    }
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
    let file = ConfigFile::load(cli.config.as_deref())?;
    config::check_file(&file)?;
    let env = Env::process();
    env.refuse_renamed(config::RENAMED_VARIABLES)
        .map_err(anyhow::Error::msg)?;
    let default_dir = match cli.command {
        Command::Dev(_) => dev::DEFAULT_DIR,
        _ => "latchkey",
    };
    let storage = StorageConfig::resolve(&Layers::new(&cli.storage, &file, &env)?, default_dir)?;
    init_logging(&storage)?;
    if !matches!(cli.command, Command::Admin { .. }) {
        // One recorder for the process: `latchkey dev` serves four services from it.
        latchkey_telemetry::install();
    }
    if let Some(endpoint) = &storage.otlp_endpoint {
        let services: &[latchkey_telemetry::Service] = match &cli.command {
            Command::Serve { service } => &[match service {
                Service::Identity(_) => latchkey_telemetry::Service::Identity,
                Service::Binding(_) => latchkey_telemetry::Service::Binding,
                Service::Agent(_) => latchkey_telemetry::Service::Agent,
                Service::Gateway(_) => latchkey_telemetry::Service::Gateway,
            }],
            Command::Dev(_) => &[
                latchkey_telemetry::Service::Identity,
                latchkey_telemetry::Service::Binding,
                latchkey_telemetry::Service::Agent,
                latchkey_telemetry::Service::Gateway,
            ],
            _ => &[],
        };
        if !services.is_empty() {
            latchkey_telemetry::trace::init(endpoint, services)
                .map_err(|e| anyhow!("invalid configuration key `otlp_endpoint`: {e}"))?;
            tracing::info!(url = %latchkey_telemetry::trace::traces_url(endpoint), "exporting traces over OTLP/HTTP");
        }
    }
    let result = serve_command(cli.command, &file, &env, storage).await;
    latchkey_telemetry::trace::shutdown().await;
    result
}

async fn serve_command(
    command: Command,
    file: &ConfigFile,
    env: &Env,
    storage: StorageConfig,
) -> anyhow::Result<()> {
    match command {
        Command::Serve { service } => match service {
            Service::Identity(flags) => {
                let layers = Layers::new(&flags, file, env)?;
                let serve = IdentityConfig::resolve(&layers)?;
                check_outbound_urls(&layers, &serve.outbound(), &serve.outbound_urls()).await?;
                serve::identity(&storage, serve).await
            }
            Service::Binding(flags) => {
                let layers = Layers::new(&flags, file, env)?;
                let (listen, binding) = latchkey_binding::BindingConfig::resolve(&layers)?;
                let urls = binding.users.outbound_urls();
                check_outbound_urls(&layers, &binding.outbound, &urls).await?;
                serve::binding((listen, binding)).await
            }
            Service::Agent(args) if args.print_openapi => {
                println!("{}", latchkey_agent::openapi().to_pretty_json()?);
                Ok(())
            }
            Service::Agent(args) => {
                let layers = Layers::new(&args.keys, file, env)?;
                let agent = AgentConfig::resolve(&layers, &storage.data_dir)?;
                let urls = agent.users.outbound_urls();
                check_outbound_urls(&layers, &agent.outbound(), &urls).await?;
                serve::agent(agent).await
            }
            Service::Gateway(flags) => {
                let layers = Layers::new(&flags, file, env)?;
                let mut gateway = GatewayConfig::resolve(&layers, &storage.data_dir)?;
                if gateway.keys.session_store == SessionStoreKind::Database {
                    gateway.database_url = Some(storage.database_url.clone().into());
                }
                let urls = [("oidc_issuer", gateway.keys.oidc_issuer.clone())];
                check_outbound_urls(&layers, &gateway.outbound(), &urls).await?;
                serve::gateway(gateway).await
            }
        },
        Command::Dev(args) => dev::run(storage, (file, env), args).await,
        Command::Admin { command } => admin::run(&storage, file, env, command).await,
        Command::Probe(_) => unreachable!("the probe runs before the configuration is read"),
    }
}

fn init_logging(storage: &StorageConfig) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&storage.log_level))
        .map_err(|e| anyhow!("invalid configuration key `log_level`: {e}"))?;
    logging::init(filter, storage.log_format == "json");
    Ok(())
}

/// The opened storage: the store, its key provider and, with `key_provider = "aws-kms"`,
/// the KMS root the token vault operations drive.
pub(crate) struct Opened {
    pub store: Store,
    pub keys: Arc<dyn KeyProvider>,
    pub kms: Option<Arc<latchkey_kms::KmsKeyProvider>>,
}

/// Open (creating on first start) the data directory, the keys and the store.
pub(crate) async fn open_storage(storage: &StorageConfig) -> anyhow::Result<Opened> {
    keyfile::ensure_private_dir(&storage.data_dir)?;
    let file_keys = match &storage.key_root {
        KeyRoot::File => Some(keyfile::ReloadingKeyProvider::open(&storage.key_file)?),
        KeyRoot::Kms(_) => None,
    };
    let store = Store::connect(&storage.database_url)
        .await
        .with_context(|| {
            format!(
                "cannot open the database {}",
                storage.database_url_redacted()
            )
        })?;
    match (&storage.key_root, file_keys) {
        (KeyRoot::Kms(settings), _) => open_kms(settings, store, true).await,
        (KeyRoot::File, Some(keys)) => Ok(Opened {
            store,
            keys: Arc::new(keys),
            kms: None,
        }),
        (KeyRoot::File, None) => Err(anyhow!("the key file was not opened")),
    }
}

/// The KMS key provider over `store`; `create`: make the first key when there is none.
async fn open_kms(
    settings: &latchkey_kms::KmsSettings,
    store: Store,
    create: bool,
) -> anyhow::Result<Opened> {
    let opened = match create {
        true => latchkey_kms::KmsKeyProvider::open(settings.clone(), store.clone()).await,
        false => latchkey_kms::KmsKeyProvider::open_existing(settings.clone(), store.clone()).await,
    };
    match opened {
        Ok(kms) => Ok(Opened {
            store,
            keys: kms.clone(),
            kms: Some(kms),
        }),
        Err(e) => {
            store.close().await;
            Err(anyhow!(e)).context(format!(
                "cannot load the key-encryption keys with the KMS key {} (key_provider = \"aws-kms\")",
                settings.key_id
            ))
        }
    }
}

/// Open the storage of an installation that exists, creating nothing (the admin
/// commands): its keys and Latchkey's tables in its database must be there. Anything
/// missing is refused with what is missing and how to initialise it; no directory, key
/// file, database file or table is created.
pub(crate) async fn open_existing_storage(storage: &StorageConfig) -> anyhow::Result<Opened> {
    let database = storage.database_url_redacted();
    let store = Store::connect_existing(&storage.database_url)
        .await
        .with_context(|| format!("cannot open the database {database}"))?;
    let init = "Initialise it with `latchkey admin init` (or start the identity service, `latchkey serve identity`, which does the same at its first start) with the same --data-dir / --database-url / --key-file, or point them at the installation you meant";
    if let KeyRoot::Kms(settings) = &storage.key_root {
        let Some(store) = store else {
            anyhow::bail!(
                "no Latchkey server state in the database {database}: it has no Latchkey tables. Nothing was created. {init}"
            );
        };
        if !store.has_wrapped_keks().await? {
            store.close().await;
            anyhow::bail!(
                "the database {database} holds no key-encryption key wrapped by KMS: it was not set up with key_provider = \"aws-kms\" (or not initialised). Nothing was created. {init}"
            );
        }
        return open_kms(settings, store, false).await;
    }
    let has_key_file = storage.key_file.is_file();
    let key_file = storage.key_file.display();
    let data_dir = storage.data_dir.display();
    match (store, has_key_file) {
        (Some(store), true) => {
            let keys = keyfile::ReloadingKeyProvider::open(&storage.key_file)?;
            Ok(Opened {
                store,
                keys: Arc::new(keys),
                kms: None,
            })
        }
        (Some(store), false) => {
            store.close().await;
            anyhow::bail!(
                "the database {database} holds a Latchkey installation, but its key file {key_file} does not exist: point --key-file (`key_file`, LATCHKEY_KEY_FILE) at the key file of this installation. Nothing was created (a new key could not open what the database holds)"
            )
        }
        (None, true) => anyhow::bail!(
            "no Latchkey server state in the database {database} (the key file {key_file} exists, but the database has no Latchkey tables). Nothing was created. {init}"
        ),
        (None, false) => anyhow::bail!(
            "no Latchkey server state in the data directory {data_dir}: no key file {key_file} and no Latchkey tables in the database {database}. Nothing was created. {init}"
        ),
    }
}

/// Refuse to run with a key file that does not open what the database holds (a key file
/// from another installation, a backup of the wrong day): every key id the stored
/// envelopes name must be in the file, and one envelope per key id must open. Otherwise
/// requests would fail one by one, and new data would be sealed under a key the rest of
/// the data does not share.
pub(crate) async fn check_key_file(
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
        if let KeyRoot::Kms(_) = storage.key_root {
            anyhow::bail!(
                "{} do not include the key-encryption key(s) {ids:?} that {envelopes} sealed value(s) in the database {database} use: they were sealed by another key provider (a key file) or the keys' rows were removed. `latchkey admin vault status` lists the key ids in use",
                storage.key_source()
            );
        }
        anyhow::bail!(
            "the key file {path} does not hold the key-encryption key(s) {ids:?} that {envelopes} sealed value(s) in the database {database} use: it is not the key file this database was sealed with. Restore the right key file (or point `key_file` / --key-file at it); `latchkey admin vault status` lists the key ids in use"
        );
    }
    if let KeyRoot::Kms(_) = storage.key_root {
        anyhow::bail!(
            "{} hold key-encryption key id(s) {:?} with other key material than the one the database {database} was sealed with",
            storage.key_source(),
            check.wrong
        );
    }
    anyhow::bail!(
        "the key file {path} holds key-encryption key id(s) {:?} with other key material than the one the database {database} was sealed with: it is not the key file of this database. Restore the right key file (or point `key_file` / --key-file at it)",
        check.wrong
    )
}
