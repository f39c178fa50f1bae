//! Field validation exactly as the AgentCore service models constrain it: lengths,
//! patterns (full match) and enums. Collects every failure so the client sees all fields.

use crate::error::{ApiError, FieldError};

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

/// `[A-Za-z0-9_.-]` — workload identity names.
pub fn is_workload_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// `[a-zA-Z0-9\-_]` — credential provider names, token vault ids.
pub fn is_provider_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-')
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

/// `urn:ietf:params:oauth:request_uri:[a-zA-Z0-9-._~]+` — a session URI.
pub fn is_session_uri(value: &str) -> bool {
    value
        .strip_prefix("urn:ietf:params:oauth:request_uri:")
        .is_some_and(|id| {
            !id.is_empty()
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~'))
        })
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
