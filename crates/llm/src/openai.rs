//! OpenAI-compatible chat completions (`POST {base_url}/chat/completions`, streamed).

use secrecy::SecretString;
use serde_json::{Value, json};

use crate::common::{self, Emitter, Sink, SseAnswer, StreamError, ToolCalls};
use crate::sse::SseEvent;
use crate::{ChatEvent, ChatRequest, Content, LlmError, Role, StopReason, Usage};

/// The public OpenAI endpoint.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

common::http_model!(
    /// A model behind an OpenAI-compatible chat completions endpoint.
    /// `Debug` shows the API key as `[REDACTED]` (it is a `SecretString`).
    OpenAiModel,
    endpoint: |base| format!("{}/chat/completions", common::with_default_version(base)),
    api_key: common::ApiKeyIn::Bearer,
    headers: &[],
);

/// `{"error": {"message": …}}`.
fn error_message(body: &Value) -> Option<String> {
    body.pointer("/error/message")
        .or_else(|| body.get("error"))
        .or_else(|| body.get("message"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// The chat completions request body.
pub(crate) fn request_body(model: &str, request: &ChatRequest) -> Value {
    let mut messages = Vec::new();
    if let Some(system) = &request.system {
        messages.push(json!({"role": "system", "content": system}));
    }
    for message in &request.messages {
        let mut texts = Vec::new();
        let mut tool_calls = Vec::new();
        for content in &message.content {
            match content {
                Content::Text { text } => texts.push(text.as_str()),
                Content::ToolCall {
                    id,
                    name,
                    arguments,
                } => tool_calls.push(json!({
                    "id": id,
                    "type": "function",
                    "function": {"name": name, "arguments": arguments.to_string()},
                })),
                // Tool messages must directly follow the assistant message that asked.
                Content::ToolResult {
                    id,
                    content,
                    is_error,
                } => messages.push(json!({
                    "role": "tool",
                    "tool_call_id": id,
                    "content": if *is_error { format!("[tool error] {content}") } else { content.clone() },
                })),
            }
        }
        let text = texts.join("\n");
        match message.role {
            Role::User if !text.is_empty() => {
                messages.push(json!({"role": "user", "content": text}));
            }
            Role::User => {}
            Role::Assistant => {
                // `content` may only be null when there are tool calls.
                let content = if text.is_empty() && !tool_calls.is_empty() {
                    Value::Null
                } else {
                    Value::String(text)
                };
                let mut assistant = json!({"role": "assistant", "content": content});
                if !tool_calls.is_empty() {
                    assistant["tool_calls"] = Value::Array(tool_calls);
                }
                messages.push(assistant);
            }
        }
    }
    let mut body = json!({
        "model": model,
        "messages": messages,
        "max_tokens": request.max_tokens,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|tool| {
                json!({
                    "type": "function",
                    "function": {
                        "name": tool.name,
                        "description": tool.description,
                        "parameters": tool.input_schema,
                    },
                })
            })
            .collect();
    }
    body
}

fn stop_reason(finish_reason: &str) -> StopReason {
    match finish_reason {
        "stop" => StopReason::EndTurn,
        "tool_calls" | "function_call" => StopReason::ToolUse,
        "length" => StopReason::MaxTokens,
        _ => StopReason::Other,
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
        if event.data.trim() == "[DONE]" {
            std::mem::take(self).finish(sink.emitter).await?;
            return Ok(true);
        }
        let chunk: Value = serde_json::from_str(&event.data).map_err(|error| {
            LlmError::Protocol(format!("a chat completion chunk is not JSON: {error}"))
        })?;
        self.on_chunk(chunk, sink.emitter, sink.api_key).await?;
        Ok(false)
    }

    /// Some compatible servers end without `[DONE]`; accept that after a finish reason.
    async fn end(self, sink: &Sink<'_>) -> Result<(), StreamError> {
        self.finish(sink.emitter).await
    }
}

impl State {
    async fn on_chunk(
        &mut self,
        chunk: Value,
        emitter: &Emitter,
        api_key: Option<&SecretString>,
    ) -> Result<(), StreamError> {
        if let Some(error) = chunk.get("error") {
            let message = error_message(&chunk).unwrap_or_else(|| error.to_string());
            return Err(LlmError::Provider {
                status: error
                    .get("code")
                    .and_then(Value::as_u64)
                    .and_then(|code| u16::try_from(code).ok())
                    .unwrap_or(500),
                message: common::sanitize(&message, api_key),
            }
            .into());
        }
        if let Some(usage) = chunk.get("usage").filter(|usage| !usage.is_null()) {
            self.usage = Some(Usage {
                input_tokens: usage["prompt_tokens"].as_u64().unwrap_or(0),
                output_tokens: usage["completion_tokens"].as_u64().unwrap_or(0),
            });
        }
        let Some(choice) = chunk
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|choices| choices.first())
        else {
            return Ok(());
        };
        let delta = &choice["delta"];
        if let Some(text) = delta
            .get("content")
            .and_then(Value::as_str)
            .filter(|text| !text.is_empty())
        {
            emitter.emit(ChatEvent::TextDelta(text.to_owned())).await?;
        }
        if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
            for (position, call) in calls.iter().enumerate() {
                let index = call
                    .get("index")
                    .and_then(Value::as_u64)
                    .unwrap_or(position as u64);
                let partial = self.tool_calls.entry(index).or_default();
                if let Some(id) = call
                    .get("id")
                    .and_then(Value::as_str)
                    .filter(|id| !id.is_empty())
                {
                    partial.id = id.to_owned();
                }
                let function = &call["function"];
                // OpenAI sends the name once; some compatible servers repeat it in every
                // chunk, a few split it.
                if let Some(name) = function.get("name").and_then(Value::as_str)
                    && partial.name != name
                {
                    partial.name.push_str(name);
                }
                if let Some(arguments) = function.get("arguments").and_then(Value::as_str) {
                    partial.arguments.push_str(arguments);
                }
            }
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.stop = Some(stop_reason(reason));
            self.flush_tool_calls(emitter).await?;
        }
        Ok(())
    }

    async fn flush_tool_calls(&mut self, emitter: &Emitter) -> Result<(), StreamError> {
        for (_, call) in std::mem::take(&mut self.tool_calls) {
            emitter.emit(call.finish()?).await?;
        }
        Ok(())
    }

    async fn finish(mut self, emitter: &Emitter) -> Result<(), StreamError> {
        let Some(stop) = self.stop else {
            return Err(
                LlmError::Protocol("the stream ended without a finish_reason".into()).into(),
            );
        };
        self.flush_tool_calls(emitter).await?;
        if let Some(usage) = self.usage {
            emitter.emit(ChatEvent::Usage(usage)).await?;
        }
        emitter.emit(ChatEvent::Done(stop)).await?;
        Ok(())
    }
}
