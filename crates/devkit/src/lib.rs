//! The development peers of `latchkey dev`, so that a newcomer sees the whole flow offline
//! in a browser with one command:
//!
//! - [`idp`]: a **development OpenID provider** for user login (discovery, JWKS, the
//!   authorization code flow with PKCE S256, ES256 ID tokens, rotating refresh tokens) whose
//!   login page lets you pick `alice`, `bob` or type a name;
//! - [`sandbox`]: a **sandbox OAuth provider** standing in for GitHub: a consent page that
//!   names the requesting application and each scope, short-lived access tokens with
//!   rotating refresh tokens (reuse revokes the whole grant), RFC 7009 revocation, and a
//!   GitHub-shaped API (`/user`, `/user/repos`) that enforces scopes.
//!
//! Both are real protocol peers (nothing in Latchkey knows they are not GitHub or an
//! enterprise IdP) and both say "development only" on every page. Only the `latchkey dev`
//! command builds them: `latchkey serve` has no way to enable either.
//!
//! Their state (signing key, issued tokens) lives in files of the dev data directory, so a
//! restarted `latchkey dev` keeps working with the tokens it issued before.

mod authorizer;
mod html;
pub mod idp;
mod keys;
mod oauth;
pub mod persist;
pub mod sandbox;
pub mod tokens;

pub use keys::{KeyError, SigningKey};
pub use oauth::Client;
pub use persist::PersistError;

/// The name a person may sign in with on the development pages: 1 to 64 of `A-Z a-z 0-9 . _ -`,
/// starting with a letter or digit (so it is also a safe `sub`, login and path segment).
pub fn is_valid_user_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The demo users offered on the login and consent pages.
pub const DEMO_USERS: [&str; 2] = ["alice", "bob"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names() {
        for ok in ["alice", "bob", "a", "x.y_z-1", &"a".repeat(64)] {
            assert!(is_valid_user_name(ok), "{ok}");
        }
        for bad in [
            "",
            "-alice",
            ".alice",
            "al ice",
            "al/ice",
            "alice\n",
            "ålice",
            &"a".repeat(65),
        ] {
            assert!(!is_valid_user_name(bad), "{bad:?}");
        }
    }
}
