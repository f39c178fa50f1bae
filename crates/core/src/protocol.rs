//! Protocol values as types: the names and identifiers of AgentCore Identity's API, each
//! validated once, when it is parsed, with the limits of AgentCore's service model
//! (`WorkloadIdentityNameType`, `CredentialProviderName`, `RequestUri`, `ScopesListType`).
//! A value of one of these types is valid by construction, so code that receives one does
//! not check it again.
//!
//! Lengths count characters, as Smithy does (every valid value is ASCII, so characters and
//! bytes agree for what is accepted). The error of a refused value is the message
//! AgentCore sends for that member, and never contains the value, so it is safe to show
//! the client; [`crate::validate::Validator::value`] records it under the member's name.
//!
//! The user source (`user-id` or `jwt`) is [`crate::user::UserSource`].

use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a protocol value was refused. The message is AgentCore's, and names no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidValue {
    /// Too short or too long (in characters).
    #[error("Member must have length between {min} and {max}, inclusive")]
    Length { min: usize, max: usize },
    /// A character, or the shape, that the model's pattern does not allow.
    #[error("Member must satisfy regular expression pattern: {pattern}")]
    Pattern { pattern: &'static str },
}

/// A value parsed from its wire form, with the model's rule.
pub trait ProtocolValue: Sized {
    /// Parses and validates `value`.
    fn parse(value: &str) -> Result<Self, InvalidValue>;
}

/// The length rule, then the character rule: the order AgentCore reports them in.
fn check(
    value: &str,
    min: usize,
    max: usize,
    allowed: fn(char) -> bool,
    pattern: &'static str,
) -> Result<(), InvalidValue> {
    let n = value.chars().count();
    if n < min || n > max {
        return Err(InvalidValue::Length { min, max });
    }
    if !value.chars().all(allowed) {
        return Err(InvalidValue::Pattern { pattern });
    }
    Ok(())
}

/// A validated string: read-only access, `Display`, and serde in its wire form (a
/// deserialized value is validated too).
macro_rules! protocol_string {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Parses and validates `value`.
            pub fn parse(value: &str) -> Result<Self, InvalidValue> {
                <Self as ProtocolValue>::parse(value)
            }

            /// The value as sent on the wire.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The value as sent on the wire.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl FromStr for $name {
            type Err = InvalidValue;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidValue;

            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = String::deserialize(deserializer)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A name type: [`protocol_string!`] plus its rule (length in characters and the allowed
/// characters, with the pattern AgentCore's message quotes) and its [`ProtocolValue`].
macro_rules! protocol_name {
    (
        $(#[$doc:meta])*
        $name:ident, length $min:literal..=$max:literal, pattern $pattern:literal,
        chars $chars_doc:literal => $allowed:expr
    ) => {
        protocol_string!($(#[$doc])* $name);

        impl $name {
            pub const MIN_LEN: usize = $min;
            pub const MAX_LEN: usize = $max;
            /// The model's pattern, as AgentCore's message quotes it.
            pub const PATTERN: &'static str = $pattern;

            #[doc = $chars_doc]
            pub fn is_allowed_char(c: char) -> bool {
                let allowed: fn(char) -> bool = $allowed;
                allowed(c)
            }
        }

        impl ProtocolValue for $name {
            fn parse(value: &str) -> Result<Self, InvalidValue> {
                check(
                    value,
                    Self::MIN_LEN,
                    Self::MAX_LEN,
                    Self::is_allowed_char,
                    Self::PATTERN,
                )?;
                Ok(Self(value.to_owned()))
            }
        }
    };
}

// ------------------------------------------------------------------------------ workload

protocol_name!(
    /// `WorkloadIdentityNameType`: 3 to 255 characters of `[A-Za-z0-9_.-]`.
    WorkloadName,
    length 3..=255,
    pattern "[A-Za-z0-9_.-]+",
    chars "`[A-Za-z0-9_.-]`." => |c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
);

// ------------------------------------------------------------------------------ provider

protocol_name!(
    /// `CredentialProviderName`: 1 to 128 characters of `[a-zA-Z0-9\-_]`.
    CredentialProviderName,
    length 1..=128,
    pattern "[a-zA-Z0-9\\-_]+",
    chars "`[a-zA-Z0-9\\-_]`." => |c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-')
);

// ------------------------------------------------------------------------------ session URI

/// The prefix of every `sessionUri`.
pub const SESSION_URI_PREFIX: &str = "urn:ietf:params:oauth:request_uri:";
/// The longest `sessionUri` (`RequestUri`: 1..1024), prefix included.
pub const MAX_SESSION_URI_LEN: usize = 1024;

protocol_string!(
    /// `RequestUri`, the `sessionUri` of a three-legged authorization: at most 1024
    /// characters of `urn:ietf:params:oauth:request_uri:[a-zA-Z0-9-._~]+`.
    SessionUri
);

impl SessionUri {
    /// The model's pattern, as AgentCore's message quotes it.
    pub const PATTERN: &'static str = "urn:ietf:params:oauth:request_uri:[a-zA-Z0-9-._~]+";

    /// `[a-zA-Z0-9-._~]`: the characters of the id after the prefix.
    pub fn is_id_char(c: char) -> bool {
        c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')
    }

    /// Whether `value` matches the pattern (full match), whatever its length.
    pub fn matches_pattern(value: &str) -> bool {
        value
            .strip_prefix(SESSION_URI_PREFIX)
            .is_some_and(|id| !id.is_empty() && id.chars().all(Self::is_id_char))
    }

    /// The session URI of the one-time id `id` (which must be of [`Self::is_id_char`]s).
    pub fn from_id(id: &str) -> Result<Self, InvalidValue> {
        Self::parse(&format!("{SESSION_URI_PREFIX}{id}"))
    }

    /// The id after the prefix.
    pub fn id(&self) -> &str {
        &self.0[SESSION_URI_PREFIX.len()..]
    }
}

impl ProtocolValue for SessionUri {
    fn parse(value: &str) -> Result<Self, InvalidValue> {
        if value.is_empty() || value.chars().count() > MAX_SESSION_URI_LEN {
            return Err(InvalidValue::Length {
                min: 1,
                max: MAX_SESSION_URI_LEN,
            });
        }
        if !Self::matches_pattern(value) {
            return Err(InvalidValue::Pattern {
                pattern: Self::PATTERN,
            });
        }
        Ok(Self(value.to_owned()))
    }
}

// ------------------------------------------------------------------------------ scopes

/// `ScopesListType`: scopes of 1 to 128 characters each (`ScopeType`; no pattern). The
/// list has no size limit, so `[]` is valid. Order and duplicates are kept as given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Scopes(Vec<String>);

impl Scopes {
    pub const MIN_SCOPE_LEN: usize = 1;
    pub const MAX_SCOPE_LEN: usize = 128;

    /// Validates every scope; the error is the first refused scope's.
    pub fn parse<S: AsRef<str>>(scopes: &[S]) -> Result<Self, InvalidValue> {
        Self::try_from(
            scopes
                .iter()
                .map(|s| s.as_ref().to_owned())
                .collect::<Vec<_>>(),
        )
    }

    /// One scope's rule.
    pub fn check_scope(scope: &str) -> Result<(), InvalidValue> {
        check(
            scope,
            Self::MIN_SCOPE_LEN,
            Self::MAX_SCOPE_LEN,
            |_| true,
            "",
        )
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    pub fn into_vec(self) -> Vec<String> {
        self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, String> {
        self.0.iter()
    }

    /// The scopes joined by `separator` (`" "` in RFC 6749's `scope` parameter).
    pub fn join(&self, separator: &str) -> String {
        self.0.join(separator)
    }
}

impl TryFrom<Vec<String>> for Scopes {
    type Error = InvalidValue;

    fn try_from(scopes: Vec<String>) -> Result<Self, Self::Error> {
        for scope in &scopes {
            Self::check_scope(scope)?;
        }
        Ok(Self(scopes))
    }
}

impl From<Scopes> for Vec<String> {
    fn from(scopes: Scopes) -> Self {
        scopes.0
    }
}

impl<'a> IntoIterator for &'a Scopes {
    type Item = &'a String;
    type IntoIter = std::slice::Iter<'a, String>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl Serialize for Scopes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Scopes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let scopes = Vec::<String>::deserialize(deserializer)?;
        Self::try_from(scopes).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
