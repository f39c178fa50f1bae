//! The request and the typed Server-Sent Events of `POST /invocations`.
//!
//! Each event is sent as `event: <name>` and `data: <one JSON object>`; the names and the
//! JSON shapes are below and in the OpenAPI document (`StreamEvent`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Longest `content` of a `tool_result` event (the model gets more; see the tools module).
pub const MAX_EVENT_CONTENT_BYTES: usize = 4 * 1024;

/// `POST /invocations` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InvocationRequest {
    /// The conversation id chosen by the client (scoped to the signed-in user).
    #[schema(example = "3f0a6c8e-5d5b-4c7e-9a51-0c1f7f1d2b10")]
    pub session_id: String,
    /// The user's message.
    #[schema(example = "Who am I on GitHub?")]
    pub message: String,
}

/// A JSON error answered before any stream starts (400, 401, 413, 503).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorResponse {
    /// Machine-readable code: `invalid_request`, `unauthorized`, `payload_too_large`,
    /// `unavailable`, `not_found`.
    pub code: String,
    /// Human-readable explanation (never contains a credential).
    pub message: String,
}

/// `GET /ping` answer (the AgentCore runtime contract).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PingResponse {
    /// Always `Healthy`.
    #[schema(example = "Healthy")]
    pub status: String,
}

/// `text_delta`: a piece of the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TextDelta {
    /// The text to append.
    pub text: String,
}

/// `tool_call`: the model asked for a tool to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ToolCall {
    /// The call id.
    pub id: String,
    /// The tool name.
    pub name: String,
    /// The arguments object.
    #[schema(value_type = Object)]
    pub arguments: serde_json::Value,
}

/// `tool_result`: what a tool returned (never a token).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ToolResult {
    /// The call id.
    pub id: String,
    /// The tool name.
    pub name: String,
    /// Whether the tool succeeded (a non-2xx resource answer is `false`).
    pub ok: bool,
    /// The result, truncated to 4 KiB.
    pub content: String,
}

/// `authorization_required`: the user must consent before the tool can run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationRequired {
    /// The tool that needs the consent.
    pub tool: String,
    /// The credential provider.
    pub provider: String,
    /// The scopes this tool asks for (and only those).
    pub scopes: Vec<String>,
    /// Open this URL in the browser to consent.
    pub authorization_url: String,
    /// The authorization session.
    pub session_uri: String,
    /// What to tell the user.
    pub message: String,
}

/// `usage`: tokens of all model calls of this turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Generated tokens.
    pub output_tokens: u64,
}

/// `error`: the turn failed (a `done` follows).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorEvent {
    /// `model_error`, `tool_iterations_exceeded`, `identity_error`, `store_error`,
    /// `consent_failed`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

/// `done`: the last event of every stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Done {
    /// `end_turn`, `max_tokens`, `authorization_required`, `max_tool_iterations`,
    /// `error`, `other`.
    pub stop_reason: String,
}

/// One Server-Sent Event: `event:` is the tag, `data:` the JSON object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
pub enum StreamEvent {
    /// A piece of the answer.
    TextDelta(TextDelta),
    /// The model asked for a tool.
    ToolCall(ToolCall),
    /// A tool's result.
    ToolResult(ToolResult),
    /// Consent needed.
    AuthorizationRequired(AuthorizationRequired),
    /// Token usage.
    Usage(Usage),
    /// A failure.
    Error(ErrorEvent),
    /// End of stream.
    Done(Done),
}

impl StreamEvent {
    /// The SSE `event:` name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::TextDelta(_) => "text_delta",
            Self::ToolCall(_) => "tool_call",
            Self::ToolResult(_) => "tool_result",
            Self::AuthorizationRequired(_) => "authorization_required",
            Self::Usage(_) => "usage",
            Self::Error(_) => "error",
            Self::Done(_) => "done",
        }
    }

    /// The SSE `data:` JSON.
    pub fn data(&self) -> String {
        let value = match self {
            Self::TextDelta(e) => serde_json::to_string(e),
            Self::ToolCall(e) => serde_json::to_string(e),
            Self::ToolResult(e) => serde_json::to_string(e),
            Self::AuthorizationRequired(e) => serde_json::to_string(e),
            Self::Usage(e) => serde_json::to_string(e),
            Self::Error(e) => serde_json::to_string(e),
            Self::Done(e) => serde_json::to_string(e),
        };
        value.unwrap_or_else(|_| "{}".to_string())
    }

    /// An `error` event.
    pub fn error(code: &str, message: impl Into<String>) -> Self {
        Self::Error(ErrorEvent {
            code: code.to_string(),
            message: message.into(),
        })
    }

    /// A `done` event.
    pub fn done(stop_reason: &str) -> Self {
        Self::Done(Done {
            stop_reason: stop_reason.to_string(),
        })
    }
}

/// `text` cut to at most `max` bytes on a character boundary, with a marker when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [truncated]", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_on_char_boundary() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("aé", 2), "a… [truncated]");
    }

    #[test]
    fn names_match_serde_tags() {
        let event = StreamEvent::done("end_turn");
        let value = serde_json::to_value(&event).unwrap_or_default();
        assert_eq!(value["event"], event.name());
        assert_eq!(event.data(), r#"{"stopReason":"end_turn"}"#);
    }
}
