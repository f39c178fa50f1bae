//! The plain-HTTP listener that sends browsers to https (`gateway.http_redirect_listen`).
//!
//! Every `GET` or `HEAD` is answered `308 Permanent Redirect` to the same path and query on
//! the configured https public URL. The target's origin always comes from that URL, never
//! from the request's `Host` header or an absolute-form target, so the listener cannot be
//! used as an open redirect. Other methods get `400`: their body may already have crossed
//! the network in clear text, and a redirect would only invite the client to send it again.
//! No `Strict-Transport-Security` here: it is ignored over plain HTTP (RFC 6797 §8.1) and
//! may only be sent over a secure transport (§7.2); the https listener sends it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use tokio::net::TcpListener;

/// Body of the answer to anything but `GET`/`HEAD`.
const USE_HTTPS: &str = "This service is only available over https.\n";

/// Serve redirects to `public_url` (an `https://` origin) on `listener` until `shutdown`
/// completes. Fails at once, before accepting anything, if `public_url` is not an https
/// origin. Runs on the gateway's own server ([`crate::server::serve`], one worker).
pub async fn serve_redirect(
    listener: TcpListener,
    public_url: String,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let origin = https_origin(&public_url)?;
    crate::server::serve(listener, Redirect { origin }, None, 1, shutdown).await
}

/// The redirect listener's handler: every answer depends only on the configured origin.
struct Redirect {
    origin: String,
}

impl crate::server::Handler for Redirect {
    type Worker = String;

    fn worker(&self) -> String {
        self.origin.clone()
    }

    fn call(
        origin: Arc<String>,
        request: Request<Incoming>,
        _peer: SocketAddr,
    ) -> impl Future<Output = Response<Body>> + Send + 'static {
        std::future::ready(respond(&origin, request.method(), request.uri()))
    }
}

/// `https://host[:port]` from `public_url`, or `InvalidInput`.
fn https_origin(public_url: &str) -> std::io::Result<String> {
    let invalid = |why: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("redirect target {public_url:?} {why}"),
        )
    };
    let url = url::Url::parse(public_url).map_err(|_| invalid("is not an absolute URL"))?;
    if url.scheme() != "https" || url.host().is_none() {
        return Err(invalid("is not an https URL"));
    }
    Ok(url.origin().ascii_serialization())
}

/// The answer to one request: only the method and the target's path and query matter.
fn respond(origin: &str, method: &Method, uri: &http::Uri) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        // The body, if any, is never read: close rather than drain it.
        return text(StatusCode::BAD_REQUEST, USE_HTTPS, true);
    }
    // Absolute-form targets (`GET http://other/x`) must be accepted (RFC 9112 §3.2.2); their
    // authority is ignored like the Host header.
    let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let target = if target.is_empty() { "/" } else { target };
    if !is_origin_form(target) {
        return text(StatusCode::BAD_REQUEST, "Bad request target.\n", false);
    }
    match HeaderValue::try_from(format!("{origin}{target}")) {
        Ok(location) => {
            let mut response = Response::new(Body::empty());
            *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
            response.headers_mut().insert(header::LOCATION, location);
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
            response
        }
        Err(_) => text(StatusCode::BAD_REQUEST, "Bad request target.\n", false),
    }
}

/// `absolute-path [ "?" query ]` (RFC 9112 §3.2.1): starts with `/` (so the redirect can
/// never leave the configured origin, e.g. through `@host`) and holds only visible ASCII
/// other than the characters no URL may carry unescaped (space, `"`, `<`, `>`, `\`, `#`).
/// `{`, `}`, `|`, `^`, `` ` ``, `[` and `]` pass: browsers send them unescaped in queries.
fn is_origin_form(target: &str) -> bool {
    target.starts_with('/')
        && target
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'<' | b'>' | b'\\' | b'#'))
}

fn text(status: StatusCode, body: &'static str, close: bool) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if close {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// The listener on a free loopback port; its address and the shutdown trigger.
    async fn start(public_url: &str) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let public_url = public_url.to_string();
        tokio::spawn(async move {
            serve_redirect(listener, public_url, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        (addr, tx)
    }

    /// Requests written by hand on one connection (the last with `Connection: close`); the
    /// whole response as text (which must be UTF-8).
    async fn raw(addr: SocketAddr, request: &str) -> String {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut bytes = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut bytes))
            .await
            .unwrap()
            .unwrap();
        String::from_utf8(bytes).unwrap()
    }

    fn status(response: &str) -> u16 {
        response.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
        let head = response.split("\r\n\r\n").next().unwrap();
        head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn get(target: &str, host: &str) -> String {
        format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
    }

    #[tokio::test]
    async fn redirects_get_and_head_to_the_configured_origin() {
        let (addr, _stop) = start("https://app.example.com").await;
        let r = raw(addr, &get("/some/path?x=1&y=%2F", "app.example.com")).await;
        assert_eq!(status(&r), 308, "{r}");
        assert_eq!(
            header(&r, "location"),
            Some("https://app.example.com/some/path?x=1&y=%2F")
        );
        assert_eq!(header(&r, "strict-transport-security"), None);
        let r = raw(
            addr,
            "HEAD /a HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(status(&r), 308, "{r}");
        assert_eq!(header(&r, "location"), Some("https://app.example.com/a"));
        // A port other than 443 is kept.
        let (addr, _stop2) = start("https://app.example.com:8443/").await;
        let r = raw(addr, &get("/", "x")).await;
        assert_eq!(
            header(&r, "location"),
            Some("https://app.example.com:8443/")
        );
    }

    #[tokio::test]
    async fn the_host_header_and_absolute_targets_are_ignored() {
        let (addr, _stop) = start("https://app.example.com").await;
        for (target, location) in [
            ("/login", "https://app.example.com/login"),
            (
                "http://evil.example/login?a=b",
                "https://app.example.com/login?a=b",
            ),
            ("http://evil.example", "https://app.example.com/"),
            // `//host` stays a path on the configured origin.
            (
                "//evil.example/x",
                "https://app.example.com//evil.example/x",
            ),
        ] {
            let r = raw(addr, &get(target, "evil.example")).await;
            assert_eq!(status(&r), 308, "{target}: {r}");
            assert_eq!(header(&r, "location"), Some(location), "{target}");
        }
    }

    #[tokio::test]
    async fn other_methods_are_refused_without_a_redirect() {
        let (addr, _stop) = start("https://app.example.com").await;
        for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
            let r = raw(
                addr,
                &format!(
                    "{method} /api/x HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 6\r\n\r\nsecret"
                ),
            )
            .await;
            assert_eq!(status(&r), 400, "{method}: {r}");
            assert_eq!(header(&r, "location"), None);
            assert_eq!(header(&r, "connection"), Some("close"));
            assert!(r.ends_with(USE_HTTPS), "{r}");
        }
    }

    #[tokio::test]
    async fn bad_targets_are_refused() {
        let (addr, _stop) = start("https://app.example.com").await;
        for target in ["*", "/a\\b", "/a\"b", "/caf\u{e9}"] {
            let r = raw(addr, &get(target, "app.example.com")).await;
            assert_eq!(status(&r), 400, "{target}: {r}");
            assert_eq!(header(&r, "location"), None, "{target}");
        }
        assert!(is_origin_form("/a/b?c=d&e={f}|g^h`[i]%zz"));
        assert!(!is_origin_form("@evil.example/"));
        assert!(!is_origin_form(".evil.example"));
        assert!(!is_origin_form(""));
        assert!(!is_origin_form("/a b"));
        assert!(!is_origin_form("/a\tb"));
    }

    #[tokio::test]
    async fn keeps_connections_alive_and_stops_on_shutdown() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_redirect(
            listener,
            "https://app.example.com".into(),
            async {
                let _ = stopped.await;
            },
        ));
        let request = "GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let text = raw(addr, request).await.to_ascii_lowercase();
        assert!(
            text.contains("location: https://app.example.com/one\r\n"),
            "{text}"
        );
        assert!(
            text.contains("location: https://app.example.com/two\r\n"),
            "{text}"
        );
        // An idle keep-alive connection does not hold up the shutdown.
        let _idle = tokio::net::TcpStream::connect(addr).await.unwrap();
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn refuses_a_public_url_that_is_not_https() {
        for url in [
            "http://app.example.com",
            "not a url",
            "ftp://app.example.com",
        ] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let e = serve_redirect(listener, url.into(), std::future::pending())
                .await
                .unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{url}");
        }
    }
}
