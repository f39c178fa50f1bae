//! `latchkey probe URL`: a health check for images without a shell or curl (the
//! container image is `FROM scratch`). One `GET` over plain HTTP to a loopback address,
//! with a deadline; exit 0 on a 2xx answer, 1 otherwise. It reads no configuration, opens
//! no storage and starts no runtime, so a probe costs a few hundred microseconds.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use url::{Host, Position, Url};

/// Largest status line read, in bytes.
const MAX_STATUS_LINE: usize = 1024;

/// Run the probe: print the outcome on one line, exit 0 on 2xx.
pub(crate) fn run(url: &str, timeout: Duration) -> ExitCode {
    match probe(url, timeout) {
        Ok(status) if (200..300).contains(&status) => {
            println!("latchkey probe: {status}");
            ExitCode::SUCCESS
        }
        Ok(status) => {
            eprintln!("latchkey probe: {url} answered {status}");
            ExitCode::FAILURE
        }
        Err(why) => {
            eprintln!("latchkey probe: {why}");
            ExitCode::FAILURE
        }
    }
}

/// The loopback socket address and request target of `url`, or why it is refused.
fn target(url: &str) -> Result<(SocketAddr, String, String), String> {
    let parsed = Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if parsed.scheme() != "http" {
        return Err(format!("{url:?}: only http:// is probed"));
    }
    let ip = match parsed.host() {
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
        Some(Host::Domain("localhost")) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        _ => return Err(format!("{url:?}: only a loopback address is probed")),
    };
    if !ip.is_loopback() {
        return Err(format!("{url:?}: only a loopback address is probed"));
    }
    let port = parsed.port_or_known_default().unwrap_or(80);
    let host = parsed[Position::BeforeHost..Position::AfterPort].to_string();
    let path = parsed[Position::BeforePath..Position::AfterQuery].to_string();
    Ok((SocketAddr::new(ip, port), host, path))
}

/// `GET url` and the answer's status code.
fn probe(url: &str, timeout: Duration) -> Result<u16, String> {
    let (addr, host, path) = target(url)?;
    let deadline = Instant::now() + timeout;
    let left = || {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(format!(
                "{url}: no answer within {} ms",
                timeout.as_millis()
            ))
        } else {
            Ok(left)
        }
    };
    let mut stream = TcpStream::connect_timeout(&addr, left()?)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    stream
        .set_write_timeout(Some(left()?))
        .and_then(|()| {
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: latchkey-probe\r\nConnection: close\r\n\r\n"
            );
            stream.write_all(request.as_bytes())
        })
        .map_err(|e| format!("cannot send to {addr}: {e}"))?;
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < MAX_STATUS_LINE {
        stream
            .set_read_timeout(Some(left()?))
            .map_err(|e| format!("{addr}: {e}"))?;
        let n = match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!(
                    "{url}: no answer within {} ms",
                    timeout.as_millis()
                ));
            }
            Err(e) => return Err(format!("cannot read from {addr}: {e}")),
        };
        head.extend_from_slice(&buf[..n]);
    }
    status_code(&head).ok_or_else(|| format!("{url}: not an HTTP answer"))
}

/// The status code of an HTTP/1.x status line (`HTTP/1.1 200 OK\r\n…`).
fn status_code(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    let version = parts.next()?;
    let code = parts.next()?;
    let three_digits = code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit());
    (version.starts_with("HTTP/1.") && three_digits)
        .then(|| code.parse().ok())
        .flatten()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A one-connection server on loopback answering `answer` (nothing when `None`, and
    /// holding the connection open for a while); the request it received.
    fn server(answer: Option<&'static str>) -> (String, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 512];
            while !request.ends_with(b"\r\n\r\n") {
                let n = stream.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
            }
            match answer {
                Some(answer) => stream.write_all(answer.as_bytes()).unwrap(),
                None => std::thread::sleep(Duration::from_millis(1500)),
            }
            String::from_utf8(request).unwrap()
        });
        (format!("http://127.0.0.1:{port}"), handle)
    }

    #[test]
    fn two_hundred_is_healthy_and_the_request_is_a_plain_get() {
        let (base, handle) = server(Some("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"));
        let url = format!("{base}/ping?x=1");
        assert_eq!(probe(&url, Duration::from_secs(2)), Ok(200));
        let request = handle.join().unwrap();
        assert!(
            request.starts_with("GET /ping?x=1 HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(
            request.contains(&format!("\r\nHost: {}\r\n", &base[7..])),
            "{request}"
        );
    }

    #[test]
    fn not_ready_is_a_failure() {
        let (base, handle) = server(Some("HTTP/1.1 503 Service Unavailable\r\n\r\n"));
        let url = format!("{base}/ready");
        assert_eq!(run(&url, Duration::from_secs(2)), ExitCode::FAILURE);
        handle.join().unwrap();
    }

    #[test]
    fn a_silent_server_times_out() {
        let (base, handle) = server(None);
        let started = Instant::now();
        let err = probe(&format!("{base}/ping"), Duration::from_millis(300)).unwrap_err();
        assert!(err.contains("no answer within 300 ms"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(1));
        handle.join().unwrap();
    }

    #[test]
    fn a_closed_port_is_a_failure() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = probe(
            &format!("http://127.0.0.1:{port}/ping"),
            Duration::from_secs(1),
        );
        assert!(err.unwrap_err().starts_with("cannot connect"));
    }

    #[test]
    fn only_loopback_over_http() {
        for url in [
            "https://127.0.0.1:8080/ping",
            "http://10.0.0.1:8080/ping",
            "http://example.com/ping",
            "http://[2001:db8::1]/ping",
            "not a url",
        ] {
            assert!(target(url).is_err(), "{url}");
        }
        let (addr, host, path) = target("http://localhost:8081/ready").unwrap();
        assert_eq!(
            (addr.to_string(), host, path),
            (
                "127.0.0.1:8081".into(),
                "localhost:8081".into(),
                "/ready".into()
            )
        );
        let (addr, _, path) = target("http://[::1]/").unwrap();
        assert_eq!((addr.to_string(), path), ("[::1]:80".into(), "/".into()));
    }

    #[test]
    fn status_lines() {
        assert_eq!(status_code(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(status_code(b"HTTP/1.0 500 x\r\n"), Some(500));
        assert_eq!(status_code(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status_code(b"HTTP/1.1 20 short\r\n"), None);
        assert_eq!(status_code(b""), None);
    }
}
