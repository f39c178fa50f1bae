//! Shared fixtures for the local and S3 suites.

#![allow(dead_code)] // each test binary uses a subset

use serde::{Deserialize, Serialize};

/// A conversation-shaped value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    pub owner: String,
    pub messages: Vec<Message>,
}

/// One message of a [`Conversation`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub text: String,
}

/// A conversation that records who wrote it.
pub fn conversation(owner: &str, text: &str) -> Conversation {
    Conversation {
        owner: owner.to_owned(),
        messages: vec![
            Message {
                role: "user".to_owned(),
                text: text.to_owned(),
            },
            Message {
                role: "assistant".to_owned(),
                text: format!("reply to {text}"),
            },
        ],
    }
}

/// A session id shaped like an AgentCore runtime session id.
pub const SESSION_ID: &str = "0d6c8a7e-5b1f-4c8e-9d2a-6f3e1b7c9a40";

/// Subjects an attacker might choose to escape the root or collide with someone else.
pub fn hostile_subs() -> Vec<String> {
    vec![
        "../a".to_owned(),
        "../../../../etc/passwd".to_owned(),
        "a/b".to_owned(),
        "/".to_owned(),
        "/absolute".to_owned(),
        "%2e%2e".to_owned(),
        "%2e%2e%2fa".to_owned(),
        ".".to_owned(),
        "..".to_owned(),
        "...".to_owned(),
        "a\0b".to_owned(),
        "\0".to_owned(),
        "..\\..\\windows".to_owned(),
        "a#1".to_owned(),
        "sessions".to_owned(),
        "h.abc".to_owned(),
        " ".to_owned(),
        "\n".to_owned(),
        "ユーザー".to_owned(),
        "😀".to_owned(),
        "\u{202E}txt.exe\u{202D}".to_owned(),
        "\u{200F}rtl\u{200E}".to_owned(),
        "x".repeat(1000),
        "é".repeat(1000),
        "/".repeat(1000),
        ".".repeat(1000),
    ]
}

/// Subjects for the injectivity check: hostile ones, case variants, and the 180/181-byte
/// boundary between the verbatim and hashed forms.
pub fn injectivity_subs() -> Vec<String> {
    let mut subs = hostile_subs();
    subs.extend(
        [
            "alice",
            "Alice",
            "ALICE",
            "aLiCe",
            "alice ",
            " alice",
            "alice\0",
            "bob",
            "user@example.com",
            "User@Example.com",
            "a",
            "A",
            "b",
            "h",
            "h.",
            "YWxpY2U",
        ]
        .map(str::to_owned),
    );
    for len in [1, 2, 3, 4, 179, 180, 181, 182, 1000] {
        subs.push("a".repeat(len));
        subs.push("A".repeat(len));
    }
    // Multi-byte boundary: 90 × 'é' is 180 bytes (verbatim), plus one byte is 181 (hashed).
    subs.push("é".repeat(90));
    subs.push(format!("{}a", "é".repeat(90)));
    subs.push(format!("{}b", "é".repeat(90)));
    subs
}
