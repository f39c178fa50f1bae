//! Latchkey's metrics, shared by every service: one Prometheus recorder per process
//! ([`install`]), rendered by the service's own `GET /metrics` route ([`metrics`]; no
//! listener of the exporter's own), the middleware that counts and times every HTTP
//! request by operation ([`instrument`]), and the answer of `GET /ready` ([`ready`]).
//!
//! Every metric is declared here, once, with a function per event whose labels are typed
//! (enums, or names the code or the configuration chose): no label ever holds a path, a
//! user id, a token, a session id or anything else a client sent. Every series carries
//! `service` (`identity`, `binding`, `agent`, `gateway`), so the four services of
//! `latchkey dev`, which share one process and one recorder, stay apart.

pub mod trace;

use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Requests answered, by `service`, `operation` and `status`.
pub const HTTP_REQUESTS: &str = "latchkey_http_requests_total";
/// Time to the response head, by `service` and `operation` (histogram).
pub const HTTP_REQUEST_DURATION: &str = "latchkey_http_request_duration_seconds";
/// Token vault reads, by `result` (`hit`, `miss`, `refreshed`).
pub const VAULT_LOOKUPS: &str = "latchkey_vault_lookups_total";
/// Refreshes of a vaulted token at its provider, by `result` (`ok`, `refused`, `failed`).
pub const VAULT_REFRESHES: &str = "latchkey_vault_refreshes_total";
/// Authorization sessions (3-legged OAuth), by `outcome`.
pub const AUTHORIZATION_SESSIONS: &str = "latchkey_authorization_sessions_total";
/// Gateway logins, by `outcome`.
pub const GATEWAY_LOGINS: &str = "latchkey_gateway_logins_total";
/// Gateway sessions held by this process (gauge).
pub const GATEWAY_SESSIONS: &str = "latchkey_gateway_sessions";
/// Requests the gateway could not forward, by `kind` (`request`, `websocket`).
pub const GATEWAY_UPSTREAM_ERRORS: &str = "latchkey_gateway_upstream_errors_total";
/// Agent turns, by `outcome` (how the turn ended).
pub const AGENT_TURNS: &str = "latchkey_agent_turns_total";
/// Agent tool calls, by `tool` (a configured tool's name, else `unknown`) and `outcome`.
pub const AGENT_TOOL_CALLS: &str = "latchkey_agent_tool_calls_total";
/// Model calls, by `outcome` (`ok`, `error`).
pub const MODEL_REQUESTS: &str = "latchkey_model_requests_total";
/// Time of one streamed model call, to its end (histogram).
pub const MODEL_REQUEST_DURATION: &str = "latchkey_model_request_duration_seconds";
/// Tokens the model provider reported, by `kind` (`input`, `output`).
pub const MODEL_TOKENS: &str = "latchkey_model_tokens_total";

/// Every metric name (README, tests).
pub const NAMES: &[&str] = &[
    HTTP_REQUESTS,
    HTTP_REQUEST_DURATION,
    VAULT_LOOKUPS,
    VAULT_REFRESHES,
    AUTHORIZATION_SESSIONS,
    GATEWAY_LOGINS,
    GATEWAY_SESSIONS,
    GATEWAY_UPSTREAM_ERRORS,
    AGENT_TURNS,
    AGENT_TOOL_CALLS,
    MODEL_REQUESTS,
    MODEL_REQUEST_DURATION,
    MODEL_TOKENS,
];

/// Latency buckets, in seconds (1 ms to 2 min).
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// How often recorded histogram samples are folded into their buckets between scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// A Latchkey service, the `service` label of its series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Identity,
    Binding,
    Agent,
    Gateway,
}

impl Service {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Binding => "binding",
            Self::Agent => "agent",
            Self::Gateway => "gateway",
        }
    }
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Install the process's recorder (once; later calls return the same handle). Until it is
/// installed, recording is a no-op. A thread folds histogram samples every few seconds so
/// memory stays bounded without scrapes.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
            .map(PrometheusBuilder::build_recorder)
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        // Another recorder (a test's) may be installed already: ours then renders nothing.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        let upkeep = handle.clone();
        let _ = std::thread::Builder::new()
            .name("latchkey-metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_INTERVAL);
                    upkeep.run_upkeep();
                }
            });
        handle
    })
}

fn describe() {
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by operation and status."
    );
    describe_histogram!(
        HTTP_REQUEST_DURATION,
        Unit::Seconds,
        "Time from request to response head, by operation."
    );
    describe_counter!(
        VAULT_LOOKUPS,
        "Token vault reads: hit, miss (consent needed), refreshed."
    );
    describe_counter!(
        VAULT_REFRESHES,
        "Refreshes of vaulted tokens at their provider: ok, refused (consent needed again), failed."
    );
    describe_counter!(
        AUTHORIZATION_SESSIONS,
        "Authorization sessions (3-legged OAuth) by outcome."
    );
    describe_counter!(GATEWAY_LOGINS, "Gateway logins by outcome.");
    describe_gauge!(GATEWAY_SESSIONS, "Gateway sessions held by this process.");
    describe_counter!(
        GATEWAY_UPSTREAM_ERRORS,
        "Requests the gateway could not forward to their upstream."
    );
    describe_counter!(AGENT_TURNS, "Agent turns by how they ended.");
    describe_counter!(
        AGENT_TOOL_CALLS,
        "Agent tool calls by configured tool and outcome."
    );
    describe_counter!(MODEL_REQUESTS, "Model calls by provider and outcome.");
    describe_histogram!(
        MODEL_REQUEST_DURATION,
        Unit::Seconds,
        "Time of one streamed model call, to its end."
    );
    describe_counter!(
        MODEL_TOKENS,
        "Tokens reported by the model provider, input and output."
    );
}

/// The process's metrics in the Prometheus text format.
pub fn render() -> String {
    let handle = install();
    handle.run_upkeep();
    handle.render()
}

/// `GET /metrics`: [`render`] as `text/plain; version=0.0.4`.
pub async fn metrics() -> Response {
    let mut response = render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// Names an operation from its method and matched route (a route template, never a raw
/// path); `None` uses the template itself.
pub type OperationName = fn(&Method, &str) -> Option<&'static str>;

/// Count and time every request of `router` as [`HTTP_REQUESTS`] and
/// [`HTTP_REQUEST_DURATION`]. The operation is `name(method, route template)`, else the
/// route template; a request no route matched is `unmatched`.
pub fn instrument<S>(
    router: axum::Router<S>,
    service: Service,
    name: OperationName,
) -> axum::Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router.layer(axum::middleware::from_fn(
        move |request: Request, next: Next| track(service, name, request, next),
    ))
}

async fn track(service: Service, name: OperationName, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let operation: String = match request.extensions().get::<MatchedPath>() {
        Some(path) => match name(request.method(), path.as_str()) {
            Some(op) => op.to_string(),
            None => path.as_str().to_string(),
        },
        None => "unmatched".to_string(),
    };
    let traced = trace::incoming(service, &operation, request.method(), request.headers());
    let response = trace::within(traced.clone(), next.run(request)).await;
    if let Some(cx) = &traced {
        trace::finish(cx, response.status());
    }
    http_request(service, operation, response.status(), started.elapsed());
    response
}

/// One request answered (for servers that do not use [`instrument`], like the gateway's
/// own data path). `operation` must be a name the code chose, never client input.
pub fn http_request(service: Service, operation: String, status: StatusCode, elapsed: Duration) {
    let service = service.as_str();
    counter!(HTTP_REQUESTS, "service" => service, "operation" => operation.clone(), "status" => status.as_str().to_string()).increment(1);
    histogram!(HTTP_REQUEST_DURATION, "service" => service, "operation" => operation)
        .record(elapsed.as_secs_f64());
}

/// The result of one token vault read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VaultLookup {
    /// A valid token, from the vault.
    Hit,
    /// No usable grant: the user must consent.
    Miss,
    /// The token had expired and was refreshed (here or by another replica).
    Refreshed,
}

pub fn vault_lookup(result: VaultLookup) {
    let result = match result {
        VaultLookup::Hit => "hit",
        VaultLookup::Miss => "miss",
        VaultLookup::Refreshed => "refreshed",
    };
    counter!(VAULT_LOOKUPS, "service" => "identity", "result" => result).increment(1);
}

/// How a refresh at the provider ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VaultRefresh {
    Ok,
    /// `invalid_grant`: the user must consent again.
    Refused,
    /// Any other failure (network, provider error, storage).
    Failed,
}

pub fn vault_refresh(result: VaultRefresh) {
    let result = match result {
        VaultRefresh::Ok => "ok",
        VaultRefresh::Refused => "refused",
        VaultRefresh::Failed => "failed",
    };
    counter!(VAULT_REFRESHES, "service" => "identity", "result" => result).increment(1);
}

/// A step or an end of an authorization session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionOutcome {
    /// A session was started (an authorization URL handed out).
    Created,
    /// The provider sent the user back with a code.
    CallbackReceived,
    /// The provider sent the user back with an error.
    ProviderError,
    /// A callback refused (expired, replayed or unknown state): the session fails.
    CallbackRefused,
    /// Completed: the grant is stored.
    Completed,
    /// Expired before completion.
    Expired,
    /// Another user tried to complete it (cancelled when it was still waiting).
    UserMismatch,
    /// A completion of a session already used, failed or cancelled.
    AlreadyUsed,
    /// The code exchange failed.
    ExchangeFailed,
}

pub fn authorization_session(outcome: SessionOutcome) {
    let outcome = match outcome {
        SessionOutcome::Created => "created",
        SessionOutcome::CallbackReceived => "callback_received",
        SessionOutcome::ProviderError => "provider_error",
        SessionOutcome::CallbackRefused => "callback_refused",
        SessionOutcome::Completed => "completed",
        SessionOutcome::Expired => "expired",
        SessionOutcome::UserMismatch => "user_mismatch",
        SessionOutcome::AlreadyUsed => "already_used",
        SessionOutcome::ExchangeFailed => "exchange_failed",
    };
    counter!(AUTHORIZATION_SESSIONS, "service" => "identity", "outcome" => outcome).increment(1);
}

/// A gateway login step or end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginOutcome {
    /// A browser was sent to the identity provider.
    Started,
    /// Signed in: a session was created.
    Completed,
    /// An invalid, expired, replayed or foreign callback.
    Invalid,
    /// The provider did not sign the user in, or named them unusably.
    Refused,
    /// The code exchange or the ID token failed.
    Failed,
    /// The gateway could not start or finish a login (randomness, discovery).
    Unavailable,
}

pub fn gateway_login(outcome: LoginOutcome) {
    let outcome = match outcome {
        LoginOutcome::Started => "started",
        LoginOutcome::Completed => "completed",
        LoginOutcome::Invalid => "invalid",
        LoginOutcome::Refused => "refused",
        LoginOutcome::Failed => "failed",
        LoginOutcome::Unavailable => "unavailable",
    };
    counter!(GATEWAY_LOGINS, "service" => "gateway", "outcome" => outcome).increment(1);
}

/// The number of sessions the gateway holds now.
pub fn gateway_sessions(count: usize) {
    gauge!(GATEWAY_SESSIONS, "service" => "gateway").set(count as f64);
}

/// What the gateway could not forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    Request,
    WebSocket,
}

pub fn gateway_upstream_error(kind: UpstreamError) {
    let kind = match kind {
        UpstreamError::Request => "request",
        UpstreamError::WebSocket => "websocket",
    };
    counter!(GATEWAY_UPSTREAM_ERRORS, "service" => "gateway", "kind" => kind).increment(1);
}

/// An agent turn ended; `outcome` is one of the agent's own stop reasons.
pub fn agent_turn(outcome: &'static str) {
    counter!(AGENT_TURNS, "service" => "agent", "outcome" => outcome).increment(1);
}

/// An agent tool call ended. `tool` is a configured tool's name (`unknown` for a name
/// the model made up: never the model's words), `outcome` one of the agent's own.
pub fn agent_tool_call(tool: &str, outcome: &'static str) {
    counter!(AGENT_TOOL_CALLS, "service" => "agent", "tool" => tool.to_string(), "outcome" => outcome)
        .increment(1);
}

/// One model call ended after `elapsed` (the agent has one model: no label names it).
pub fn model_request(ok: bool, elapsed: Duration) {
    let outcome = if ok { "ok" } else { "error" };
    counter!(MODEL_REQUESTS, "service" => "agent", "outcome" => outcome).increment(1);
    histogram!(MODEL_REQUEST_DURATION, "service" => "agent").record(elapsed.as_secs_f64());
}

/// Tokens a model call used, as its provider reported them.
pub fn model_tokens(input: u64, output: u64) {
    counter!(MODEL_TOKENS, "service" => "agent", "kind" => "input").increment(input);
    counter!(MODEL_TOKENS, "service" => "agent", "kind" => "output").increment(output);
}

/// One readiness check: its name and, when not ready, a reason safe to show anyone.
pub type Check = (&'static str, Result<(), &'static str>);

/// Run `check` with a time limit: its answer, or `timed out`.
pub async fn within<F>(limit: Duration, check: F) -> Result<(), &'static str>
where
    F: Future<Output = Result<(), &'static str>>,
{
    tokio::time::timeout(limit, check)
        .await
        .unwrap_or(Err("timed out"))
}

/// `GET /ready`: 200 `{"status":"ready"}` when every check passed, else 503 with
/// `{"status":"not ready","reason":"<check>: <reason>", "checks": {...}}`.
pub fn ready(checks: &[Check]) -> Response {
    let mut detail = serde_json::Map::new();
    let mut failed = None;
    for (name, result) in checks {
        let value = match result {
            Ok(()) => "ok".to_string(),
            Err(why) => {
                failed.get_or_insert_with(|| format!("{name}: {why}"));
                (*why).to_string()
            }
        };
        detail.insert((*name).to_string(), value.into());
    }
    let (status, body) = match failed {
        None => (
            StatusCode::OK,
            serde_json::json!({"status": "ready", "checks": detail}),
        ),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "not ready", "reason": reason, "checks": detail}),
        ),
    };
    let mut response = (status, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn series_carry_the_service_and_bounded_labels() {
        install();
        http_request(
            Service::Binding,
            "/ping".into(),
            StatusCode::OK,
            Duration::from_millis(3),
        );
        vault_lookup(VaultLookup::Hit);
        agent_tool_call("github_user", "ok");
        let text = render();
        assert!(
            text.contains(r#"latchkey_http_requests_total{service="binding",operation="/ping",status="200"} 1"#),
            "{text}"
        );
        assert!(text.contains("latchkey_http_request_duration_seconds_bucket{service=\"binding\",operation=\"/ping\",le=\"0.005\"} 1"), "{text}");
        assert!(text.contains(r#"latchkey_vault_lookups_total{service="identity",result="hit"}"#));
        assert!(text.contains("# TYPE latchkey_http_request_duration_seconds histogram"));
    }

    #[tokio::test]
    async fn readiness_names_the_first_failing_check() {
        let slow = within(Duration::from_millis(10), async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(())
        })
        .await;
        assert_eq!(slow, Err("timed out"));
        let response = ready(&[("database", Ok(())), ("keys", slow)]);
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let ok = ready(&[("database", Ok(()))]);
        assert_eq!(ok.status(), StatusCode::OK);
    }
}
