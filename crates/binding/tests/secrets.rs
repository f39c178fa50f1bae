//! The binding credential's secret and the user's ID token never appear in the service's
//! log output (captured at TRACE level, every target) or in any response, and `Debug`
//! redacts them.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use latchkey_binding::BindingState;
use latchkey_core::clock::ManualClock;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn credential_secret_never_logged_or_returned() {
    // The test runtime is single-threaded: every task (the service, the stand-ins, the
    // clients) logs through this thread's default subscriber.
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let BothSources {
        alb_key,
        idp_key,
        keys: _keys,
        idp,
        identity,
        config,
    } = BothSources::start("kid-secrets", "idp-secrets").await;
    let config_debug = format!("{config:?}");
    let binding = Binding::start(config.clone()).await;
    let state_debug = format!("{:?}", binding.state);

    let alb = alb_token(&alb_key, "alice", true);
    let id_token = id_token(&idp_key, &idp.issuer, AUDIENCE, "alice");
    let mut responses = vec![];
    for reply in [
        Reply::Ok,
        Reply::error(401, "UnauthorizedException", "invalid bearer key"),
        Reply::error(403, "AccessDeniedException", "wrong user"),
        Reply::error(500, "InternalServerException", "boom"),
    ] {
        identity.set_reply(reply);
        for headers in [
            vec![("x-amzn-oidc-data", alb.as_str())],
            vec![("authorization", &*format!("Bearer {id_token}"))],
            vec![("cookie", &*format!("id_token={id_token}"))],
        ] {
            responses.push(binding.bind_with(&headers).await);
        }
    }
    // Not signed in, invalid link, and an unreachable identity service.
    responses.push(binding.bind_with(&[]).await);
    responses.push(
        binding
            .get(&format!("{}/oauth2/session-binding", binding.base), &[])
            .await,
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let mut dead_config = config.clone();
    dead_config.identity_url = dead;
    let dead_binding = Binding::start(dead_config).await;
    responses.push(
        dead_binding
            .bind_with(&[("x-amzn-oidc-data", alb.as_str())])
            .await,
    );

    // The secret really was used: the stand-in received it.
    assert!(identity.received().iter().all(|r| {
        r.authorization.as_deref() == Some(&format!("Bearer {ACCESS_KEY_ID}:{SECRET}"))
    }));
    assert_eq!(identity.calls(), 12);

    let logs = logs.text();
    assert!(
        logs.contains("refused the binding credential"),
        "the misconfiguration is logged:\n{logs}"
    );
    assert!(
        logs.contains(ACCESS_KEY_ID),
        "the access key id may be logged"
    );
    for (what, text) in [
        ("logs", logs.as_str()),
        ("config Debug", config_debug.as_str()),
        ("state Debug", state_debug.as_str()),
    ] {
        assert!(!text.contains(SECRET), "secret in {what}:\n{text}");
        assert!(!text.contains(&id_token), "ID token in {what}");
        assert!(!text.contains(&alb), "ALB token in {what}");
        assert!(!text.contains(SESSION), "session URI in {what}");
    }
    for (status, headers, body) in &responses {
        assert!(!body.contains(SECRET), "{status}: {body}");
        assert!(!body.contains(ACCESS_KEY_ID), "{status}: {body}");
        for (_, value) in headers {
            let value = String::from_utf8_lossy(value.as_bytes());
            assert!(!value.contains(SECRET));
        }
    }
}

#[test]
fn credential_debug_redacts() {
    let c = credential();
    let debug = format!("{c:?}");
    assert!(debug.contains(ACCESS_KEY_ID));
    assert!(!debug.contains(SECRET));
    let config = base_config("http://127.0.0.1:1");
    assert!(!format!("{config:?}").contains(SECRET));
}

#[test]
fn start_requires_a_user_source() {
    let config = base_config("http://127.0.0.1:1");
    let error =
        BindingState::new(config, Arc::new(ManualClock::new(NOW_MS))).expect_err("no source");
    let message = error.to_string();
    assert!(message.contains("alb_signer"), "{message}");
    assert!(message.contains("oidc_issuer"), "{message}");
    assert!(!message.contains(SECRET));
}
