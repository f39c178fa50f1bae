//! `latchkey serve gateway`: the wiring of its flags and environment (TLS, the plain-HTTP
//! redirect listener, routes, the client secret) into the gateway. The gateway's behaviour
//! is tested in-process in `crates/gateway/tests`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;
#[path = "../../gateway/tests/common/raw_http.rs"]
mod raw_http;
use common::{Proc, bin, temp_dir};
use raw_http::{header_of, raw_request};

const CLIENT_SECRET: &str = "gateway-client-secret-0123456789";

/// Lines the gateway printed on stdout after the first (the access log).
type Lines = Arc<Mutex<Vec<String>>>;

/// `latchkey serve gateway` with the standard routes over `upstream`.
fn spawn_gateway(
    issuer: &str,
    client_id: &str,
    upstream: &str,
    extra: &[&str],
) -> (Proc, String, Lines) {
    let dir = temp_dir("data");
    let mut child = Command::new(bin())
        .args([
            "serve",
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--oidc-issuer",
        ])
        .arg(issuer)
        .args([
            "--oidc-client-id",
            client_id,
            "--outbound-allow-private-addresses",
            "true",
        ])
        .arg("--route")
        .arg(format!("/={upstream};login"))
        .arg("--route")
        .arg(format!("/api={upstream};api"))
        .arg("--route")
        .arg(format!("/public={upstream};public"))
        .args(extra)
        .arg("--data-dir")
        .arg(&dir)
        .env("LATCHKEY_GATEWAY_OIDC_CLIENT_SECRET", CLIENT_SECRET)
        .env("LATCHKEY_LOG_LEVEL", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn gateway");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("read first line");
    assert!(
        line.starts_with("latchkey gateway listening on http"),
        "{line:?}"
    );
    let url = line.trim().rsplit(' ').next().unwrap().to_string();
    let lines: Lines = Arc::default();
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    (Proc(child), url, lines)
}

/// An upstream that answers every request with the `x-forwarded-proto` it received.
async fn spawn_upstream() -> String {
    let app = axum::Router::new().fallback(|headers: axum::http::HeaderMap| async move {
        headers
            .get("x-forwarded-proto")
            .map(|v| v.to_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_terminates_tls() {
    let upstream = spawn_upstream().await;
    let dir = temp_dir("tls");
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    // No login happens here: the provider is never contacted.
    let (_gateway, gw, lines) = spawn_gateway(
        "http://127.0.0.1:9",
        "gw-tls",
        &upstream,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--access-log",
            "off",
            "--http-redirect-listen",
            "127.0.0.1:0",
        ],
    );
    assert!(gw.starts_with("https://"), "{gw}");
    // The second line: `latchkey gateway redirecting http://ADDR to PUBLIC_URL`.
    let redirect_line = wait_for_line(&lines, "latchkey gateway redirecting ");
    let words: Vec<&str> = redirect_line.split(' ').collect();
    assert_eq!(words.len(), 6, "{redirect_line:?}");
    assert_eq!(words[4], "to");
    assert_eq!(words[5], gw, "the public URL defaults to the https address");
    let plain = words[3].strip_prefix("http://").unwrap().to_string();
    let http = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let r = http.get(format!("{gw}/public/x")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("strict-transport-security").is_some());
    // What the upstream received as `x-forwarded-proto`.
    assert_eq!(r.text().await.unwrap(), "https");
    let r = http
        .get(format!("{gw}/api/x"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Plain HTTP: GET and HEAD are redirected to the same path on the https public URL,
    // whatever the Host header says, and never carry HSTS. (The gateway is another
    // process: a blocking request here holds up nothing it needs.)
    for (method, target, host) in [
        ("GET", "/some/path?x=1", plain.as_str()),
        ("GET", "/some/path?x=1", "evil.example"),
        ("HEAD", "/", "evil.example"),
    ] {
        let (status, head) = raw_request(&plain, method, target, &[("Host", host)]);
        assert_eq!(status, 308, "{method} {target} Host: {host}: {head}");
        assert_eq!(
            header_of(&head, "location").as_deref(),
            Some(format!("{gw}{target}").as_str()),
            "the Host header must not change the target: {head}"
        );
        assert_eq!(
            header_of(&head, "strict-transport-security"),
            None,
            "{head}"
        );
    }
    // Other methods are refused, not redirected: the body already crossed in clear text.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirects
        .post(format!("http://{plain}/api/x"))
        .body("secret=1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("location").is_none());
    assert!(r.headers().get("strict-transport-security").is_none());
    assert!(r.text().await.unwrap().contains("https"));
    // A browser-like client ends up on the https listener.
    let r = http
        .get(format!("http://{plain}/public/x?y=2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.url().as_str(), format!("{gw}/public/x?y=2"));
    assert!(r.headers().get("strict-transport-security").is_some());
}

/// The first line in `lines` that starts with `prefix`, waiting up to 10 s for it.
fn wait_for_line(lines: &Lines, prefix: &str) -> String {
    for _ in 0..200 {
        if let Some(line) = lines.lock().unwrap().iter().find(|l| l.starts_with(prefix)) {
            return line.clone();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "no line starting with {prefix:?} in {:?}",
        lines.lock().unwrap()
    );
}
