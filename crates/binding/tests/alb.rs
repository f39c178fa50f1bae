//! The ALB `x-amzn-oidc-data` source: real ES256 tokens, keys served as PEM from a
//! loopback key server, a recording identity stand-in. Every refusal asserts that the
//! identity service received no call.

#![allow(clippy::unwrap_used)]

mod common;

use aws_lc_rs::hmac;
use aws_lc_rs::signature::KeyPair;
use common::*;
use latchkey_binding::pages::Page;
use serde_json::{Value, json};

const HEADER: &str = "x-amzn-oidc-data";

/// The request was refused with the not-signed-in page and nothing reached the identity
/// service.
async fn assert_refused(binding: &Binding, identity: &IdentityStandIn, token: &str) {
    let (status, _, body) = binding.bind_with(&[(HEADER, token)]).await;
    assert_eq!(status, 401, "token {token:?} must be refused: {body}");
    assert_eq!(body, Page::NotSignedIn.html());
    assert_eq!(
        identity.calls(),
        0,
        "the identity service must not be called"
    );
}

fn assert_completed_for(identity: &IdentityStandIn, sub: &str) {
    let received = identity.received();
    assert_eq!(received.len(), 1);
    let call = &received[0];
    assert_eq!(call.path, "/identities/CompleteResourceTokenAuth");
    assert_eq!(
        call.authorization.as_deref(),
        Some(format!("Bearer {ACCESS_KEY_ID}:{SECRET}").as_str())
    );
    assert!(
        call.content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("application/json"))
    );
    assert_eq!(
        call.body,
        json!({"userIdentifier": {"userId": sub}, "sessionUri": SESSION})
    );
}

#[tokio::test]
async fn alb_padded_token_completes() {
    let key = EcKey::generate("0b9c7a3e-5f1d-4c2a-9e8b-7d6f5a4c3b2a");
    let (binding, keys, identity) = alb_setup(&key).await;
    let token = alb_token(&key, "alice", true);
    let (status, _, body) = binding.bind_with(&[(HEADER, &token)]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, Page::Success.html());
    assert!(body.contains("Authorization complete"));
    assert_completed_for(&identity, "alice");
    assert_eq!(keys.hits(), 1);
}

#[tokio::test]
async fn alb_unpadded_token_completes() {
    let key = EcKey::generate("kid-unpadded");
    let (binding, _keys, identity) = alb_setup(&key).await;
    let token = alb_token(&key, "bob", false);
    let (status, _, body) = binding.bind_with(&[(HEADER, &token)]).await;
    assert_eq!(status, 200, "{body}");
    assert_completed_for(&identity, "bob");
}

#[tokio::test]
async fn alb_key_cached_one_fetch_for_many_requests() {
    let key = EcKey::generate("kid-cached");
    let (binding, keys, identity) = alb_setup(&key).await;
    let token = alb_token(&key, "alice", true);
    // Concurrent first requests share one fetch; later ones hit the cache.
    let mut tasks = vec![];
    for _ in 0..8 {
        let (http, url, token) = (
            binding.http.clone(),
            binding.binding_url(SESSION),
            token.clone(),
        );
        tasks.push(tokio::spawn(async move {
            http.get(url)
                .header(HEADER, token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    for _ in 0..12 {
        let (status, _, _) = binding.bind_with(&[(HEADER, &token)]).await;
        assert_eq!(status, 200);
    }
    assert_eq!(identity.calls(), 20);
    assert_eq!(keys.hits(), 1, "the key is fetched once and cached");
    assert_eq!(binding.state.alb().map(|a| a.key_fetches()), Some(1));
}

#[tokio::test]
async fn alb_exp_within_leeway_accepted() {
    let key = EcKey::generate("kid-leeway");
    let (binding, _keys, identity) = alb_setup(&key).await;
    let mut header = alb_header(&key.kid, SIGNER);
    let mut payload = alb_payload("alice");
    header["exp"] = json!(NOW - 30);
    payload["exp"] = json!(NOW - 30);
    let token = jws(&key, &header, &payload, true);
    let (status, _, _) = binding.bind_with(&[(HEADER, &token)]).await;
    assert_eq!(status, 200);
    assert_eq!(identity.calls(), 1);
}

#[tokio::test]
async fn alb_alg_none_rejected() {
    let key = EcKey::generate("kid-none");
    let (binding, keys, identity) = alb_setup(&key).await;
    for alg in ["none", "None", "NONE"] {
        let mut header = alb_header(&key.kid, SIGNER);
        header["alg"] = json!(alg);
        let h = b64(&serde_json::to_vec(&header).unwrap(), false);
        let p = b64(&serde_json::to_vec(&alb_payload("mallory")).unwrap(), false);
        // Unsigned: an empty signature, and also a dummy one.
        assert_refused(&binding, &identity, &format!("{h}.{p}.")).await;
        assert_refused(&binding, &identity, &format!("{h}.{p}.AAAA")).await;
    }
    // No alg at all.
    let mut header = alb_header(&key.kid, SIGNER);
    header.as_object_mut().unwrap().remove("alg");
    assert_refused(
        &binding,
        &identity,
        &jws(&key, &header, &alb_payload("mallory"), true),
    )
    .await;
    assert_eq!(keys.hits(), 0, "no key is fetched for an unsigned token");
}

#[tokio::test]
async fn alb_hs256_with_public_key_rejected() {
    let key = EcKey::generate("kid-hs256");
    let (binding, keys, identity) = alb_setup(&key).await;
    // Warm the cache so the attacker's token meets a known key.
    let (status, _, _) = binding
        .bind_with(&[(HEADER, &alb_token(&key, "alice", true))])
        .await;
    assert_eq!(status, 200);
    let calls_before = identity.calls();

    for alg in [
        "HS256", "HS384", "HS512", "hs256", "ES384", "RS256", "PS256", "EdDSA",
    ] {
        let mut header = alb_header(&key.kid, SIGNER);
        header["alg"] = json!(alg);
        let h = b64(&serde_json::to_vec(&header).unwrap(), true);
        let p = b64(&serde_json::to_vec(&alb_payload("mallory")).unwrap(), true);
        let input = format!("{h}.{p}");
        // The classic key-confusion forgery: HMAC keyed with the published public key
        // (the PEM text, and the raw point).
        for secret in [key.pem.as_bytes(), key.pair.public_key().as_ref()] {
            let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), input.as_bytes());
            let token = format!("{input}.{}", b64(tag.as_ref(), true));
            let (status, _, body) = binding.bind_with(&[(HEADER, &token)]).await;
            assert_eq!(status, 401, "{alg}: {body}");
        }
        // And with a real ES256 signature under the wrong alg name.
        let token = sign_parts(&key, &h, &p, true);
        let (status, _, _) = binding.bind_with(&[(HEADER, &token)]).await;
        assert_eq!(status, 401, "{alg} with an ES256 signature");
    }
    assert_eq!(
        identity.calls(),
        calls_before,
        "no forged token reached the identity service"
    );
    assert_eq!(keys.hits(), 1);
}

#[tokio::test]
async fn alb_wrong_signer_rejected() {
    let key = EcKey::generate("kid-signer");
    let (binding, keys, identity) = alb_setup(&key).await;
    for signer in [
        Value::from(OTHER_SIGNER),
        Value::from(format!("{SIGNER} ")),
        Value::from(SIGNER.to_uppercase()),
        Value::from(""),
        json!([SIGNER]),
        Value::Null,
    ] {
        let mut header = alb_header(&key.kid, SIGNER);
        header["signer"] = signer;
        assert_refused(
            &binding,
            &identity,
            &jws(&key, &header, &alb_payload("alice"), true),
        )
        .await;
    }
    let mut header = alb_header(&key.kid, SIGNER);
    header.as_object_mut().unwrap().remove("signer");
    assert_refused(
        &binding,
        &identity,
        &jws(&key, &header, &alb_payload("alice"), true),
    )
    .await;
    assert_eq!(keys.hits(), 0);
}

#[tokio::test]
async fn alb_expired_rejected() {
    let key = EcKey::generate("kid-expired");
    let (binding, _keys, identity) = alb_setup(&key).await;
    // Payload expired beyond the 60 s leeway.
    let mut payload = alb_payload("alice");
    payload["exp"] = json!(NOW - 61);
    assert_refused(
        &binding,
        &identity,
        &jws(&key, &alb_header(&key.kid, SIGNER), &payload, true),
    )
    .await;
    // Long expired.
    payload["exp"] = json!(NOW - 86_400);
    assert_refused(
        &binding,
        &identity,
        &jws(&key, &alb_header(&key.kid, SIGNER), &payload, true),
    )
    .await;
    // Header expired, payload fresh.
    let mut header = alb_header(&key.kid, SIGNER);
    header["exp"] = json!(NOW - 3600);
    assert_refused(
        &binding,
        &identity,
        &jws(&key, &header, &alb_payload("alice"), true),
    )
    .await;
    // No exp, or a non-numeric one.
    let mut payload = alb_payload("alice");
    payload.as_object_mut().unwrap().remove("exp");
    assert_refused(
        &binding,
        &identity,
        &jws(&key, &alb_header(&key.kid, SIGNER), &payload, true),
    )
    .await;
    payload["exp"] = json!("9999999999");
    assert_refused(
        &binding,
        &identity,
        &jws(&key, &alb_header(&key.kid, SIGNER), &payload, true),
    )
    .await;
}

#[tokio::test]
async fn alb_tampered_payload_rejected() {
    let key = EcKey::generate("kid-tamper");
    let (binding, _keys, identity) = alb_setup(&key).await;
    for padded in [true, false] {
        let token = alb_token(&key, "mallory", padded);
        let parts: Vec<&str> = token.split('.').collect();
        let forged_payload = b64(&serde_json::to_vec(&alb_payload("alice")).unwrap(), padded);
        let forged = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
        assert_refused(&binding, &identity, &forged).await;
        // A flipped signature bit.
        let mut sig = base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            parts[2].trim_end_matches('='),
        )
        .unwrap();
        sig[10] ^= 1;
        let flipped = format!("{}.{}.{}", parts[0], parts[1], b64(&sig, padded));
        assert_refused(&binding, &identity, &flipped).await;
        // The signature covers the bytes as received: adding or removing padding on a
        // signed part breaks it.
        let repadded = if padded {
            format!(
                "{}.{}.{}",
                parts[0].trim_end_matches('='),
                parts[1],
                parts[2]
            )
        } else {
            let h = b64(
                &base64::Engine::decode(
                    &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                    parts[0],
                )
                .unwrap(),
                true,
            );
            format!("{h}.{}.{}", parts[1], parts[2])
        };
        if repadded != token {
            assert_refused(&binding, &identity, &repadded).await;
        }
    }
    // Signed by another key under the same kid.
    let other = EcKey::generate("kid-tamper");
    assert_refused(&binding, &identity, &alb_token(&other, "alice", true)).await;
}

#[tokio::test]
async fn alb_unknown_kid_rejected() {
    let key = EcKey::generate("kid-known");
    let (binding, keys, identity) = alb_setup(&key).await;
    let stranger = EcKey::generate("kid-not-published");
    assert_refused(&binding, &identity, &alb_token(&stranger, "alice", true)).await;
    assert_eq!(keys.hits(), 1);
    // The failure is remembered for a while: a burst of forged tokens costs one fetch.
    for _ in 0..5 {
        assert_refused(&binding, &identity, &alb_token(&stranger, "alice", true)).await;
    }
    assert_eq!(keys.hits(), 1);
}

#[tokio::test]
async fn alb_kid_path_injection_rejected() {
    let key = EcKey::generate("kid-good");
    let (binding, keys, identity) = alb_setup(&key).await;
    // The attacker's key, served where a path-traversing kid would resolve.
    let attacker = EcKey::generate("attacker");
    keys.put_path("/evil", &attacker.pem);
    keys.put_path("/keys/evil", &attacker.pem);
    for kid in [
        "../evil",
        "..%2fevil",
        "../../evil",
        "a/../../evil",
        "evil?x=1",
        "evil#frag",
        "/evil",
        "@127.0.0.1/evil",
        "evil.pem",
        "evil\\..\\x",
        " evil",
        "",
        &"a".repeat(129),
    ] {
        let header = alb_header(kid, SIGNER);
        let token = jws(&attacker, &header, &alb_payload("alice"), true);
        assert_refused(&binding, &identity, &token).await;
    }
    // A kid that is not a string.
    let mut header = alb_header("x", SIGNER);
    header["kid"] = json!(["../evil"]);
    assert_refused(
        &binding,
        &identity,
        &jws(&attacker, &header, &alb_payload("alice"), true),
    )
    .await;
    assert_eq!(keys.hits(), 0, "no key URL was requested for an unsafe kid");
}

#[tokio::test]
async fn alb_wrong_issuer_and_bad_subject_rejected() {
    let key = EcKey::generate("kid-claims");
    let (binding, _keys, identity) = alb_setup(&key).await;
    let mut payload = alb_payload("alice");
    payload["iss"] = json!("https://evil.example.com");
    assert_refused(
        &binding,
        &identity,
        &jws(&key, &alb_header(&key.kid, SIGNER), &payload, true),
    )
    .await;
    for sub in [
        json!(""),
        json!("a".repeat(129)),
        json!(42),
        Value::Null,
        json!("a\nb"),
        // Log forging and disguise: a fake log line, an ANSI colour sequence, a Unicode
        // line separator, a right-to-left override.
        json!("alice\n2026-01-01T00:00:00Z  INFO session binding completed user=admin"),
        json!("\u{1b}[31malice\u{1b}[0m"),
        json!("alice\u{2028}admin"),
        json!("\u{202e}nimda"),
    ] {
        let mut payload = alb_payload("alice");
        payload["sub"] = sub;
        assert_refused(
            &binding,
            &identity,
            &jws(&key, &alb_header(&key.kid, SIGNER), &payload, true),
        )
        .await;
    }
    let mut payload = alb_payload("alice");
    payload.as_object_mut().unwrap().remove("sub");
    assert_refused(
        &binding,
        &identity,
        &jws(&key, &alb_header(&key.kid, SIGNER), &payload, true),
    )
    .await;
    // The longest accepted sub.
    let long = "s".repeat(128);
    let (status, _, _) = binding
        .bind_with(&[(HEADER, &alb_token(&key, &long, true))])
        .await;
    assert_eq!(status, 200);
    assert_eq!(identity.calls(), 1);
}

#[tokio::test]
async fn alb_malformed_tokens_rejected() {
    let key = EcKey::generate("kid-shape");
    let (binding, keys, identity) = alb_setup(&key).await;
    let good = alb_token(&key, "alice", true);
    let parts: Vec<&str> = good.split('.').collect();
    for bad in [
        "".to_string(),
        "garbage".to_string(),
        format!("{}.{}", parts[0], parts[1]),
        format!("{good}.extra"),
        format!("{}..{}", parts[0], parts[2]),
        format!(
            "{}.{}.{}===",
            parts[0],
            parts[1],
            parts[2].trim_end_matches('=')
        ),
        format!("{}.{}.{}", parts[0], parts[1], "c2hvcnQ"),
        good.replace('-', "+").replace('_', "/") + "+/",
        "a".repeat(20_000),
    ] {
        let (status, _, _) = binding.bind_with(&[(HEADER, &bad)]).await;
        assert_eq!(status, 401, "{bad:.80}");
    }
    // Two headers: ambiguous, refused.
    let (status, _, _) = binding.bind_with(&[(HEADER, &good), (HEADER, &good)]).await;
    assert_eq!(status, 401);
    assert_eq!(identity.calls(), 0);
    assert!(keys.hits() <= 1);
}

#[tokio::test]
async fn alb_invalid_header_does_not_fall_back_to_oidc() {
    let peers = BothSources::start("kid-alb", "idp-key").await;
    let binding = Binding::start(peers.config).await;
    let id_token = id_token(&peers.idp_key, &peers.idp.issuer, AUDIENCE, "alice");
    let mut payload = alb_payload("alice");
    payload["exp"] = json!(NOW - 3600);
    let expired = jws(
        &peers.alb_key,
        &alb_header(&peers.alb_key.kid, SIGNER),
        &payload,
        true,
    );
    let bearer = format!("Bearer {id_token}");
    let cookie = format!("id_token={id_token}");
    let (status, _, _) = binding
        .bind_with(&[
            (HEADER, &expired),
            ("authorization", &bearer),
            ("cookie", &cookie),
        ])
        .await;
    assert_eq!(status, 401);
    assert_eq!(peers.identity.calls(), 0);
    assert_eq!(peers.idp.hits(), 0, "the OIDC source was not consulted");
    // Without the ALB header, the OIDC source is used.
    let (status, _, _) = binding.bind_with(&[("authorization", &bearer)]).await;
    assert_eq!(status, 200);
    assert_eq!(peers.identity.calls(), 1);
}

/// A kid of the shape an ALB issues (a UUID), distinct per `n`.
fn uuid_kid(n: usize) -> String {
    format!("{n:08x}-5f1d-4c2a-9e8b-7d6f5a4c3b2a")
}

/// Forged tokens (the attacker's key) naming `count` distinct kids, `repeat` times each;
/// every one is refused and none reaches the identity service.
async fn flood(
    binding: &Binding,
    identity: &IdentityStandIn,
    from: usize,
    count: usize,
    repeat: usize,
) {
    let attacker = EcKey::generate("attacker");
    let calls_before = identity.calls();
    for n in from..from + count {
        let header = alb_header(&uuid_kid(n), SIGNER);
        let token = jws(&attacker, &header, &alb_payload("mallory"), true);
        for _ in 0..repeat {
            let (status, _, _) = binding.bind_with(&[(HEADER, &token)]).await;
            assert!(status == 401 || status == 502, "forged kid {n}: {status}");
        }
    }
    assert_eq!(
        identity.calls(),
        calls_before,
        "no forged token reached the identity service"
    );
}

/// Attempts (at most `tries`) until the genuine token is accepted; how many it took.
async fn accepted_within(binding: &Binding, token: &str, tries: usize) -> usize {
    for attempt in 1..=tries {
        let (status, _, body) = binding.bind_with(&[(HEADER, token)]).await;
        if status == 200 {
            assert_eq!(body, Page::Success.html());
            return attempt;
        }
        assert_eq!(status, 502, "attempt {attempt}: {body}");
    }
    panic!("the genuine token was not accepted within {tries} attempts");
}

#[tokio::test]
async fn alb_forged_kid_flood_does_not_lock_out_a_rotated_key() {
    let old = EcKey::generate(&uuid_kid(1_000_000));
    let (binding, keys, identity) = alb_setup(&old).await;
    // 120 forged tokens, each naming a fresh kid of the ALB's shape (only the signer ARN
    // is needed to get that far).
    flood(&binding, &identity, 0, 120, 1).await;
    let hits_after_flood = keys.hits();
    assert!(
        hits_after_flood <= latchkey_authn::alb::verify::MAX_KEY_FETCHES_PER_MINUTE,
        "the flood is bounded: {hits_after_flood} fetches"
    );
    // The load balancer rotates its key; the next genuine token names the new kid.
    let rotated = EcKey::generate(&uuid_kid(2_000_000));
    keys.publish(&rotated);
    let token = alb_token(&rotated, "alice", true);
    let attempts = accepted_within(&binding, &token, 2).await;
    assert_completed_for(&identity, "alice");
    assert!(attempts <= 2);
    assert_eq!(
        keys.hits(),
        hits_after_flood + 1,
        "one fetch for the real key"
    );
    // The forged kids the endpoint refused stay refused without a fetch, also after the
    // short back-off of other failures.
    binding.clock.advance_ms(10_000);
    flood(&binding, &identity, 0, 10, 3).await;
    assert_eq!(keys.hits(), hits_after_flood + 1);
}

#[tokio::test]
async fn alb_reserved_fetch_goes_to_the_most_asked_for_kid() {
    let old = EcKey::generate(&uuid_kid(1_000_000));
    let (binding, keys, identity) = alb_setup(&old).await;
    // A smarter flood: every forged kid asked for twice, so some win the reserve.
    flood(&binding, &identity, 0, 60, 2).await;
    let rotated = EcKey::generate(&uuid_kid(2_000_000));
    keys.publish(&rotated);
    let token = alb_token(&rotated, "alice", true);
    // The reserve was just spent by a forged kid; genuine requests (retries, other users)
    // keep counting meanwhile.
    for _ in 0..3 {
        let (status, _, _) = binding.bind_with(&[(HEADER, &token)]).await;
        assert_eq!(status, 502);
    }
    binding
        .clock
        .advance_ms(latchkey_authn::alb::verify::RESERVED_KEY_FETCH_INTERVAL.as_millis() as i64);
    // Fresh forged kids asked for twice do not outbid the real kid for the next reserve.
    flood(&binding, &identity, 1_000, 20, 2).await;
    assert_eq!(accepted_within(&binding, &token, 1).await, 1);
    assert_completed_for(&identity, "alice");
}
