//! Streams the scripted server never sends: a canned-response HTTP server answers every
//! request with a fixed SSE body, to check in-stream errors and cut streams.

use std::time::Duration;

use futures_util::StreamExt;
use latchkey_llm::{
    ChatEvent, ChatRequest, Content, LlmConfig, LlmError, Message, Provider, Role, StopReason,
};
use secrecy::SecretString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serves `body` as `text/event-stream` to every request; returns the base URL.
async fn canned(body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                // Read the head and the body (content-length) of the request.
                loop {
                    let Ok(read) = socket.read(&mut buffer).await else {
                        return;
                    };
                    if read == 0 {
                        return;
                    }
                    request.extend_from_slice(&buffer[..read]);
                    let text = String::from_utf8_lossy(&request).to_lowercase();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text
                            .lines()
                            .find_map(|line| line.strip_prefix("content-length:"))
                            .and_then(|value| value.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                            connection: close\r\n\r\n";
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(body.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    format!("http://{address}")
}

fn config(provider: Provider, base_url: String) -> LlmConfig {
    LlmConfig {
        provider,
        model: "m".into(),
        base_url: Some(base_url),
        api_key: Some(SecretString::from("sk-canned-SECRET")),
        region: None,
        timeout: Duration::from_secs(10),
        max_retries: 1,
    }
}

fn request() -> ChatRequest {
    ChatRequest {
        system: None,
        messages: vec![Message {
            role: Role::User,
            content: vec![Content::Text { text: "hi".into() }],
        }],
        tools: vec![],
        max_tokens: 10,
    }
}

async fn run(provider: Provider, body: &'static str) -> (Vec<ChatEvent>, Option<LlmError>) {
    let model = latchkey_llm::build(&config(provider, canned(body).await)).expect("model");
    let mut stream = model.stream(request()).await.expect("stream starts");
    let mut events = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => events.push(event),
            Err(error) => {
                assert!(
                    stream.next().await.is_none(),
                    "the stream ends after an error"
                );
                return (events, Some(error));
            }
        }
    }
    (events, None)
}

#[tokio::test]
async fn openai_stream_cut_before_finish_is_a_protocol_error() {
    let (events, error) = run(
        Provider::Openai,
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"par\"}}]}\n\n",
    )
    .await;
    assert_eq!(events, vec![ChatEvent::TextDelta("par".into())]);
    assert!(matches!(error, Some(LlmError::Protocol(_))), "{error:?}");
}

#[tokio::test]
async fn openai_without_done_is_accepted_after_a_finish_reason() {
    let (events, error) = run(
        Provider::Openai,
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ok\"},\"finish_reason\":\"length\"}]}\n\n",
    )
    .await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        events,
        vec![
            ChatEvent::TextDelta("ok".into()),
            ChatEvent::Done(StopReason::MaxTokens)
        ]
    );
}

#[tokio::test]
async fn openai_error_chunk_is_a_provider_error() {
    let (_, error) = run(
        Provider::Openai,
        "data: {\"error\":{\"message\":\"model overloaded\",\"type\":\"server_error\"}}\n\n",
    )
    .await;
    assert!(
        matches!(&error, Some(LlmError::Provider { message, .. }) if message == "model overloaded"),
        "{error:?}"
    );
}

#[tokio::test]
async fn openai_bad_json_is_a_protocol_error() {
    let (_, error) = run(Provider::Openai, "data: {not json\n\n").await;
    assert!(matches!(error, Some(LlmError::Protocol(_))), "{error:?}");
}

#[tokio::test]
async fn anthropic_error_event_is_a_provider_error() {
    let (events, error) = run(
        Provider::Anthropic,
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n\
         event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
    )
    .await;
    assert!(events.is_empty(), "{events:?}");
    assert!(
        matches!(&error, Some(LlmError::Provider { status: 529, message }) if message == "Overloaded"),
        "{error:?}"
    );
}

#[tokio::test]
async fn anthropic_stream_cut_before_message_stop_is_a_protocol_error() {
    let (_, error) = run(
        Provider::Anthropic,
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
         event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\n",
    )
    .await;
    assert!(matches!(error, Some(LlmError::Protocol(_))), "{error:?}");
}

#[tokio::test]
async fn connection_refused_is_a_transport_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    drop(listener);
    let model =
        latchkey_llm::build(&config(Provider::Openai, format!("http://{address}"))).expect("model");
    let error = model.stream(request()).await.err();
    assert!(matches!(&error, Some(LlmError::Transport(_))), "{error:?}");
    assert!(!format!("{error:?}").contains("sk-canned-SECRET"));
}

#[tokio::test]
async fn bad_configuration_is_rejected() {
    for base in [
        "ftp://example.com",
        "not a url",
        "https://user:pw@example.com",
    ] {
        let error = latchkey_llm::build(&config(Provider::Anthropic, base.into())).err();
        assert!(
            matches!(error, Some(LlmError::Config(_))),
            "{base}: {error:?}"
        );
    }
    let mut empty_model = config(Provider::Openai, "http://127.0.0.1:1".into());
    empty_model.model = String::new();
    assert!(matches!(
        latchkey_llm::build(&empty_model).err(),
        Some(LlmError::Config(_))
    ));
}

/// Building a Bedrock model from the default chain does no I/O: the chain is read on the
/// first call.
#[tokio::test]
async fn bedrock_default_chain_is_lazy() {
    let mut config = config(Provider::Bedrock, "http://127.0.0.1:1".into());
    config.region = Some("eu-west-1".into());
    let model = latchkey_llm::build(&config).expect("model");
    let debug = format!("{model:?}");
    assert!(debug.contains("default chain"), "{debug}");
}
