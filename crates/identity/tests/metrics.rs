//! `/metrics` and `/ready` of the identity service, through `app()` without a socket: a run
//! whose requests carry secrets, user ids, ARNs and session ids (in paths, headers and
//! bodies) renders series labelled by operation and status only, and none of those values
//! appears anywhere in the rendered text.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt;

mod common;

const SECRET: &str = "s3cr3t-token-value-4f1c";
const USER: &str = "user-id-alice-7d2e";
const SESSION: &str = "urn:ietf:params:oauth:request_uri:session-9b8a";
const ARN: &str = "arn:aws:bedrock-agentcore:us-east-1:000000000000:workload-identity-directory/default/workload-identity/wl-metrics";

async fn send(router: &axum::Router, request: Request<Body>) -> (StatusCode, String) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 22)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn metrics_hold_operations_and_statuses_but_no_secret_user_session_or_path() {
    latchkey_telemetry::install();
    let svc = common::service("metrics", &[("LKADMINMETRICS", "admin")]).await;
    let admin = &svc.credentials[0];
    let encoded_arn = ARN.replace(':', "%3A").replace('/', "%2F");
    let requests = [
        // Authenticated control-plane calls.
        Request::post("/identities/CreateWorkloadIdentity")
            .header("authorization", admin)
            .header("content-type", "application/json")
            .body(Body::from(r#"{"name":"wl-metrics"}"#))
            .unwrap(),
        Request::get(format!("/tags/{encoded_arn}"))
            .header("authorization", admin)
            .body(Body::empty())
            .unwrap(),
        // A data-plane call with a made-up secret as its credential and a user id in it.
        Request::post("/identities/GetWorkloadAccessTokenForUserId")
            .header("authorization", format!("Bearer LKNOSUCH:{SECRET}"))
            .header("content-type", "application/json")
            .body(Body::from(format!(
                r#"{{"workloadName":"wl-metrics","userId":"{USER}"}}"#
            )))
            .unwrap(),
        Request::post("/identities/oauth2/token")
            .header("authorization", admin)
            .header("content-type", "application/json")
            .body(Body::from(format!(
                r#"{{"workloadIdentityToken":"{SECRET}","resourceCredentialProviderName":"gh","scopes":["a"],"oauth2Flow":"USER_FEDERATION","sessionUri":"{SESSION}"}}"#
            )))
            .unwrap(),
        // Browser endpoints: ids and state in the path and the query.
        Request::get(format!(
            "/identities/oauth2/callback/{SESSION}?code={SECRET}&state={SECRET}"
        ))
        .body(Body::empty())
        .unwrap(),
        Request::get(format!("/identities/oauth2/authorize?request_uri={SESSION}"))
            .body(Body::empty())
            .unwrap(),
        // No route: the raw path must not become a label.
        Request::get(format!("/{USER}/{SECRET}")).body(Body::empty()).unwrap(),
    ];
    for request in requests {
        send(&svc.router, request).await;
    }

    let (status, ready) = send(
        &svc.router,
        Request::get("/ready").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["checks"]["database"], "ok");
    assert_eq!(ready["checks"]["keys"], "ok");

    let (status, text) = send(
        &svc.router,
        Request::get("/metrics").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    for expected in [
        r#"latchkey_http_requests_total{service="identity",operation="CreateWorkloadIdentity",status="201"}"#,
        r#"operation="ListTagsForResource""#,
        r#"operation="GetWorkloadAccessTokenForUserId",status="401""#,
        r#"operation="/identities/oauth2/callback/{id}""#,
        r#"operation="unmatched",status="404""#,
        r#"operation="/ready",status="200""#,
        "latchkey_http_request_duration_seconds_bucket{",
    ] {
        assert!(text.contains(expected), "{expected} missing in:\n{text}");
    }
    for forbidden in [
        SECRET,
        USER,
        SESSION,
        "session-9b8a",
        ARN,
        "wl-metrics",
        "arn%3A",
        "LKNOSUCH",
        "LKADMINMETRICS",
        "secret-of-",
    ] {
        assert!(
            !text.contains(forbidden),
            "{forbidden} appears in the metrics:\n{text}"
        );
    }
}

#[tokio::test]
async fn ready_is_503_with_a_reason_when_the_database_is_gone() {
    let svc = common::service("metrics-ready", &[]).await;
    svc.state.store.close().await;
    let (status, body) = send(
        &svc.router,
        Request::get("/ready").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["status"], "not ready");
    assert_eq!(body["reason"], "database: database unavailable");
    assert_eq!(body["checks"]["keys"], "ok");
}
