//! The access log: one JSON object per line, per request.
//!
//! An entry records who asked for what and how it went, never secrets: the path is
//! stored without its query string (tokens and authorization codes travel there) and
//! there is no field for cookies or headers.
//!
//! [`AccessLog::record`] formats the line on the caller's thread and appends it to a
//! shared buffer; one writer thread writes the buffer out in batches (it waits
//! [`LINGER`] after the first line of a batch, so under load it makes about a hundred
//! `write` calls a second instead of waking once per request, and at low rates a line
//! appears within [`LINGER`]). A slow disk never stalls the async runtime until
//! [`MAX_PENDING_BYTES`] are waiting; then callers wait for the writer (no line is
//! dropped). One writer means lines are never interleaved.

use std::cell::RefCell;
use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use time::OffsetDateTime;

/// Bytes that may wait for the writer before [`AccessLog::record`] blocks (8 MiB).
pub const MAX_PENDING_BYTES: usize = 8 * 1024 * 1024;

/// How long the writer collects lines before writing them out.
pub const LINGER: Duration = Duration::from_millis(10);

/// One request as it appears in the access log.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessLogEntry<'a> {
    /// When the request arrived (written as RFC 3339).
    pub time: OffsetDateTime,
    /// The client address.
    pub client: IpAddr,
    /// The authenticated user, if any.
    pub user: Option<&'a str>,
    /// The request method.
    pub method: &'a str,
    /// The request path. A query string or fragment is stripped before writing.
    pub path: &'a str,
    /// The response status.
    pub status: u16,
    /// Response body bytes sent.
    pub bytes: u64,
    /// Time from request head to response head, in milliseconds.
    pub latency_ms: f64,
    /// The upstream the request was forwarded to, if any.
    pub upstream: Option<&'a str>,
}

impl AccessLogEntry<'_> {
    /// The entry as one JSON line (with the trailing newline).
    pub fn to_json_line(&self) -> String {
        let mut out = Vec::with_capacity(256);
        self.write_json_line(&mut out);
        // Only UTF-8 is written: JSON-escaped strings, digits and punctuation.
        String::from_utf8(out).unwrap_or_default()
    }

    /// Appends the entry as one JSON line (with the trailing newline) to `out`:
    /// `time` (RFC 3339, UTC, nanoseconds), `client`, `user` (or null), `method`, `path`
    /// (query and fragment stripped), `status`, `bytes`, `latency_ms` (three decimals),
    /// `upstream` (or null). Written by hand (no `core::fmt` on the hot path: it was most
    /// of the cost of a line).
    pub fn write_json_line(&self, out: &mut Vec<u8>) {
        // Writing to a Vec cannot fail.
        let string = |out: &mut Vec<u8>, value: &str| {
            let _ = serde_json::to_writer(&mut *out, value);
        };
        let optional = |out: &mut Vec<u8>, value: Option<&str>| match value {
            Some(v) => string(out, v),
            None => out.extend_from_slice(b"null"),
        };
        out.extend_from_slice(b"{\"time\":\"");
        push_time(out, self.time);
        out.extend_from_slice(b"\",\"client\":\"");
        push_ip(out, self.client);
        out.extend_from_slice(b"\",\"user\":");
        optional(out, self.user);
        out.extend_from_slice(b",\"method\":");
        string(out, self.method);
        out.extend_from_slice(b",\"path\":");
        string(out, strip_query(self.path));
        out.extend_from_slice(b",\"status\":");
        push_u64(out, u64::from(self.status));
        out.extend_from_slice(b",\"bytes\":");
        push_u64(out, self.bytes);
        out.extend_from_slice(b",\"latency_ms\":");
        let micros = if self.latency_ms.is_finite() && self.latency_ms > 0.0 {
            // Saturating float-to-int conversion; a latency never comes near the limit.
            (self.latency_ms * 1000.0).round() as u64
        } else {
            0
        };
        push_u64(out, micros / 1000);
        out.push(b'.');
        push_padded(out, micros % 1000, 3);
        out.extend_from_slice(b",\"upstream\":");
        optional(out, self.upstream);
        out.extend_from_slice(b"}\n");
    }
}

/// Decimal digits of `n`.
fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// The last `width` decimal digits of `n`, zero-padded.
fn push_padded(out: &mut Vec<u8>, mut n: u64, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    for at in (start..start + width).rev() {
        out[at] = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_u64(out, u64::from(octet));
            }
        }
        IpAddr::V6(v6) => {
            use std::io::Write as _;
            let _ = write!(out, "{v6}");
        }
    }
}

thread_local! {
    /// The formatted `YYYY-MM-DDTHH:MM:SS` of the last second a line was written in.
    static SECOND: RefCell<(i64, [u8; 19])> = const { RefCell::new((i64::MIN, [0; 19])) };
}

/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` (UTC).
fn push_time(out: &mut Vec<u8>, time: OffsetDateTime) {
    let seconds = time.unix_timestamp();
    SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != seconds {
            let utc = time.to_offset(time::UtcOffset::UTC);
            let mut buffer = Vec::with_capacity(19);
            // Years outside 0..=9999 are not RFC 3339; they cannot come from a clock.
            push_padded(&mut buffer, u64::try_from(utc.year()).unwrap_or(0), 4);
            buffer.push(b'-');
            push_padded(&mut buffer, u64::from(u8::from(utc.month())), 2);
            buffer.push(b'-');
            push_padded(&mut buffer, u64::from(utc.day()), 2);
            buffer.push(b'T');
            push_padded(&mut buffer, u64::from(utc.hour()), 2);
            buffer.push(b':');
            push_padded(&mut buffer, u64::from(utc.minute()), 2);
            buffer.push(b':');
            push_padded(&mut buffer, u64::from(utc.second()), 2);
            text.copy_from_slice(&buffer);
            *cached = seconds;
        }
        out.extend_from_slice(&text[..]);
    });
    out.push(b'.');
    push_padded(out, u64::from(time.nanosecond()), 9);
    out.push(b'Z');
}

/// The path up to (not including) the first `?` or `#`.
pub fn strip_query(path: &str) -> &str {
    match path.find(['?', '#']) {
        Some(end) => &path[..end],
        None => path,
    }
}

/// Where access-log lines go. Clones share one writer.
#[derive(Clone)]
pub struct AccessLog {
    writer: Option<Arc<Writer>>,
}

struct Writer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    destination: String,
}

#[derive(Default)]
struct Shared {
    pending: Mutex<Pending>,
    /// Wakes the writer (lines after it went idle, a flush request, closing).
    wake: Condvar,
    /// Wakes callers waiting for room or for a flush.
    written: Condvar,
}

#[derive(Default)]
struct Pending {
    data: Vec<u8>,
    /// Bytes appended since the start, and bytes written and flushed since the start.
    appended: u64,
    flushed: u64,
    /// The writer is waiting for lines (a caller must wake it).
    idle: bool,
    /// A caller waits in [`AccessLog::flush`]: write without lingering.
    urgent: bool,
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

thread_local! {
    /// Each thread formats its lines here before appending them to the shared buffer.
    static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
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
        let shared = Arc::new(Shared::default());
        let name = destination.clone();
        let thread = std::thread::Builder::new()
            .name("access-log".to_owned())
            .spawn({
                let shared = shared.clone();
                move || write_loop(&shared, out, &name)
            });
        let thread = match thread {
            Ok(handle) => Some(handle),
            Err(error) => {
                tracing::error!(%error, "cannot start the access-log writer; access log disabled");
                return Self::disabled();
            }
        };
        Self {
            writer: Some(Arc::new(Writer {
                shared,
                thread,
                destination,
            })),
        }
    }

    /// Queues one line for `entry`. Never writes a query string, cookie or header.
    pub fn record(&self, entry: &AccessLogEntry<'_>) {
        let Some(writer) = &self.writer else {
            return;
        };
        LINE.with_borrow_mut(|line| {
            line.clear();
            entry.write_json_line(line);
            let shared = &writer.shared;
            let mut pending = shared.lock();
            while pending.data.len() >= MAX_PENDING_BYTES && !pending.closed {
                pending = shared
                    .written
                    .wait(pending)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if pending.closed {
                // The writer is gone (it can only stop early by a bug): nothing to queue.
                return;
            }
            pending.data.extend_from_slice(line);
            pending.appended += line.len() as u64;
            if pending.idle {
                pending.idle = false;
                shared.wake.notify_one();
            }
        });
    }

    /// Blocks until every line recorded so far is written and flushed. Meant for
    /// shutdown and tests; call it from a blocking context.
    pub fn flush(&self) {
        let Some(writer) = &self.writer else {
            return;
        };
        let shared = &writer.shared;
        let mut pending = shared.lock();
        let target = pending.appended;
        while pending.flushed < target && !pending.closed {
            pending.urgent = true;
            shared.wake.notify_one();
            pending = shared
                .written
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // The writer drains what is pending, flushes and exits.
        {
            let mut pending = self.shared.lock();
            pending.closed = true;
            self.shared.wake.notify_one();
        }
        if let Some(handle) = self.thread.take() {
            let _ = handle.join();
        }
    }
}

/// Marks the log closed when the writer thread ends however it ends (even by a panic),
/// so callers waiting for room or for a flush are released instead of waiting forever.
struct ClosesOnExit<'a>(&'a Shared);

impl Drop for ClosesOnExit<'_> {
    fn drop(&mut self) {
        let mut pending = self.0.lock();
        pending.closed = true;
        self.0.written.notify_all();
    }
}

fn write_loop(shared: &Shared, mut out: Box<dyn Write + Send>, destination: &str) {
    let _closes = ClosesOnExit(shared);
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
    let mut batch = Vec::new();
    loop {
        let mut pending = shared.lock();
        while pending.data.is_empty() && !pending.closed {
            pending.idle = true;
            pending = shared
                .wake
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner);
        }
        pending.idle = false;
        if !pending.urgent && !pending.closed {
            // Let more lines arrive: one write for many requests.
            pending = shared
                .wake
                .wait_timeout(pending, LINGER)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        pending.urgent = false;
        std::mem::swap(&mut batch, &mut pending.data);
        let upto = pending.appended;
        let closing = pending.closed;
        drop(pending);
        if !batch.is_empty() {
            report(out.write_all(&batch).and_then(|()| out.flush()));
            batch.clear();
            // Do not keep a burst's worth of memory forever.
            batch.shrink_to(64 * 1024);
        }
        let mut pending = shared.lock();
        pending.flushed = upto;
        shared.written.notify_all();
        if closing && pending.data.is_empty() {
            return;
        }
    }
}
