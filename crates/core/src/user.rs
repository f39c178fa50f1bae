//! The user a workload acts for: a subject in a namespace. A user id asserted by the
//! caller (`GetWorkloadAccessTokenForUserId`) is one namespace; every inbound issuer is its
//! own namespace (`GetWorkloadAccessTokenForJWT`), because each issuer mints its own `sub`
//! values: `alice` at issuer A, `alice` at issuer B and the user id `alice` are three users.
//!
//! The principal is validated once when it is made (from a verified token, a request, a
//! WAT or a stored row) and compared as a whole everywhere else: grant keys, authorization
//! sessions and the "same user" check when a session is completed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How a user was established: the WAT claim `latchkey:user_source` and the stored
/// `kind` column, spelled `user-id` or `jwt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum UserSource {
    /// Asserted by a trusted caller (`…ForUserId`, or `userId` at completion).
    #[serde(rename = "user-id")]
    UserId,
    /// The subject of a user token verified against a configured inbound issuer.
    #[serde(rename = "jwt")]
    Jwt,
}

impl UserSource {
    /// The stored and WAT-claim spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UserId => "user-id",
            Self::Jwt => "jwt",
        }
    }

    /// Exact spelling (`user-id` or `jwt`); anything else is `None`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "user-id" => Some(Self::UserId),
            "jwt" => Some(Self::Jwt),
            _ => None,
        }
    }
}

impl FromStr for UserSource {
    type Err = UserPrincipalError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s).ok_or(UserPrincipalError::Kind)
    }
}

impl fmt::Display for UserSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a principal could not be made. Never contains the values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UserPrincipalError {
    #[error("the user's subject is empty or too long")]
    Subject,
    #[error("a user token's user needs its issuer")]
    MissingIssuer,
    #[error("a user id has no issuer")]
    UnexpectedIssuer,
    #[error("the issuer is too long")]
    Issuer,
    #[error("unknown user kind")]
    Kind,
}

/// The longest subject kept (a user id is at most 128 characters on the API; a token's
/// `sub` is bounded by the token's size, this bounds what is stored).
pub const MAX_SUBJECT_LEN: usize = 1024;
/// The longest issuer kept.
pub const MAX_ISSUER_LEN: usize = 2048;

/// A user: kind, issuer (JWT users only) and subject.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserPrincipal {
    kind: UserSource,
    /// Empty for `UserId`.
    issuer: String,
    subject: String,
}

impl UserPrincipal {
    /// A user id asserted by a trusted caller.
    pub fn user_id(subject: impl Into<String>) -> Result<Self, UserPrincipalError> {
        Self::new(UserSource::UserId, String::new(), subject.into())
    }

    /// The subject of a token verified against `issuer`.
    pub fn jwt(
        issuer: impl Into<String>,
        subject: impl Into<String>,
    ) -> Result<Self, UserPrincipalError> {
        Self::new(UserSource::Jwt, issuer.into(), subject.into())
    }

    /// From stored columns (`kind`, `issuer` — empty for a user id —, `subject`).
    pub fn from_parts(kind: &str, issuer: &str, subject: &str) -> Result<Self, UserPrincipalError> {
        let kind = UserSource::parse(kind).ok_or(UserPrincipalError::Kind)?;
        Self::new(kind, issuer.to_string(), subject.to_string())
    }

    fn new(kind: UserSource, issuer: String, subject: String) -> Result<Self, UserPrincipalError> {
        if subject.is_empty() || subject.len() > MAX_SUBJECT_LEN {
            return Err(UserPrincipalError::Subject);
        }
        match kind {
            UserSource::UserId if !issuer.is_empty() => {
                return Err(UserPrincipalError::UnexpectedIssuer);
            }
            UserSource::Jwt if issuer.is_empty() => return Err(UserPrincipalError::MissingIssuer),
            _ if issuer.len() > MAX_ISSUER_LEN => return Err(UserPrincipalError::Issuer),
            _ => {}
        }
        Ok(Self {
            kind,
            issuer,
            subject,
        })
    }

    pub fn kind(&self) -> UserSource {
        self.kind
    }

    /// The inbound issuer (JWT users only).
    pub fn issuer(&self) -> Option<&str> {
        (self.kind == UserSource::Jwt).then_some(self.issuer.as_str())
    }

    /// The issuer as stored: empty for a user id.
    pub fn stored_issuer(&self) -> &str {
        &self.issuer
    }

    pub fn subject(&self) -> &str {
        &self.subject
    }
}

/// For logs and messages: `user-id alice` or `jwt alice at https://idp.example` (values
/// quoted with Rust escapes, so no control character reaches a log line).
impl fmt::Display for UserPrincipal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            UserSource::UserId => write!(f, "user-id {:?}", self.subject),
            UserSource::Jwt => write!(f, "jwt {:?} at {:?}", self.subject, self.issuer),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_distinct() {
        let id = UserPrincipal::user_id("alice").unwrap();
        let a = UserPrincipal::jwt("https://a.example", "alice").unwrap();
        let b = UserPrincipal::jwt("https://b.example", "alice").unwrap();
        assert_ne!(id, a);
        assert_ne!(a, b);
        assert_eq!(a, UserPrincipal::jwt("https://a.example", "alice").unwrap());
        assert_eq!(id.issuer(), None);
        assert_eq!(a.issuer(), Some("https://a.example"));
    }

    #[test]
    fn parts_round_trip_and_are_checked() {
        let a = UserPrincipal::jwt("https://a.example", "alice").unwrap();
        let back =
            UserPrincipal::from_parts(a.kind().as_str(), a.stored_issuer(), a.subject()).unwrap();
        assert_eq!(back, a);
        let id = UserPrincipal::user_id("bob").unwrap();
        assert_eq!(UserPrincipal::from_parts("user-id", "", "bob").unwrap(), id);
        assert_eq!(
            UserPrincipal::from_parts("jwt", "", "bob"),
            Err(UserPrincipalError::MissingIssuer)
        );
        assert_eq!(
            UserPrincipal::from_parts("user-id", "https://a.example", "bob"),
            Err(UserPrincipalError::UnexpectedIssuer)
        );
        assert_eq!(
            UserPrincipal::from_parts("legacy", "", "bob"),
            Err(UserPrincipalError::Kind)
        );
        assert_eq!(UserPrincipal::user_id(""), Err(UserPrincipalError::Subject));
    }

    #[test]
    fn display_escapes_control_characters() {
        let p = UserPrincipal::jwt("https://a.example", "eve\nforged line").unwrap();
        assert!(!p.to_string().contains('\n'));
    }

    #[test]
    fn user_source_spellings() {
        for (source, wire) in [(UserSource::UserId, "user-id"), (UserSource::Jwt, "jwt")] {
            assert_eq!(source.as_str(), wire);
            assert_eq!(source.to_string(), wire);
            assert_eq!(wire.parse::<UserSource>(), Ok(source));
            assert_eq!(UserSource::parse(wire), Some(source));
            assert_eq!(serde_json::to_value(source).unwrap(), wire);
            assert_eq!(
                serde_json::from_value::<UserSource>(serde_json::json!(wire)).unwrap(),
                source
            );
        }
        for bad in ["", "JWT", "user_id", "userid", "legacy", " jwt"] {
            assert_eq!(
                bad.parse::<UserSource>(),
                Err(UserPrincipalError::Kind),
                "{bad:?}"
            );
            assert!(serde_json::from_value::<UserSource>(serde_json::json!(bad)).is_err());
        }
    }
}
