//! Field validation exactly as the AgentCore service models constrain it: lengths,
//! patterns (full match) and enums. Collects every failure so the client sees all fields.

use crate::error::{ApiError, FieldError};
use crate::protocol::{CredentialProviderName, ProtocolValue, Scopes, SessionUri, WorkloadName};

/// Collects field failures; `finish` turns them into one `ValidationException`.
#[derive(Debug, Default)]
pub struct Validator {
    errors: Vec<FieldError>,
}

impl Validator {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn fail(&mut self, name: &str, message: impl Into<String>) {
        self.errors.push(FieldError {
            name: name.to_string(),
            message: message.into(),
        });
    }

    /// Length in characters (Smithy counts characters, not bytes).
    pub fn length(&mut self, name: &str, value: &str, min: usize, max: usize) -> bool {
        let n = value.chars().count();
        if n < min || n > max {
            self.fail(
                name,
                format!("Member must have length between {min} and {max}, inclusive"),
            );
            return false;
        }
        true
    }

    /// Length plus a per-character class (most AgentCore patterns are `[class]+`).
    pub fn chars(
        &mut self,
        name: &str,
        value: &str,
        min: usize,
        max: usize,
        allowed: fn(char) -> bool,
        pattern: &str,
    ) -> bool {
        if !self.length(name, value, min, max) {
            return false;
        }
        if !value.chars().all(allowed) {
            self.fail(
                name,
                format!("Member must satisfy regular expression pattern: {pattern}"),
            );
            return false;
        }
        true
    }

    /// A user id (`UserIdType`, 1..128 characters) that names a user in logs and pages:
    /// no control, line-breaking or bidirectional-override characters (see
    /// [`is_printable_name`]). AgentCore's model only bounds the length; Latchkey refuses
    /// ids that could forge log lines or disguise themselves on screen.
    pub fn user_id(&mut self, name: &str, value: &str) -> bool {
        self.length(name, value, 1, 128)
            && self.check(
                name,
                is_printable_name(value),
                "Member must not contain control, line separator or bidirectional formatting characters",
            )
    }

    /// Parses `value` as the protocol type `T` ([`crate::protocol`]); on failure records
    /// AgentCore's message under `name` (the message [`Self::chars`] gives for that member).
    pub fn value<T: ProtocolValue>(&mut self, name: &str, value: &str) -> Option<T> {
        match T::parse(value) {
            Ok(parsed) => Some(parsed),
            Err(error) => {
                self.fail(name, error.to_string());
                None
            }
        }
    }

    /// Parses `scopes` as [`Scopes`]; records one failure under `name` for every refused
    /// scope (as a loop of [`Self::length`] over them does).
    pub fn scopes(&mut self, name: &str, scopes: &[String]) -> Option<Scopes> {
        let mut ok = true;
        for scope in scopes {
            if let Err(error) = Scopes::check_scope(scope) {
                self.fail(name, error.to_string());
                ok = false;
            }
        }
        ok.then(|| Scopes::try_from(scopes.to_vec()).ok()).flatten()
    }

    pub fn check(&mut self, name: &str, ok: bool, message: impl Into<String>) -> bool {
        if !ok {
            self.fail(name, message);
        }
        ok
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::fields(self.errors))
        }
    }
}

/// Whether `value` may name a user (a JWT or ALB `sub`, an asserted `userId`) in logs,
/// audit records and pages: no C0 or C1 control character or DEL (newline, carriage
/// return, ESC, ...), no Unicode line or paragraph separator (U+2028, U+2029) and no
/// bidirectional formatting character (U+061C, U+200E, U+200F, U+202A..U+202E,
/// U+2066..U+2069), so a name can neither write a line of its own into a text log nor
/// show itself reversed.
pub fn is_printable_name(value: &str) -> bool {
    !value.chars().any(is_unsafe_name_char)
}

/// A character [`is_printable_name`] refuses.
pub fn is_unsafe_name_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}'
                | '\u{2029}'
                | '\u{061C}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `[A-Za-z0-9_.-]` — workload identity names ([`WorkloadName`] parses a whole name).
pub fn is_workload_char(c: char) -> bool {
    WorkloadName::is_allowed_char(c)
}

/// `[a-zA-Z0-9\-_]` — credential provider names ([`CredentialProviderName`] parses a whole
/// name), token vault ids.
pub fn is_provider_char(c: char) -> bool {
    CredentialProviderName::is_allowed_char(c)
}

/// `[a-zA-Z0-9\s._:/=+@-]` — tag keys and values.
pub fn is_tag_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || c.is_whitespace()
        || matches!(c, '.' | '_' | ':' | '/' | '=' | '+' | '@' | '-')
}

/// `[a-zA-Z0-9\-_\.]` — custom parameter keys.
pub fn is_custom_param_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// `\w+:(\/?\/?)[^\s]+` — `ResourceOauth2ReturnUrlType`, full match.
pub fn is_return_url(value: &str) -> bool {
    let Some((scheme, rest)) = value.split_once(':') else {
        return false;
    };
    if scheme.is_empty() || !scheme.chars().all(|c| c.is_alphanumeric() || c == '_') {
        return false;
    }
    let rest = rest
        .strip_prefix("//")
        .or_else(|| rest.strip_prefix('/'))
        .unwrap_or(rest);
    // `[^\s]+` after the optional slashes; the regex may also backtrack into the slashes,
    // so "x://" alone (rest empty after stripping) still matches via "/" as `[^\s]`.
    let tail_ok = !rest.is_empty() || value.len() > scheme.len() + 1;
    tail_ok && !value[scheme.len() + 1..].chars().any(char::is_whitespace)
}

/// `urn:ietf:params:oauth:request_uri:[a-zA-Z0-9-._~]+` — a session URI's pattern, whatever
/// its length ([`SessionUri`] parses one with the length limit too).
pub fn is_session_uri(value: &str) -> bool {
    SessionUri::matches_pattern(value)
}

/// `[A-Za-z0-9-_=]+.[A-Za-z0-9-_=]+.[A-Za-z0-9-_=]+` — a compact JWT (the model's dots are
/// unescaped; we require real dots, which is stricter and what a JWT is).
pub fn is_jwt_shape(value: &str) -> bool {
    let part = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '='))
    };
    let mut parts = value.split('.');
    matches!((parts.next(), parts.next(), parts.next(), parts.next()), (Some(a), Some(b), Some(c), None) if part(a) && part(b) && part(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_names() {
        for ok in [
            "alice",
            "alice@example.com",
            "Zoë Ünal",
            "用户",
            "a b",
            "auth0|123",
        ] {
            assert!(is_printable_name(ok), "{ok:?}");
        }
        for bad in [
            "a\nb",
            "a\rb",
            "a\tb",
            "\u{1b}[31mred",
            "a\u{7f}",
            "a\u{85}b",
            "a\u{9b}31m",
            "a\u{2028}b",
            "a\u{2029}b",
            "\u{202e}txt.exe",
            "a\u{2066}b",
            "a\u{200f}",
            "a\u{061c}",
            "\0",
        ] {
            assert!(!is_printable_name(bad), "{bad:?}");
        }
        let mut v = Validator::new();
        assert!(v.user_id("userId", "alice"));
        assert!(!v.user_id("userId", "alice\nINFO forged"));
        assert!(!v.user_id("userId", ""));
        let Err(ApiError::Validation { fields, .. }) = v.finish() else {
            panic!("expected a validation error");
        };
        assert_eq!(fields.len(), 2);
        assert!(fields[0].message.contains("control"));
    }

    #[test]
    fn return_urls() {
        assert!(is_return_url("http://localhost:9090/cb"));
        assert!(is_return_url(
            "https://app.example.com/oauth2/session-binding"
        ));
        assert!(is_return_url("myapp:callback"));
        assert!(!is_return_url("no-scheme"));
        assert!(!is_return_url("https://a b"));
        assert!(!is_return_url("https:"));
        assert!(!is_return_url(":x"));
    }

    #[test]
    fn session_uris() {
        assert!(is_session_uri("urn:ietf:params:oauth:request_uri:abc-_.~9"));
        assert!(!is_session_uri("urn:ietf:params:oauth:request_uri:"));
        assert!(!is_session_uri("urn:ietf:params:oauth:request_uri:a/b"));
    }

    #[test]
    fn jwt_shape() {
        assert!(is_jwt_shape("a.b.c"));
        assert!(!is_jwt_shape("a.b"));
        assert!(!is_jwt_shape("a.b.c.d"));
        assert!(!is_jwt_shape("a..c"));
    }

    #[test]
    fn collects_all_fields() {
        let mut v = Validator::new();
        v.chars("name", "a", 3, 255, is_workload_char, "[A-Za-z0-9_.-]+");
        v.chars(
            "other",
            "bad name!",
            1,
            128,
            is_provider_char,
            "[a-zA-Z0-9\\-_]+",
        );
        let Err(ApiError::Validation { fields, .. }) = v.finish() else {
            panic!("expected validation error")
        };
        assert_eq!(fields.len(), 2);
        assert_eq!(fields[0].name, "name");
    }
}
