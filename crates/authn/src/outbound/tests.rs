use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        axum::serve(listener, router).await.expect("serve");
    });
    address
}

/// A server answering `hello` at `/`, and the count of the requests it received.
async fn serve_counted_hello() -> (SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let address = serve(Router::new().route(
        "/",
        get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { "hello" }
        }),
    ))
    .await;
    (address, hits)
}

fn permissive() -> OutboundClient {
    permissive_with(OutboundPolicy::default())
}

/// A client that may reach private addresses, with `policy`'s other settings.
fn permissive_with(policy: OutboundPolicy) -> OutboundClient {
    OutboundClient::new(OutboundPolicy {
        allow_private_addresses: true,
        ..policy
    })
    .expect("client")
}

/// A client that may reach private addresses and reads at most `limit` bytes of a body.
fn permissive_limited(limit: usize) -> OutboundClient {
    permissive_with(OutboundPolicy {
        max_response_bytes: limit,
        ..OutboundPolicy::default()
    })
}

/// `url`'s body is refused as larger than the client's `limit`.
async fn assert_too_large(client: &OutboundClient, url: &str, limit: usize) {
    let error = client.get_bytes(url).await.expect_err("too large");
    assert!(
        matches!(error, OutboundError::TooLarge { limit: l } if l == limit),
        "{error:?}"
    );
}

fn strict() -> OutboundClient {
    OutboundClient::new(OutboundPolicy::default()).expect("client")
}

#[test]
fn classifies_addresses() {
    let cases: &[(&str, bool)] = &[
        ("8.8.8.8", true),
        ("1.1.1.1", true),
        ("93.184.216.34", true),
        ("127.0.0.1", false),
        ("127.255.0.1", false),
        ("0.0.0.0", false),
        ("10.1.2.3", false),
        ("172.16.0.1", false),
        ("172.31.255.255", false),
        ("172.32.0.1", true),
        ("192.168.1.1", false),
        ("169.254.169.254", false),
        ("100.64.0.1", false),
        ("100.127.255.255", false),
        ("100.128.0.1", true),
        ("224.0.0.1", false),
        ("255.255.255.255", false),
        ("240.0.0.1", false),
        ("192.0.2.1", false),
        ("198.51.100.7", false),
        ("203.0.113.9", false),
        ("198.18.0.1", false),
        ("::1", false),
        ("::", false),
        ("fd00::1", false),
        ("fc00::1", false),
        ("fe80::1", false),
        ("ff02::1", false),
        ("2001:db8::1", false),
        ("::ffff:127.0.0.1", false),
        ("::ffff:169.254.169.254", false),
        ("::ffff:10.0.0.1", false),
        ("::ffff:8.8.8.8", true),
        ("::127.0.0.1", false),
        ("64:ff9b::a9fe:a9fe", false),
        ("64:ff9b::808:808", true),
        ("2002:7f00:1::", false),
        ("2002:808:808::", true),
        ("2606:4700:4700::1111", true),
        ("2001:4860:4860::8888", true),
    ];
    for (text, allowed) in cases {
        let ip = IpAddr::from_str(text).expect("test address parses");
        assert_eq!(
            blocked_reason(ip).is_none(),
            *allowed,
            "{text}: {:?}",
            blocked_reason(ip)
        );
    }
}

#[test]
fn url_checks() {
    assert!(matches!(
        check_url("ftp://example.com/", true),
        Err(OutboundError::InvalidUrl(_))
    ));
    assert!(matches!(
        check_url("not a url", true),
        Err(OutboundError::InvalidUrl(_))
    ));
    assert!(matches!(
        check_url("https://u:p@example.com/", true),
        Err(OutboundError::InvalidUrl(_))
    ));
    assert!(matches!(
        check_url("http://example.com/", false),
        Err(OutboundError::Blocked { .. })
    ));
    assert!(check_url("http://example.com/", true).is_ok());
    assert!(check_url("https://example.com/", false).is_ok());
    assert!(matches!(
        check_url("https://[::ffff:169.254.169.254]/", false),
        Err(OutboundError::Blocked { .. })
    ));
    assert!(matches!(
        check_url("https://169.254.169.254/latest/meta-data/", false),
        Err(OutboundError::Blocked { .. })
    ));
    // Integer-form IPv4 hosts are normalised by the URL parser and still caught.
    assert!(matches!(
        check_url("https://2130706433/", false),
        Err(OutboundError::Blocked { .. })
    ));
}

#[tokio::test]
async fn literal_loopback_refused_by_default_and_allowed_with_flag() {
    let (address, hits) = serve_counted_hello().await;
    let url = format!("http://{address}/");
    let error = strict().get_bytes(&url).await.expect_err("must be refused");
    assert!(matches!(error, OutboundError::Blocked { .. }), "{error:?}");
    // https to the literal address is refused for the address itself, before any TLS.
    let error = strict()
        .get_bytes(&format!("https://{address}/"))
        .await
        .expect_err("must be refused");
    assert!(
        matches!(
            error,
            OutboundError::Blocked {
                reason: "loopback address",
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);

    let (_, body) = permissive()
        .get_bytes(&url)
        .await
        .expect("allowed with the flag");
    assert_eq!(&body[..], b"hello");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn localhost_refused_by_resolver() {
    let (address, hits) = serve_counted_hello().await;
    // https passes the scheme rule, so the refusal must come from the resolver.
    let error = strict()
        .get_bytes(&format!("https://localhost:{}/", address.port()))
        .await
        .expect_err("refused");
    assert!(
        matches!(error, OutboundError::Blocked { ref host, .. } if host == "localhost"),
        "{error:?}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);

    // The resolver itself.
    let refused = GuardedResolver {
        allow_private_addresses: false,
    }
    .resolve(Name::from_str("localhost").expect("name"))
    .await;
    assert!(refused.is_err());
    let allowed = GuardedResolver {
        allow_private_addresses: true,
    }
    .resolve(Name::from_str("localhost").expect("name"))
    .await;
    assert!(allowed.expect("resolves").next().is_some());

    // With the flag, the name resolves and the request goes through.
    let (_, body) = permissive()
        .get_bytes(&format!("http://localhost:{}/", address.port()))
        .await
        .expect("allowed");
    assert_eq!(&body[..], b"hello");
}

#[tokio::test]
async fn oversized_response_refused() {
    let address = serve(
        Router::new()
            .route("/big", get(|| async { "x".repeat(4096) }))
            .route("/small", get(|| async { "x".repeat(1000) })),
    )
    .await;
    let client = permissive_limited(1024);
    assert_too_large(&client, &format!("http://{address}/big"), 1024).await;
    let (_, body) = client
        .get_bytes(&format!("http://{address}/small"))
        .await
        .expect("fits");
    assert_eq!(body.len(), 1000);
    let (status, _) = client
        .post_form(&format!("http://{address}/big"), &[], None)
        .await
        .expect("post");
    // POST is not routed (405), and its small error body is read fine.
    assert_eq!(status, 405);
}

#[tokio::test]
async fn oversized_chunked_response_refused_without_content_length() {
    // A raw server that streams a chunked body with no Content-Length.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 2048];
                let _ = socket.read(&mut request).await;
                let _ = socket.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n").await;
                for _ in 0..64 {
                    let chunk = format!("{:x}\r\n{}\r\n", 512, "y".repeat(512));
                    if socket.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                }
                let _ = socket.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    let client = permissive_limited(4096);
    assert_too_large(&client, &format!("http://{address}/"), 4096).await;
}

#[tokio::test]
async fn slow_server_times_out() {
    let address = serve(Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            "late"
        }),
    ))
    .await;
    let client = permissive_with(OutboundPolicy {
        request_timeout: Duration::from_millis(300),
        ..OutboundPolicy::default()
    });
    let started = std::time::Instant::now();
    let error = client
        .get_bytes(&format!("http://{address}/slow"))
        .await
        .expect_err("times out");
    assert!(matches!(error, OutboundError::Timeout), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

async fn redirect_to_target() -> (StatusCode, HeaderMap, &'static str) {
    let mut headers = HeaderMap::new();
    headers.insert(header::LOCATION, "/target".parse().expect("header"));
    (StatusCode::FOUND, headers, "")
}

#[tokio::test]
async fn redirects_not_followed() {
    let target_hits = Arc::new(AtomicUsize::new(0));
    let counter = target_hits.clone();
    let address = serve(
        Router::new()
            .route("/start", get(redirect_to_target).post(redirect_to_target))
            .route(
                "/target",
                get(move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async { "{}" }
                }),
            ),
    )
    .await;
    let client = permissive();
    let error = client
        .get_bytes(&format!("http://{address}/start"))
        .await
        .expect_err("not followed");
    assert!(matches!(error, OutboundError::Status(302)), "{error:?}");
    let error = client
        .get_json::<serde_json::Value>(&format!("http://{address}/start"))
        .await
        .expect_err("not followed");
    assert!(matches!(error, OutboundError::Status(302)), "{error:?}");
    let (status, _) = client
        .post_form(&format!("http://{address}/start"), &[("a", "b")], None)
        .await
        .expect("status reported");
    assert_eq!(status, 302);
    assert_eq!(target_hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn post_form_sends_body_and_basic_auth() {
    let address = serve(Router::new().route(
        "/token",
        axum::routing::post(|headers: HeaderMap, body: String| async move {
            let auth = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            (
                StatusCode::BAD_REQUEST,
                format!("{auth}|{content_type}|{body}"),
            )
        }),
    ))
    .await;
    let (status, body) = permissive()
        .post_form(
            &format!("http://{address}/token"),
            &[("grant_type", "client_credentials"), ("scope", "a b")],
            Some(("id", "secret")),
        )
        .await
        .expect("post");
    assert_eq!(status, 400);
    assert_eq!(
        std::str::from_utf8(&body).expect("utf8"),
        "Basic aWQ6c2VjcmV0|application/x-www-form-urlencoded|grant_type=client_credentials&scope=a+b"
    );
}

#[tokio::test]
async fn json_errors_do_not_echo_the_body() {
    let address = serve(Router::new().route(
        "/doc",
        get(|| async { r#"{"issuer": "super-secret-value"}"# }),
    ))
    .await;
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Doc {
        issuer: u64,
    }
    let error = permissive()
        .get_json::<Doc>(&format!("http://{address}/doc"))
        .await
        .expect_err("wrong shape");
    assert!(matches!(error, OutboundError::Decode(_)));
    assert!(!error.to_string().contains("super-secret-value"), "{error}");
}

#[tokio::test]
async fn non_success_status_is_an_error() {
    let address = serve(Router::new().route(
        "/missing",
        get(|| async { (StatusCode::NOT_FOUND, "secret body") }),
    ))
    .await;
    let error = permissive()
        .get_bytes(&format!("http://{address}/missing"))
        .await
        .expect_err("404");
    assert!(matches!(error, OutboundError::Status(404)));
    assert!(!error.to_string().contains("secret"));
}

/// `check_destination` judges a URL as a request would be judged, without sending it:
/// plain http, a private literal, and a name that resolves to loopback are refused with
/// the opt-in off; a public literal and an unresolvable name pass; with the opt-in on,
/// everything the URL rules accept passes.
#[tokio::test]
async fn check_destination_is_the_request_rule_applied_early() {
    let strict = OutboundPolicy::default();
    let blocked = |r: Result<(), OutboundError>| matches!(r, Err(OutboundError::Blocked { .. }));
    assert!(blocked(
        strict.check_destination("http://idp.example.com/").await
    ));
    assert!(blocked(
        strict
            .check_destination("https://127.0.0.1:8443/token")
            .await
    ));
    assert!(blocked(
        strict.check_destination("https://10.1.2.3/token").await
    ));
    assert!(blocked(
        strict.check_destination("https://[::1]/token").await
    ));
    let refused = strict.check_destination("https://localhost/token").await;
    assert!(
        matches!(refused, Err(OutboundError::Blocked { ref host, reason }) if host == "localhost" && reason == "loopback address"),
        "{refused:?}"
    );
    assert!(matches!(
        strict.check_destination("ftp://idp.example.com/").await,
        Err(OutboundError::InvalidUrl(_))
    ));
    strict
        .check_destination("https://93.184.215.14/token")
        .await
        .expect("a public literal");
    strict
        .check_destination("https://no-such-host.invalid/token")
        .await
        .expect("a name that does not resolve is not the policy's to refuse");
    let open = OutboundPolicy {
        allow_private_addresses: true,
        ..OutboundPolicy::default()
    };
    for url in [
        "http://127.0.0.1:9/token",
        "https://localhost/",
        "http://10.0.0.1/",
    ] {
        open.check_destination(url).await.expect(url);
    }
}
