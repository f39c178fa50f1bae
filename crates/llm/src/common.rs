//! What the HTTP providers share: the guarded client, retries, error bodies, the event
//! channel behind a [`ChatStream`], and tool-call argument assembly.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::sse::{SseEvent, SseParser};
use crate::{ChatEvent, ChatStream, LlmConfig, LlmError};

/// Longest provider error message kept, in characters.
const MAX_ERROR_CHARS: usize = 500;
/// Most bytes of an error body read.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
/// First retry delay; doubled on each retry.
const BASE_BACKOFF: Duration = Duration::from_millis(200);
/// Longest wait between two attempts, `retry-after` included.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Shortens `text` to [`MAX_ERROR_CHARS`] and removes the API key if the provider echoed it.
pub(crate) fn sanitize(text: &str, api_key: Option<&SecretString>) -> String {
    let mut text: String = text.trim().chars().take(MAX_ERROR_CHARS).collect();
    if let Some(key) = api_key {
        let key = key.expose_secret();
        if !key.is_empty() {
            text = text.replace(key, "[REDACTED]");
        }
    }
    text
}

/// The base URL without a trailing slash, checked to be http(s).
pub(crate) fn base_url(configured: Option<&str>, default: &str) -> Result<String, LlmError> {
    let base = configured.unwrap_or(default).trim_end_matches('/');
    let parsed = reqwest::Url::parse(base)
        .map_err(|error| LlmError::Config(format!("base_url is not a URL: {error}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(LlmError::Config("base_url must be http or https".into()));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(LlmError::Config(
            "base_url must not carry credentials".into(),
        ));
    }
    Ok(base.to_owned())
}

/// An OpenAI-compatible base URL given without its version: a base whose path is empty
/// gets `/v1` (`http://localhost:11434` → `http://localhost:11434/v1`, as Ollama and vLLM
/// serve it); any base with a path (`…/v1`, `/api/v1`, `/openai/deployments/x`) is taken
/// as given.
pub(crate) fn with_default_version(base: &str) -> String {
    let has_path = reqwest::Url::parse(base).is_ok_and(|u| !matches!(u.path(), "" | "/"));
    if has_path {
        base.to_owned()
    } else {
        format!("{base}/v1")
    }
}

/// The outbound client of the HTTP providers: no redirects, connect timeout.
pub(crate) fn http_client(timeout: Duration) -> Result<reqwest::Client, LlmError> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .build()
        .map_err(|error| LlmError::Config(format!("cannot build the HTTP client: {error}")))
}

/// Describes a reqwest error with its causes, without the URL.
fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Maps a reqwest error to [`LlmError::Timeout`] or [`LlmError::Transport`].
pub(crate) fn transport_error(error: reqwest::Error, api_key: Option<&SecretString>) -> LlmError {
    if error.is_timeout() {
        LlmError::Timeout
    } else {
        LlmError::Transport(sanitize(&describe(error), api_key))
    }
}

/// A provider reached by one JSON `POST` whose answer streams back (Anthropic, OpenAI):
/// its client, its endpoint and the configuration. `Debug` shows the API key redacted.
#[derive(Debug)]
pub(crate) struct HttpProvider {
    client: reqwest::Client,
    endpoint: String,
    api_key_in: ApiKeyIn,
    headers: &'static [(&'static str, &'static str)],
    config: Arc<LlmConfig>,
}

/// Where a provider takes the API key.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ApiKeyIn {
    /// `Authorization: Bearer …`.
    Bearer,
    /// A header of its own.
    Header(&'static str),
}

impl HttpProvider {
    /// The provider at the `endpoint` of the configured base URL (or `default_base_url`);
    /// every request carries `headers`, and the API key (if any) as `api_key_in` says.
    pub(crate) fn new(
        config: &LlmConfig,
        default_base_url: &str,
        endpoint: fn(&str) -> String,
        api_key_in: ApiKeyIn,
        headers: &'static [(&'static str, &'static str)],
    ) -> Result<Self, LlmError> {
        let base = base_url(config.base_url.as_deref(), default_base_url)?;
        Ok(Self {
            client: http_client(config.timeout)?,
            endpoint: endpoint(&base),
            api_key_in,
            headers,
            config: Arc::new(config.clone()),
        })
    }

    /// A request of `body`, with the headers and the API key.
    fn request(&self, body: &serde_json::Value) -> reqwest::RequestBuilder {
        let mut builder = self.client.post(&self.endpoint).json(body);
        for (name, value) in self.headers {
            builder = builder.header(*name, *value);
        }
        match (self.config.api_key.as_ref(), self.api_key_in) {
            (Some(key), ApiKeyIn::Bearer) => builder.bearer_auth(key.expose_secret()),
            (Some(key), ApiKeyIn::Header(name)) => builder.header(name, key.expose_secret()),
            (None, _) => builder,
        }
    }

    pub(crate) fn config(&self) -> &LlmConfig {
        &self.config
    }

    /// Posts `body` with retries, all within the configured timeout; then `read` turns the
    /// answer into events in its own task.
    pub(crate) async fn stream<R, Fut>(
        &self,
        body: &serde_json::Value,
        error_message: ErrorMessage,
        read: R,
    ) -> Result<ChatStream, LlmError>
    where
        R: FnOnce(reqwest::Response, Instant, Emitter, Arc<LlmConfig>) -> Fut,
        Fut: std::future::Future<Output = Result<(), StreamError>> + Send + 'static,
    {
        let deadline = Instant::now() + self.config.timeout;
        let api_key = self.config.api_key.as_ref();
        let response = send_with_retries(
            || self.request(body),
            self.config.max_retries,
            deadline,
            api_key,
            error_message,
        )
        .await?;
        let config = Arc::clone(&self.config);
        Ok(spawn_stream(move |emitter| {
            read(response, deadline, emitter, config)
        }))
    }
}

/// Declares a model type over [`HttpProvider`] in a provider's module: `new` (the
/// `endpoint` of the base URL, by default the module's `DEFAULT_BASE_URL`) and a [`crate::ChatModel`] that posts the
/// module's `request_body`, reads its errors with its `error_message`, and reads the answer
/// as server-sent events into its `State` (a [`SseAnswer`]).
macro_rules! http_model {
    (
        $(#[$doc:meta])* $name:ident,
        endpoint: $endpoint:expr,
        api_key: $api_key_in:expr,
        headers: $headers:expr $(,)?
    ) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name {
            http: $crate::common::HttpProvider,
        }

        impl $name {
            /// A model for `config` (its provider is not checked).
            pub fn new(config: &$crate::LlmConfig) -> Result<Self, $crate::LlmError> {
                let http = $crate::common::HttpProvider::new(
                    config,
                    DEFAULT_BASE_URL,
                    $endpoint,
                    $api_key_in,
                    $headers,
                )?;
                Ok(Self { http })
            }
        }

        impl $crate::ChatModel for $name {
            fn stream(&self, request: $crate::ChatRequest) -> $crate::ChatFuture<'_> {
                Box::pin(async move {
                    let body = request_body(&self.http.config().model, &request);
                    let read = $crate::common::read_sse::<State>;
                    self.http
                        .stream(&body, error_message, read)
                        .await
                })
            }
        }
    };
}
pub(crate) use http_model;

/// Where the events of an answer go, and the API key to keep out of error messages.
pub(crate) struct Sink<'a> {
    pub(crate) emitter: &'a Emitter,
    pub(crate) api_key: Option<&'a SecretString>,
}

/// A provider's reading of one streamed answer, event by event.
pub(crate) trait SseAnswer: Default + Send {
    /// Handles one server-sent event; `true` once the answer is complete.
    async fn handle(&mut self, event: SseEvent, sink: &Sink<'_>) -> Result<bool, StreamError>;

    /// The body ended before an event completed the answer.
    async fn end(self, sink: &Sink<'_>) -> Result<(), StreamError>;
}

/// Reads the server-sent events of `response` into an `A` until the answer is complete,
/// all within `deadline`; stops early when the consumer is gone.
pub(crate) async fn read_sse<A: SseAnswer>(
    mut response: reqwest::Response,
    deadline: Instant,
    emitter: Emitter,
    config: Arc<LlmConfig>,
) -> Result<(), StreamError> {
    let sink = Sink {
        emitter: &emitter,
        api_key: config.api_key.as_ref(),
    };
    let mut parser = SseParser::default();
    let mut answer = A::default();
    loop {
        let (events, at_end) =
            match next_chunk(&mut response, deadline, &emitter, sink.api_key).await? {
                Some(chunk) => (parser.feed(&chunk)?, false),
                None => (parser.finish()?.into_iter().collect(), true),
            };
        for event in events {
            if answer.handle(event, &sink).await? {
                return Ok(());
            }
        }
        if at_end {
            return answer.end(&sink).await;
        }
    }
}

/// How a provider's JSON error body names its message.
pub(crate) type ErrorMessage = fn(&serde_json::Value) -> Option<String>;

/// Sends a request built by `make`, retrying connection errors, 429 and 5xx up to
/// `max_retries` times with exponential backoff (honouring `retry-after` up to
/// [`MAX_BACKOFF`]), all within `deadline`. Returns a successful response.
pub(crate) async fn send_with_retries(
    make: impl Fn() -> reqwest::RequestBuilder,
    max_retries: u32,
    deadline: Instant,
    api_key: Option<&SecretString>,
    error_message: ErrorMessage,
) -> Result<reqwest::Response, LlmError> {
    let mut attempt = 0u32;
    loop {
        let outcome = match tokio::time::timeout_at(deadline, make().send()).await {
            Err(_) => return Err(LlmError::Timeout),
            Ok(outcome) => outcome,
        };
        let (error, retry_after) = match outcome {
            Ok(response) if response.status().is_success() => return Ok(response),
            Ok(response) => {
                let status = response.status();
                let retryable = status.as_u16() == 429 || status.is_server_error();
                let retry_after = retry_after(&response);
                let error = provider_error(response, deadline, api_key, error_message).await?;
                if !retryable {
                    return Err(error);
                }
                (error, retry_after)
            }
            Err(error) if error.is_timeout() => return Err(LlmError::Timeout),
            Err(error) if error.is_connect() || error.is_request() => {
                (transport_error(error, api_key), None)
            }
            Err(error) => return Err(transport_error(error, api_key)),
        };
        if attempt >= max_retries {
            return Err(error);
        }
        let backoff = BASE_BACKOFF
            .saturating_mul(2u32.saturating_pow(attempt))
            .max(retry_after.unwrap_or_default())
            .min(MAX_BACKOFF);
        if Instant::now() + backoff >= deadline {
            return Err(error);
        }
        attempt += 1;
        tracing::debug!(attempt, ?backoff, %error, "retrying the LLM call");
        tokio::time::sleep(backoff).await;
    }
}

/// `retry-after` in seconds (the HTTP-date form is ignored).
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let value = response.headers().get(reqwest::header::RETRY_AFTER)?;
    let seconds: f64 = value.to_str().ok()?.trim().parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(3600.0)))
}

/// Reads (a bounded part of) an error response into [`LlmError::Provider`].
async fn provider_error(
    mut response: reqwest::Response,
    deadline: Instant,
    api_key: Option<&SecretString>,
    error_message: ErrorMessage,
) -> Result<LlmError, LlmError> {
    let status = response.status().as_u16();
    let mut body = Vec::new();
    while body.len() < MAX_ERROR_BODY_BYTES {
        match tokio::time::timeout_at(deadline, response.chunk()).await {
            Err(_) => return Err(LlmError::Timeout),
            Ok(Ok(Some(chunk))) => body.extend_from_slice(&chunk),
            Ok(Ok(None)) | Ok(Err(_)) => break,
        }
    }
    let text = String::from_utf8_lossy(&body);
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|json| error_message(&json))
        .unwrap_or_else(|| text.into_owned());
    Ok(LlmError::Provider {
        status,
        message: sanitize(&message, api_key),
    })
}

/// The sending half of a [`ChatStream`].
#[derive(Debug, Clone)]
pub(crate) struct Emitter(mpsc::Sender<Result<ChatEvent, LlmError>>);

/// The consumer dropped the stream; the producer should stop.
#[derive(Debug)]
pub(crate) struct Closed;

impl Emitter {
    /// Sends one event.
    pub(crate) async fn emit(&self, event: ChatEvent) -> Result<(), Closed> {
        self.0.send(Ok(event)).await.map_err(|_| Closed)
    }

    /// Resolves when the consumer dropped the stream.
    pub(crate) async fn closed(&self) {
        self.0.closed().await;
    }
}

/// Runs `produce` in a task and returns the stream of what it emits. If `produce` fails,
/// its error is the last item.
pub(crate) fn spawn_stream<F, Fut>(produce: F) -> ChatStream
where
    F: FnOnce(Emitter) -> Fut,
    Fut: std::future::Future<Output = Result<(), StreamError>> + Send + 'static,
{
    let (sender, receiver) = mpsc::channel(64);
    let emitter = Emitter(sender.clone());
    let task = produce(emitter);
    tokio::spawn(async move {
        if let Err(StreamError::Llm(error)) = task.await {
            let _ = sender.send(Err(error)).await;
        }
    });
    Box::pin(ReceiverStream(receiver))
}

/// Why a producer stopped early.
#[derive(Debug)]
pub(crate) enum StreamError {
    /// Report this to the consumer.
    Llm(LlmError),
    /// The consumer is gone.
    Closed,
}

impl From<LlmError> for StreamError {
    fn from(error: LlmError) -> Self {
        StreamError::Llm(error)
    }
}

impl From<Closed> for StreamError {
    fn from(_: Closed) -> Self {
        StreamError::Closed
    }
}

struct ReceiverStream(mpsc::Receiver<Result<ChatEvent, LlmError>>);

impl Stream for ReceiverStream {
    type Item = Result<ChatEvent, LlmError>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(context)
    }
}

/// Parses a tool call's complete argument string: empty means `{}`; anything but a JSON
/// object is a protocol error.
pub(crate) fn parse_arguments(name: &str, text: &str) -> Result<serde_json::Value, LlmError> {
    if text.trim().is_empty() {
        return Ok(serde_json::Value::Object(serde_json::Map::new()));
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(value @ serde_json::Value::Object(_)) => Ok(value),
        Ok(_) => Err(LlmError::Protocol(format!(
            "the arguments of tool call `{name}` are not a JSON object"
        ))),
        Err(error) => Err(LlmError::Protocol(format!(
            "the arguments of tool call `{name}` are not valid JSON: {error}"
        ))),
    }
}

/// A tool call being streamed.
#[derive(Debug, Default)]
pub(crate) struct PartialToolCall {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) arguments: String,
}

impl PartialToolCall {
    /// The complete call as an event.
    pub(crate) fn finish(self) -> Result<ChatEvent, LlmError> {
        if self.id.is_empty() || self.name.is_empty() {
            return Err(LlmError::Protocol(
                "a streamed tool call has no id or no name".into(),
            ));
        }
        let arguments = parse_arguments(&self.name, &self.arguments)?;
        Ok(ChatEvent::ToolCall {
            id: self.id,
            name: self.name,
            arguments,
        })
    }
}

/// Tool calls being streamed, by the provider's index.
pub(crate) type ToolCalls = BTreeMap<u64, PartialToolCall>;

/// Reads the next body chunk before `deadline`, or stops when the consumer is gone.
pub(crate) async fn next_chunk(
    response: &mut reqwest::Response,
    deadline: Instant,
    emitter: &Emitter,
    api_key: Option<&SecretString>,
) -> Result<Option<bytes::Bytes>, StreamError> {
    tokio::select! {
        () = emitter.closed() => Err(StreamError::Closed),
        read = tokio::time::timeout_at(deadline, response.chunk()) => match read {
            Err(_) => Err(LlmError::Timeout.into()),
            Ok(Ok(chunk)) => Ok(chunk),
            Ok(Err(error)) => Err(transport_error(error, api_key).into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_empty_is_empty_object() -> Result<(), LlmError> {
        assert_eq!(parse_arguments("t", "  ")?, serde_json::json!({}));
        assert_eq!(
            parse_arguments("t", "{\"a\":1}")?,
            serde_json::json!({"a": 1})
        );
        assert!(matches!(
            parse_arguments("t", "[1]"),
            Err(LlmError::Protocol(_))
        ));
        assert!(matches!(
            parse_arguments("t", "{\"a\""),
            Err(LlmError::Protocol(_))
        ));
        Ok(())
    }

    #[test]
    fn sanitize_truncates_and_redacts() {
        let key = SecretString::from("sk-secret-123");
        let long = format!("bad key sk-secret-123 {}", "x".repeat(2000));
        let clean = sanitize(&long, Some(&key));
        assert!(!clean.contains("sk-secret-123"));
        assert!(clean.chars().count() <= MAX_ERROR_CHARS);
    }
}
