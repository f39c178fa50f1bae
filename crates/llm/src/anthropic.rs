//! Anthropic Messages (`POST {base_url}/v1/messages`, streamed).

use secrecy::SecretString;
use serde_json::{Value, json};

use crate::common::{self, Emitter, PartialToolCall, Sink, SseAnswer, StreamError, ToolCalls};
use crate::sse::SseEvent;
use crate::{ChatEvent, ChatRequest, Content, LlmError, Role, StopReason, Usage};

/// The public Anthropic endpoint.
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
/// The `anthropic-version` header sent.
pub const API_VERSION: &str = "2023-06-01";

common::http_model!(
    /// A model behind the Anthropic Messages API.
    /// `Debug` shows the API key as `[REDACTED]` (it is a `SecretString`).
    AnthropicModel,
    // `{base}/v1/messages`, the base given with or without its `/v1`.
    endpoint: |base| format!("{}/v1/messages", base.strip_suffix("/v1").unwrap_or(base)),
    api_key: common::ApiKeyIn::Header("x-api-key"),
    headers: &[("anthropic-version", API_VERSION)],
);

/// `{"type": "error", "error": {"type": …, "message": …}}`.
fn error_message(body: &Value) -> Option<String> {
    body.pointer("/error/message")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// The Messages request body.
pub(crate) fn request_body(model: &str, request: &ChatRequest) -> Value {
    let messages: Vec<Value> = request
        .messages
        .iter()
        .map(|message| {
            // tool_result blocks must come first in a user message.
            let mut results = Vec::new();
            let mut blocks = Vec::new();
            for content in &message.content {
                match content {
                    Content::Text { text } if text.is_empty() => {}
                    Content::Text { text } => blocks.push(json!({"type": "text", "text": text})),
                    Content::ToolCall {
                        id,
                        name,
                        arguments,
                    } => blocks.push(json!({
                        "type": "tool_use", "id": id, "name": name, "input": arguments,
                    })),
                    Content::ToolResult {
                        id,
                        content,
                        is_error,
                    } => results.push(json!({
                        "type": "tool_result",
                        "tool_use_id": id,
                        "content": content,
                        "is_error": is_error,
                    })),
                }
            }
            results.extend(blocks);
            let role = match message.role {
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            json!({"role": role, "content": results})
        })
        .collect();
    let mut body = json!({
        "model": model,
        "max_tokens": request.max_tokens,
        "messages": messages,
        "stream": true,
    });
    if let Some(system) = &request.system {
        body["system"] = Value::String(system.clone());
    }
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|tool| {
                json!({
                    "name": tool.name,
                    "description": tool.description,
                    "input_schema": tool.input_schema,
                })
            })
            .collect();
    }
    body
}

fn stop_reason(reason: &str) -> StopReason {
    match reason {
        "end_turn" | "stop_sequence" => StopReason::EndTurn,
        "tool_use" => StopReason::ToolUse,
        "max_tokens" => StopReason::MaxTokens,
        _ => StopReason::Other,
    }
}

/// Conventional HTTP statuses for the error types of an in-stream `error` event.
fn error_status(kind: &str) -> u16 {
    match kind {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "overloaded_error" => 529,
        _ => 500,
    }
}

#[derive(Default)]
struct State {
    tool_calls: ToolCalls,
    stop: Option<StopReason>,
    usage: Option<Usage>,
}

impl SseAnswer for State {
    async fn handle(&mut self, event: SseEvent, sink: &Sink<'_>) -> Result<bool, StreamError> {
        let data: Value = serde_json::from_str(&event.data).map_err(|error| {
            LlmError::Protocol(format!("an Anthropic event is not JSON: {error}"))
        })?;
        let kind = data
            .get("type")
            .and_then(Value::as_str)
            .or(event.event.as_deref())
            .unwrap_or_default();
        self.on_event(kind, &data, sink.emitter, sink.api_key).await
    }

    async fn end(self, _: &Sink<'_>) -> Result<(), StreamError> {
        Err(LlmError::Protocol("the stream ended without message_stop".into()).into())
    }
}

impl State {
    /// Handles one event; `true` at `message_stop`.
    async fn on_event(
        &mut self,
        kind: &str,
        data: &Value,
        emitter: &Emitter,
        api_key: Option<&SecretString>,
    ) -> Result<bool, StreamError> {
        let index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
        match kind {
            "message_start" => {
                let usage = &data["message"]["usage"];
                self.usage = Some(Usage {
                    input_tokens: usage["input_tokens"].as_u64().unwrap_or(0),
                    output_tokens: usage["output_tokens"].as_u64().unwrap_or(0),
                });
            }
            "content_block_start" => {
                let block = &data["content_block"];
                match block["type"].as_str() {
                    Some("tool_use") => {
                        self.tool_calls.insert(
                            index,
                            PartialToolCall {
                                id: block["id"].as_str().unwrap_or_default().to_owned(),
                                name: block["name"].as_str().unwrap_or_default().to_owned(),
                                arguments: String::new(),
                            },
                        );
                    }
                    Some("text") => {
                        if let Some(text) = block["text"].as_str().filter(|text| !text.is_empty()) {
                            emitter.emit(ChatEvent::TextDelta(text.to_owned())).await?;
                        }
                    }
                    _ => {} // thinking and other blocks are not part of the answer
                }
            }
            "content_block_delta" => {
                let delta = &data["delta"];
                match delta["type"].as_str() {
                    Some("text_delta") => {
                        if let Some(text) = delta["text"].as_str().filter(|text| !text.is_empty()) {
                            emitter.emit(ChatEvent::TextDelta(text.to_owned())).await?;
                        }
                    }
                    Some("input_json_delta") => {
                        let call = self.tool_calls.get_mut(&index).ok_or_else(|| {
                            LlmError::Protocol(format!(
                                "input_json_delta for block {index}, which is not a tool_use"
                            ))
                        })?;
                        call.arguments
                            .push_str(delta["partial_json"].as_str().unwrap_or_default());
                    }
                    _ => {}
                }
            }
            "content_block_stop" => {
                if let Some(call) = self.tool_calls.remove(&index) {
                    emitter.emit(call.finish()?).await?;
                }
            }
            "message_delta" => {
                if let Some(reason) = data["delta"]["stop_reason"].as_str() {
                    self.stop = Some(stop_reason(reason));
                }
                if let Some(output) = data["usage"]["output_tokens"].as_u64() {
                    let usage = self.usage.get_or_insert_with(Usage::default);
                    usage.output_tokens = output;
                    if let Some(input) = data["usage"]["input_tokens"].as_u64() {
                        usage.input_tokens = input;
                    }
                }
            }
            "message_stop" => {
                for (_, call) in std::mem::take(&mut self.tool_calls) {
                    emitter.emit(call.finish()?).await?;
                }
                if let Some(usage) = self.usage {
                    emitter.emit(ChatEvent::Usage(usage)).await?;
                }
                let stop = self.stop.ok_or_else(|| {
                    LlmError::Protocol("message_stop without a stop_reason".into())
                })?;
                emitter.emit(ChatEvent::Done(stop)).await?;
                return Ok(true);
            }
            "error" => {
                let error = &data["error"];
                let message = error["message"].as_str().unwrap_or("stream error");
                return Err(LlmError::Provider {
                    status: error_status(error["type"].as_str().unwrap_or_default()),
                    message: common::sanitize(message, api_key),
                }
                .into());
            }
            _ => {} // ping and future event types
        }
        Ok(false)
    }
}
