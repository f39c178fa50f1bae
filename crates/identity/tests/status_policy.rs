//! The status-code policy, checked on every route through `app()` without a socket:
//! no credential → 401; a workload or binding credential on the control plane → 403;
//! a binding credential on data-plane token operations → 403; a workload credential for
//! another workload → 403; an unknown path → JSON 404. Every error carries
//! `x-amzn-ErrorType` and a JSON body with `__type` and `message`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use latchkey_identity::AppState;
use tower::ServiceExt;

mod common;

const CONTROL_PLANE: &[(&str, &str)] = &[
    ("POST", "/identities/CreateWorkloadIdentity"),
    ("POST", "/identities/GetWorkloadIdentity"),
    ("POST", "/identities/UpdateWorkloadIdentity"),
    ("POST", "/identities/DeleteWorkloadIdentity"),
    ("POST", "/identities/ListWorkloadIdentities"),
    ("POST", "/identities/CreateOauth2CredentialProvider"),
    ("POST", "/identities/GetOauth2CredentialProvider"),
    ("POST", "/identities/UpdateOauth2CredentialProvider"),
    ("POST", "/identities/DeleteOauth2CredentialProvider"),
    ("POST", "/identities/ListOauth2CredentialProviders"),
    ("POST", "/identities/CreateApiKeyCredentialProvider"),
    ("POST", "/identities/GetApiKeyCredentialProvider"),
    ("POST", "/identities/UpdateApiKeyCredentialProvider"),
    ("POST", "/identities/DeleteApiKeyCredentialProvider"),
    ("POST", "/identities/ListApiKeyCredentialProviders"),
    ("POST", "/identities/get-token-vault"),
    ("POST", "/identities/set-token-vault-cmk"),
    ("POST", "/identities/reset-token-vault-key-material"),
    (
        "POST",
        "/tags/arn%3Aaws%3Abedrock-agentcore%3Aus-east-1%3A000000000000%3Aworkload-identity-directory%2Fdefault%2Fworkload-identity%2Fwl-a",
    ),
    (
        "DELETE",
        "/tags/arn%3Aaws%3Abedrock-agentcore%3Aus-east-1%3A000000000000%3Aworkload-identity-directory%2Fdefault%2Fworkload-identity%2Fwl-a?tagKeys=a",
    ),
    (
        "GET",
        "/tags/arn%3Aaws%3Abedrock-agentcore%3Aus-east-1%3A000000000000%3Aworkload-identity-directory%2Fdefault%2Fworkload-identity%2Fwl-a",
    ),
    ("POST", "/identities/CreateConsentPortal"),
    ("POST", "/identities/ListPaymentCredentialProviders"),
    (
        "PUT",
        "/resourcepolicy/arn%3Aaws%3Abedrock-agentcore%3Aus-east-1%3A000000000000%3Atoken-vault%2Fdefault",
    ),
];

const DATA_PLANE: &[&str] = &[
    "/identities/GetWorkloadAccessToken",
    "/identities/GetWorkloadAccessTokenForJWT",
    "/identities/GetWorkloadAccessTokenForUserId",
    "/identities/oauth2/token",
    "/identities/api-key",
    "/identities/payment/token",
];

struct Fixture {
    router: axum::Router,
    state: AppState,
    workload: String,
    binding: String,
    admin: String,
    _service: common::Service,
}

async fn fixture() -> Fixture {
    let service = common::service(
        "status",
        &[
            ("LKADMIN", "admin"),
            ("LKWORKLOAD", "workload:wl-a"),
            ("LKBINDING", "binding"),
        ],
    )
    .await;
    Fixture {
        router: service.router.clone(),
        state: service.state.clone(),
        admin: service.credentials[0].clone(),
        workload: service.credentials[1].clone(),
        binding: service.credentials[2].clone(),
        _service: service,
    }
}

async fn call(
    router: &axum::Router,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &str,
) -> (StatusCode, String, serde_json::Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let resp = router
        .clone()
        .oneshot(req.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let kind = resp
        .headers()
        .get("x-amzn-ErrorType")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, kind, json)
}

fn assert_error(
    what: &str,
    got: (StatusCode, String, serde_json::Value),
    status: StatusCode,
    kind: &str,
) {
    assert_eq!(got.0, status, "{what}: {:?}", got.2);
    assert_eq!(got.1, kind, "{what}: x-amzn-ErrorType");
    assert_eq!(got.2["__type"], kind, "{what}: __type");
    assert!(
        got.2["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: message"
    );
}

#[tokio::test]
async fn unauthenticated_requests_get_401_everywhere() {
    let f = fixture().await;
    for (method, path) in CONTROL_PLANE
        .iter()
        .copied()
        .chain(DATA_PLANE.iter().map(|p| ("POST", *p)))
        .chain([("POST", "/identities/CompleteResourceTokenAuth")])
    {
        assert_error(
            &format!("{method} {path} without credentials"),
            call(&f.router, method, path, None, "{}").await,
            StatusCode::UNAUTHORIZED,
            "UnauthorizedException",
        );
        assert_error(
            &format!("{method} {path} with a wrong bearer secret"),
            call(&f.router, method, path, Some("Bearer LKADMIN:wrong"), "{}").await,
            StatusCode::UNAUTHORIZED,
            "UnauthorizedException",
        );
        // A garbage body from an anonymous caller is still 401, not a validation message.
        assert_error(
            &format!("{method} {path} anonymous garbage"),
            call(&f.router, method, path, None, "{not json").await,
            StatusCode::UNAUTHORIZED,
            "UnauthorizedException",
        );
    }
}

#[tokio::test]
async fn workload_and_binding_credentials_cannot_use_the_control_plane() {
    let f = fixture().await;
    for (method, path) in CONTROL_PLANE {
        for (who, auth) in [("workload", &f.workload), ("binding", &f.binding)] {
            assert_error(
                &format!("{method} {path} as {who}"),
                call(&f.router, method, path, Some(auth), r#"{"name":"wl-a"}"#).await,
                StatusCode::FORBIDDEN,
                "AccessDeniedException",
            );
        }
    }
}

#[tokio::test]
async fn binding_credentials_cannot_get_tokens_and_workloads_only_their_own() {
    let f = fixture().await;
    for path in DATA_PLANE {
        assert_error(
            &format!("{path} as binding"),
            call(
                &f.router,
                "POST",
                path,
                Some(&f.binding),
                r#"{"workloadName":"wl-a"}"#,
            )
            .await,
            StatusCode::FORBIDDEN,
            "AccessDeniedException",
        );
    }
    let created = call(
        &f.router,
        "POST",
        "/identities/CreateWorkloadIdentity",
        Some(&f.admin),
        r#"{"name":"wl-b"}"#,
    )
    .await;
    assert_eq!(created.0, StatusCode::CREATED);
    assert_error(
        "workload credential for another workload",
        call(
            &f.router,
            "POST",
            "/identities/GetWorkloadAccessToken",
            Some(&f.workload),
            r#"{"workloadName":"wl-b"}"#,
        )
        .await,
        StatusCode::FORBIDDEN,
        "AccessDeniedException",
    );
    // Authorized but absent: 404 (the caller may know about its own workload).
    assert_error(
        "own workload, not created yet",
        call(
            &f.router,
            "POST",
            "/identities/GetWorkloadAccessToken",
            Some(&f.workload),
            r#"{"workloadName":"wl-a"}"#,
        )
        .await,
        StatusCode::NOT_FOUND,
        "ResourceNotFoundException",
    );
}

#[tokio::test]
async fn only_binding_and_admin_credentials_complete_sessions() {
    let f = fixture().await;
    let body = r#"{"userIdentifier":{"userId":"alice"},"sessionUri":"urn:ietf:params:oauth:request_uri:abc"}"#;
    // The role is checked before anything else: even a well-formed request is refused.
    assert_error(
        "CompleteResourceTokenAuth as workload",
        call(
            &f.router,
            "POST",
            "/identities/CompleteResourceTokenAuth",
            Some(&f.workload),
            body,
        )
        .await,
        StatusCode::FORBIDDEN,
        "AccessDeniedException",
    );
    for (who, auth) in [("binding", &f.binding), ("admin", &f.admin)] {
        assert_error(
            &format!("unknown session as {who}"),
            call(
                &f.router,
                "POST",
                "/identities/CompleteResourceTokenAuth",
                Some(auth),
                body,
            )
            .await,
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
        );
    }
}

#[tokio::test]
async fn unknown_paths_and_oversized_bodies_get_json_errors() {
    let f = fixture().await;
    assert_error(
        "unknown path",
        call(
            &f.router,
            "POST",
            "/identities/NoSuchOperation",
            Some(&f.admin),
            "{}",
        )
        .await,
        StatusCode::NOT_FOUND,
        "ResourceNotFoundException",
    );
    let big = format!(r#"{{"name":"{}"}}"#, "a".repeat(1024 * 1024 + 10));
    let (status, kind, body) = call(
        &f.router,
        "POST",
        "/identities/CreateWorkloadIdentity",
        Some(&f.admin),
        &big,
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(kind, "ValidationException");
    assert_eq!(body["__type"], "ValidationException");
    let listed = call(
        &f.router,
        "POST",
        "/identities/ListWorkloadIdentities",
        Some(&f.admin),
        "{}",
    )
    .await;
    assert_eq!(
        listed.2["workloadIdentities"],
        serde_json::json!([]),
        "nothing was created"
    );
}

#[tokio::test]
async fn validation_names_every_bad_field_and_stores_nothing() {
    let f = fixture().await;
    let (status, kind, body) = call(
        &f.router,
        "POST",
        "/identities/CreateWorkloadIdentity",
        Some(&f.admin),
        r#"{"name":"no spaces!","allowedResourceOauth2ReturnUrls":["not a url"],"tags":{"k":"bad\u0000value"}}"#,
    )
    .await;
    assert_eq!(
        (status, kind.as_str()),
        (StatusCode::BAD_REQUEST, "ValidationException")
    );
    assert_eq!(body["reason"], "FieldValidationFailed");
    let names: Vec<&str> = body["fieldList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["name", "allowedResourceOauth2ReturnUrls.0", "tags.k"]
    );
    let listed = call(
        &f.router,
        "POST",
        "/identities/ListWorkloadIdentities",
        Some(&f.admin),
        "{}",
    )
    .await;
    assert_eq!(listed.2["workloadIdentities"], serde_json::json!([]));
}

#[tokio::test]
async fn a_database_outage_is_a_retryable_503_not_a_rejected_token() {
    let f = fixture().await;
    let ok = |r: (StatusCode, String, serde_json::Value)| {
        assert!(r.0.is_success(), "{r:?}");
        r.2
    };
    ok(call(
        &f.router,
        "POST",
        "/identities/CreateWorkloadIdentity",
        Some(&f.admin),
        r#"{"name":"wl-a"}"#,
    )
    .await);
    ok(call(
        &f.router,
        "POST",
        "/identities/CreateApiKeyCredentialProvider",
        Some(&f.admin),
        r#"{"name":"key","apiKey":"k"}"#,
    )
    .await);
    let wat = ok(call(
        &f.router,
        "POST",
        "/identities/GetWorkloadAccessToken",
        Some(&f.workload),
        r#"{"workloadName":"wl-a"}"#,
    )
    .await);
    let body = serde_json::json!({"workloadIdentityToken": wat["workloadAccessToken"], "resourceCredentialProviderName": "key"}).to_string();
    ok(call(
        &f.router,
        "POST",
        "/identities/api-key",
        Some(&f.workload),
        &body,
    )
    .await);
    // The credential stays cached; the workload facts must be read again — from a database
    // that is gone.
    f.state.workloads.invalidate("wl-a");
    f.state.store.close().await;
    assert_error(
        "WAT check during an outage",
        call(
            &f.router,
            "POST",
            "/identities/api-key",
            Some(&f.workload),
            &body,
        )
        .await,
        StatusCode::SERVICE_UNAVAILABLE,
        "InternalServerException",
    );
}
