//! Shared by the gateway's integration tests: the gateway in-process (its state from a
//! [`GatewayConfig`], served by `server::serve` on a loopback port) against real peers: the
//! real `oidc-provider` (tests/oidc/server.mjs) as the identity provider, driven through its
//! login and consent forms over HTTP, and a loopback upstream that echoes what it received.
//! Real crypto throughout, loopback only.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use latchkey_config::{ConfigFile, Env, Flags, Layers};
use latchkey_core::clock::SystemClock;
use latchkey_gateway::config::{DEFAULT_ALB_SIGNER, Gateway as GatewaySection};
use latchkey_gateway::{GatewayConfig, GatewayState};
use serde_json::{Value, json};

mod raw_http;
pub use raw_http::{header_of, raw_request};

pub const SIGNER: &str = DEFAULT_ALB_SIGNER;
pub const CLIENT_SECRET: &str = "gateway-client-secret-0123456789";

/// A child process killed on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn first_line(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read first line");
    line
}

/// The `oidc-provider` harness on a free loopback port; its issuer.
pub fn spawn_provider(extra: &[&str]) -> (Proc, String) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/oidc");
    assert!(
        dir.join("node_modules/oidc-provider").is_dir(),
        "run `npm ci --prefix tests/oidc` first"
    );
    let node = std::env::var("LATCHKEY_TEST_NODE").unwrap_or_else(|_| "node".into());
    let mut child = Command::new(node)
        .current_dir(&dir)
        .args(["server.mjs", "--port", "0"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn node tests/oidc/server.mjs");
    let line = first_line(&mut child);
    let v: Value =
        serde_json::from_str(line.trim()).unwrap_or_else(|_| panic!("provider: {line:?}"));
    (Proc(child), v["issuer"].as_str().unwrap().to_string())
}

/// A running gateway: its public URL and state (for the access log).
pub struct Gateway {
    pub url: String,
    pub state: GatewayState,
    dir: PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Gateway {
    /// The access-log lines written so far (the log is flushed first).
    pub fn access_log(&self) -> Vec<String> {
        let state = self.state.clone();
        tokio::task::block_in_place(|| state.edge().access_log.flush());
        std::fs::read_to_string(self.dir.join("access.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// The gateway with the standard routes over `upstream` (`/` login, `/api` api, `/public`
/// public), its access log in a file; `tweak` changes the configuration first.
pub async fn start_gateway(
    issuer: &str,
    client_id: &str,
    upstream: &str,
    tweak: impl FnOnce(&mut GatewayConfig),
) -> Gateway {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("latchkey-gateway-test-{client_id}-{pid}-{n}"));
    std::fs::create_dir_all(&dir).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    // Resolved as `serve gateway` resolves its environment.
    let routes = format!("/={upstream};login,/api={upstream};api,/public={upstream};public");
    let access_log = dir.join("access.log").display().to_string();
    let env = Env::fixed(&[
        ("LATCHKEY_GATEWAY_PUBLIC_URL", url.as_str()),
        ("LATCHKEY_GATEWAY_OIDC_ISSUER", issuer),
        ("LATCHKEY_GATEWAY_OIDC_CLIENT_ID", client_id),
        ("LATCHKEY_GATEWAY_OIDC_CLIENT_SECRET", CLIENT_SECRET),
        ("LATCHKEY_GATEWAY_ROUTES", routes.as_str()),
        ("LATCHKEY_GATEWAY_ALB_SIGNER", SIGNER),
        ("LATCHKEY_GATEWAY_OUTBOUND_ALLOW_PRIVATE_ADDRESSES", "true"),
        ("LATCHKEY_GATEWAY_ACCESS_LOG", access_log.as_str()),
    ]);
    let (flags, file) = (Flags::<GatewaySection>::default(), ConfigFile::default());
    let layers = Layers::new(&flags, &file, &env).unwrap();
    let mut config = GatewayConfig::resolve(&layers, &dir.join("data")).unwrap();
    tweak(&mut config);
    let state = GatewayState::new(config, Arc::new(SystemClock)).unwrap();
    let handler = state.clone();
    tokio::spawn(async move {
        latchkey_gateway::server::serve(listener, handler, None, 2, std::future::pending()).await
    });
    Gateway { url, state, dir }
}

/// Register the gateway as a client of the provider.
pub async fn register_client(issuer: &str, client_id: &str, gateway: &str) {
    let r = reqwest::Client::new()
        .post(format!("{issuer}/__test/clients"))
        .json(&json!({
            "client_id": client_id,
            "client_secret": CLIENT_SECRET,
            "redirect_uris": [format!("{gateway}/oauth2/idpresponse")],
            "post_logout_redirect_uris": [format!("{gateway}/")],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

/// Released by the test to let the upstream's event stream send its second event.
pub static SECOND_EVENT: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// An upstream that answers every request with what it received; `/public/sse` streams
/// one event, then a second once the test allows it.
pub async fn spawn_upstream() -> String {
    let sse = axum::routing::get(|| async {
        let events = futures_util::stream::unfold(0u8, |n| async move {
            match n {
                0 => Some((Ok::<_, std::convert::Infallible>("data: one\n\n"), 1)),
                1 => {
                    SECOND_EVENT.notified().await;
                    Some((Ok("data: two\n\n"), 2))
                }
                _ => None,
            }
        });
        (
            [("content-type", "text/event-stream")],
            axum::body::Body::from_stream(events),
        )
    });
    let app = axum::Router::new().route("/public/sse", sse).fallback(
        |request: axum::extract::Request| async move {
            let mut headers = serde_json::Map::new();
            for (name, value) in request.headers() {
                headers.insert(
                    name.as_str().to_string(),
                    json!(value.to_str().unwrap_or("<binary>")),
                );
            }
            axum::Json(json!({
                "method": request.method().as_str(),
                "uri": request.uri().to_string(),
                "headers": headers,
            }))
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

// ---------------------------------------------------------------------------------------
// A headless browser: one cookie jar for 127.0.0.1 (cookies ignore ports), no automatic
// redirects.

pub struct Browser {
    pub http: reqwest::Client,
    pub jar: HashMap<String, String>,
    /// Every Set-Cookie header seen, for attribute checks.
    pub set_cookies: Vec<String>,
}

pub struct Step {
    pub status: u16,
    pub location: Option<String>,
    pub set_cookies: Vec<String>,
    pub body: String,
}

pub enum Outcome {
    /// The gateway's callback answered with a redirect to this location.
    Done(String),
    /// Stopped before requesting the gateway's callback (this URL).
    Callback(String),
    /// A page that is not a redirect.
    Page(u16, String),
}

impl Browser {
    pub fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            jar: HashMap::new(),
            set_cookies: vec![],
        }
    }

    pub fn cookie_header(&self) -> String {
        self.jar
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub async fn send(
        &mut self,
        method: &str,
        url: &str,
        form: Option<&[(&str, &str)]>,
        headers: &[(&str, &str)],
    ) -> Step {
        let mut request = self.http.request(method.parse().unwrap(), url);
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("accept"))
        {
            request = request.header("accept", "text/html,application/xhtml+xml");
        }
        if !self.jar.is_empty() {
            request = request.header("cookie", self.cookie_header());
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        if let Some(form) = form {
            let body = form
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("&");
            request = request
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_string());
        let set_cookies: Vec<String> = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        for c in &set_cookies {
            self.set_cookies.push(c.clone());
            let first = c.split(';').next().unwrap();
            let (name, value) = first.split_once('=').unwrap();
            let lower = c.to_ascii_lowercase();
            let gone = lower.contains("max-age=0")
                || lower.contains("expires=thu, 01 jan 1970")
                || value.is_empty();
            if gone {
                self.jar.remove(name.trim());
            } else {
                self.jar.insert(name.trim().to_string(), value.to_string());
            }
        }
        let body = response.text().await.unwrap_or_default();
        Step {
            status,
            location,
            set_cookies,
            body,
        }
    }

    pub async fn get(&mut self, url: &str) -> Step {
        self.send("GET", url, None, &[]).await
    }

    /// A GET as an API client (`Accept: application/json`).
    pub async fn api_get(&mut self, url: &str) -> Step {
        self.send("GET", url, None, &[("accept", "application/json")])
            .await
    }

    /// Log in as `user` from `url` through to the gateway's callback; where it sends the
    /// browser.
    pub async fn sign_in(&mut self, gateway: &str, url: &str, user: &str) -> String {
        match self.login(gateway, url, user, false).await {
            Outcome::Done(location) => location,
            Outcome::Page(status, body) => {
                panic!("login did not complete, ended on a page: {status} {body}")
            }
            Outcome::Callback(_) => unreachable!(),
        }
    }

    /// Follow redirects from `url` through the provider's login and consent forms until
    /// the gateway's callback has answered (or, with `stop_at_callback`, until just before).
    pub async fn login(
        &mut self,
        gateway: &str,
        url: &str,
        user: &str,
        stop_at_callback: bool,
    ) -> Outcome {
        let mut current = url.to_string();
        let mut step = self.get(&current).await;
        for _ in 0..25 {
            if !(300..400).contains(&step.status) {
                return Outcome::Page(step.status, step.body);
            }
            let location = url::Url::parse(&current)
                .unwrap()
                .join(step.location.as_deref().unwrap())
                .unwrap()
                .to_string();
            let was_callback = current.starts_with(&format!("{gateway}/oauth2/idpresponse"));
            if was_callback {
                return Outcome::Done(step.location.unwrap());
            }
            let is_callback = location.starts_with(&format!("{gateway}/oauth2/idpresponse"));
            if is_callback && stop_at_callback {
                return Outcome::Callback(location);
            }
            current = location;
            if current.contains("/interaction/") && !current.ends_with("/abort") {
                let page = self.get(&current).await;
                assert_eq!(page.status, 200, "interaction page: {}", page.body);
                step = if page.body.contains(r#"name="prompt" value="login""#) {
                    self.send(
                        "POST",
                        &current,
                        Some(&[("prompt", "login"), ("login", user), ("password", "any")]),
                        &[],
                    )
                    .await
                } else {
                    self.send("POST", &current, Some(&[("prompt", "consent")]), &[])
                        .await
                };
            } else {
                step = self.get(&current).await;
            }
        }
        panic!("too many redirects");
    }
}

/// The login cookies in the browser's jar (name, value).
pub fn login_cookies(browser: &Browser) -> Vec<(String, String)> {
    browser
        .jar
        .iter()
        .filter(|(k, _)| k.starts_with("latchkey-gw-login-"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

pub fn echo(step: &Step) -> Value {
    assert_eq!(step.status, 200, "{}", step.body);
    serde_json::from_str(&step.body).unwrap()
}

/// A browser's GET written by hand, for request targets an HTTP client would normalise;
/// the status and the `Location`.
pub fn raw_get(gateway: &str, target: &str) -> (u16, Option<String>) {
    let addr = gateway.trim_start_matches("http://");
    let (status, head) = raw_request(
        addr,
        "GET",
        target,
        &[("Host", addr), ("Accept", "text/html")],
    );
    (status, header_of(&head, "location"))
}
