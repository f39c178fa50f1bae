//! Issued access and refresh tokens of one development provider, kept by hash in its state
//! file. Refresh tokens rotate: each use returns a new one, and presenting a used one again
//! revokes the whole grant (its "family": every access and refresh token descended from the
//! same consent), as OAuth 2.0 Security BCP §4.14.2 asks. RFC 7009 revocation of any token
//! of a grant revokes the grant.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::oauth::{OAuthError, random_token, token_hash};
use crate::persist::{self, PersistError};

/// What a token stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenGrant {
    pub user: String,
    pub client_id: String,
    pub scopes: Vec<String>,
    /// The consent this token descends from.
    pub family: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    grant: TokenGrant,
    expires_at: i64,
    /// Refresh tokens only: already exchanged for a new one.
    #[serde(default)]
    used: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Book {
    access: HashMap<String, Entry>,
    refresh: HashMap<String, Entry>,
}

impl Book {
    fn prune(&mut self, now: i64) {
        self.access.retain(|_, e| e.expires_at > now);
        self.refresh.retain(|_, e| e.expires_at > now);
    }

    fn revoke_family(&mut self, family: &str) {
        self.access.retain(|_, e| e.grant.family != family);
        self.refresh.retain(|_, e| e.grant.family != family);
    }
}

/// A new access token and its refresh token.
#[derive(Debug)]
pub struct Issued {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: i64,
}

/// Lifetimes of issued tokens, in seconds.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    pub access: i64,
    pub refresh: i64,
}

/// The token book of one provider.
#[derive(Debug)]
pub struct Tokens {
    book: Mutex<Book>,
    path: Option<PathBuf>,
    lifetimes: Lifetimes,
    prefix: &'static str,
}

/// At most this many live tokens; past it, new grants are refused (a dev provider on
/// loopback should never get near it).
const MAX_TOKENS: usize = 100_000;

impl Tokens {
    /// The book kept in `path` (in memory only when `None`).
    pub fn open(
        path: Option<PathBuf>,
        lifetimes: Lifetimes,
        prefix: &'static str,
    ) -> Result<Self, PersistError> {
        let book = match &path {
            Some(path) => persist::load(path)?,
            None => Book::default(),
        };
        Ok(Self {
            book: Mutex::new(book),
            path,
            lifetimes,
            prefix,
        })
    }

    fn with_book<T>(
        &self,
        now: i64,
        change: impl FnOnce(&mut Book) -> Result<T, OAuthError>,
    ) -> Result<T, OAuthError> {
        let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        book.prune(now);
        let result = change(&mut book);
        if let Some(path) = &self.path
            && let Err(error) = persist::save(path, &*book)
        {
            tracing::error!(%error, "the development provider could not save its tokens");
            return Err(OAuthError::server_error());
        }
        result
    }

    fn add(&self, book: &mut Book, grant: TokenGrant, now: i64) -> Result<Issued, OAuthError> {
        if book.access.len() + book.refresh.len() >= MAX_TOKENS {
            return Err(OAuthError::server_error());
        }
        let access_token = random_token(&format!("{}at_", self.prefix));
        let refresh_token = random_token(&format!("{}rt_", self.prefix));
        book.access.insert(
            token_hash(&access_token),
            Entry {
                grant: grant.clone(),
                expires_at: now + self.lifetimes.access,
                used: false,
            },
        );
        book.refresh.insert(
            token_hash(&refresh_token),
            Entry {
                grant,
                expires_at: now + self.lifetimes.refresh,
                used: false,
            },
        );
        Ok(Issued {
            access_token,
            refresh_token,
            expires_in: self.lifetimes.access,
        })
    }

    /// Tokens for a new consent.
    pub fn issue(
        &self,
        user: String,
        client_id: String,
        scopes: Vec<String>,
        now: i64,
    ) -> Result<(TokenGrant, Issued), OAuthError> {
        let grant = TokenGrant {
            user,
            client_id,
            scopes,
            family: random_token(""),
        };
        let issued = self.with_book(now, |book| self.add(book, grant.clone(), now))?;
        Ok((grant, issued))
    }

    /// Exchange a refresh token of `client_id` for new tokens. `scopes`, when given, may
    /// only narrow the grant.
    pub fn refresh(
        &self,
        refresh_token: &str,
        client_id: &str,
        scopes: Option<Vec<String>>,
        now: i64,
    ) -> Result<(TokenGrant, Issued), OAuthError> {
        self.with_book(now, |book| {
            let key = token_hash(refresh_token);
            let entry = book.refresh.get_mut(&key).ok_or(OAuthError::invalid_grant(
                "the refresh token is unknown, expired or revoked",
            ))?;
            if entry.grant.client_id != client_id {
                return Err(OAuthError::invalid_grant(
                    "the refresh token was issued to another client",
                ));
            }
            if entry.used {
                let family = entry.grant.family.clone();
                book.revoke_family(&family);
                tracing::warn!(
                    "a used refresh token was presented again: the whole grant is revoked"
                );
                return Err(OAuthError::invalid_grant(
                    "the refresh token was already used; the grant is revoked",
                ));
            }
            entry.used = true;
            let mut grant = entry.grant.clone();
            if let Some(scopes) = scopes {
                if !scopes.iter().all(|s| grant.scopes.contains(s)) {
                    entry.used = false;
                    return Err(OAuthError {
                        status: axum::http::StatusCode::BAD_REQUEST,
                        code: "invalid_scope",
                        description: "a refresh may only narrow the granted scopes",
                    });
                }
                grant.scopes = scopes;
            }
            let issued = self.add(book, grant.clone(), now)?;
            Ok((grant, issued))
        })
    }

    /// The grant of a live access token.
    pub fn access(&self, access_token: &str, now: i64) -> Option<TokenGrant> {
        let book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        book.access
            .get(&token_hash(access_token))
            .filter(|e| e.expires_at > now)
            .map(|e| e.grant.clone())
    }

    /// RFC 7009: revoke the grant `token` belongs to, if `client_id` holds it. Unknown
    /// tokens and other clients' tokens change nothing and are not an error (§2.2).
    pub fn revoke(&self, token: &str, client_id: &str, now: i64) -> Result<(), OAuthError> {
        self.with_book(now, |book| {
            let key = token_hash(token);
            let family = book
                .access
                .get(&key)
                .or_else(|| book.refresh.get(&key))
                .filter(|e| e.grant.client_id == client_id)
                .map(|e| e.grant.family.clone());
            if let Some(family) = family {
                book.revoke_family(&family);
            }
            Ok(())
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const LIFE: Lifetimes = Lifetimes {
        access: 60,
        refresh: 3600,
    };

    #[test]
    fn refresh_rotates_and_reuse_revokes_the_grant() {
        let tokens = Tokens::open(None, LIFE, "t_").unwrap();
        let (_, first) = tokens
            .issue("alice".into(), "app".into(), vec!["repo".into()], 0)
            .unwrap();
        assert!(
            tokens
                .refresh(&first.refresh_token, "other", None, 1)
                .is_err()
        );
        let (grant, second) = tokens
            .refresh(&first.refresh_token, "app", None, 1)
            .unwrap();
        assert_eq!(grant.user, "alice");
        assert!(tokens.access(&second.access_token, 2).is_some());
        // The old refresh token again: the thief and the owner both lose the grant.
        assert_eq!(
            tokens
                .refresh(&first.refresh_token, "app", None, 2)
                .unwrap_err()
                .code,
            "invalid_grant"
        );
        assert!(tokens.access(&second.access_token, 2).is_none());
        assert!(tokens.access(&first.access_token, 2).is_none());
        assert!(
            tokens
                .refresh(&second.refresh_token, "app", None, 2)
                .is_err()
        );
    }

    #[test]
    fn access_tokens_expire_and_revocation_takes_the_family() {
        let tokens = Tokens::open(None, LIFE, "t_").unwrap();
        let (_, issued) = tokens.issue("bob".into(), "app".into(), vec![], 0).unwrap();
        assert!(tokens.access(&issued.access_token, 59).is_some());
        assert!(tokens.access(&issued.access_token, 60).is_none());
        let (_, issued) = tokens
            .issue("bob".into(), "app".into(), vec![], 100)
            .unwrap();
        tokens.revoke(&issued.access_token, "other", 101).unwrap();
        assert!(
            tokens.access(&issued.access_token, 101).is_some(),
            "another client cannot revoke"
        );
        tokens.revoke(&issued.access_token, "app", 101).unwrap();
        assert!(
            tokens
                .refresh(&issued.refresh_token, "app", None, 101)
                .is_err()
        );
    }

    #[test]
    fn the_book_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        let issued = {
            let tokens = Tokens::open(Some(path.clone()), LIFE, "t_").unwrap();
            tokens
                .issue("alice".into(), "app".into(), vec![], 0)
                .unwrap()
                .1
        };
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&issued.access_token) && !text.contains(&issued.refresh_token));
        let tokens = Tokens::open(Some(path), LIFE, "t_").unwrap();
        assert!(tokens.access(&issued.access_token, 1).is_some());
        assert!(
            tokens
                .refresh(&issued.refresh_token, "app", None, 1)
                .is_ok()
        );
    }
}
