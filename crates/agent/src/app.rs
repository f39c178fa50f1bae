//! The router, its state, the user resolution and the handlers.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use latchkey_authn::outbound::{OutboundClient, OutboundError};
use latchkey_authn::user::{Cookies, ResolveError, UserResolver};
use latchkey_core::clock::Clock;
use latchkey_llm::ChatModel;
use latchkey_telemetry::{Service, within};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use utoipa::OpenApi;

use crate::config::{AgentConfig, ConfigError};
use crate::conversation::TurnLocks;
use crate::events::{ErrorResponse, InvocationRequest, PingResponse};
use crate::openapi::ApiDoc;
use crate::tools::Tool;
use latchkey_conversations::{ConversationStore, StoreError};

pub use latchkey_authn::user::{ALB_HEADER, MAX_ID_TOKEN_BYTES as MAX_BEARER_BYTES};
/// Events buffered between a turn and a slow client.
const EVENT_BUFFER: usize = 64;

/// Why the agent cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration key {0}")]
    Config(#[from] ConfigError),
    #[error("cannot build the outbound client: {0}")]
    Outbound(#[from] OutboundError),
    #[error("cannot build the identity client: {0}")]
    Identity(#[from] latchkey_client::Error),
    #[error("cannot build the tool HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("conversation storage: {0}")]
    Store(#[from] StoreError),
}

/// Shared state of the agent. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AgentState {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: AgentConfig,
    pub(crate) users: UserResolver,
    pub(crate) identity: latchkey_client::Client,
    pub(crate) model: Arc<dyn ChatModel>,
    pub(crate) tools: Vec<Tool>,
    pub(crate) http: reqwest::Client,
    pub(crate) store: ConversationStore,
    pub(crate) locks: TurnLocks,
}

impl AgentState {
    /// Validate `config` and build verifiers and clients (no network access yet).
    pub fn new(
        config: AgentConfig,
        model: Arc<dyn ChatModel>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StartError> {
        config.validate()?;
        let outbound = OutboundClient::new(config.outbound())?;
        // `POST /invocations` acts for the user: never authenticated by a cookie.
        let users = UserResolver::new(&config.users, Cookies::Ignored, outbound, clock);
        let endpoint = latchkey_client::Url::parse(&config.service.identity_url)
            .map_err(|e| ConfigError::new("identity_url", e.to_string()))?;
        let identity = latchkey_client::Client::builder(endpoint)
            .bearer(config.credential.bearer())
            .timeout(Duration::from_secs(config.keys.identity_timeout_seconds))
            .build()?;
        let mut tools = Tool::github(&config.keys.github_provider);
        for tool in &config.keys.tools {
            tools.push(Tool::http(tool).map_err(|e| {
                ConfigError::new("tools.url", format!("tool {:?}: {e}", tool.name))
            })?);
        }
        let http =
            crate::tools::http_client(Duration::from_secs(config.keys.tool_timeout_seconds))?;
        let store = ConversationStore::new(&config.store)?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                users,
                identity,
                model,
                tools,
                http,
                store,
                locks: TurnLocks::default(),
            }),
        })
    }

    /// The tools the model may call.
    pub fn tools(&self) -> &[Tool] {
        &self.inner.tools
    }
}

/// The agent's routes: `POST /invocations`, `GET /ping`, the chat page (`GET /`,
/// `/chat.js`, `/chat.css`), `GET /openapi.json`, `GET /docs`.
pub fn app(state: AgentState) -> Router {
    let max_body = state.inner.config.keys.max_body_bytes;
    // Swagger UI with its assets compiled into the binary (`vendored`): works offline.
    let docs: Router = utoipa_swagger_ui::SwaggerUi::new("/docs")
        .url("/openapi.json", ApiDoc::openapi())
        .into();
    let router = Router::new()
        .route(
            "/invocations",
            post(invocations).layer(DefaultBodyLimit::max(max_body)),
        )
        .route("/ping", get(ping))
        .route("/ready", get(ready))
        .route("/metrics", get(latchkey_telemetry::metrics))
        .route("/", get(crate::chat::index))
        .route("/chat.js", get(crate::chat::script))
        .route("/chat.css", get(crate::chat::style))
        .with_state(state)
        .merge(docs)
        .fallback(not_found);
    latchkey_telemetry::instrument(router, Service::Agent, |_, _| None).layer(
        axum::middleware::map_response(|mut r: Response| async move {
            let h = r.headers_mut();
            h.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                header::HeaderValue::from_static("nosniff"),
            );
            h.insert(
                header::REFERRER_POLICY,
                header::HeaderValue::from_static("no-referrer"),
            );
            r
        }),
    )
}

/// The OpenAPI document of this service, generated from the code.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

fn json_error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let mut response = (
        status,
        axum::Json(ErrorResponse {
            code: code.to_string(),
            message: message.into(),
        }),
    )
        .into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

async fn not_found() -> Response {
    json_error(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

/// Health check (AgentCore runtime contract).
#[utoipa::path(
    get,
    path = "/ping",
    tag = "agent",
    responses((status = 200, description = "The service is up", body = PingResponse))
)]
pub(crate) async fn ping() -> axum::Json<PingResponse> {
    axum::Json(PingResponse {
        status: "Healthy".into(),
    })
}

/// Readiness (`GET /ready`): within two seconds each, the identity service answers its
/// `/ping` and the conversation store answers. 503 with the reason otherwise.
async fn ready(State(state): State<AgentState>) -> Response {
    let limit = Duration::from_secs(2);
    let identity = within(limit, async {
        state.inner.identity.ping(limit).await.map_err(|e| {
            tracing::warn!(error = %e, "readiness: identity service unavailable");
            "identity service unavailable"
        })
    });
    let store = within(limit, async {
        state.inner.store.check().await.map_err(|e| {
            tracing::warn!(error = %e, "readiness: conversation store unavailable");
            "conversation store unavailable"
        })
    });
    let (identity, store) = tokio::join!(identity, store);
    latchkey_telemetry::ready(&[("identity", identity), ("conversations", store)])
}

/// Who the verified user is, and how to get a workload access token for them: a user id
/// vouched for by the ALB header (`GetWorkloadAccessTokenForUserId`) or a verified OIDC
/// JWT (`GetWorkloadAccessTokenForJWT`).
pub(crate) use latchkey_authn::SignedInUser as Caller;

fn unauthorized(reason: &str) -> Response {
    tracing::info!(outcome = "unauthorized", reason, "invocation refused");
    json_error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "sign in first: a valid x-amzn-oidc-data header or bearer token is required",
    )
}

fn unavailable(error: &dyn std::fmt::Display) -> Response {
    tracing::error!(outcome = "unavailable", %error, "cannot verify the user");
    json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the user's credential cannot be verified right now; try again",
    )
}

/// The signed-in user ([`UserResolver`]: the ALB header first, then a bearer JWT; a present
/// but invalid credential is refused).
async fn resolve_caller(inner: &Inner, headers: &HeaderMap) -> Result<Caller, Response> {
    match inner.users.resolve(headers).await {
        Ok((_, user)) => Ok(user),
        Err(ResolveError::NotSignedIn { reason, .. }) => Err(unauthorized(&reason)),
        Err(ResolveError::Unavailable { reason, .. }) => Err(unavailable(&reason)),
    }
}

/// Send a message; the answer streams as Server-Sent Events.
#[utoipa::path(
    post,
    path = "/invocations",
    tag = "agent",
    request_body(content = InvocationRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "A stream of Server-Sent Events: `event:` is one of text_delta, tool_call, tool_result, authorization_required, usage, error, done (always last); `data:` is the JSON object of that event (see StreamEvent, whose `event` is the SSE event name and `data` the SSE data).",
            content((crate::events::StreamEvent = "text/event-stream"))),
        (status = 400, description = "Invalid body, sessionId or message; nothing was run", body = ErrorResponse),
        (status = 401, description = "No verified user (missing, unsigned, forged or expired x-amzn-oidc-data, or an invalid bearer token); nothing was run", body = ErrorResponse),
        (status = 413, description = "Body too large", body = ErrorResponse),
        (status = 503, description = "The user's credential cannot be verified right now", body = ErrorResponse)
    ),
    security(("alb" = []), ("bearer" = []))
)]
pub(crate) async fn invocations(
    State(state): State<AgentState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let inner = &state.inner;
    let caller = match resolve_caller(inner, &headers).await {
        Ok(c) => c,
        Err(response) => return response,
    };
    let body = match body {
        Ok(b) => b,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "the body must be at most {} bytes",
                    inner.config.keys.max_body_bytes
                ),
            );
        }
        Err(rejection) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                rejection.body_text(),
            );
        }
    };
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return json_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Content-Type must be application/json",
        );
    }
    let request: InvocationRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("the body must be {{\"sessionId\": string, \"message\": string}}: {e}"),
            );
        }
    };
    if let Err(e) = latchkey_conversations::validate_session_id(&request.session_id) {
        return json_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("sessionId: {e}"),
        );
    }
    if request.message.trim().is_empty() {
        return json_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "message must not be empty",
        );
    }
    if request.message.chars().count() > inner.config.keys.max_message_chars {
        return json_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!(
                "message must be at most {} characters",
                inner.config.keys.max_message_chars
            ),
        );
    }

    let (tx, rx) = tokio::sync::mpsc::channel(EVENT_BUFFER);
    let cancel = CancellationToken::new();
    let span = tracing::info_span!(
        "turn",
        workload = %inner.config.keys.workload_name,
        user = %caller.subject(),
        session = %request.session_id,
    );
    let turn = crate::turn::run_turn(
        state.clone(),
        caller,
        request.session_id,
        request.message,
        tx,
        cancel.clone(),
    )
    .instrument(span);
    // The turn's calls (to the identity service) continue the request's trace.
    tokio::spawn(latchkey_telemetry::trace::within(
        latchkey_telemetry::trace::current(),
        turn,
    ));
    // Dropping the stream (the client went away) cancels any consent wait.
    let stream =
        futures_util::stream::unfold((rx, cancel.drop_guard()), |(mut rx, guard)| async move {
            let event: crate::events::StreamEvent = rx.recv().await?;
            let sse = Event::default().event(event.name()).data(event.data());
            Some((Ok::<_, Infallible>(sse), (rx, guard)))
        });
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
        .headers_mut()
        .insert("x-accel-buffering", header::HeaderValue::from_static("no"));
    response
}
