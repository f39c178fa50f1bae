//! What is stored per (verified user `sub`, `sessionId`): the model conversation and the
//! tool calls still waiting for the user's consent, so the next message continues them.
//! Tokens are never part of it.
//!
//! Turns of the same (user, session) are serialized within the process by [`TurnLocks`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use latchkey_llm::{Content, Message};
use serde::{Deserialize, Serialize};

/// Format version of [`Conversation`].
pub const CONVERSATION_VERSION: u32 = 1;
/// Oldest messages are dropped beyond this many (a tool call and its results stay together).
pub const MAX_STORED_MESSAGES: usize = 200;
/// Oldest messages are dropped while the stored conversation is larger than this (the
/// store refuses more than 4 MiB).
pub const MAX_STORED_BYTES: usize = 3 * 1024 * 1024;

/// A tool call the model asked for that has not run yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingCall {
    /// Provider's call id.
    pub id: String,
    /// Tool name.
    pub name: String,
    /// Arguments.
    pub arguments: serde_json::Value,
}

/// The state of an assistant message whose tool calls did not all run (consent needed).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    /// Results of the calls that already ran (`Content::ToolResult`).
    pub results: Vec<Content>,
    /// Calls still to run, in order; the first needed consent.
    pub calls: Vec<PendingCall>,
    /// What the user wrote while the calls waited for consent, oldest first: sent to the
    /// model with the calls' results once they have run, never dropped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_texts: Vec<String>,
}

/// One stored conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    /// [`CONVERSATION_VERSION`].
    pub version: u32,
    /// The messages, oldest first. When `pending` is set, the last one is the assistant's
    /// message with the tool calls.
    pub messages: Vec<Message>,
    /// Tool calls waiting for consent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Pending>,
}

impl Default for Conversation {
    fn default() -> Self {
        Self {
            version: CONVERSATION_VERSION,
            messages: vec![],
            pending: None,
        }
    }
}

impl Conversation {
    /// Drop the oldest messages beyond [`MAX_STORED_MESSAGES`] or while the serialized
    /// conversation is over [`MAX_STORED_BYTES`], restarting at a user message that carries
    /// no tool results (so no result is left without its call). The last exchange is kept.
    pub fn trim(&mut self) {
        loop {
            let too_many = self.messages.len() > MAX_STORED_MESSAGES;
            let too_big =
                !too_many && serde_json::to_vec(self).map_or(0, |b| b.len()) > MAX_STORED_BYTES;
            if !(too_many || too_big) {
                return;
            }
            let mut start = if too_many {
                self.messages.len() - MAX_STORED_MESSAGES
            } else {
                1
            };
            while start < self.messages.len() && !is_plain_user(&self.messages[start]) {
                start += 1;
            }
            if start >= self.messages.len() {
                return; // one exchange: nothing more can go
            }
            self.messages.drain(..start);
        }
    }
}

fn is_plain_user(m: &Message) -> bool {
    m.role == latchkey_llm::Role::User
        && !m
            .content
            .iter()
            .any(|c| matches!(c, Content::ToolResult { .. }))
}

/// (user `sub`, `sessionId`).
type TurnKey = (String, String);

/// A keyed async mutex: one turn at a time per (user, session) in this process.
#[derive(Debug, Default)]
pub struct TurnLocks {
    locks: Mutex<HashMap<TurnKey, Weak<tokio::sync::Mutex<()>>>>,
}

impl TurnLocks {
    /// Wait for the lock of (`sub`, `session_id`).
    pub async fn lock(&self, sub: &str, session_id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let mutex = {
            let mut locks = self
                .locks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if locks.len() > 1024 {
                locks.retain(|_, weak| weak.strong_count() > 0);
            }
            let key = (sub.to_string(), session_id.to_string());
            match locks.get(&key).and_then(Weak::upgrade) {
                Some(m) => m,
                None => {
                    let m = Arc::new(tokio::sync::Mutex::new(()));
                    locks.insert(key, Arc::downgrade(&m));
                    m
                }
            }
        };
        mutex.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use latchkey_llm::Role;

    fn text(role: Role, text: &str) -> Message {
        Message {
            role,
            content: vec![Content::Text { text: text.into() }],
        }
    }

    #[test]
    fn trim_keeps_calls_with_their_results() {
        let mut c = Conversation::default();
        for i in 0..150 {
            c.messages.push(text(Role::User, &format!("q{i}")));
            c.messages.push(Message {
                role: Role::Assistant,
                content: vec![Content::ToolCall {
                    id: format!("c{i}"),
                    name: "t".into(),
                    arguments: serde_json::json!({}),
                }],
            });
            c.messages.push(Message {
                role: Role::User,
                content: vec![Content::ToolResult {
                    id: format!("c{i}"),
                    content: "x".repeat(100),
                    is_error: false,
                }],
            });
            c.messages.push(text(Role::Assistant, "a"));
        }
        c.trim();
        assert!(c.messages.len() <= MAX_STORED_MESSAGES);
        assert!(is_plain_user(&c.messages[0]));
        // Big results: trimmed by size.
        let mut c = Conversation::default();
        for i in 0..10 {
            c.messages.push(text(Role::User, &format!("q{i}")));
            c.messages
                .push(text(Role::Assistant, &"y".repeat(1024 * 1024)));
        }
        c.trim();
        assert!(serde_json::to_vec(&c).unwrap_or_default().len() <= MAX_STORED_BYTES);
        assert!(is_plain_user(&c.messages[0]));
        assert_eq!(c.messages.len(), 4);
    }
}
