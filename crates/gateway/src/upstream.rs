//! Connections to the upstream services, one pool per worker thread.
//!
//! A worker keeps, per route, a stack of idle HTTP/1.1 connections (most recently used
//! first, so a few warm connections serve a steady load and the rest time out). A
//! connection goes back on the stack when its response body has been read to the end;
//! a response body dropped half-way closes its connection instead (the unread rest
//! cannot be skipped safely). This is what `hyper_util`'s pooled client does, without the
//! parts a gateway with a fixed set of upstreams does not need (a pool shared across
//! threads keyed by hashed authorities, a connector service per request), which were a
//! measurable part of each proxied request.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::uri::Authority;
use http_body_util::{Either, Empty, Limited};
use hyper::body::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// The body sent upstream: the client's, cut off at the configured limit (`Left`), or
/// nothing, for a request sent again (`Right`, see [`UpstreamPool::send`]).
pub type UpstreamBody = Either<Limited<Incoming>, Empty<Bytes>>;

/// How long an idle upstream connection is kept.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Most idle connections kept per route and worker.
pub const MAX_IDLE_PER_ROUTE: usize = 256;

/// Why an upstream request failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect to {0}: timed out")]
    ConnectTimeout(Authority),
    #[error("connect to {0}: {1}")]
    Connect(Authority, std::io::Error),
    #[error("HTTP/1.1 handshake with {0}: {1}")]
    Handshake(Authority, hyper::Error),
    #[error("request to {0}: {1}")]
    Request(Authority, hyper::Error),
}

impl UpstreamError {
    /// Whether the request failed because the client's body went over the size limit
    /// (the client is answered 413, not 502).
    pub fn is_body_too_large(&self) -> bool {
        let mut source: Option<&(dyn std::error::Error + 'static)> = match self {
            Self::Request(_, error) => Some(error),
            _ => None,
        };
        while let Some(error) = source {
            if error.is::<http_body_util::LengthLimitError>() {
                return true;
            }
            source = error.source();
        }
        false
    }
}

struct Idle {
    sender: SendRequest<UpstreamBody>,
    since: Instant,
}

type IdleStack = Arc<Mutex<VecDeque<Idle>>>;

/// One worker's upstream connections, by route index.
pub struct UpstreamPool {
    connect_timeout: Duration,
    routes: Vec<IdleStack>,
}

impl std::fmt::Debug for UpstreamPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamPool")
            .field("routes", &self.routes.len())
            .finish_non_exhaustive()
    }
}

impl UpstreamPool {
    /// A pool for `routes` routes.
    pub fn new(routes: usize, connect_timeout: Duration) -> Self {
        Self {
            connect_timeout,
            routes: (0..routes).map(|_| IdleStack::default()).collect(),
        }
    }

    /// Send `request` (origin-form URI) over an idle or new connection to `authority`,
    /// for route number `route`.
    ///
    /// An idle connection may have been closed by the upstream a moment ago (after its
    /// keep-alive timeout, which is 5 s in Node.js, or right after its last answer) without
    /// the pool having seen it yet. Such a request is sent once more over a new connection
    /// when it cannot have had an effect: it was not sent at all, or it is a `GET`, `HEAD`
    /// or `OPTIONS` without a body and no response came back (RFC 9110 §9.2.2). Anything
    /// else gets the error (502), as a request may not be repeated behind its sender's back.
    pub async fn send(
        &self,
        route: usize,
        authority: &Authority,
        request: http::Request<UpstreamBody>,
    ) -> Result<http::Response<PooledBody>, UpstreamError> {
        let stack = &self.routes[route];
        let (mut sender, reused) = match self.idle(stack) {
            Some(sender) => (sender, true),
            // Boxed, as the retry below: rare paths kept out of this future's size.
            None => (Box::pin(self.connect(authority)).await?, false),
        };
        let copy = reused.then(|| repeatable_copy(&request)).flatten();
        let response = match sender.try_send_request(request).await {
            Ok(response) => response,
            Err(mut error) => {
                let again = match (error.take_message(), copy) {
                    (Some(request), _) if reused => request,
                    (None, Some(copy)) if no_response(error.error()) => copy,
                    _ => {
                        return Err(UpstreamError::Request(
                            authority.clone(),
                            error.into_error(),
                        ));
                    }
                };
                sender = Box::pin(self.connect(authority)).await?;
                Box::pin(sender.send_request(again))
                    .await
                    .map_err(|e| UpstreamError::Request(authority.clone(), e))?
            }
        };
        let (parts, body) = response.into_parts();
        let reusable = !parts
            .headers
            .get_all(http::header::CONNECTION)
            .iter()
            .any(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let mut body = PooledBody {
            inner: body,
            home: reusable.then(|| (sender, stack.clone())),
        };
        if body.inner.is_end_stream() {
            body.give_back();
        }
        Ok(http::Response::from_parts(parts, body))
    }

    /// The most recently used idle connection that is still open.
    fn idle(&self, stack: &IdleStack) -> Option<SendRequest<UpstreamBody>> {
        loop {
            let idle = stack
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop_back()?;
            // Only ready connections are put on the stack (see `give_back`); one that is
            // closed, too old or somehow busy is dropped rather than waited for.
            if idle.since.elapsed() <= IDLE_TIMEOUT && idle.sender.is_ready() {
                return Some(idle.sender);
            }
        }
    }

    /// A protocol upgrade (a WebSocket handshake) on a new connection of its own, which
    /// is never pooled; after a `101`, `hyper::upgrade::on(&mut response)` yields it.
    pub async fn upgrade(
        &self,
        authority: &Authority,
        request: http::Request<UpstreamBody>,
    ) -> Result<http::Response<Incoming>, UpstreamError> {
        let (mut sender, connection) = self.handshake(authority).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "upstream upgrade connection ended with an error");
            }
        });
        sender
            .send_request(request)
            .await
            .map_err(|e| UpstreamError::Request(authority.clone(), e))
    }

    /// A new HTTP/1.1 connection to `authority` (within the connect timeout); the caller
    /// spawns the connection's task.
    async fn handshake(
        &self,
        authority: &Authority,
    ) -> Result<(SendRequest<UpstreamBody>, Connection), UpstreamError> {
        let port = authority.port_u16().unwrap_or(80);
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let tcp = tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect((host, port)),
        )
        .await
        .map_err(|_| UpstreamError::ConnectTimeout(authority.clone()))?
        .map_err(|e| UpstreamError::Connect(authority.clone(), e))?;
        let _ = tcp.set_nodelay(true);
        hyper::client::conn::http1::Builder::new()
            // Head and a small body in one buffer and one `write`.
            .writev(false)
            .handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| UpstreamError::Handshake(authority.clone(), e))
    }

    /// A new pooled connection (its task runs until the connection closes).
    async fn connect(
        &self,
        authority: &Authority,
    ) -> Result<SendRequest<UpstreamBody>, UpstreamError> {
        let (sender, connection) = self.handshake(authority).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }
}

/// A copy of `request` to send again should its connection turn out to be closed: only
/// for a safe method without a body.
fn repeatable_copy(request: &http::Request<UpstreamBody>) -> Option<http::Request<UpstreamBody>> {
    let safe = matches!(
        *request.method(),
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    );
    if !safe || !request.body().is_end_stream() {
        return None;
    }
    let mut copy = http::Request::new(Either::Right(Empty::new()));
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    copy.headers_mut().clone_from(request.headers());
    Some(copy)
}

/// Whether `error` says the connection ended before any response came: closed under the
/// request, or reset.
fn no_response(error: &hyper::Error) -> bool {
    if error.is_incomplete_message() {
        return true;
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            );
        }
        source = cause.source();
    }
    false
}

type Connection =
    hyper::client::conn::http1::Connection<TokioIo<tokio::net::TcpStream>, UpstreamBody>;

/// An upstream response body; its connection goes back to the pool once it has been read
/// to the end.
pub struct PooledBody {
    inner: Incoming,
    home: Option<(SendRequest<UpstreamBody>, IdleStack)>,
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody")
            .field("reusable", &self.home.is_some())
            .finish_non_exhaustive()
    }
}

impl PooledBody {
    /// The response is complete: the connection goes back on its stack once it can take
    /// the next request. It may not yet: hyper keeps sending the request body after an
    /// upstream answered early (say 401 to a large upload), and the connection is busy
    /// until that is done; a waiting task puts it back then (or drops it).
    fn give_back(&mut self) {
        let Some((mut sender, stack)) = self.home.take() else {
            return;
        };
        if sender.is_ready() {
            push_idle(&stack, sender);
        } else if !sender.is_closed() {
            tokio::spawn(async move {
                if let Ok(Ok(())) = tokio::time::timeout(IDLE_TIMEOUT, sender.ready()).await {
                    push_idle(&stack, sender);
                }
            });
        }
    }
}

fn push_idle(stack: &IdleStack, sender: SendRequest<UpstreamBody>) {
    let mut idle = stack.lock().unwrap_or_else(PoisonError::into_inner);
    while idle
        .front()
        .is_some_and(|i| i.since.elapsed() > IDLE_TIMEOUT)
    {
        idle.pop_front();
    }
    if idle.len() < MAX_IDLE_PER_ROUTE {
        idle.push_back(Idle {
            sender,
            since: Instant::now(),
        });
    }
}

impl Body for PooledBody {
    type Data = hyper::body::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.give_back(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.give_back(),
            Poll::Ready(Some(Err(_))) => self.home = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
