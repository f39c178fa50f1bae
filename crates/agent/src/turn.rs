//! One turn: load the conversation, run the model/tool loop, stream events, save.

use std::time::Duration;

use futures_util::StreamExt;
use latchkey_client::{
    Error as ClientError, ErrorKind, Oauth2Flow, PollOptions, Reason, ResourceToken,
    ResourceTokenRequest,
};
use latchkey_conversations::{ConversationStore, StoreError};
use latchkey_llm::{ChatEvent, ChatRequest, Content, Message, Role, StopReason};
use latchkey_telemetry as telemetry;
use secrecy::SecretString;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::app::{AgentState, Caller};
use crate::conversation::{Conversation, Pending, PendingCall};
use crate::events::{self, MAX_EVENT_CONTENT_BYTES, StreamEvent};

/// Where events go; a client that went away is not an error.
struct Out(mpsc::Sender<StreamEvent>);

impl Out {
    async fn send(&self, event: StreamEvent) {
        let _ = self.0.send(event).await;
    }
}

/// What running one tool call came to.
enum CallOutcome {
    /// A `Content::ToolResult` for the model.
    Result(Content),
    /// The user must consent first; the turn ends here. `announced`: the
    /// `authorization_required` event was already sent (while waiting for the consent).
    NeedsConsent {
        event: events::AuthorizationRequired,
        announced: bool,
    },
    /// The client went away while waiting for consent; the turn ends silently.
    Abandoned,
}

struct Turn {
    state: AgentState,
    caller: Caller,
    session_id: String,
    out: Out,
    cancel: CancellationToken,
    wat: Option<SecretString>,
    usage: events::Usage,
}

pub(crate) async fn run_turn(
    state: AgentState,
    caller: Caller,
    session_id: String,
    message: String,
    tx: mpsc::Sender<StreamEvent>,
    cancel: CancellationToken,
) {
    let _lock = state.inner.locks.lock(caller.subject(), &session_id).await;
    let mut turn = Turn {
        state,
        caller,
        session_id,
        out: Out(tx),
        cancel,
        wat: None,
        usage: events::Usage::default(),
    };
    let store = turn.state.inner.store.clone();
    // Across replicas sharing an S3 store: the conversation's lease (waiting for another
    // replica's turn, as the lock above waits for this process's).
    let lease = tokio::select! {
        lease = store.lease(turn.caller.subject(), &turn.session_id, LEASE_WAIT) => lease,
        () = turn.cancel.cancelled() => return,
    };
    let lease = match lease {
        Ok(lease) => lease,
        Err(StoreError::Busy) => {
            turn.fail(
                "busy",
                "another turn of this conversation is still running; try again later",
            )
            .await;
            return;
        }
        Err(error) => {
            tracing::error!(%error, "cannot take the conversation's lease");
            turn.fail("store_error", "the conversation could not be loaded")
                .await;
            return;
        }
    };
    turn.run_locked(&store, message).await;
    if let Some(lease) = lease {
        lease.release().await;
    }
}

/// How long a turn waits for another replica's turn of the same conversation.
const LEASE_WAIT: Duration = Duration::from_secs(300);

impl Turn {
    /// Load, run and save the conversation (its locks held).
    async fn run_locked(&mut self, store: &ConversationStore, message: String) {
        let turn = self;
        let mut conversation = match store
            .load::<Conversation>(turn.caller.subject(), &turn.session_id)
            .await
        {
            Ok(c) => c.unwrap_or_default(),
            Err(error) => {
                tracing::error!(%error, "cannot load the conversation");
                turn.fail("store_error", "the conversation could not be loaded")
                    .await;
                return;
            }
        };
        let save = turn.run(&mut conversation, message).await;
        if save {
            conversation.trim();
            if let Err(error) = store
                .save(turn.caller.subject(), &turn.session_id, &conversation)
                .await
            {
                tracing::error!(%error, "cannot save the conversation");
                turn.out
                    .send(StreamEvent::error(
                        "store_error",
                        "the conversation could not be saved",
                    ))
                    .await;
            }
        }
    }
}

impl Turn {
    async fn fail(&self, code: &str, message: &str) {
        telemetry::agent_turn("error");
        self.out.send(StreamEvent::error(code, message)).await;
        self.out.send(StreamEvent::done("error")).await;
    }

    async fn finish(&self, stop_reason: &'static str) {
        telemetry::agent_turn(stop_reason);
        tracing::info!(
            stop_reason,
            input_tokens = self.usage.input_tokens,
            output_tokens = self.usage.output_tokens,
            "turn finished"
        );
        self.out.send(StreamEvent::Usage(self.usage)).await;
        self.out.send(StreamEvent::done(stop_reason)).await;
    }

    /// The loop. Returns whether the conversation must be saved.
    async fn run(&mut self, conversation: &mut Conversation, message: String) -> bool {
        let inner = self.state.inner.clone();
        if let Some(pending) = conversation.pending.take() {
            // The previous turn stopped for consent: run the calls it left, then continue.
            let mut texts = pending.user_texts;
            texts.push(message);
            let Some(mut results) = self
                .run_calls(conversation, pending.results, pending.calls, true)
                .await
            else {
                // Still waiting: keep what the user wrote for when the calls have run.
                if let Some(still) = conversation.pending.as_mut() {
                    still.user_texts = texts;
                }
                return true;
            };
            results.extend(texts.into_iter().map(|text| Content::Text { text }));
            conversation.messages.push(Message {
                role: Role::User,
                content: results,
            });
        } else {
            conversation.messages.push(Message {
                role: Role::User,
                content: vec![Content::Text { text: message }],
            });
        }

        let specs: Vec<_> = inner.tools.iter().map(|t| t.spec.clone()).collect();
        let mut iterations = 0;
        loop {
            let request = ChatRequest {
                system: Some(inner.config.keys.system_prompt.clone()),
                messages: conversation.messages.clone(),
                tools: specs.clone(),
                max_tokens: inner.config.keys.max_output_tokens,
            };
            let (text, calls, stop) = match self.call_model(request).await {
                Ok(answer) => answer,
                Err(message) => {
                    self.out
                        .send(StreamEvent::error("model_error", message))
                        .await;
                    self.finish("error").await;
                    return false;
                }
            };
            let mut content = vec![];
            if !text.is_empty() {
                content.push(Content::Text { text });
            }
            content.extend(calls.iter().map(|c| Content::ToolCall {
                id: c.id.clone(),
                name: c.name.clone(),
                arguments: c.arguments.clone(),
            }));
            if content.is_empty() {
                content.push(Content::Text {
                    text: String::new(),
                });
            }
            conversation.messages.push(Message {
                role: Role::Assistant,
                content,
            });
            if calls.is_empty() {
                self.finish(match stop {
                    StopReason::EndTurn | StopReason::ToolUse => "end_turn",
                    StopReason::MaxTokens => "max_tokens",
                    StopReason::Other => "other",
                })
                .await;
                return true;
            }
            if iterations >= inner.config.keys.max_tool_iterations {
                // Keep the conversation well-formed: every call gets a result.
                conversation.messages.push(Message {
                    role: Role::User,
                    content: calls
                        .iter()
                        .map(|c| Content::ToolResult {
                            id: c.id.clone(),
                            content: "not run: the tool iteration limit of this turn was reached"
                                .into(),
                            is_error: true,
                        })
                        .collect(),
                });
                self.out
                    .send(StreamEvent::error(
                        "tool_iterations_exceeded",
                        format!(
                            "the model asked for tools more than {} times in one turn",
                            inner.config.keys.max_tool_iterations
                        ),
                    ))
                    .await;
                self.finish("max_tool_iterations").await;
                return true;
            }
            iterations += 1;
            let Some(results) = self.run_calls(conversation, vec![], calls, false).await else {
                return true;
            };
            conversation.messages.push(Message {
                role: Role::User,
                content: results,
            });
        }
    }

    /// Runs `calls` in order, after the `results` of calls that already ran (announcing
    /// each call first when the stream has not shown it yet). All ran: their results. A
    /// call needs consent: it and the rest are kept as the conversation's pending calls,
    /// the turn ends for consent, and `None`.
    async fn run_calls(
        &mut self,
        conversation: &mut Conversation,
        mut results: Vec<Content>,
        calls: Vec<PendingCall>,
        announce: bool,
    ) -> Option<Vec<Content>> {
        let mut calls = calls.into_iter();
        while let Some(call) = calls.next() {
            if announce {
                self.out
                    .send(StreamEvent::ToolCall(events::ToolCall {
                        id: call.id.clone(),
                        name: call.name.clone(),
                        arguments: call.arguments.clone(),
                    }))
                    .await;
            }
            let outcome = self.run_call(&call).await;
            // The label is a configured tool's name, never a name the model made up.
            let inner = &self.state.inner;
            let tool = match inner.tools.iter().find(|t| t.spec.name == call.name) {
                Some(tool) => tool.spec.name.as_str(),
                None => "unknown",
            };
            telemetry::agent_tool_call(
                tool,
                match &outcome {
                    CallOutcome::Result(Content::ToolResult { is_error: true, .. }) => "error",
                    CallOutcome::Result(_) => "ok",
                    CallOutcome::NeedsConsent { .. } => "authorization_required",
                    CallOutcome::Abandoned => "abandoned",
                },
            );
            match outcome {
                CallOutcome::Result(content) => results.push(content),
                outcome => {
                    let mut left = vec![call];
                    left.extend(calls);
                    conversation.pending = Some(Pending {
                        results,
                        calls: left,
                        user_texts: Vec::new(),
                    });
                    self.stop_for_consent(outcome).await;
                    return None;
                }
            }
        }
        Some(results)
    }

    async fn stop_for_consent(&self, outcome: CallOutcome) {
        if let CallOutcome::NeedsConsent { event, announced } = outcome {
            let text = format!(
                "To continue I need your permission to use {} ({}). Open the authorization link, approve, then send any message to continue.",
                event.provider,
                event.scopes.join(" ")
            );
            if !announced {
                self.out
                    .send(StreamEvent::AuthorizationRequired(event))
                    .await;
            }
            self.out
                .send(StreamEvent::TextDelta(events::TextDelta { text }))
                .await;
            self.finish("authorization_required").await;
        }
    }

    /// One model call, streamed: text deltas and tool calls are forwarded as they come.
    async fn call_model(
        &mut self,
        request: ChatRequest,
    ) -> Result<(String, Vec<PendingCall>, StopReason), String> {
        let started = std::time::Instant::now();
        let before = self.usage;
        let answer = self.stream_model(request).await;
        telemetry::model_request(answer.is_ok(), started.elapsed());
        telemetry::model_tokens(
            self.usage.input_tokens.saturating_sub(before.input_tokens),
            self.usage
                .output_tokens
                .saturating_sub(before.output_tokens),
        );
        answer
    }

    async fn stream_model(
        &mut self,
        request: ChatRequest,
    ) -> Result<(String, Vec<PendingCall>, StopReason), String> {
        let model = self.state.inner.model.clone();
        let mut stream = model.stream(request).await.map_err(|e| e.to_string())?;
        let mut text = String::new();
        let mut calls = vec![];
        let mut stop = None;
        while let Some(item) = stream.next().await {
            match item.map_err(|e| e.to_string())? {
                ChatEvent::TextDelta(delta) => {
                    text.push_str(&delta);
                    self.out
                        .send(StreamEvent::TextDelta(events::TextDelta { text: delta }))
                        .await;
                }
                ChatEvent::ToolCall {
                    id,
                    name,
                    arguments,
                } => {
                    self.out
                        .send(StreamEvent::ToolCall(events::ToolCall {
                            id: id.clone(),
                            name: name.clone(),
                            arguments: arguments.clone(),
                        }))
                        .await;
                    calls.push(PendingCall {
                        id,
                        name,
                        arguments,
                    });
                }
                ChatEvent::Usage(usage) => {
                    self.usage.input_tokens += usage.input_tokens;
                    self.usage.output_tokens += usage.output_tokens;
                }
                ChatEvent::Done(reason) => {
                    stop = Some(reason);
                    break;
                }
            }
        }
        let stop = stop.ok_or("the model's stream ended without a stop")?;
        Ok((text, calls, stop))
    }

    async fn workload_access_token(&mut self) -> Result<SecretString, ClientError> {
        if let Some(wat) = &self.wat {
            return Ok(wat.clone());
        }
        let inner = &self.state.inner;
        let workload = &inner.config.keys.workload_name;
        let wat = match &self.caller {
            Caller::UserId(sub) => {
                inner
                    .identity
                    .get_workload_access_token_for_user_id(workload, sub)
                    .await?
            }
            Caller::IdToken { token, .. } => {
                inner
                    .identity
                    .get_workload_access_token_for_jwt(workload, token)
                    .await?
            }
        };
        self.wat = Some(wat.clone());
        Ok(wat)
    }

    /// A failed tool call: `message` is what the model (and the stream) is told.
    async fn tool_error(&self, call: &PendingCall, message: impl Into<String>) -> CallOutcome {
        self.tool_result(call, false, message.into()).await
    }

    async fn tool_result(&self, call: &PendingCall, ok: bool, content: String) -> CallOutcome {
        self.out
            .send(StreamEvent::ToolResult(events::ToolResult {
                id: call.id.clone(),
                name: call.name.clone(),
                ok,
                content: events::truncate(&content, MAX_EVENT_CONTENT_BYTES),
            }))
            .await;
        CallOutcome::Result(Content::ToolResult {
            id: call.id.clone(),
            content,
            is_error: !ok,
        })
    }

    async fn run_call(&mut self, call: &PendingCall) -> CallOutcome {
        let inner = self.state.inner.clone();
        let Some(tool) = inner.tools.iter().find(|t| t.spec.name == call.name) else {
            return self
                .tool_error(call, format!("unknown tool {:?}", call.name))
                .await;
        };
        if let Err(message) = tool.check_arguments(&call.arguments) {
            return self.tool_error(call, message).await;
        }
        let wat = match self.workload_access_token().await {
            Ok(wat) => wat,
            Err(error) => {
                tracing::error!(%error, tool = %tool.spec.name, "cannot get a workload access token");
                return self.tool_error(call, wat_refusal(&error)).await;
            }
        };
        let request = ResourceTokenRequest::new(wat, &tool.provider, Oauth2Flow::UserFederation)
            .with_scopes(tool.scopes.iter().cloned())
            .with_return_url(&inner.config.keys.return_url);
        let answer = inner.identity.get_resource_oauth2_token(&request).await;
        let token = match answer {
            Ok(ResourceToken::Token(token)) => token,
            Ok(ResourceToken::AuthorizationRequired {
                authorization_url,
                session_uri,
            }) => {
                tracing::info!(tool = %tool.spec.name, provider = %tool.provider, scopes = ?tool.scopes, outcome = "authorization-required", "tool needs consent");
                let mut event = events::AuthorizationRequired {
                    tool: tool.spec.name.clone(),
                    provider: tool.provider.clone(),
                    scopes: tool.scopes.clone(),
                    authorization_url,
                    session_uri: session_uri.clone(),
                    message: format!(
                        "The tool {} needs your consent at {} for: {}. Open authorizationUrl in your browser.",
                        tool.spec.name,
                        tool.provider,
                        tool.scopes.join(" ")
                    ),
                };
                let wait = inner.config.keys.consent_wait_seconds;
                if wait == 0 {
                    return CallOutcome::NeedsConsent {
                        event,
                        announced: false,
                    };
                }
                event
                    .message
                    .push_str(&format!(" The agent waits up to {wait} seconds for it."));
                self.out
                    .send(StreamEvent::AuthorizationRequired(event.clone()))
                    .await;
                let poll = request.with_session_uri(session_uri);
                let options = PollOptions {
                    initial_delay: Duration::from_millis(500),
                    max_delay: Duration::from_secs(3),
                    multiplier: 1.5,
                    deadline: Duration::from_secs(wait),
                };
                let cancel = self.cancel.clone();
                match inner
                    .identity
                    .poll_resource_token(&poll, options, cancel.cancelled_owned())
                    .await
                {
                    Ok(token) => token,
                    Err(ClientError::Cancelled) => {
                        tracing::info!(tool = %tool.spec.name, outcome = "abandoned", "the client went away while waiting for consent; the tool call stays pending");
                        return CallOutcome::Abandoned;
                    }
                    Err(ClientError::Deadline { .. }) => {
                        tracing::info!(tool = %tool.spec.name, outcome = "consent-timeout", "no consent within consent_wait_seconds; the tool call stays pending");
                        return CallOutcome::NeedsConsent {
                            event,
                            announced: true,
                        };
                    }
                    Err(error) => {
                        tracing::info!(%error, tool = %tool.spec.name, outcome = "consent-failed", "authorization failed");
                        return self.tool_error(call, consent_failure(&error)).await;
                    }
                }
            }
            Ok(_) => {
                return self
                    .tool_error(call, "the authorization session is not usable; ask again")
                    .await;
            }
            Err(error) => {
                tracing::error!(%error, tool = %tool.spec.name, "GetResourceOauth2Token failed");
                return self
                    .tool_error(
                        call,
                        format!("the identity service refused the token request: {error}"),
                    )
                    .await;
            }
        };
        let outcome = tool
            .run(
                &inner.http,
                &inner.config.keys.github_base_url,
                inner.config.keys.tool_max_response_bytes,
                &call.arguments,
                &token,
            )
            .await;
        // The vend id (a digest of the token, never the token) is the one the identity
        // service wrote in its GetResourceOauth2Token audit event: it joins the two records.
        let vend_id =
            latchkey_core::audit::chain::vend_id(secrecy::ExposeSecret::expose_secret(&token));
        drop(token);
        tracing::info!(tool = %tool.spec.name, provider = %tool.provider, scopes = ?tool.scopes, ok = outcome.ok, vend_id = %vend_id, "tool ran");
        self.tool_result(call, outcome.ok, outcome.content).await
    }
}

/// Why the user's authorization did not complete, said in the stream: a session cancelled
/// because another account opened its link is told as such (the identity service's typed
/// reason, never its message text).
fn consent_failure(error: &ClientError) -> String {
    match error {
        ClientError::SessionFailed {
            reason: Some(Reason::SessionCancelled),
            ..
        } => "the authorization was cancelled because another account opened the authorization link; nothing was granted. Ask again to get a new link, and open it only in your own browser".into(),
        ClientError::SessionFailed {
            reason: Some(Reason::SessionExpired),
            ..
        } => "the authorization expired before it was completed; nothing was granted. Ask again to get a new link".into(),
        error => format!("the user's authorization did not complete: {error}"),
    }
}

/// Why there is no workload access token, said in the stream (not only in the log). The
/// identity service's messages are client-safe by its error model; transport details and
/// internal failures are not repeated.
fn wat_refusal(error: &ClientError) -> String {
    let why = match error {
        ClientError::Service {
            kind: ErrorKind::AccessDenied | ErrorKind::Validation,
            message,
            ..
        } => message.clone(),
        ClientError::Service {
            kind: ErrorKind::Unauthorized,
            ..
        } => "the identity service refused the agent's own credential".into(),
        ClientError::Service {
            kind: ErrorKind::ResourceNotFound,
            ..
        } => "the agent's workload identity does not exist at the identity service".into(),
        ClientError::Service { status, .. } => {
            format!("the identity service failed (HTTP {status})")
        }
        _ => "the identity service could not be reached".into(),
    };
    format!("the agent could not get a workload access token for this user: {why}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::pin::Pin;
    use std::sync::Arc;

    use latchkey_llm::{ChatModel, ChatStream, LlmError, Usage};
    use serde_json::json;

    use super::*;
    use crate::config::AgentConfig;

    /// A model that asks for a tool on every call.
    #[derive(Debug)]
    struct AlwaysTool;

    impl ChatModel for AlwaysTool {
        fn stream(
            &self,
            request: ChatRequest,
        ) -> Pin<Box<dyn std::future::Future<Output = Result<ChatStream, LlmError>> + Send + '_>>
        {
            let n = request.messages.len();
            Box::pin(async move {
                let events = vec![
                    Ok(ChatEvent::ToolCall {
                        id: format!("call-{n}"),
                        name: "no_such_tool".into(),
                        arguments: json!({}),
                    }),
                    Ok(ChatEvent::Usage(Usage {
                        input_tokens: 2,
                        output_tokens: 1,
                    })),
                    Ok(ChatEvent::Done(StopReason::ToolUse)),
                ];
                Ok(Box::pin(futures_util::stream::iter(events)) as ChatStream)
            })
        }
    }

    fn state(dir: &std::path::Path, max_tool_iterations: u32) -> AgentState {
        let iterations = max_tool_iterations.to_string();
        let config = AgentConfig::for_tests(&[
            ("LATCHKEY_AGENT_MAX_TOOL_ITERATIONS", &iterations),
            ("LATCHKEY_AGENT_STORE_DIR", dir.to_str().unwrap()),
            ("LATCHKEY_AGENT_GITHUB_BASE_URL", "http://127.0.0.1:9"),
            ("LATCHKEY_AGENT_TOOL_TIMEOUT_SECONDS", "1"),
            ("LATCHKEY_AGENT_TOOL_MAX_RESPONSE_BYTES", "1024"),
            ("LATCHKEY_AGENT_MAX_BODY_BYTES", "1024"),
            ("LATCHKEY_AGENT_MAX_MESSAGE_CHARS", "100"),
            ("LATCHKEY_AGENT_IDENTITY_TIMEOUT_SECONDS", "1"),
        ]);
        AgentState::new(
            config,
            Arc::new(AlwaysTool),
            Arc::new(latchkey_core::clock::SystemClock),
        )
        .unwrap()
    }

    /// `POST /invocations` acts for the user, so a cookie (sent along with any cross-site
    /// request) must never sign anyone in, even when the OIDC source names one.
    #[tokio::test]
    async fn invocations_never_read_the_id_token_cookie() {
        let dir = std::env::temp_dir().join(format!(
            "latchkey-agent-cookie-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        let mut oidc = latchkey_authn::OidcConfig::new("https://login.example.com", "app");
        oidc.cookie_name = Some("id_token".into());
        let mut config =
            AgentConfig::for_tests(&[("LATCHKEY_AGENT_STORE_DIR", dir.to_str().unwrap())]);
        config.users.oidc = Some(oidc);
        let state = AgentState::new(
            config,
            Arc::new(AlwaysTool),
            Arc::new(latchkey_core::clock::SystemClock),
        )
        .unwrap();
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            axum::http::header::COOKIE,
            "id_token=a.b.c".parse().unwrap(),
        );
        // Read as a credential, the cookie would be verified (and its issuer fetched).
        match state.inner.users.resolve(&headers).await {
            Err(latchkey_authn::ResolveError::NotSignedIn { via: None, .. }) => {}
            other => panic!("the cookie was read: {other:?}"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn tool_iterations_are_bounded_and_the_conversation_stays_well_formed() {
        let dir = std::env::temp_dir().join(format!(
            "latchkey-agent-turn-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        let state = state(&dir, 2);
        let (tx, mut rx) = mpsc::channel(64);
        run_turn(
            state.clone(),
            Caller::UserId("alice".into()),
            "s1".into(),
            "go".into(),
            tx,
            CancellationToken::new(),
        )
        .await;
        let mut events = vec![];
        while let Some(e) = rx.recv().await {
            events.push(e);
        }
        let names: Vec<_> = events.iter().map(StreamEvent::name).collect();
        assert_eq!(
            names,
            [
                "tool_call",
                "tool_result",
                "tool_call",
                "tool_result",
                "tool_call",
                "error",
                "usage",
                "done"
            ],
            "{events:?}"
        );
        assert!(matches!(&events[1], StreamEvent::ToolResult(r) if !r.ok));
        assert!(
            matches!(&events[5], StreamEvent::Error(e) if e.code == "tool_iterations_exceeded")
        );
        assert_eq!(
            events[6],
            StreamEvent::Usage(events::Usage {
                input_tokens: 6,
                output_tokens: 3
            })
        );
        assert_eq!(events[7], StreamEvent::done("max_tool_iterations"));

        // Saved, and every tool call has its result.
        let stored: Conversation = state
            .inner
            .store
            .load("alice", "s1")
            .await
            .unwrap()
            .unwrap();
        assert!(stored.pending.is_none());
        let contents = || stored.messages.iter().flat_map(|m| &m.content);
        let calls: Vec<_> = contents()
            .filter_map(|c| match c {
                Content::ToolCall { id, .. } => Some(id.clone()),
                _ => None,
            })
            .collect();
        let results: Vec<_> = contents()
            .filter_map(|c| match c {
                Content::ToolResult { id, .. } => Some(id.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(calls.len(), 3);
        assert_eq!(calls, results);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_cancelled_authorization_is_said_plainly_from_the_typed_reason() {
        let failed = |reason| ClientError::SessionFailed {
            session_uri: "urn:ietf:params:oauth:request_uri:s".into(),
            reason,
        };
        let said = consent_failure(&failed(Some(Reason::SessionCancelled)));
        assert!(
            said.contains("cancelled because another account opened the authorization link"),
            "{said}"
        );
        assert!(said.contains("nothing was granted"), "{said}");
        // Without the reason, nothing is guessed.
        let said = consent_failure(&failed(None));
        assert!(!said.contains("another account"), "{said}");
        assert!(said.contains("did not complete"), "{said}");
        let said = consent_failure(&failed(Some(Reason::SessionExpired)));
        assert!(said.contains("expired"), "{said}");
    }

    #[tokio::test]
    async fn turns_of_one_session_are_serialized() {
        let locks = crate::conversation::TurnLocks::default();
        let first = locks.lock("alice", "s1").await;
        // Another user's session with the same id, and another session: not blocked.
        let _other_user = tokio::time::timeout(Duration::from_secs(1), locks.lock("bob", "s1"))
            .await
            .unwrap();
        let _other_session =
            tokio::time::timeout(Duration::from_secs(1), locks.lock("alice", "s2"))
                .await
                .unwrap();
        // The same (user, session) waits.
        assert!(
            tokio::time::timeout(Duration::from_millis(100), locks.lock("alice", "s1"))
                .await
                .is_err()
        );
        drop(first);
        let _again = tokio::time::timeout(Duration::from_secs(1), locks.lock("alice", "s1"))
            .await
            .unwrap();
    }
}
