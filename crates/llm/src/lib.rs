//! Provider-agnostic streaming chat completion with tool calls, for the agent workload's
//! tool loop. One [`ChatModel`] trait, three wire protocols: OpenAI-compatible chat
//! completions (OpenAI, Ollama, vLLM, OpenRouter…), Anthropic Messages, and Amazon
//! Bedrock Converse. Each streams text deltas and tool calls as [`ChatEvent`]s.
//!
//! The types here are the contract with `latchkey-agent`; they are serializable so a
//! conversation ([`Message`]s) can be stored and resumed.
//!
//! Which parts are ours and why: Bedrock goes through the maintained
//! `aws-sdk-bedrockruntime` (`ConverseStream`: SigV4, the event-stream framing and the
//! credential chain are the SDK's). The OpenAI-compatible and Anthropic clients are written
//! here on `reqwest` (about 300 lines each, SSE parsing in `sse`): `rig-core` covers both,
//! but its newest release that builds with rustc 1.95 (0.44) is a fast-moving pre-1.0 API
//! whose streaming types changed between recent releases, Bedrock there is a separate crate
//! pinned to its own versions, and we would still have to wrap it for what this crate
//! promises — one deadline over connection, retries and stream; retries only before the
//! first event; API keys redacted from every error; tool-call arguments validated as JSON
//! objects. A thin client on the two documented wire protocols was less code than that wrapper.
//!
//! Entry points: [`build`] turns an [`LlmConfig`] into a model ([`OpenAiModel`],
//! [`AnthropicModel`], [`BedrockModel`]); [`bedrock_with_credentials`] signs Bedrock calls
//! with explicit credentials instead of the default AWS chain.
//!
//! Every provider behaves the same way: [`LlmConfig::timeout`] bounds the whole call
//! (connection, retries and the last event); connection errors, 429 and 5xx are retried up
//! to [`LlmConfig::max_retries`] times before any event is streamed (HTTP providers: backoff
//! 200 ms doubling, `retry-after` honoured, both capped at 10 s; Bedrock: the SDK's standard
//! retry with the same bounds); tool calls are yielded once complete, their arguments
//! parsed (empty means `{}`, anything but a JSON object is [`LlmError::Protocol`]); error
//! messages are truncated and never contain the API key, and no `Debug` output shows it.
//!
//! Tested end to end against `tests/llm/scripted_llm.py`, a scripted server that speaks
//! the three real wire protocols. Adding a provider: a module with a `ChatModel` impl and a
//! redacting `Debug`, a [`Provider`] variant, a branch in [`build`], the protocol in the
//! scripted server, and a `provider_tests!` line in `tests/providers.rs`.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_core::Stream;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

pub mod anthropic;
pub mod bedrock;
mod common;
pub mod openai;
pub mod planner;
mod sse;

pub use anthropic::AnthropicModel;
/// Static AWS credentials, for [`bedrock_with_credentials`].
pub use aws_credential_types::Credentials;
pub use bedrock::BedrockModel;
pub use openai::OpenAiModel;
pub use planner::ScriptedPlanner;

/// Who wrote a [`Message`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The signed-in user (tool results are sent back in a user turn).
    User,
    /// The model.
    Assistant,
}

/// One part of a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Content {
    /// Plain text.
    Text {
        /// The text.
        text: String,
    },
    /// The model asks for a tool to run.
    ToolCall {
        /// The provider's id of the call; the result must name it.
        id: String,
        /// The tool's name.
        name: String,
        /// The arguments, a JSON object.
        arguments: serde_json::Value,
    },
    /// What a tool returned (or why it failed, with `is_error`).
    ToolResult {
        /// The id of the [`Content::ToolCall`] this answers.
        id: String,
        /// The result as text (usually JSON).
        content: String,
        /// The tool failed; `content` says why.
        is_error: bool,
    },
}

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// Its parts, in order.
    pub content: Vec<Content>,
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// Name, `^[a-zA-Z0-9_-]{1,64}$`.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// JSON Schema of the arguments object.
    pub input_schema: serde_json::Value,
}

/// One model call.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// System prompt.
    pub system: Option<String>,
    /// The conversation so far, oldest first; the last message is the user's.
    pub messages: Vec<Message>,
    /// Tools the model may call.
    pub tools: Vec<ToolSpec>,
    /// Upper bound on generated tokens.
    pub max_tokens: u32,
}

/// Why the model stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// A complete answer.
    EndTurn,
    /// It wants the tool calls it streamed to run.
    ToolUse,
    /// `max_tokens` was reached.
    MaxTokens,
    /// Anything else the provider reported (content filter…).
    Other,
}

/// Token counts reported by the provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Generated tokens.
    pub output_tokens: u64,
}

/// What a streamed model call yields, in order: any number of `TextDelta` and complete
/// `ToolCall`s (a tool call is yielded once its arguments are complete and parsed), at most
/// one `Usage`, then exactly one `Done` as the last item.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatEvent {
    /// A piece of the answer's text.
    TextDelta(String),
    /// A complete tool call.
    ToolCall {
        /// Provider's call id.
        id: String,
        /// Tool name.
        name: String,
        /// Parsed JSON arguments (an object).
        arguments: serde_json::Value,
    },
    /// Token usage of this call.
    Usage(Usage),
    /// The end of the stream.
    Done(StopReason),
}

/// Why a model call failed. Messages never contain the API key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LlmError {
    /// Bad configuration (unknown provider, bad base URL…).
    #[error("LLM configuration: {0}")]
    Config(String),
    /// The call did not finish within the configured timeout.
    #[error("the LLM call timed out")]
    Timeout,
    /// The provider answered with an error status (after retries for 429/5xx).
    #[error("the LLM provider answered {status}: {message}")]
    Provider {
        /// HTTP status.
        status: u16,
        /// The provider's error message (truncated).
        message: String,
    },
    /// Network failure.
    #[error("LLM transport error: {0}")]
    Transport(String),
    /// The provider's stream did not follow its protocol (bad JSON, tool arguments that do
    /// not parse, a stream that ends without a stop).
    #[error("LLM protocol error: {0}")]
    Protocol(String),
}

/// The stream of one model call.
pub type ChatStream = Pin<Box<dyn Stream<Item = Result<ChatEvent, LlmError>> + Send>>;

/// A chat model that streams.
pub trait ChatModel: Send + Sync + std::fmt::Debug {
    /// Start one call. Connection and HTTP-status errors (after retries) come back here;
    /// errors in the middle of the stream come as an `Err` item, after which the stream ends.
    fn stream(&self, request: ChatRequest) -> ChatFuture<'_>;
}

/// What [`ChatModel::stream`] returns: the stream, once the call is accepted.
pub type ChatFuture<'a> =
    Pin<Box<dyn std::future::Future<Output = Result<ChatStream, LlmError>> + Send + 'a>>;

/// Which wire protocol a model speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// OpenAI-compatible `POST {base_url}/chat/completions` with `stream: true`.
    Openai,
    /// Anthropic `POST {base_url}/v1/messages` with `stream: true`.
    Anthropic,
    /// Amazon Bedrock `ConverseStream` (SigV4, service `bedrock`).
    Bedrock,
}

/// How to reach a model.
#[derive(Debug, Clone)]
pub struct LlmConfig {
    /// Wire protocol.
    pub provider: Provider,
    /// Model id (`gpt-4o-mini`, `claude-sonnet-4-5`, `anthropic.claude-3-haiku…`).
    pub model: String,
    /// Base URL; the provider's public endpoint when `None`.
    pub base_url: Option<String>,
    /// API key (OpenAI / Anthropic); for Bedrock the AWS credential chain is used.
    pub api_key: Option<SecretString>,
    /// AWS region (Bedrock).
    pub region: Option<String>,
    /// Timeout of one whole call, connection to last event.
    pub timeout: Duration,
    /// Retries on connection errors, 429 and 5xx before any event was streamed.
    pub max_retries: u32,
}

fn check(config: &LlmConfig) -> Result<(), LlmError> {
    if config.model.trim().is_empty() {
        return Err(LlmError::Config("model must not be empty".into()));
    }
    if config.timeout.is_zero() {
        return Err(LlmError::Config("timeout must be greater than zero".into()));
    }
    Ok(())
}

/// The model `config` describes. Bedrock credentials come from the default AWS chain,
/// loaded on the first call; see [`bedrock_with_credentials`] for explicit ones.
pub fn build(config: &LlmConfig) -> Result<Arc<dyn ChatModel>, LlmError> {
    check(config)?;
    Ok(match config.provider {
        Provider::Openai => Arc::new(OpenAiModel::new(config)?),
        Provider::Anthropic => Arc::new(AnthropicModel::new(config)?),
        Provider::Bedrock => Arc::new(BedrockModel::new(config)?),
    })
}

/// A Bedrock model that signs with `credentials` and never reads the environment's
/// credential chain (`config.region` is required; `config.provider` is not consulted).
pub fn bedrock_with_credentials(
    config: &LlmConfig,
    credentials: Credentials,
) -> Result<Arc<dyn ChatModel>, LlmError> {
    check(config)?;
    Ok(Arc::new(BedrockModel::with_credentials(
        config,
        credentials,
    )?))
}
