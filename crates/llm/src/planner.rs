//! The offline scripted planner: the model `latchkey dev` uses when no real one is
//! configured. It is not a language model and says so in every answer: it maps plain
//! requests ("who am I on GitHub", "list my repositories") to the tools it is offered by
//! keywords, calls the one that fits, and turns the tool's JSON result into a sentence.
//! It streams through the same [`ChatModel`] contract as the real providers, so the agent's
//! tool loop, consent pause and resume run unchanged.

use std::pin::Pin;

use serde_json::Value;

use crate::{
    ChatEvent, ChatModel, ChatRequest, ChatStream, Content, LlmError, Role, StopReason, ToolSpec,
    Usage,
};

/// The label every answer starts with.
pub const LABEL: &str = "[offline scripted planner, not an AI model]";

/// What a request may ask for, by the words that say it and the words a tool's name or
/// description has for it.
const INTENTS: [(&[&str], &[&str]); 2] = [
    (
        &["repo", "repos", "repositories", "repository", "projects"],
        &["repo"],
    ),
    (
        &[
            "who am i",
            "whoami",
            "profile",
            "my login",
            "my account",
            "my user",
            "who i am",
        ],
        &["whoami", "user", "profile", "me"],
    ),
];

/// The planner. Cheap to clone, no state.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScriptedPlanner;

impl ScriptedPlanner {
    /// The events of one call (no I/O: the planner decides from the request alone).
    pub fn plan(request: &ChatRequest) -> Vec<ChatEvent> {
        let Some(last) = request.messages.last() else {
            return answer(&help(&request.tools));
        };
        // A tool ran: say what it returned.
        let results: Vec<String> = last
            .content
            .iter()
            .filter_map(|c| match c {
                Content::ToolResult {
                    content, is_error, ..
                } => Some(describe_result(content, *is_error)),
                _ => None,
            })
            .collect();
        if !results.is_empty() {
            return answer(&results.join("\n\n"));
        }
        let text: String = last
            .content
            .iter()
            .filter_map(|c| match c {
                Content::Text { text } => Some(text.as_str()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase();
        if last.role != Role::User {
            return answer(&help(&request.tools));
        }
        match choose(&text, &request.tools) {
            Some(tool) => {
                let id = format!("planner-{}", request.messages.len());
                vec![
                    ChatEvent::TextDelta(format!("{LABEL} Calling `{}`.", tool.name)),
                    ChatEvent::ToolCall {
                        id,
                        name: tool.name.clone(),
                        arguments: Value::Object(serde_json::Map::new()),
                    },
                    ChatEvent::Usage(Usage::default()),
                    ChatEvent::Done(StopReason::ToolUse),
                ]
            }
            None => answer(&help(&request.tools)),
        }
    }
}

/// The tool a request asks for: the first intent whose words the request has, and the
/// first tool (without required arguments) whose name or description fits it.
fn choose<'a>(text: &str, tools: &'a [ToolSpec]) -> Option<&'a ToolSpec> {
    let words: Vec<&str> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let asks = |phrase: &str| {
        if phrase.contains(' ') {
            text.contains(phrase)
        } else {
            words.contains(&phrase)
        }
    };
    INTENTS.iter().find_map(|(said, named)| {
        if !said.iter().any(|p| asks(p)) {
            return None;
        }
        tools
            .iter()
            .filter(|t| callable_without_arguments(t))
            .find(|t| {
                let name = t.name.to_lowercase();
                named.iter().any(|n| name.contains(n))
            })
    })
}

fn callable_without_arguments(tool: &ToolSpec) -> bool {
    tool.input_schema
        .get("required")
        .and_then(Value::as_array)
        .is_none_or(|r| r.is_empty())
}

fn help(tools: &[ToolSpec]) -> String {
    let mut text = format!(
        "{LABEL} I map a few plain requests to tools: try \"who am I on GitHub?\" or \"list my repositories\"."
    );
    let usable: Vec<&str> = tools
        .iter()
        .filter(|t| callable_without_arguments(t))
        .map(|t| t.name.as_str())
        .collect();
    if !usable.is_empty() {
        text.push_str(&format!(" Tools I can call: {}.", usable.join(", ")));
    }
    text.push_str(" Configure a real model (OPENAI_API_KEY, ANTHROPIC_API_KEY, or --llm-provider and --llm-model as for `serve agent`) for anything else.");
    text
}

/// A sentence for a tool's result (JSON text, or an error message).
fn describe_result(content: &str, is_error: bool) -> String {
    if is_error {
        return format!("{LABEL} The tool failed: {content}");
    }
    let parsed: Option<Value> = serde_json::from_str(content).ok();
    // The agent wraps HTTP results as {"status": …, "body": …}; accept both shapes.
    let body = parsed.as_ref().map(|v| v.get("body").unwrap_or(v).clone());
    match body {
        Some(Value::Object(o)) if o.get("login").is_some() => {
            let login = o.get("login").and_then(Value::as_str).unwrap_or("?");
            match o.get("name").and_then(Value::as_str) {
                Some(name) => format!("{LABEL} You are {login} on GitHub ({name})."),
                None => format!("{LABEL} You are {login} on GitHub."),
            }
        }
        Some(Value::Array(items)) => {
            let names: Vec<String> = items
                .iter()
                .filter_map(|i| {
                    let name = i.get("full_name").or_else(|| i.get("name"))?.as_str()?;
                    let private = i.get("private").and_then(Value::as_bool) == Some(true);
                    Some(if private {
                        format!("{name} (private)")
                    } else {
                        name.to_string()
                    })
                })
                .collect();
            if names.is_empty() {
                format!("{LABEL} The tool returned {} items.", items.len())
            } else {
                format!(
                    "{LABEL} You have {} repositories: {}.",
                    names.len(),
                    names.join(", ")
                )
            }
        }
        _ => {
            let shown: String = content.chars().take(500).collect();
            format!("{LABEL} The tool returned: {shown}")
        }
    }
}

/// A text answer, streamed a few words at a time.
fn answer(text: &str) -> Vec<ChatEvent> {
    let mut events: Vec<ChatEvent> = Vec::new();
    let mut chunk = String::new();
    for (i, word) in text.split_inclusive(' ').enumerate() {
        chunk.push_str(word);
        if i % 4 == 3 {
            events.push(ChatEvent::TextDelta(std::mem::take(&mut chunk)));
        }
    }
    if !chunk.is_empty() {
        events.push(ChatEvent::TextDelta(chunk));
    }
    events.push(ChatEvent::Usage(Usage::default()));
    events.push(ChatEvent::Done(StopReason::EndTurn));
    events
}

impl ChatModel for ScriptedPlanner {
    fn stream(
        &self,
        request: ChatRequest,
    ) -> Pin<Box<dyn std::future::Future<Output = Result<ChatStream, LlmError>> + Send + '_>> {
        let events = Self::plan(&request);
        Box::pin(async move {
            let stream: ChatStream =
                Box::pin(futures_util::stream::iter(events.into_iter().map(Ok)));
            Ok(stream)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::Message;

    fn tool(name: &str, required: &[&str]) -> ToolSpec {
        ToolSpec {
            name: name.into(),
            description: String::new(),
            input_schema: json!({"type": "object", "required": required}),
        }
    }

    fn ask(text: &str, tools: Vec<ToolSpec>) -> Vec<ChatEvent> {
        ScriptedPlanner::plan(&ChatRequest {
            system: None,
            messages: vec![Message {
                role: Role::User,
                content: vec![Content::Text { text: text.into() }],
            }],
            tools,
            max_tokens: 100,
        })
    }

    fn called(events: &[ChatEvent]) -> Option<&str> {
        events.iter().find_map(|e| match e {
            ChatEvent::ToolCall { name, .. } => Some(name.as_str()),
            _ => None,
        })
    }

    fn text(events: &[ChatEvent]) -> String {
        events
            .iter()
            .filter_map(|e| match e {
                ChatEvent::TextDelta(t) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn plain_requests_map_to_tools() {
        let tools = || {
            vec![
                tool("github_whoami", &[]),
                tool("github_list_repos", &[]),
                tool("github_repo_issues", &["owner", "repo"]),
            ]
        };
        assert_eq!(
            called(&ask("Who am I on GitHub?", tools())),
            Some("github_whoami")
        );
        assert_eq!(
            called(&ask("list my repositories please", tools())),
            Some("github_list_repos")
        );
        let events = ask("what's the weather", tools());
        assert_eq!(called(&events), None);
        assert!(text(&events).starts_with(LABEL));
        assert!(text(&events).contains("github_whoami, github_list_repos."));
        assert_eq!(events.last(), Some(&ChatEvent::Done(StopReason::EndTurn)));
    }

    #[test]
    fn results_become_labelled_sentences() {
        let result = |content: &str, is_error| {
            ScriptedPlanner::plan(&ChatRequest {
                system: None,
                messages: vec![Message {
                    role: Role::User,
                    content: vec![Content::ToolResult {
                        id: "1".into(),
                        content: content.into(),
                        is_error,
                    }],
                }],
                tools: vec![],
                max_tokens: 100,
            })
        };
        let me = text(&result(
            r#"{"status":200,"body":{"login":"alice","name":"Alice (sandbox)"}}"#,
            false,
        ));
        assert_eq!(
            me,
            format!("{LABEL} You are alice on GitHub (Alice (sandbox)).")
        );
        let repos = text(&result(
            r#"[{"full_name":"alice/a","private":false},{"full_name":"alice/b","private":true}]"#,
            false,
        ));
        assert!(repos.ends_with("You have 2 repositories: alice/a, alice/b (private)."));
        assert!(text(&result("denied", true)).contains("The tool failed: denied"));
    }
}
