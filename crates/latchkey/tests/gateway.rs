//! `latchkey serve gateway` against real peers: the real `oidc-provider`
//! (tests/oidc/server.mjs) as the identity provider, driven through its login and consent
//! forms over HTTP; a loopback upstream that echoes what it received; and the session
//! binding service's own `AlbVerifier` checking the gateway's `x-amzn-oidc-data` with the
//! public key the gateway serves. Real crypto throughout, loopback only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE;
use latchkey_authn::AlbConfig;
use latchkey_authn::alb::AlbVerifier;
use latchkey_core::clock::SystemClock;
use latchkey_identity::outbound::{OutboundClient, OutboundPolicy};
use serde_json::{Value, json};

mod common;
use common::{Proc, bin, temp_dir};

const SIGNER: &str = "arn:aws:elasticloadbalancing:us-east-1:000000000000:loadbalancer/app/latchkey-gateway/0000000000000000";
const CLIENT_SECRET: &str = "gateway-client-secret-0123456789";

fn first_line(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read first line");
    line
}

/// The `oidc-provider` harness on a free loopback port; its issuer.
fn spawn_provider(extra: &[&str]) -> (Proc, String) {
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
            "--allow-private-addresses",
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

/// Register the gateway as a client of the provider.
async fn register_client(issuer: &str, client_id: &str, gateway: &str) {
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
static SECOND_EVENT: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// An upstream that answers every request with what it received; `/public/sse` streams
/// one event, then a second once the test allows it.
async fn spawn_upstream() -> String {
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

struct Browser {
    http: reqwest::Client,
    jar: HashMap<String, String>,
    /// Every Set-Cookie header seen, for attribute checks.
    set_cookies: Vec<String>,
}

struct Step {
    status: u16,
    location: Option<String>,
    set_cookies: Vec<String>,
    body: String,
}

enum Outcome {
    /// The gateway's callback answered with a redirect to this location.
    Done(String),
    /// Stopped before requesting the gateway's callback (this URL).
    Callback(String),
    /// A page that is not a redirect.
    Page(u16, String),
}

impl Browser {
    fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            jar: HashMap::new(),
            set_cookies: vec![],
        }
    }

    fn cookie_header(&self) -> String {
        self.jar
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(
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

    async fn get(&mut self, url: &str) -> Step {
        self.send("GET", url, None, &[]).await
    }

    /// A GET as an API client (`Accept: application/json`).
    async fn api_get(&mut self, url: &str) -> Step {
        self.send("GET", url, None, &[("accept", "application/json")])
            .await
    }

    /// Log in as `user` from `url` through to the gateway's callback; where it sends the
    /// browser.
    async fn sign_in(&mut self, gateway: &str, url: &str, user: &str) -> String {
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
    async fn login(
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
fn login_cookies(browser: &Browser) -> Vec<(String, String)> {
    browser
        .jar
        .iter()
        .filter(|(k, _)| k.starts_with("latchkey-gw-login-"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn echo(step: &Step) -> Value {
    assert_eq!(step.status, 200, "{}", step.body);
    serde_json::from_str(&step.body).unwrap()
}

/// A browser's GET written by hand, for request targets an HTTP client would normalise;
/// the status and the `Location`.
fn raw_get(gateway: &str, target: &str) -> (u16, Option<String>) {
    let addr = gateway.trim_start_matches("http://");
    let (status, head) = raw_request(
        addr,
        "GET",
        target,
        &[("Host", addr), ("Accept", "text/html")],
    );
    (status, header_of(&head, "location"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_login_headers_sessions_and_logout() {
    let (_provider, issuer) = spawn_provider(&[]);
    let upstream = spawn_upstream().await;
    let (_gateway, gw, access_log) = spawn_gateway(&issuer, "gw-main", &upstream, &[]);
    register_client(&issuer, "gw-main", &gw).await;

    // Without a session: api → 401 JSON; public → passed through without user headers,
    // and a forged claims header is stripped.
    let mut anon = Browser::new();
    let r = anon.api_get(&format!("{gw}/api/things")).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        serde_json::from_str::<Value>(&r.body).unwrap()["error"],
        "unauthorized"
    );
    let r = anon
        .send(
            "GET",
            &format!("{gw}/public/info?q=1"),
            None,
            &[
                ("x-amzn-oidc-data", "forged.token.here"),
                ("x-amzn-oidc-identity", "mallory"),
            ],
        )
        .await;
    let seen = echo(&r);
    assert_eq!(seen["uri"], "/public/info?q=1");
    assert!(seen["headers"].get("x-amzn-oidc-data").is_none(), "{seen}");
    assert!(
        seen["headers"].get("x-amzn-oidc-identity").is_none(),
        "{seen}"
    );
    // Streams pass through event by event: the first event arrives while the upstream
    // still holds back the second.
    let mut stream = anon
        .http
        .get(format!("{gw}/public/sse"))
        .send()
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.chunk())
        .await
        .expect("the first event was held back")
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"data: one\n\n");
    SECOND_EVENT.notify_one();
    let rest = tokio::time::timeout(Duration::from_secs(5), stream.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(&rest[..], b"data: two\n\n");

    // A login route without html in Accept is an API client: 401, not a redirect.
    let r = anon.api_get(&format!("{gw}/app")).await;
    assert_eq!(r.status, 401);
    // A callback with an unknown state: 400 page, no session.
    let r = anon
        .get(&format!(
            "{gw}/oauth2/idpresponse?state=bogus&code=whatever"
        ))
        .await;
    assert_eq!(r.status, 400);
    assert!(r.set_cookies.is_empty());

    // Log in from a deep link; the browser comes back to it with a session cookie.
    let mut alice = Browser::new();
    let location = alice
        .sign_in(&gw, &format!("{gw}/app/page?x=1"), "alice")
        .await;
    assert_eq!(location, "/app/page?x=1");
    let session_cookie = alice
        .jar
        .get("latchkey-gw")
        .cloned()
        .expect("session cookie");
    let set = alice
        .set_cookies
        .iter()
        .find(|c| c.starts_with("latchkey-gw="))
        .unwrap();
    for attribute in ["HttpOnly", "Path=/", "SameSite=Lax"] {
        assert!(set.contains(attribute), "{set}");
    }
    assert!(!set.contains("Secure"), "{set}");

    // The upstream sees the ALB headers (a forged one replaced), not the gateway's cookie.
    alice.jar.insert("other".into(), "kept".into());
    let r = alice
        .send(
            "GET",
            &format!("{gw}/app/page?x=1"),
            None,
            &[
                ("x-amzn-oidc-data", "forged.token.here"),
                ("x-amzn-oidc-identity", "mallory"),
            ],
        )
        .await;
    let seen = echo(&r);
    let h = &seen["headers"];
    assert_eq!(h["x-amzn-oidc-identity"], "alice");
    // Security headers on proxied responses (no HSTS without TLS).
    let r2 = alice
        .http
        .get(format!("{gw}/public/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r2.headers()["x-content-type-options"], "nosniff");
    assert!(r2.headers().get("strict-transport-security").is_none());
    assert!(
        h["x-amzn-oidc-accesstoken"]
            .as_str()
            .is_some_and(|t| t.len() > 10)
    );
    let cookies = h["cookie"].as_str().unwrap_or_default();
    assert!(
        cookies.contains("other=kept") && !cookies.contains("latchkey-gw"),
        "{cookies}"
    );
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], gw.trim_start_matches("http://"));
    let data = h["x-amzn-oidc-data"].as_str().unwrap();
    assert_ne!(data, "forged.token.here");
    let parts: Vec<&str> = data.split('.').collect();
    assert_eq!(parts.len(), 3);
    assert!(parts.iter().all(|p| p.len() % 4 == 0), "parts are padded");
    let header: Value = serde_json::from_slice(&URL_SAFE.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["typ"], "JWT");
    assert_eq!(header["signer"], SIGNER);
    assert_eq!(header["client"], "gw-main");
    assert_eq!(header["iss"], issuer.as_str());
    let payload: Value = serde_json::from_slice(&URL_SAFE.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(payload["email"], "alice@example.test");
    assert!(payload.get("nonce").is_none() && payload.get("aud").is_none());

    // The binding service's verifier accepts it with the gateway's key URL and signer.
    let mut alb = AlbConfig::new(SIGNER);
    alb.key_url_template = format!("{gw}/.well-known/alb-keys/{{kid}}");
    alb.issuer = Some(issuer.clone());
    let client = OutboundClient::new(OutboundPolicy {
        allow_private_addresses: true,
        ..OutboundPolicy::default()
    })
    .unwrap();
    let verifier = AlbVerifier::new(alb.clone(), client.clone(), Arc::new(SystemClock));
    assert_eq!(verifier.verify(data).await.unwrap().subject, "alice");
    // …and refuses it for another load balancer.
    let other = AlbVerifier::new(
        AlbConfig {
            signer_arn: "arn:aws:elasticloadbalancing:us-east-1:1:loadbalancer/app/x/1".into(),
            ..alb
        },
        client,
        Arc::new(SystemClock),
    );
    assert!(other.verify(data).await.is_err());

    // api routes work with the session too.
    let r = alice.api_get(&format!("{gw}/api/things")).await;
    assert_eq!(echo(&r)["headers"]["x-amzn-oidc-identity"], "alice");

    // A tampered cookie is no session: the browser is sent to the provider again.
    let mut tampered = session_cookie.clone().into_bytes();
    let i = tampered.len() / 2;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let mut mallory = Browser::new();
    mallory
        .jar
        .insert("latchkey-gw".into(), String::from_utf8(tampered).unwrap());
    let r = mallory.get(&format!("{gw}/app")).await;
    assert_eq!(r.status, 302);
    assert!(
        r.location.as_deref().unwrap().starts_with(&issuer),
        "{:?}",
        r.location
    );
    assert!(r.set_cookies.iter().any(|c| c.starts_with("latchkey-gw=;")));

    // A callback is single use: the second time it is a 400 page and no session.
    let mut bob = Browser::new();
    let Outcome::Callback(callback) = bob.login(&gw, &format!("{gw}/bob"), "bob", true).await
    else {
        panic!("no callback");
    };
    // Delivered to another browser (login CSRF), the callback is refused and nothing is used up.
    let mut replay = Browser::new();
    let elsewhere = replay.get(&callback).await;
    assert_eq!(elsewhere.status, 400);
    assert!(elsewhere.set_cookies.is_empty());
    let (login_name, login_cookie) = login_cookies(&bob).pop().expect("login cookie");
    let first = bob.get(&callback).await;
    assert_eq!(first.status, 302);
    assert_eq!(first.location.as_deref(), Some("/bob"));
    assert!(login_cookies(&bob).is_empty(), "login cookie cleared");
    // Replayed with a copy of its login cookie: single use (the copy is cleared too).
    let mut again = Browser::new();
    again.jar.insert(login_name, login_cookie);
    let second = again.get(&callback).await;
    assert_eq!(second.status, 400);
    assert!(
        !second
            .set_cookies
            .iter()
            .any(|c| c.starts_with("latchkey-gw=")),
        "{:?}",
        second.set_cookies
    );
    let r = again.api_get(&format!("{gw}/api/x")).await;
    assert_eq!(r.status, 401);

    // Open redirects in the return path end at `/` (a browser still signed in at the
    // provider, without a gateway session).
    let mut carol = Browser::new();
    carol.jar = alice.jar.clone();
    carol.jar.remove("latchkey-gw");
    let location = carol
        .sign_in(&gw, &format!("{gw}//evil.example/x"), "alice")
        .await;
    assert_eq!(location, "/");
    let gw_for_raw = gw.clone();
    for target in ["/\\evil.example/x", "//evil.example/%2e%2e"] {
        let gw_for_raw = gw_for_raw.clone();
        let (status, location) = tokio::task::spawn_blocking(move || raw_get(&gw_for_raw, target))
            .await
            .unwrap();
        if status == 400 {
            continue; // refused outright by the HTTP parser: no redirect either
        }
        assert_eq!(status, 302, "{target}");
        let provider_url = location.unwrap();
        assert!(provider_url.starts_with(&issuer), "{provider_url}");
        let back = carol.sign_in(&gw, &provider_url, "alice").await;
        assert_eq!(back, "/", "{target}");
    }

    // Logout (a same-origin POST; see `gateway_logout_is_a_same_origin_post`): the session
    // is gone, the cookie cleared, the browser sent to the provider's end-session endpoint
    // with the ID token hint.
    let before = alice.jar.get("latchkey-gw").cloned().unwrap();
    let r = alice
        .send(
            "POST",
            &format!("{gw}/oauth2/logout"),
            Some(&[]),
            &[("origin", gw.as_str())],
        )
        .await;
    assert_eq!(r.status, 303);
    let to = r.location.unwrap();
    assert!(to.starts_with(&issuer), "{to}");
    assert!(to.contains("id_token_hint="), "{to}");
    assert!(
        to.contains(&format!(
            "post_logout_redirect_uri={}",
            url::form_urlencoded::byte_serialize(format!("{gw}/").as_bytes()).collect::<String>()
        )),
        "{to}"
    );
    assert!(r.set_cookies.iter().any(|c| c.contains("Max-Age=0")));
    assert!(!alice.jar.contains_key("latchkey-gw"));
    let mut old = Browser::new();
    old.jar.insert("latchkey-gw".into(), before);
    let r = old.api_get(&format!("{gw}/api/x")).await;
    assert_eq!(r.status, 401);

    // The public key endpoint serves only the gateway's kid.
    let r = anon.get(&format!("{gw}/.well-known/alb-keys/nope")).await;
    assert_eq!(r.status, 404);

    // Baseline request rules run before routing.
    let gw_for_raw = gw.clone();
    let (status, _) =
        tokio::task::spawn_blocking(move || raw_get(&gw_for_raw, "/public/%2e%2e/secret"))
            .await
            .unwrap();
    assert_eq!(status, 400);

    // One JSON access-log line per request, with the user and without the query.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let found = access_log.lock().unwrap().iter().any(|l| {
            serde_json::from_str::<Value>(l).is_ok_and(|v| {
                v["user"] == "alice" && v["path"] == "/app/page" && v["status"] == 200
            })
        });
        if found {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no access-log line: {:?}",
            access_log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        access_log
            .lock()
            .unwrap()
            .iter()
            .all(|l| !l.contains("x=1") && !l.contains("latchkey-gw")),
        "queries and cookies stay out of the access log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_refresh_rate_limit_and_idle_timeout() {
    // Access tokens live 30 s: always within the 60 s refresh window, so every proxied
    // request refreshes them with the refresh-token grant.
    let (_provider, issuer) = spawn_provider(&["--access-token-ttl", "30"]);
    let upstream = spawn_upstream().await;
    let (_gateway, gw, _) = spawn_gateway(
        &issuer,
        "gw-idle",
        &upstream,
        &[
            "--session-idle-seconds",
            "2",
            "--rate-limit-per-user",
            "1/s",
            "--access-log",
            "off",
        ],
    );
    register_client(&issuer, "gw-idle", &gw).await;
    let mut alice = Browser::new();
    alice.sign_in(&gw, &format!("{gw}/"), "alice").await;
    let r = alice.api_get(&format!("{gw}/api/x")).await;
    let first = echo(&r);
    assert_eq!(first["headers"]["x-amzn-oidc-identity"], "alice");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = alice.api_get(&format!("{gw}/api/x")).await;
    let second = echo(&r);
    assert_ne!(
        first["headers"]["x-amzn-oidc-accesstoken"], second["headers"]["x-amzn-oidc-accesstoken"],
        "the provider's access token was refreshed"
    );
    let stats: Value = reqwest::get(format!("{issuer}/__test/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        stats["grants"]["refresh_token"]["success"]
            .as_u64()
            .unwrap_or(0)
            >= 2,
        "{stats}"
    );
    // Per-user rate limit (1/s, burst 2): a quick third request is refused.
    let mut statuses = vec![];
    for _ in 0..3 {
        let r = alice.api_get(&format!("{gw}/api/x")).await;
        statuses.push(r.status);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    let r = alice
        .http
        .get(format!("{gw}/api/x"))
        .header("cookie", alice.cookie_header())
        .send()
        .await
        .unwrap();
    if r.status() == 429 {
        assert!(r.headers().get("retry-after").is_some());
    }
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let r = alice.api_get(&format!("{gw}/api/x")).await;
    assert_eq!(r.status, 401);
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
    let seen: Value = r.json().await.unwrap();
    assert_eq!(seen["headers"]["x-forwarded-proto"], "https");
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

/// One plain-HTTP request written by hand with the given headers (and
/// `Connection: close`); the status and the response head.
fn raw_request(addr: &str, method: &str, target: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut request = format!("{method} {target} HTTP/1.1\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).unwrap();
    let mut text = String::new();
    let _ = tcp.read_to_string(&mut text);
    let head = text
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head)
}

fn header_of(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// The gateway's resident memory, in KiB (Linux `/proc`).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// `n` anonymous browser GETs of a login route from 32 connections at once; every one
/// must be sent to the provider with a login cookie (none refused).
async fn login_flood(gw: &str, n: usize) {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(32)
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..32)
        .map(|t| {
            let http = http.clone();
            let url = format!("{gw}/app/flood");
            tokio::spawn(async move {
                let mut refused = 0usize;
                for _ in (t..n).step_by(32) {
                    let r = http
                        .get(&url)
                        .header("accept", "text/html")
                        .send()
                        .await
                        .unwrap();
                    let cookie = r
                        .headers()
                        .get("set-cookie")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    if r.status() != 302 || !cookie.starts_with("latchkey-gw-login") {
                        refused += 1;
                    }
                }
                refused
            })
        })
        .collect();
    let mut refused = 0;
    for task in tasks {
        refused += task.await.unwrap();
    }
    assert_eq!(refused, 0, "{refused} of {n} login starts were refused");
}

/// Issue 12, item 3: 10,000 anonymous login starts used to fill the pending-login table,
/// and every real login then got 503 for ten minutes. Logins in progress now live in
/// sealed cookies: a flood keeps nothing in the gateway, and real logins (several tabs of
/// one browser at once too) still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_login_flood_leaves_logins_working() {
    let (_provider, issuer) = spawn_provider(&[]);
    let upstream = spawn_upstream().await;
    let (gateway, gw, _) = spawn_gateway(&issuer, "gw-flood", &upstream, &["--access-log", "off"]);
    register_client(&issuer, "gw-flood", &gw).await;
    let pid = gateway.0.id();

    // Warm up (connections, buffers, the provider's metadata), then flood.
    login_flood(&gw, 1_000).await;
    let before = rss_kib(pid);
    let started = std::time::Instant::now();
    login_flood(&gw, 10_000).await;
    let took = started.elapsed();
    let after = rss_kib(pid);
    eprintln!("10,000 login starts in {took:?}; gateway RSS {before} KiB -> {after} KiB");
    // A pending login kept server-side (state, nonce, verifier, return path, map entry)
    // was ~350 bytes: 10,000 of them ~3.5 MiB. (Measured without: under 0.5 MiB of noise.)
    assert!(
        after.saturating_sub(before) < 1536,
        "the gateway grew from {before} KiB to {after} KiB over 10,000 login starts ({took:?})"
    );

    // A real login right after.
    let mut alice = Browser::new();
    let location = alice
        .sign_in(&gw, &format!("{gw}/app/after-flood"), "alice")
        .await;
    assert_eq!(location, "/app/after-flood", "login after the flood");
    let r = alice.api_get(&format!("{gw}/api/x")).await;
    assert_eq!(echo(&r)["headers"]["x-amzn-oidc-identity"], "alice");

    // Two tabs of one browser log in at once; they finish in the other order.
    let mut bob = Browser::new();
    let Outcome::Callback(first_tab) = bob.login(&gw, &format!("{gw}/tab-1"), "bob", true).await
    else {
        panic!("no callback for the first tab");
    };
    let Outcome::Callback(second_tab) = bob.login(&gw, &format!("{gw}/tab-2"), "bob", true).await
    else {
        panic!("no callback for the second tab");
    };
    assert_eq!(login_cookies(&bob).len(), 2);
    let r = bob.get(&second_tab).await;
    assert_eq!((r.status, r.location.as_deref()), (302, Some("/tab-2")));
    let r = bob.get(&first_tab).await;
    assert_eq!((r.status, r.location.as_deref()), (302, Some("/tab-1")));
    assert!(login_cookies(&bob).is_empty(), "{:?}", bob.jar);

    // A browser that starts many logins keeps only the newest few login cookies.
    let mut restless = Browser::new();
    for _ in 0..10 {
        let r = restless.get(&format!("{gw}/app")).await;
        assert_eq!(r.status, 302);
        assert!(login_cookies(&restless).len() <= 4, "{:?}", restless.jar);
    }
    assert_eq!(login_cookies(&restless).len(), 4);
}

/// Issue 12, item 11: a cross-site `GET /oauth2/logout` (a link, an image, a redirect)
/// used to end the session. Now `GET` shows a confirmation page, and only a `POST` from
/// the gateway's own origin signs out (then on to the provider's end-session endpoint).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_logout_is_a_same_origin_post() {
    let (_provider, issuer) = spawn_provider(&[]);
    let upstream = spawn_upstream().await;
    let (_gateway, gw, _) = spawn_gateway(&issuer, "gw-logout", &upstream, &[]);
    register_client(&issuer, "gw-logout", &gw).await;
    let logout = format!("{gw}/oauth2/logout");
    let mut alice = Browser::new();
    alice.sign_in(&gw, &format!("{gw}/app"), "alice").await;
    async fn signed_in(browser: &mut Browser, gw: &str) -> bool {
        let r = browser.api_get(&format!("{gw}/api/x")).await;
        r.status == 200
    }
    assert!(signed_in(&mut alice, &gw).await);

    // A cross-site top-level GET, as a link or a redirect elsewhere makes it: a page with
    // a sign-out button, and nothing else happens.
    let r = alice
        .send(
            "GET",
            &logout,
            None,
            &[
                ("sec-fetch-site", "cross-site"),
                ("sec-fetch-mode", "navigate"),
                ("referer", "https://evil.example/"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body
            .contains(r#"<form method="post" action="/oauth2/logout">"#),
        "{}",
        r.body
    );
    assert!(r.set_cookies.is_empty(), "{:?}", r.set_cookies);
    assert!(
        signed_in(&mut alice, &gw).await,
        "a cross-site GET ended the session"
    );

    // POSTs that do not prove they come from the gateway's origin: 403 page, session kept.
    let same_site_other_port = "http://127.0.0.1:1";
    for headers in [
        vec![("origin", "https://evil.example")],
        vec![("origin", same_site_other_port)],
        vec![("origin", "null")],
        vec![("sec-fetch-site", "cross-site")],
        vec![("sec-fetch-site", "same-site")],
        vec![],
        vec![
            ("origin", "https://evil.example"),
            ("sec-fetch-site", "same-origin"),
        ],
    ] {
        let r = alice.send("POST", &logout, Some(&[]), &headers).await;
        assert_eq!(r.status, 403, "{headers:?}: {}", r.body);
        assert!(r.body.contains("Sign-out not confirmed"), "{}", r.body);
        assert!(r.set_cookies.is_empty(), "{headers:?}: {:?}", r.set_cookies);
        assert!(
            signed_in(&mut alice, &gw).await,
            "{headers:?} ended the session"
        );
    }

    // From the gateway's own page (the browser sends its Origin): signed out, and sent to
    // the provider's end-session endpoint, which accepts the request.
    let r = alice
        .send("POST", &logout, Some(&[]), &[("origin", gw.as_str())])
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let end_session = r.location.unwrap();
    assert!(end_session.starts_with(&issuer), "{end_session}");
    assert!(end_session.contains("id_token_hint="), "{end_session}");
    assert!(!alice.jar.contains_key("latchkey-gw"));
    assert!(!signed_in(&mut alice, &gw).await);
    let at_provider = alice.get(&end_session).await;
    assert_eq!(at_provider.status, 200, "{}", at_provider.body);

    // A browser that sends `Sec-Fetch-Site: same-origin` but no `Origin` signs out too.
    let mut bob = Browser::new();
    bob.sign_in(&gw, &format!("{gw}/app"), "bob").await;
    assert!(signed_in(&mut bob, &gw).await);
    let r = bob
        .send(
            "POST",
            &logout,
            Some(&[]),
            &[("sec-fetch-site", "same-origin")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(!signed_in(&mut bob, &gw).await);
}

/// Issue 12, item 8 (the gateway's part): a provider `sub` with a newline used to sign
/// in and write a line of its own into the gateway's log. Such a subject is refused at
/// the gateway's ID-token check with a clear page, and no session is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_refuses_a_subject_with_control_characters() {
    let (_provider, issuer) = spawn_provider(&[]);
    let upstream = spawn_upstream().await;
    let (_gateway, gw, access_log) = spawn_gateway(&issuer, "gw-subject", &upstream, &[]);
    register_client(&issuer, "gw-subject", &gw).await;
    // The login form's value is the provider's `sub` (form-encoded here by hand).
    for forged in [
        "eve%0AINFO%20signed%20in%20sub%3Dadmin",
        "eve%1B%5B31m",
        "eve%E2%80%A8x",
    ] {
        let mut eve = Browser::new();
        match eve.login(&gw, &format!("{gw}/app"), forged, false).await {
            Outcome::Page(status, body) => {
                assert_eq!(status, 403, "{forged}: {body}");
                assert!(body.contains("Sign-in refused"), "{body}");
                assert!(body.contains("control characters"), "{body}");
            }
            Outcome::Done(location) => panic!("{forged}: signed in, sent to {location}"),
            Outcome::Callback(_) => unreachable!(),
        }
        assert!(!eve.jar.contains_key("latchkey-gw"), "{forged}: a session");
        assert!(
            login_cookies(&eve).is_empty(),
            "{forged}: login cookie kept"
        );
    }
    // An ordinary subject still signs in at the same provider.
    let mut alice = Browser::new();
    alice.sign_in(&gw, &format!("{gw}/app"), "alice").await;
    // Every access-log line is one JSON object.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for line in access_log.lock().unwrap().iter() {
        assert!(serde_json::from_str::<Value>(line).is_ok(), "{line:?}");
    }
}
