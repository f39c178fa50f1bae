//! Issue 12, item 3, in a test binary of its own: it measures the resident memory of the
//! process, which holds the gateway and nothing else.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use latchkey_gateway::config::AccessLogTarget;

mod common;
use common::*;

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
    let gateway = start_gateway(&issuer, "gw-flood", &upstream, |c| {
        c.keys.access_log = AccessLogTarget::Off;
    })
    .await;
    let gw = gateway.url.clone();
    register_client(&issuer, "gw-flood", &gw).await;
    // The gateway runs in this process (this test binary holds no other test).
    let pid = std::process::id();

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
