//! The ALB header format, both sides: what `AlbSigner` (the gateway) signs,
//! `AlbVerifier` (the binding service, the agent) accepts, through a real key endpoint on
//! loopback and the guarded outbound client; and what a resolver makes of it.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use latchkey_authn::AlbConfig;
use latchkey_authn::alb::{AlbError, AlbSigner, AlbVerifier};
use latchkey_authn::outbound::{OutboundClient, OutboundPolicy};
use latchkey_authn::user::{ALB_HEADER, Cookies, SignedInUser, Source, UserResolver, UserSources};
use latchkey_core::clock::ManualClock;
use serde_json::{Map, json};

const SIGNER: &str = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/latchkey/50dc6c495c0c9188";
const ISSUER: &str = "https://login.example.com";
const NOW: i64 = 1_750_000_000;

/// Serve `signer`'s public key at `/keys/{kid}`, as the ALB key endpoint does.
async fn key_endpoint(signer: &AlbSigner) -> String {
    let kid = signer.kid().to_string();
    let pem = signer.public_pem().to_string();
    let router = Router::new().route(
        "/keys/{kid}",
        get(move |Path(asked): Path<String>| {
            let (kid, pem) = (kid.clone(), pem.clone());
            async move {
                if asked == kid {
                    pem.into_response()
                } else {
                    StatusCode::NOT_FOUND.into_response()
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{address}/keys/{{kid}}")
}

fn config(template: String) -> AlbConfig {
    AlbConfig {
        key_url_template: template,
        issuer: Some(ISSUER.into()),
        ..AlbConfig::new(SIGNER)
    }
}

fn client() -> OutboundClient {
    OutboundClient::new(OutboundPolicy {
        allow_private_addresses: true,
        ..OutboundPolicy::default()
    })
    .unwrap()
}

fn claims(sub: &str) -> Map<String, serde_json::Value> {
    let mut claims = Map::new();
    claims.insert("sub".into(), json!(sub));
    claims.insert("email".into(), json!(format!("{sub}@example.com")));
    claims
}

#[tokio::test]
async fn what_the_gateway_signs_the_services_accept() {
    let signer = AlbSigner::generate().unwrap();
    let template = key_endpoint(&signer).await;
    let clock = Arc::new(ManualClock::new(NOW * 1000));
    let verifier = AlbVerifier::new(config(template.clone()), client(), clock.clone());

    let token = signer
        .sign(ISSUER, "app", SIGNER, NOW + 60, claims("alice"))
        .unwrap();
    assert_eq!(verifier.verify(&token).await.unwrap().subject, "alice");

    // Another load balancer's token, an expired one, another issuer's: refused.
    let other_lb = SIGNER.replace("latchkey", "attacker");
    let other = signer
        .sign(ISSUER, "app", &other_lb, NOW + 60, claims("alice"))
        .unwrap();
    assert_eq!(verifier.verify(&other).await, Err(AlbError::WrongSigner));
    let expired = signer
        .sign(ISSUER, "app", SIGNER, NOW - 3600, claims("alice"))
        .unwrap();
    assert_eq!(verifier.verify(&expired).await, Err(AlbError::Expired));
    let foreign = signer
        .sign(
            "https://evil.example.com",
            "app",
            SIGNER,
            NOW + 60,
            claims("alice"),
        )
        .unwrap();
    assert_eq!(verifier.verify(&foreign).await, Err(AlbError::WrongIssuer));

    // A key the endpoint does not publish (its kid is unknown there): refused.
    let forger = AlbSigner::generate().unwrap();
    let forged = forger
        .sign(ISSUER, "app", SIGNER, NOW + 60, claims("alice"))
        .unwrap();
    assert_eq!(verifier.verify(&forged).await, Err(AlbError::UnknownKey));
    // Another payload under the genuine header and signature: the signature breaks.
    let bob = signer
        .sign(ISSUER, "app", SIGNER, NOW + 60, claims("bob"))
        .unwrap();
    let mut parts: Vec<&str> = token.split('.').collect();
    parts[1] = bob.split('.').nth(1).unwrap();
    assert_eq!(
        verifier.verify(&parts.join(".")).await,
        Err(AlbError::BadSignature)
    );

    // Through the resolver, as the binding service and the agent see it.
    let sources = UserSources {
        alb: Some(config(template)),
        oidc: None,
    };
    let resolver = UserResolver::new(&sources, Cookies::Ignored, client(), clock);
    let mut headers = HeaderMap::new();
    headers.insert(ALB_HEADER, token.parse().unwrap());
    let (source, user) = resolver.resolve(&headers).await.unwrap();
    assert_eq!(source, Source::Alb);
    assert!(matches!(user, SignedInUser::UserId(ref sub) if sub == "alice"));
}

#[test]
fn a_signing_key_file_that_is_not_a_key_is_refused_by_name() {
    let dir = std::env::temp_dir().join(format!("latchkey-authn-alb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("alb-key.pem");
    // No file: refused by name (the gateway creates one first).
    assert!(
        AlbSigner::load(&path)
            .unwrap_err()
            .to_string()
            .contains("alb-key.pem")
    );
    // A generated PEM loads, with the same kid every time.
    std::fs::write(&path, AlbSigner::generate_pkcs8_pem().unwrap()).unwrap();
    let a = AlbSigner::load(&path).unwrap();
    let b = AlbSigner::load(&path).unwrap();
    assert_eq!(a.kid(), b.kid());
    std::fs::write(&path, "not a key\n").unwrap();
    let error = AlbSigner::load(&path).unwrap_err().to_string();
    assert!(error.contains("alb-key.pem"), "{error}");
    let _ = std::fs::remove_dir_all(&dir);
}
