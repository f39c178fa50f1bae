//! The access log: one JSON object per line, per request.
//!
//! An entry records who asked for what and how it went, never secrets: the path is
//! stored without its query string (tokens and authorization codes travel there) and
//! there is no field for cookies or headers. [`AccessLog::record`] only formats the
//! line and hands it to a dedicated writer thread over a bounded channel, so a slow
//! disk never stalls the async runtime (a caller waits only when
//! [`QUEUE_CAPACITY`] lines are already pending). One writer means lines are never
//! interleaved.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Lines that may wait for the writer before [`AccessLog::record`] blocks.
pub const QUEUE_CAPACITY: usize = 16_384;

/// One request as it appears in the access log.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessLogEntry {
    /// When the request arrived (written as RFC 3339).
    pub time: OffsetDateTime,
    /// The client address.
    pub client: IpAddr,
    /// The authenticated user, if any.
    pub user: Option<String>,
    /// The request method.
    pub method: String,
    /// The request path. A query string or fragment is stripped before writing.
    pub path: String,
    /// The response status.
    pub status: u16,
    /// Response body bytes sent.
    pub bytes: u64,
    /// Time from request head to response head, in milliseconds.
    pub latency_ms: f64,
    /// The upstream the request was forwarded to, if any.
    pub upstream: Option<String>,
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    client: IpAddr,
    user: Option<&'a str>,
    method: &'a str,
    path: &'a str,
    status: u16,
    bytes: u64,
    latency_ms: f64,
    upstream: Option<&'a str>,
}

impl AccessLogEntry {
    /// The entry as one JSON line (with the trailing newline).
    pub fn to_json_line(&self) -> String {
        let time = self
            .time
            .format(&Rfc3339)
            .unwrap_or_else(|_| self.time.unix_timestamp().to_string());
        let line = Line {
            time,
            client: self.client,
            user: self.user.as_deref(),
            method: &self.method,
            path: strip_query(&self.path),
            status: self.status,
            bytes: self.bytes,
            latency_ms: if self.latency_ms.is_finite() {
                self.latency_ms
            } else {
                0.0
            },
            upstream: self.upstream.as_deref(),
        };
        // Serializing plain strings and numbers cannot fail.
        let mut text = serde_json::to_string(&line).unwrap_or_default();
        text.push('\n');
        text
    }
}

/// The path up to (not including) the first `?` or `#`.
pub fn strip_query(path: &str) -> &str {
    match path.find(['?', '#']) {
        Some(end) => &path[..end],
        None => path,
    }
}

enum Message {
    Line(String),
    Flush(SyncSender<()>),
}

/// Where access-log lines go. Clones share one writer.
#[derive(Clone)]
pub struct AccessLog {
    writer: Option<Arc<Writer>>,
}

struct Writer {
    sender: Option<SyncSender<Message>>,
    thread: Option<JoinHandle<()>>,
    destination: String,
}

impl fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let destination = self
            .writer
            .as_ref()
            .map_or("disabled", |w| w.destination.as_str());
        f.debug_struct("AccessLog")
            .field("destination", &destination)
            .finish()
    }
}

impl AccessLog {
    /// Lines go to standard output.
    pub fn stdout() -> Self {
        Self::spawn(Box::new(io::stdout()), "stdout".to_owned())
    }

    /// Lines are appended to `path` (created with mode 0600 on Unix).
    pub fn file(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref();
        let mut options = OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(path)?;
        Ok(Self::spawn(Box::new(file), path.display().to_string()))
    }

    /// Nothing is written.
    pub fn disabled() -> Self {
        Self { writer: None }
    }

    /// Whether entries are written anywhere.
    pub fn is_enabled(&self) -> bool {
        self.writer.is_some()
    }

    fn spawn(out: Box<dyn Write + Send>, destination: String) -> Self {
        let (sender, receiver) = mpsc::sync_channel(QUEUE_CAPACITY);
        let name = destination.clone();
        let thread = std::thread::Builder::new()
            .name("access-log".to_owned())
            .spawn(move || write_loop(receiver, out, &name));
        let thread = match thread {
            Ok(handle) => Some(handle),
            Err(error) => {
                tracing::error!(%error, "cannot start the access-log writer; access log disabled");
                return Self::disabled();
            }
        };
        Self {
            writer: Some(Arc::new(Writer {
                sender: Some(sender),
                thread,
                destination,
            })),
        }
    }

    /// Queues one line for `entry`. Never writes a query string, cookie or header.
    pub fn record(&self, entry: &AccessLogEntry) {
        let Some(writer) = &self.writer else {
            return;
        };
        if let Some(sender) = &writer.sender {
            // The writer thread only stops when the last clone is dropped.
            let _ = sender.send(Message::Line(entry.to_json_line()));
        }
    }

    /// Blocks until every line recorded so far is written and flushed. Meant for
    /// shutdown and tests; call it from a blocking context.
    pub fn flush(&self) {
        let Some(writer) = &self.writer else {
            return;
        };
        if let Some(sender) = &writer.sender {
            let (done, wait) = mpsc::sync_channel(1);
            if sender.send(Message::Flush(done)).is_ok() {
                let _ = wait.recv();
            }
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the channel lets the thread drain, flush and exit.
        self.sender.take();
        if let Some(handle) = self.thread.take() {
            let _ = handle.join();
        }
    }
}

fn write_loop(receiver: Receiver<Message>, out: Box<dyn Write + Send>, destination: &str) {
    let mut out = BufWriter::new(out);
    let mut has_failed = false;
    let mut report = |result: io::Result<()>| {
        if let Err(error) = result {
            if !has_failed {
                tracing::warn!(%error, destination, "access log write failed");
            }
            has_failed = true;
        } else {
            has_failed = false;
        }
    };
    while let Ok(message) = receiver.recv() {
        let mut next = Some(message);
        // Write everything already queued, then flush once.
        while let Some(message) = next.take() {
            match message {
                Message::Line(line) => report(out.write_all(line.as_bytes())),
                Message::Flush(done) => {
                    report(out.flush());
                    let _ = done.send(());
                }
            }
            next = receiver.try_recv().ok();
        }
        report(out.flush());
    }
    report(out.flush());
}
