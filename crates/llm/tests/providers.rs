//! End-to-end tests of the three providers against `tests/llm/scripted_llm.py`, which
//! speaks the real wire protocols (SSE for OpenAI and Anthropic, the AWS event stream for
//! Bedrock) and validates requests as the real APIs would.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use latchkey_llm::{
    ChatEvent, ChatModel, ChatRequest, Content, Credentials, LlmConfig, LlmError, Message,
    Provider, Role, StopReason, ToolSpec, Usage,
};
use secrecy::SecretString;
use serde_json::{Value, json};

const API_KEY: &str = "sk-test-SECRET-KEY-0123456789";
const AWS_SECRET: &str = "aws-test-SECRET-ACCESS-KEY-0123456789";

/// The scripted server, killed on drop.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(chunk_delay_ms: u64) -> Server {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/llm/scripted_llm.py"
        );
        let mut child = Command::new("python3")
            .arg(script)
            .args([
                "--port",
                "0",
                "--chunk-delay-ms",
                &chunk_delay_ms.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start python3 {script}: {error}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap_or_else(|error| panic!("cannot read the scripted server's stdout: {error}"));
        let url = line
            .trim()
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("the scripted server did not start; it printed {line:?}"))
            .to_owned();
        Server { child, url }
    }

    async fn requests(&self) -> Vec<Value> {
        let body: Value = reqwest::get(format!("{}/__test/requests", self.url))
            .await
            .expect("GET /__test/requests")
            .json()
            .await
            .expect("requests JSON");
        body.as_array().expect("a list").clone()
    }

    async fn fail(&self, status: u16, count: u32) {
        self.fail_with(json!({"status": status, "count": count}))
            .await;
    }

    async fn fail_with(&self, spec: Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/__test/fail", self.url))
            .json(&spec)
            .send()
            .await
            .expect("POST /__test/fail");
        assert!(response.status().is_success());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(provider: Provider, server: &Server, timeout: Duration, max_retries: u32) -> LlmConfig {
    let (base_url, api_key, region) = match provider {
        Provider::Openai => (format!("{}/v1", server.url), Some(API_KEY), None),
        Provider::Anthropic => (server.url.clone(), Some(API_KEY), None),
        Provider::Bedrock => (server.url.clone(), None, Some("us-east-1".to_owned())),
    };
    LlmConfig {
        provider,
        model: match provider {
            Provider::Bedrock => "anthropic.claude-3-haiku-20240307-v1:0".into(),
            _ => "test-model".into(),
        },
        base_url: Some(base_url),
        api_key: api_key.map(SecretString::from),
        region,
        timeout,
        max_retries,
    }
}

fn model(config: &LlmConfig) -> Arc<dyn ChatModel> {
    let model = match config.provider {
        Provider::Bedrock => latchkey_llm::bedrock_with_credentials(
            config,
            Credentials::new("AKIDTESTACCESSKEY", AWS_SECRET, None, None, "test"),
        ),
        _ => latchkey_llm::build(config),
    };
    model.expect("model builds")
}

fn assert_no_secret(text: &str) {
    assert!(!text.contains(API_KEY), "API key leaked: {text}");
    assert!(!text.contains(AWS_SECRET), "AWS secret leaked: {text}");
}

fn tools() -> Vec<ToolSpec> {
    let object = json!({"type": "object", "properties": {"city": {"type": "string"}}});
    vec![
        ToolSpec {
            name: "get_weather".into(),
            description: "Weather of a city".into(),
            input_schema: object.clone(),
        },
        ToolSpec {
            name: "get_time".into(),
            description: "The time".into(),
            input_schema: json!({"type": "object"}),
        },
    ]
}

fn user(text: &str) -> Message {
    Message {
        role: Role::User,
        content: vec![Content::Text { text: text.into() }],
    }
}

/// A prompt server and a model of `provider` on it (20 s timeout, no retries).
fn echo_model(provider: Provider) -> (Server, Arc<dyn ChatModel>) {
    let server = Server::start(0);
    let model = model(&config(provider, &server, Duration::from_secs(20), 0));
    (server, model)
}

/// Asks `question`, which must be answered with tool calls: returns them.
async fn ask_for_tools(model: &dyn ChatModel, question: &Message) -> Vec<(String, String, Value)> {
    let events = call(model, request(vec![question.clone()]))
        .await
        .expect("first call succeeds");
    let (_, calls, _, stop) = split(&events);
    assert_eq!(stop, StopReason::ToolUse);
    calls
}

/// Asks "hi"; the call must fail with the provider's HTTP `status`.
async fn expect_provider_error(model: &dyn ChatModel, status: u16) -> LlmError {
    let error = call(model, request(vec![user("hi")]))
        .await
        .expect_err("the call fails");
    assert!(
        matches!(&error, LlmError::Provider { status: s, .. } if *s == status),
        "{error:?}"
    );
    error
}

/// The assistant's message that makes these tool calls (`(id, name, arguments)`).
fn assistant_calls(calls: &[(String, String, Value)]) -> Message {
    Message {
        role: Role::Assistant,
        content: calls
            .iter()
            .map(|(id, name, arguments)| Content::ToolCall {
                id: id.clone(),
                name: name.clone(),
                arguments: arguments.clone(),
            })
            .collect(),
    }
}

/// The user's message that answers tool calls: `(call id, content, is_error)`.
fn tool_results(results: &[(&str, &str, bool)]) -> Message {
    Message {
        role: Role::User,
        content: results
            .iter()
            .map(|(id, content, is_error)| Content::ToolResult {
                id: (*id).into(),
                content: (*content).into(),
                is_error: *is_error,
            })
            .collect(),
    }
}

/// The HTTP status of each request the server answered, in order.
async fn statuses(server: &Server) -> Vec<Value> {
    server
        .requests()
        .await
        .iter()
        .map(|request| request["status"].clone())
        .collect()
}

fn request(messages: Vec<Message>) -> ChatRequest {
    ChatRequest {
        system: Some("You are terse.".into()),
        messages,
        tools: tools(),
        max_tokens: 256,
    }
}

/// Runs one call to the end; the first error ends it.
async fn call(model: &dyn ChatModel, request: ChatRequest) -> Result<Vec<ChatEvent>, LlmError> {
    let mut stream = model.stream(request).await?;
    let mut events = Vec::new();
    while let Some(event) = stream.next().await {
        events.push(event?);
    }
    Ok(events)
}

/// Checks the contract order (…, at most one Usage, Done last) and splits the events.
fn split(events: &[ChatEvent]) -> (String, Vec<(String, String, Value)>, Usage, StopReason) {
    let mut text = String::new();
    let mut calls = Vec::new();
    let n = events.len();
    assert!(n >= 2, "too few events: {events:?}");
    for event in &events[..n - 2] {
        match event {
            ChatEvent::TextDelta(delta) => text.push_str(delta),
            ChatEvent::ToolCall {
                id,
                name,
                arguments,
            } => calls.push((id.clone(), name.clone(), arguments.clone())),
            other => panic!("unexpected {other:?} before the end in {events:?}"),
        }
    }
    let ChatEvent::Usage(usage) = events[n - 2] else {
        panic!("the second last event is not Usage: {events:?}")
    };
    let ChatEvent::Done(stop) = events[n - 1] else {
        panic!("the last event is not Done: {events:?}")
    };
    (text, calls, usage, stop)
}

async fn text_streams_in_order(provider: Provider) {
    let (server, model) = echo_model(provider);
    let events = call(model.as_ref(), request(vec![user("hello big world")]))
        .await
        .expect("call succeeds");
    let deltas = events
        .iter()
        .filter(|event| matches!(event, ChatEvent::TextDelta(_)))
        .count();
    assert!(deltas >= 3, "expected >= 3 text deltas: {events:?}");
    let (text, calls, usage, stop) = split(&events);
    assert_eq!(text, "echo: hello big world");
    assert!(calls.is_empty());
    // 3 system words + 3 user words in; 4 words out.
    assert_eq!(
        usage,
        Usage {
            input_tokens: 6,
            output_tokens: 4
        }
    );
    assert_eq!(stop, StopReason::EndTurn);
    let requests = server.requests().await;
    assert_eq!(requests.len(), 1);
    let headers = &requests[0]["headers"];
    match provider {
        Provider::Openai => assert_eq!(headers["authorization"], "present"),
        Provider::Anthropic => {
            assert_eq!(headers["x-api-key"], "present");
            assert_eq!(headers["anthropic-version"], "2023-06-01");
        }
        Provider::Bedrock => assert_eq!(headers["authorization"], "present"),
    }
}

async fn tool_call_with_fragmented_arguments(provider: Provider) {
    let (_server, model) = echo_model(provider);
    let events = call(
        model.as_ref(),
        request(vec![user(
            r#"please use:get_weather {"city": "Paris", "days": [1, 2]} now"#,
        )]),
    )
    .await
    .expect("call succeeds");
    let (text, calls, usage, stop) = split(&events);
    assert_eq!(text, "");
    assert_eq!(calls.len(), 1, "{events:?}");
    assert_eq!(calls[0].1, "get_weather");
    assert_eq!(calls[0].2, json!({"city": "Paris", "days": [1, 2]}));
    assert!(!calls[0].0.is_empty());
    assert!(usage.output_tokens > 0);
    assert_eq!(stop, StopReason::ToolUse);
}

async fn full_round_trip(provider: Provider) {
    let (server, model) = echo_model(provider);
    let question = user("weather? use:get_weather {\"city\": \"Oslo\"}");
    let calls = ask_for_tools(model.as_ref(), &question).await;
    assert_eq!(calls.len(), 1, "one tool call: {calls:?}");
    let messages = vec![
        question,
        assistant_calls(&calls),
        tool_results(&[(&calls[0].0, r#"{"temp_c": 21}"#, false)]),
    ];
    let events = call(model.as_ref(), request(messages))
        .await
        .expect("second call succeeds");
    let (text, calls, _, stop) = split(&events);
    assert_eq!(text, r#"tool get_weather returned: {"temp_c": 21}"#);
    assert!(calls.is_empty());
    assert_eq!(stop, StopReason::EndTurn);
    let statuses = statuses(&server).await;
    assert_eq!(statuses, vec![json!(200), json!(200)]);
}

async fn several_tool_calls(provider: Provider) {
    let (_server, model) = echo_model(provider);
    let question = user("use:get_weather {\"city\": \"Rome\"}\nand use:get_time");
    let calls = ask_for_tools(model.as_ref(), &question).await;
    let names: Vec<&str> = calls.iter().map(|call| call.1.as_str()).collect();
    assert_eq!(names, vec!["get_weather", "get_time"]);
    assert_eq!(calls[0].2, json!({"city": "Rome"}));
    assert_eq!(calls[1].2, json!({}));
    assert_ne!(calls[0].0, calls[1].0);
    // Send both results back, the second as an error.
    let assistant = assistant_calls(&calls);
    let results = tool_results(&[
        (&calls[0].0, "sunny", false),
        (&calls[1].0, "clock broken", true),
    ]);
    let events = call(model.as_ref(), request(vec![question, assistant, results]))
        .await
        .expect("second call succeeds");
    let (text, _, _, stop) = split(&events);
    assert_eq!(stop, StopReason::EndTurn);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0], "tool get_weather returned: sunny");
    assert!(
        lines[1].starts_with("tool get_time returned: ") && lines[1].contains("clock broken"),
        "{text}"
    );
}

async fn retries_503_then_succeeds(provider: Provider) {
    let server = Server::start(0);
    server.fail(503, 1).await;
    let model = model(&config(provider, &server, Duration::from_secs(20), 2));
    let events = call(model.as_ref(), request(vec![user("hi")]))
        .await
        .expect("the retry succeeds");
    let (text, _, _, _) = split(&events);
    assert_eq!(text, "echo: hi");
    let statuses = statuses(&server).await;
    assert_eq!(statuses, vec![json!(503), json!(200)]);
}

async fn persistent_500_is_a_provider_error(provider: Provider) {
    let server = Server::start(0);
    server.fail(500, 100).await;
    let model = model(&config(provider, &server, Duration::from_secs(30), 2));
    let started = Instant::now();
    let error = expect_provider_error(model.as_ref(), 500).await;
    assert!(
        error.to_string().contains("scripted failure 500"),
        "{error}"
    );
    assert_no_secret(&format!("{error:?} {error}"));
    // max_retries = 2: exactly three attempts, with short backoff.
    assert_eq!(server.requests().await.len(), 3);
    assert!(started.elapsed() < Duration::from_secs(10));
}

async fn slow_stream_times_out(provider: Provider) {
    let server = Server::start(3_000);
    let model = model(&config(provider, &server, Duration::from_millis(800), 0));
    let started = Instant::now();
    let error = call(model.as_ref(), request(vec![user("hello slow world")]))
        .await
        .expect_err("the call times out");
    assert!(matches!(error, LlmError::Timeout), "{error:?}");
    assert!(started.elapsed() < Duration::from_millis(2_500));
    assert_no_secret(&format!("{error:?} {error}"));
}

async fn secrets_stay_out_of_debug(provider: Provider) {
    let server = Server::start(0);
    let config = config(provider, &server, Duration::from_secs(5), 0);
    assert_no_secret(&format!("{config:?}"));
    let model = model(&config);
    assert_no_secret(&format!("{model:?}"));
    // A provider-side 400 (a tool result answering no call) carries no secret either.
    let bogus = tool_results(&[("no-such-call", "x", false)]);
    let error = call(model.as_ref(), request(vec![user("hi"), bogus]))
        .await
        .expect_err("the server rejects an unanswered tool result");
    assert!(
        matches!(error, LlmError::Provider { status: 400, .. }),
        "{error:?}"
    );
    assert_no_secret(&format!("{error:?} {error}"));
}

async fn malformed_arguments_are_protocol_errors(provider: Provider) {
    let (_server, model) = echo_model(provider);
    for raw in [r#"{"city": "Par"#, "[1, 2]", "not json"] {
        let error = call(
            model.as_ref(),
            request(vec![user(&format!("use:get_weather !raw {raw}"))]),
        )
        .await
        .expect_err("malformed arguments fail the call");
        assert!(matches!(error, LlmError::Protocol(_)), "{raw}: {error:?}");
    }
}

async fn empty_arguments_are_an_empty_object(provider: Provider) {
    let (_server, model) = echo_model(provider);
    let events = call(model.as_ref(), request(vec![user("use:get_time !raw")]))
        .await
        .expect("call succeeds");
    let (_, calls, _, stop) = split(&events);
    assert_eq!(stop, StopReason::ToolUse);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].2, json!({}));
}

/// One module of tests per provider: each test runs the function of its name above.
macro_rules! provider_tests {
    ($module:ident, $provider:expr) => {
        provider_tests!(
            $module,
            $provider,
            text_streams_in_order,
            tool_call_with_fragmented_arguments,
            full_round_trip,
            several_tool_calls,
            retries_503_then_succeeds,
            persistent_500_is_a_provider_error,
            slow_stream_times_out,
            malformed_arguments_are_protocol_errors,
            empty_arguments_are_an_empty_object,
            secrets_stay_out_of_debug,
        );
    };
    ($module:ident, $provider:expr, $($test:ident),+ $(,)?) => {
        mod $module {
            use super::*;

            $(
                #[tokio::test]
                async fn $test() {
                    super::$test($provider).await;
                }
            )+
        }
    };
}

provider_tests!(openai, Provider::Openai);
provider_tests!(anthropic, Provider::Anthropic);
provider_tests!(bedrock, Provider::Bedrock);

/// `retry-after` is honoured by the HTTP providers (Bedrock retries are the SDK's).
async fn retry_after_is_honoured(provider: Provider) {
    let server = Server::start(0);
    server
        .fail_with(json!({"status": 429, "count": 1, "retry_after": 1}))
        .await;
    let model = model(&config(provider, &server, Duration::from_secs(20), 1));
    let started = Instant::now();
    let events = call(model.as_ref(), request(vec![user("hi")]))
        .await
        .expect("the retry succeeds");
    assert!(started.elapsed() >= Duration::from_millis(950));
    assert_eq!(split(&events).0, "echo: hi");
    assert_eq!(server.requests().await.len(), 2);
}

#[tokio::test]
async fn openai_retry_after_is_honoured() {
    retry_after_is_honoured(Provider::Openai).await;
}

#[tokio::test]
async fn anthropic_retry_after_is_honoured() {
    retry_after_is_honoured(Provider::Anthropic).await;
}

/// A 429 with no retries left is returned as is, with no wait.
#[tokio::test]
async fn no_retries_means_one_attempt() {
    let server = Server::start(0);
    server.fail(429, 5).await;
    let model = model(&config(
        Provider::Openai,
        &server,
        Duration::from_secs(20),
        0,
    ));
    expect_provider_error(model.as_ref(), 429).await;
    assert_eq!(server.requests().await.len(), 1);
}

/// The OpenAI-compatible and Anthropic base URLs work given with or without `/v1` (and with
/// a trailing slash): each spelling reaches the scripted server's `/v1/…` endpoint.
#[tokio::test]
async fn base_url_with_or_without_v1() {
    let server = Server::start(0);
    for provider in [Provider::Openai, Provider::Anthropic] {
        for suffix in ["", "/", "/v1", "/v1/"] {
            let mut config = config(provider, &server, Duration::from_secs(20), 0);
            config.base_url = Some(format!("{}{suffix}", server.url));
            let events = call(model(&config).as_ref(), request(vec![user("hi")]))
                .await
                .unwrap_or_else(|e| panic!("{provider:?} with base {suffix:?}: {e}"));
            assert_eq!(split(&events).0, "echo: hi", "{provider:?} {suffix:?}");
        }
    }
}
