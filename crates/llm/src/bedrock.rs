//! Amazon Bedrock `ConverseStream`, through `aws-sdk-bedrockruntime` (SigV4, the AWS
//! event-stream framing and its CRCs are the SDK's).

use std::sync::Arc;
use std::time::Duration;

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_bedrockruntime as sdk;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::{Document, Number};
use sdk::config::{BehaviorVersion, Region, StalledStreamProtectionConfig};
use sdk::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use sdk::types as bedrock;
use serde_json::Value;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::common::{self, Emitter, PartialToolCall, StreamError, ToolCalls};
use crate::{
    ChatEvent, ChatFuture, ChatModel, ChatRequest, Content, LlmConfig, LlmError, Role, StopReason,
    Usage,
};

/// A model served by Amazon Bedrock.
pub struct BedrockModel {
    config: Arc<LlmConfig>,
    credentials: Option<SharedCredentialsProvider>,
    client: OnceCell<sdk::Client>,
}

impl std::fmt::Debug for BedrockModel {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("BedrockModel")
            .field("model", &self.config.model)
            .field("region", &self.config.region)
            .field("endpoint_url", &self.config.base_url)
            .field(
                "credentials",
                &if self.credentials.is_some() {
                    "explicit"
                } else {
                    "default chain"
                },
            )
            .field("timeout", &self.config.timeout)
            .field("max_retries", &self.config.max_retries)
            .finish()
    }
}

impl BedrockModel {
    /// A model that takes its credentials (and region, if `config.region` is `None`) from
    /// the default AWS chain, loaded on the first call.
    pub fn new(config: &LlmConfig) -> Result<Self, LlmError> {
        if let Some(base) = &config.base_url {
            common::base_url(Some(base), base)?;
        }
        Ok(Self {
            config: Arc::new(config.clone()),
            credentials: None,
            client: OnceCell::new(),
        })
    }

    /// A model that signs with `credentials` and never consults the environment's chain.
    /// `config.region` is required.
    pub fn with_credentials(
        config: &LlmConfig,
        credentials: Credentials,
    ) -> Result<Self, LlmError> {
        Self::with_credentials_provider(config, SharedCredentialsProvider::new(credentials))
    }

    /// A model that signs with credentials from `provider`. `config.region` is required.
    pub fn with_credentials_provider(
        config: &LlmConfig,
        provider: SharedCredentialsProvider,
    ) -> Result<Self, LlmError> {
        let region = config
            .region
            .clone()
            .ok_or_else(|| LlmError::Config("Bedrock needs a region".into()))?;
        let model = Self {
            credentials: Some(provider.clone()),
            ..Self::new(config)?
        };
        let builder = sdk::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region))
            .credentials_provider(provider);
        let client = sdk::Client::from_conf(model.finish_config(builder).build());
        model
            .client
            .set(client)
            .map_err(|_| LlmError::Config("the Bedrock client was already set".into()))?;
        Ok(model)
    }

    fn finish_config(&self, mut builder: sdk::config::Builder) -> sdk::config::Builder {
        if let Some(base) = &self.config.base_url {
            builder = builder.endpoint_url(base.trim_end_matches('/'));
        }
        builder
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(self.config.max_retries.saturating_add(1))
                    .with_initial_backoff(Duration::from_millis(200))
                    .with_max_backoff(Duration::from_secs(10)),
            )
            // The whole call is bounded by `LlmConfig.timeout`; a model may think for a long
            // time before its first token, which the stall detector would misread.
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
    }

    async fn client(&self) -> Result<&sdk::Client, LlmError> {
        self.client
            .get_or_try_init(|| async {
                let mut loader = aws_config::defaults(BehaviorVersion::latest());
                if let Some(region) = &self.config.region {
                    loader = loader.region(Region::new(region.clone()));
                }
                let shared = loader.load().await;
                if shared.region().is_none() {
                    return Err(LlmError::Config(
                        "Bedrock needs a region (configure one or set AWS_REGION)".into(),
                    ));
                }
                let builder = sdk::config::Builder::from(&shared);
                Ok(sdk::Client::from_conf(self.finish_config(builder).build()))
            })
            .await
    }
}

impl ChatModel for BedrockModel {
    fn stream(&self, request: ChatRequest) -> ChatFuture<'_> {
        Box::pin(async move {
            let deadline = Instant::now() + self.config.timeout;
            let client = tokio::time::timeout_at(deadline, self.client())
                .await
                .map_err(|_| LlmError::Timeout)??;
            let call = build_call(client, &self.config.model, &request)?;
            let output = tokio::time::timeout_at(deadline, call.send())
                .await
                .map_err(|_| LlmError::Timeout)?
                .map_err(call_error)?;
            Ok(common::spawn_stream(move |emitter| {
                read_stream(output.stream, deadline, emitter)
            }))
        })
    }
}

fn build_error(error: aws_smithy_types::error::operation::BuildError) -> LlmError {
    LlmError::Config(format!("cannot build the Bedrock request: {error}"))
}

/// A JSON value as a Smithy document.
pub(crate) fn to_document(value: &Value) -> Document {
    match value {
        Value::Null => Document::Null,
        Value::Bool(value) => Document::Bool(*value),
        Value::Number(number) => Document::Number(if let Some(value) = number.as_u64() {
            Number::PosInt(value)
        } else if let Some(value) = number.as_i64() {
            Number::NegInt(value)
        } else {
            Number::Float(number.as_f64().unwrap_or_default())
        }),
        Value::String(value) => Document::String(value.clone()),
        Value::Array(values) => Document::Array(values.iter().map(to_document).collect()),
        Value::Object(map) => Document::Object(
            map.iter()
                .map(|(key, value)| (key.clone(), to_document(value)))
                .collect(),
        ),
    }
}

type ConverseStreamCall = sdk::operation::converse_stream::builders::ConverseStreamFluentBuilder;

fn build_call(
    client: &sdk::Client,
    model: &str,
    request: &ChatRequest,
) -> Result<ConverseStreamCall, LlmError> {
    let mut messages = Vec::with_capacity(request.messages.len());
    for message in &request.messages {
        let mut results = Vec::new();
        let mut blocks = Vec::new();
        for content in &message.content {
            match content {
                Content::Text { text } if text.is_empty() => {}
                Content::Text { text } => blocks.push(bedrock::ContentBlock::Text(text.clone())),
                Content::ToolCall {
                    id,
                    name,
                    arguments,
                } => blocks.push(bedrock::ContentBlock::ToolUse(
                    bedrock::ToolUseBlock::builder()
                        .tool_use_id(id)
                        .name(name)
                        .input(to_document(arguments))
                        .build()
                        .map_err(build_error)?,
                )),
                Content::ToolResult {
                    id,
                    content,
                    is_error,
                } => {
                    let mut result = bedrock::ToolResultBlock::builder()
                        .tool_use_id(id)
                        .content(bedrock::ToolResultContentBlock::Text(content.clone()));
                    if *is_error {
                        result = result.status(bedrock::ToolResultStatus::Error);
                    }
                    results.push(bedrock::ContentBlock::ToolResult(
                        result.build().map_err(build_error)?,
                    ));
                }
            }
        }
        results.extend(blocks);
        let role = match message.role {
            Role::User => bedrock::ConversationRole::User,
            Role::Assistant => bedrock::ConversationRole::Assistant,
        };
        messages.push(
            bedrock::Message::builder()
                .role(role)
                .set_content(Some(results))
                .build()
                .map_err(build_error)?,
        );
    }
    let max_tokens = i32::try_from(request.max_tokens).unwrap_or(i32::MAX);
    let mut call = client
        .converse_stream()
        .model_id(model)
        .set_messages(Some(messages))
        .inference_config(
            bedrock::InferenceConfiguration::builder()
                .max_tokens(max_tokens)
                .build(),
        );
    if let Some(system) = &request.system {
        call = call.system(bedrock::SystemContentBlock::Text(system.clone()));
    }
    if !request.tools.is_empty() {
        let mut tools = Vec::with_capacity(request.tools.len());
        for tool in &request.tools {
            tools.push(bedrock::Tool::ToolSpec(
                bedrock::ToolSpecification::builder()
                    .name(&tool.name)
                    .description(&tool.description)
                    .input_schema(bedrock::ToolInputSchema::Json(to_document(
                        &tool.input_schema,
                    )))
                    .build()
                    .map_err(build_error)?,
            ));
        }
        call = call.tool_config(
            bedrock::ToolConfiguration::builder()
                .set_tools(Some(tools))
                .build()
                .map_err(build_error)?,
        );
    }
    Ok(call)
}

/// Conventional HTTP statuses for Bedrock's error codes (errors inside the event stream
/// have no HTTP status of their own).
fn status_of_code(code: Option<&str>) -> u16 {
    match code.unwrap_or_default() {
        "ValidationException" => 400,
        "AccessDeniedException" => 403,
        "ResourceNotFoundException" => 404,
        "ModelTimeoutException" => 408,
        "ModelErrorException" => 424,
        "ModelNotReadyException" | "ThrottlingException" => 429,
        "ServiceUnavailableException" => 503,
        _ => 500,
    }
}

fn error_text<E: ProvideErrorMetadata>(error: &E) -> String {
    match (error.code(), error.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (None, Some(message)) => message.to_owned(),
        (Some(code), None) => code.to_owned(),
        (None, None) => "unknown error".to_owned(),
    }
}

fn other_sdk_error<E, R>(error: &SdkError<E, R>) -> LlmError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let text = common::sanitize(&DisplayErrorContext(error).to_string(), None);
    match error {
        SdkError::TimeoutError(_) => LlmError::Timeout,
        SdkError::DispatchFailure(failure) if failure.is_timeout() => LlmError::Timeout,
        SdkError::DispatchFailure(_) => LlmError::Transport(text),
        SdkError::ConstructionFailure(_) => LlmError::Config(text),
        _ => LlmError::Protocol(text),
    }
}

/// Maps the error of the initial `ConverseStream` call.
fn call_error(
    error: SdkError<
        sdk::operation::converse_stream::ConverseStreamError,
        sdk::config::http::HttpResponse,
    >,
) -> LlmError {
    match &error {
        SdkError::ServiceError(context) => LlmError::Provider {
            status: context.raw().status().as_u16(),
            message: common::sanitize(&error_text(context.err()), None),
        },
        _ => other_sdk_error(&error),
    }
}

/// Maps an error inside the event stream.
fn stream_error<R: std::fmt::Debug>(
    error: SdkError<bedrock::error::ConverseStreamOutputError, R>,
) -> LlmError {
    match &error {
        SdkError::ServiceError(context) => LlmError::Provider {
            status: status_of_code(context.err().code()),
            message: common::sanitize(&error_text(context.err()), None),
        },
        _ => other_sdk_error(&error),
    }
}

fn stop_reason(reason: &bedrock::StopReason) -> StopReason {
    match reason {
        bedrock::StopReason::EndTurn | bedrock::StopReason::StopSequence => StopReason::EndTurn,
        bedrock::StopReason::ToolUse => StopReason::ToolUse,
        bedrock::StopReason::MaxTokens => StopReason::MaxTokens,
        _ => StopReason::Other,
    }
}

type Receiver = sdk::primitives::event_stream::EventReceiver<
    bedrock::ConverseStreamOutput,
    bedrock::error::ConverseStreamOutputError,
>;

async fn read_stream(
    mut receiver: Receiver,
    deadline: Instant,
    emitter: Emitter,
) -> Result<(), StreamError> {
    let mut tool_calls = ToolCalls::new();
    let mut stop = None;
    let mut usage = None;
    loop {
        let event = tokio::select! {
            () = emitter.closed() => return Err(StreamError::Closed),
            received = tokio::time::timeout_at(deadline, receiver.recv()) => match received {
                Err(_) => return Err(LlmError::Timeout.into()),
                Ok(Err(error)) => return Err(stream_error(error).into()),
                Ok(Ok(event)) => event,
            },
        };
        let Some(event) = event else { break };
        match event {
            bedrock::ConverseStreamOutput::ContentBlockStart(start) => {
                if let Some(bedrock::ContentBlockStart::ToolUse(tool)) = start.start {
                    tool_calls.insert(
                        index(start.content_block_index),
                        PartialToolCall {
                            id: tool.tool_use_id,
                            name: tool.name,
                            arguments: String::new(),
                        },
                    );
                }
            }
            bedrock::ConverseStreamOutput::ContentBlockDelta(delta) => match delta.delta {
                Some(bedrock::ContentBlockDelta::Text(text)) if !text.is_empty() => {
                    emitter.emit(ChatEvent::TextDelta(text)).await?;
                }
                Some(bedrock::ContentBlockDelta::ToolUse(tool)) => {
                    let position = index(delta.content_block_index);
                    let call = tool_calls.get_mut(&position).ok_or_else(|| {
                        LlmError::Protocol(format!(
                            "a toolUse delta for block {position}, which did not start a toolUse"
                        ))
                    })?;
                    call.arguments.push_str(&tool.input);
                }
                _ => {} // reasoning, citations…
            },
            bedrock::ConverseStreamOutput::ContentBlockStop(block) => {
                if let Some(call) = tool_calls.remove(&index(block.content_block_index)) {
                    emitter.emit(call.finish()?).await?;
                }
            }
            bedrock::ConverseStreamOutput::MessageStop(message) => {
                stop = Some(stop_reason(&message.stop_reason));
            }
            bedrock::ConverseStreamOutput::Metadata(metadata) => {
                if let Some(tokens) = metadata.usage {
                    usage = Some(Usage {
                        input_tokens: u64::try_from(tokens.input_tokens).unwrap_or(0),
                        output_tokens: u64::try_from(tokens.output_tokens).unwrap_or(0),
                    });
                }
            }
            _ => {} // messageStart, future events
        }
    }
    for (_, call) in tool_calls {
        emitter.emit(call.finish()?).await?;
    }
    let stop =
        stop.ok_or_else(|| LlmError::Protocol("the stream ended without messageStop".into()))?;
    if let Some(usage) = usage {
        emitter.emit(ChatEvent::Usage(usage)).await?;
    }
    emitter.emit(ChatEvent::Done(stop)).await?;
    Ok(())
}

fn index(position: i32) -> u64 {
    u64::try_from(position).unwrap_or(0)
}
