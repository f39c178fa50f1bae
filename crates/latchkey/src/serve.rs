//! `latchkey serve <service>`: bind, start the service, serve until a shutdown signal.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use axum::serve::ListenerExt as _;
use latchkey_core::clock::{Clock, SystemClock};
use latchkey_identity::{AppState, ServiceConfig};
use secrecy::ExposeSecret as _;

use latchkey_agent::AgentConfig;
use latchkey_binding::BindingConfig;
use latchkey_gateway::GatewayConfig;

use crate::config::{IdentityConfig, StorageConfig};
use crate::{check_key_file, open_storage};

pub(crate) async fn identity(storage: &StorageConfig, serve: IdentityConfig) -> anyhow::Result<()> {
    let listener = listen(serve.listen).await?;
    let state = identity_state(storage, &serve, &listener).await?;
    run_identity(listener, state).await
}

/// Bind `addr`, naming it in the error.
pub(crate) async fn listen(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

/// The identity service's state over the storage (checked against its key file); its public
/// URL is the configured one, else the listener's address.
pub(crate) async fn identity_state(
    storage: &StorageConfig,
    serve: &IdentityConfig,
    listener: &tokio::net::TcpListener,
) -> anyhow::Result<AppState> {
    let crate::Opened { store, keys, kms } = open_storage(storage).await?;
    check_key_file(storage, &store, keys.as_ref()).await?;
    let bound = listener.local_addr()?;
    let public_url = serve
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{bound}"));
    let mut config = ServiceConfig::new(public_url.clone());
    config.arn = serve.arn();
    config.wat_ttl_seconds = serve.wat_ttl_seconds;
    config.cache_ttl = Duration::from_secs(serve.cache_ttl_seconds);
    config.session_ttl_secs = serve.session_ttl_seconds;
    config.refresh_lease_ms = serve.refresh_lease_seconds * 1000;
    config.default_token_lifetime_secs = serve.default_token_lifetime_seconds;
    config.inbound_issuers = serve.inbound_issuers.clone();
    config.outbound = serve.outbound();
    config.kms_root = kms.map(|k| k as Arc<dyn latchkey_core::crypto::KmsRoot>);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let state = AppState::start(config, store, keys, clock).await?;
    tracing::info!(%public_url, database = %storage.database_url_redacted(), "identity service starting");
    Ok(state)
}

/// Serve the identity service on `listener` until a shutdown signal.
pub(crate) async fn run_identity(
    listener: tokio::net::TcpListener,
    state: AppState,
) -> anyhow::Result<()> {
    let note = format!(" (public URL {})", state.config.public_url);
    let app = latchkey_identity::app(state.clone());
    serve_until_shutdown(listener, "identity", &note, app).await?;
    state.audit.flush().await;
    state.store.close().await;
    tracing::info!("identity service stopped");
    Ok(())
}

/// Prints where `service` listens (the line a supervisor waits for, `note` appended),
/// then serves `app` until the shutdown signal.
async fn serve_until_shutdown(
    listener: tokio::net::TcpListener,
    service: &str,
    note: &str,
    app: axum::Router,
) -> anyhow::Result<()> {
    let bound = listener.local_addr()?;
    println!("latchkey {service} listening on http://{bound}{note}");
    std::io::stdout().flush()?;
    axum::serve(listener.tap_io(no_delay), app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
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

pub(crate) async fn binding((addr, binding): (SocketAddr, BindingConfig)) -> anyhow::Result<()> {
    binding_on(listen(addr).await?, binding).await
}

pub(crate) async fn binding_on(
    listener: tokio::net::TcpListener,
    binding: BindingConfig,
) -> anyhow::Result<()> {
    let sources = match (&binding.users.alb, &binding.users.oidc) {
        (Some(_), Some(_)) => "alb+oidc",
        (Some(_), None) => "alb",
        _ => "oidc",
    };
    let identity_url = binding.identity_url.clone();
    let access_key_id = binding.credential.access_key_id().to_string();
    let state = latchkey_binding::BindingState::new(binding, Arc::new(SystemClock))
        .map_err(|e| anyhow!("{e}"))?;
    tracing::info!(%identity_url, sources, %access_key_id, "session binding service starting");
    serve_until_shutdown(listener, "binding", "", latchkey_binding::app(state)).await?;
    tracing::info!("session binding service stopped");
    Ok(())
}

pub(crate) async fn agent(agent: AgentConfig) -> anyhow::Result<()> {
    let model = latchkey_llm::build(&agent.llm)
        .map_err(|e| anyhow!("invalid configuration key `agent.llm`: {e}"))?;
    agent_on(listen(agent.keys.listen).await?, agent, model).await
}

pub(crate) async fn agent_on(
    listener: tokio::net::TcpListener,
    agent: AgentConfig,
    model: Arc<dyn latchkey_llm::ChatModel>,
) -> anyhow::Result<()> {
    let identity_url = agent.service.identity_url.clone();
    let workload = agent.keys.workload_name.clone();
    let access_key_id = agent.credential.access_key_id().to_string();
    let provider = format!("{:?}", agent.llm.provider).to_ascii_lowercase();
    let has_api_key = agent.llm.api_key.is_some();
    let state = latchkey_agent::AgentState::new(agent, model, Arc::new(SystemClock))
        .map_err(|e| anyhow!("{e}"))?;
    tracing::info!(%identity_url, %workload, %access_key_id, llm = %provider, has_api_key, "agent starting");
    serve_until_shutdown(listener, "agent", "", latchkey_agent::app(state)).await?;
    tracing::info!("agent stopped");
    Ok(())
}

pub(crate) async fn gateway(gateway: GatewayConfig) -> anyhow::Result<()> {
    gateway_on(listen(gateway.keys.listen).await?, gateway).await
}

pub(crate) async fn gateway_on(
    listener: tokio::net::TcpListener,
    mut gateway: GatewayConfig,
) -> anyhow::Result<()> {
    let tls = match (&gateway.keys.tls_cert, &gateway.keys.tls_key) {
        (Some(cert), Some(key)) => Some(
            latchkey_gateway::server::load_tls(cert, key)
                .map_err(|e| anyhow!("invalid configuration key `gateway.tls_cert`: {e}"))?,
        ),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let bound = listener.local_addr()?;
    let redirect = match gateway.keys.http_redirect_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
                format!("cannot listen on {addr} (gateway.http_redirect_listen)")
            })?;
            let bound = listener.local_addr()?;
            Some((listener, bound))
        }
        None => None,
    };
    let metrics = match gateway.keys.metrics_listen {
        Some(addr) => Some(listen(addr).await.context("gateway.metrics_listen")?),
        None => None,
    };
    if gateway.keys.public_url.is_none() {
        gateway.public_url = format!("{scheme}://{bound}");
    }
    let public_url = gateway.public_url.clone();
    let issuer = gateway.keys.oidc_issuer.clone();
    let routes = gateway.keys.routes.len();
    let workers = gateway.workers();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let shared = match &gateway.database_url {
        Some(url) => {
            let cache = Duration::from_secs(gateway.keys.session_cache_seconds);
            let shared = latchkey_gateway::shared::SharedSessions::connect(url.expose_secret(), cache)
                .await
                .with_context(|| "cannot open the session database (gateway.session_store = \"database\", database_url)")?;
            Some(shared)
        }
        None => None,
    };
    let seconds = |s: u64| i64::try_from(s).unwrap_or(i64::MAX);
    let purge = shared.clone().map(|shared| {
        tokio::spawn(shared.purge_every(
            Duration::from_secs(60),
            clock.clone(),
            seconds(gateway.keys.session_absolute_seconds),
            seconds(gateway.keys.session_idle_seconds),
        ))
    });
    let state = latchkey_gateway::GatewayState::with_sessions(gateway, clock, shared)
        .map_err(|e| anyhow!("{e}"))?;
    tracing::info!(%public_url, %issuer, routes, kid = state.alb_kid(), "gateway starting");
    println!("latchkey gateway listening on {scheme}://{bound}");
    if let Some(metrics) = &metrics {
        println!(
            "latchkey gateway metrics on http://{}/metrics",
            metrics.local_addr()?
        );
    }
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
    let metrics = async {
        let Some(listener) = metrics else {
            return Ok(());
        };
        let routes = latchkey_gateway::app::metrics_routes(state.clone());
        let result = axum::serve(listener.tap_io(no_delay), routes)
            .with_graceful_shutdown(stopped(stop_rx.clone()))
            .await;
        stop_tx.send_replace(true);
        result.context("gateway metrics listener failed")
    };
    let saver = tokio::spawn(
        state
            .clone()
            .save_sessions_every(latchkey_gateway::snapshot::SAVE_INTERVAL),
    );
    let ((), main, redirect, metrics) = tokio::join!(signal, main, redirect, metrics);
    saver.abort();
    if let Some(purge) = purge {
        purge.abort();
    }
    // The sessions as they are now, for the next start.
    if let Err(error) = state.save_sessions().await {
        tracing::error!(%error, "cannot write the session snapshot");
    }
    tokio::task::block_in_place(|| state.edge().access_log.flush());
    main?;
    redirect?;
    metrics?;
    tracing::info!("gateway stopped");
    Ok(())
}

/// Serve `router` on `listener` until a shutdown signal (the development providers).
pub(crate) async fn plain(
    listener: tokio::net::TcpListener,
    router: axum::Router,
) -> anyhow::Result<()> {
    axum::serve(listener.tap_io(no_delay), router)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
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
