//! The gateway's HTTP/1.1 server: thread-per-core accept loops (plain TCP or TLS from
//! `latchkey_edge::tls::ReloadingTls`), `TCP_NODELAY` on every connection, limits on the
//! request head (buffer size, header count, time to read it), and graceful shutdown.
//!
//! Why thread-per-core: a proxy hop does little work per request, so the cost that
//! dominates is moving work between threads. With tokio's work-stealing runtime, a
//! request, its upstream connection and the upstream connection's task often ran on
//! different threads (a wake-up and cache misses per hop); the multi-threaded runtime
//! reached about 0.4 of nginx's throughput as a plain proxy. Here each of `workers` OS
//! threads runs a single-threaded runtime that is handed connections by the accepting
//! task and keeps each connection, its upstream connections and their tasks on that
//! thread, as nginx's workers do. Each worker gets its own [`Handler::Worker`] context (the
//! gateway keeps its upstream connection pool there), so nothing on the hot path is
//! shared between threads but the session table.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

/// Largest request head (request line and headers), in bytes.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Time allowed for a client to send the request head.
pub const HEAD_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long open connections get to finish after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Load the TLS certificate and key (reloaded when the files change).
pub fn load_tls(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<latchkey_edge::tls::ReloadingTls, latchkey_edge::tls::TlsError> {
    latchkey_edge::tls::ReloadingTls::new(cert, key)
}

/// What the server runs for each request.
pub trait Handler: Send + Sync + 'static {
    /// State private to one worker thread (built on that thread, used only there).
    type Worker: Send + Sync + 'static;

    /// A worker's context; called once on each worker thread, inside its runtime.
    fn worker(&self) -> Self::Worker;

    /// Answer one request from `peer`.
    fn call(
        worker: Arc<Self::Worker>,
        request: hyper::Request<Incoming>,
        peer: SocketAddr,
    ) -> impl Future<Output = hyper::Response<Body>> + Send + 'static;
}

/// The default number of worker threads: one per CPU the process may use.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Serve `handler` on `listener` with `workers` threads until `shutdown` completes; TLS
/// when `tls` is given. Returns once every worker has drained its connections (at most
/// [`SHUTDOWN_GRACE`] after the signal).
///
/// The caller's task accepts and hands each connection to the worker with the fewest
/// open connections (a shared listening socket would let whichever thread wakes first
/// take it, and a few busy connections could all land on one thread).
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: H,
    tls: Option<latchkey_edge::tls::ReloadingTls>,
    workers: usize,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let handler = Arc::new(handler);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut pool = Vec::new();
    let mut finished = Vec::new();
    for n in 0..workers.max(1) {
        let (to_worker, from_acceptor) = tokio::sync::mpsc::unbounded_channel();
        let open = Arc::new(AtomicUsize::new(0));
        let handler = handler.clone();
        let tls = tls.clone();
        let stop = stop_rx.clone();
        let counter = open.clone();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("gateway-{n}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        tracing::error!(%error, "cannot start a gateway worker runtime");
                        return;
                    }
                };
                runtime.block_on(run_worker(from_acceptor, counter, handler, tls, stop));
                drop(done_tx);
            })?;
        pool.push((to_worker, open));
        finished.push(done_rx);
    }
    tokio::pin!(shutdown);
    let mut next = 0usize;
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Fewest open connections; ties go round-robin.
        next = next.wrapping_add(1);
        let count = pool.len();
        let Some(chosen) = (0..count)
            .map(|i| (next + i) % count)
            .min_by_key(|&i| pool[i].1.load(Ordering::Relaxed))
        else {
            break;
        };
        let (to_worker, open) = &pool[chosen];
        open.fetch_add(1, Ordering::Relaxed);
        let handed = tcp
            .into_std()
            .map_err(|error| tracing::warn!(%error, "cannot hand a connection over"))
            .ok()
            .map(|tcp| to_worker.send((tcp, peer)).is_ok());
        if handed != Some(true) {
            open.fetch_sub(1, Ordering::Relaxed);
            if handed == Some(false) {
                tracing::error!("a gateway worker has stopped");
                break;
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(pool);
    for done in finished {
        // Err: the worker ended (or could not start); either way it is gone.
        let _ = done.await;
    }
    Ok(())
}

/// Lowers a worker's open-connection count when a connection ends (however it ends).
struct OpenConnection(Arc<AtomicUsize>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn run_worker<H: Handler>(
    mut accepted: tokio::sync::mpsc::UnboundedReceiver<(std::net::TcpStream, SocketAddr)>,
    open: Arc<AtomicUsize>,
    handler: Arc<H>,
    tls: Option<latchkey_edge::tls::ReloadingTls>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let worker = Arc::new(handler.worker());
    let mut connections = tokio::task::JoinSet::new();
    while let Some((tcp, peer)) = accepted.recv().await {
        let guard = OpenConnection(open.clone());
        let tcp = match tokio::net::TcpStream::from_std(tcp) {
            Ok(tcp) => tcp,
            Err(error) => {
                tracing::warn!(%error, "a gateway worker cannot take a connection");
                continue;
            }
        };
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        let worker = worker.clone();
        let acceptor = tls.as_ref().map(|t| t.acceptor());
        let mut stop = stop.clone();
        connections.spawn(async move {
            let _guard = guard;
            match acceptor {
                Some(acceptor) => {
                    let accepted =
                        tokio::time::timeout(HEAD_READ_TIMEOUT, acceptor.accept(tcp)).await;
                    match accepted {
                        Ok(Ok(stream)) => {
                            serve_connection::<H, _>(stream, peer, worker, &mut stop).await;
                        }
                        Ok(Err(error)) => tracing::debug!(%error, %peer, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
                None => serve_connection::<H, _>(tcp, peer, worker, &mut stop).await,
            }
        });
        // Reap finished connections so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
    }
    // The acceptor has stopped: let open connections finish.
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        tracing::warn!("connections still open after the shutdown grace period");
    }
}

async fn serve_connection<H: Handler, S>(
    stream: S,
    peer: SocketAddr,
    worker: Arc<H::Worker>,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let response = H::call(worker.clone(), request, peer);
        async move { Ok::<_, Infallible>(response.await) }
    });
    serve_http1(stream, peer, service, stop).await;
}

/// One HTTP/1.1 connection with the gateway's limits (head size, time to send the head;
/// hyper's default limit of 100 header fields, the same as
/// `latchkey_edge::rules::MAX_HEADERS`: setting it explicitly makes hyper allocate and fill
/// a header index per request), until it ends or `stop` turns true (then it finishes the
/// request in flight and closes).
async fn serve_http1<S, Svc>(
    stream: S,
    peer: SocketAddr,
    service: Svc,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    Svc: hyper::service::Service<hyper::Request<Incoming>, Response = hyper::Response<Body>>,
    Svc::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        // Head and a small body in one buffer and one `write`: cheaper than `writev`.
        .writev(false);
    // `with_upgrades`: a WebSocket handshake answered `101` hands the connection over.
    let connection = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    let stopping = async {
        let _ = stop.wait_for(|stopping| *stopping).await;
    };
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
        }
        () = stopping => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}
