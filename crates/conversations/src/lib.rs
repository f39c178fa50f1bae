//! Conversation state store for the agent workload.
//!
//! This crate owns where and how the agent keeps each conversation: one JSON object per
//! `(subject, session id)` at `sessions/{encoded sub}/{sessionId}`, in a local directory
//! (the default) or in an S3 bucket under an optional prefix. It knows nothing of HTTP
//! handlers or of the agent's message types: callers pass any `serde` value.
//!
//! Safety properties, each covered by the tests in `tests/`:
//! - the subject becomes exactly one path segment through [`encode_sub`], which is
//!   injective, so one user can never address another user's conversation, and no subject
//!   can escape the root (`..`, `/`, NUL, unicode and very long values included);
//! - session ids are checked by [`validate_session_id`] before any I/O;
//! - bodies are bounded by [`MAX_CONVERSATION_BYTES`] on write and on read, and an
//!   oversized object is refused from its size before it is buffered;
//! - local writes are atomic: `object_store`'s `LocalFileSystem` writes a staging file
//!   (`{path}#N`, opened with `create_new`) and renames it over the destination, with
//!   `fsync` of the file and its directory enabled here;
//! - errors never carry credentials or stored conversation content.

mod lease;

pub use lease::{ConversationLease, LEASE_TTL};

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures_util::StreamExt as _;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{
    ClientOptions, GetOptions, ObjectStore, ObjectStoreExt as _, PutPayload, RetryConfig,
};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;

/// The largest serialized conversation the store writes or reads, in bytes.
pub const MAX_CONVERSATION_BYTES: usize = 4 * 1024 * 1024;

/// The longest accepted session id, in characters (all of them ASCII).
pub const MAX_SESSION_ID_LEN: usize = 256;

/// The longest session id the local backend can hold: a file name is at most 255 bytes
/// and `LocalFileSystem` stages writes in `{name}#N`.
pub const MAX_LOCAL_SESSION_ID_LEN: usize = 250;

/// Subjects up to this many UTF-8 bytes are stored as base64url; longer ones are hashed.
const MAX_VERBATIM_SUB_BYTES: usize = 180;

/// The first segment of every conversation object.
const SESSIONS_SEGMENT: &str = "sessions";

/// The prefix of a hashed subject segment. `.` is outside the base64url alphabet, so a
/// hashed segment never equals a verbatim one.
const HASHED_SUB_MARKER: &str = "h.";

/// The longest accepted S3 key prefix, in bytes; keeps every key under S3's 1,024 bytes.
const MAX_PREFIX_BYTES: usize = 256;

/// How long one S3 request may take, and how long a connection attempt may take.
const S3_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const S3_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where conversations are kept.
///
/// Deserializes from a tagged table, e.g. `{ kind = "local", dir = "/var/lib/latchkey" }`
/// or `{ kind = "s3", bucket = "b", region = "us-east-1" }`. `Debug` redacts credentials.
#[derive(Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum StoreConfig {
    /// A local directory, created with mode 0700 when missing.
    Local {
        /// The root directory; objects live at `{dir}/sessions/...`.
        dir: PathBuf,
    },
    /// An S3 (or S3-compatible) bucket, addressed path-style.
    S3 {
        /// The bucket name. The bucket must already exist.
        bucket: String,
        /// An optional key prefix, e.g. `tenant-a/agent`; objects live at
        /// `{prefix}/sessions/...`.
        #[serde(default)]
        prefix: Option<String>,
        /// The bucket's region, e.g. `us-east-1`.
        region: String,
        /// A custom endpoint, e.g. `http://127.0.0.1:9000` for a local S3 server.
        #[serde(default)]
        endpoint: Option<String>,
        /// Permit plain-HTTP endpoints (loopback test servers only).
        #[serde(default)]
        allow_http: bool,
        /// Static access key id; when absent (with the secret), credentials come from the
        /// environment (`AWS_ACCESS_KEY_ID`, web identity, container or instance metadata).
        #[serde(default)]
        access_key_id: Option<String>,
        /// Static secret access key, required with `access_key_id`.
        #[serde(default)]
        secret_access_key: Option<SecretString>,
        /// Optional session token for temporary static credentials.
        #[serde(default)]
        session_token: Option<SecretString>,
    },
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn redacted<T>(value: &Option<T>) -> Option<&'static str> {
            value.as_ref().map(|_| "[REDACTED]")
        }
        match self {
            Self::Local { dir } => f.debug_struct("Local").field("dir", dir).finish(),
            Self::S3 {
                bucket,
                prefix,
                region,
                endpoint,
                allow_http,
                access_key_id,
                secret_access_key,
                session_token,
            } => f
                .debug_struct("S3")
                .field("bucket", bucket)
                .field("prefix", prefix)
                .field("region", region)
                .field("endpoint", endpoint)
                .field("allow_http", allow_http)
                .field("access_key_id", &redacted(access_key_id))
                .field("secret_access_key", &redacted(secret_access_key))
                .field("session_token", &redacted(session_token))
                .finish(),
        }
    }
}

/// Why a store operation failed. Messages are safe to log: they never contain
/// credentials, stored conversation content, or more than a bounded excerpt of input.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The session id is not 1–256 characters of `[A-Za-z0-9._:-]` (or is `.`/`..`).
    #[error("invalid session id: {0}")]
    InvalidSessionId(String),
    /// The subject cannot be stored (it is empty).
    #[error("invalid subject: {0}")]
    InvalidSubject(String),
    /// The serialized conversation (or the stored object) exceeds the limit.
    #[error("conversation is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// The body's size in bytes.
        size: u64,
        /// The limit, [`MAX_CONVERSATION_BYTES`].
        limit: usize,
    },
    /// The stored object is not valid JSON for the requested type, or the value could
    /// not be serialized.
    #[error("stored conversation is corrupt: {0}")]
    Corrupt(String),
    /// The backend failed, or the store configuration is invalid.
    #[error("conversation store backend error: {0}")]
    Backend(String),
    /// Another process kept the conversation's lease for the whole wait.
    #[error("another turn of this conversation is running")]
    Busy,
}

impl From<object_store::Error> for StoreError {
    fn from(error: object_store::Error) -> Self {
        // object_store errors name the operation, the path and the HTTP status; requests
        // are signed in headers, so no credential appears in them.
        Self::Backend(error.to_string())
    }
}

/// Encodes a subject as one path segment.
///
/// Subjects of at most 180 UTF-8 bytes become their base64url encoding without padding;
/// longer ones become `h.` followed by the lowercase hex SHA-256 of their bytes. The
/// mapping is injective (base64url is injective and never contains `.`), and the segment
/// is never empty, `.` or `..`, never contains `/`, and is at most 240 bytes.
pub fn encode_sub(sub: &str) -> Result<String, StoreError> {
    if sub.is_empty() {
        return Err(StoreError::InvalidSubject(
            "the subject is empty".to_owned(),
        ));
    }
    let bytes = sub.as_bytes();
    if bytes.len() <= MAX_VERBATIM_SUB_BYTES {
        Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    } else {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
        Ok(format!(
            "{HASHED_SUB_MARKER}{}",
            hex::encode(digest.as_ref())
        ))
    }
}

/// Checks that a session id is 1–256 characters of `[A-Za-z0-9._:-]` and not `.`/`..`.
///
/// The error says why without echoing the input.
pub fn validate_session_id(id: &str) -> Result<(), StoreError> {
    if id.is_empty() {
        return Err(StoreError::InvalidSessionId(
            "the session id is empty".to_owned(),
        ));
    }
    if let Some((offset, _)) = id.char_indices().find(|(_, c)| !is_session_id_char(*c)) {
        return Err(StoreError::InvalidSessionId(format!(
            "character at byte offset {offset} is outside [A-Za-z0-9._:-]"
        )));
    }
    // Only ASCII remains, so bytes and characters agree.
    if id.len() > MAX_SESSION_ID_LEN {
        return Err(StoreError::InvalidSessionId(format!(
            "the session id is {} characters long, over the limit of {MAX_SESSION_ID_LEN}",
            id.len()
        )));
    }
    if id == "." || id == ".." {
        return Err(StoreError::InvalidSessionId(
            "the session id must not be `.` or `..`".to_owned(),
        ));
    }
    Ok(())
}

fn is_session_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')
}

/// The object path of a conversation, `sessions/{encode_sub(sub)}/{session_id}`, without
/// any S3 prefix. Validates both inputs.
pub fn object_path(sub: &str, session_id: &str) -> Result<Path, StoreError> {
    validate_session_id(session_id)?;
    let segment = encode_sub(sub)?;
    // Every segment is already in object_store's safe character set, so `from_iter`
    // percent-encodes nothing; the assertion in the tests checks that.
    Ok(Path::from_iter([
        SESSIONS_SEGMENT,
        segment.as_str(),
        session_id,
    ]))
}

/// A conversation store over a local directory or an S3 bucket.
///
/// Cheap to clone (one `Arc`); `Debug` shows the backend and location, never credentials.
#[derive(Clone)]
pub struct ConversationStore {
    backend: Arc<dyn ObjectStore>,
    location: Arc<str>,
    max_session_id_len: usize,
    /// Whether several processes may use this store at once (S3): turns then take a lease
    /// ([`ConversationStore::lease`]).
    shared: bool,
}

impl fmt::Debug for ConversationStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConversationStore")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl ConversationStore {
    /// Opens the store described by `config`.
    ///
    /// `Local` creates the directory (and missing parents) with mode 0700. `S3` builds a
    /// path-style client; no request is made until the first operation, and the bucket
    /// must exist.
    pub fn new(config: &StoreConfig) -> Result<Self, StoreError> {
        match config {
            StoreConfig::Local { dir } => Self::new_local(dir),
            StoreConfig::S3 {
                bucket,
                prefix,
                region,
                endpoint,
                allow_http,
                access_key_id,
                secret_access_key,
                session_token,
            } => {
                let credentials = match (access_key_id, secret_access_key) {
                    (Some(id), Some(secret)) => Some(StaticCredentials {
                        access_key_id: id,
                        secret_access_key: secret,
                        session_token: session_token.as_ref(),
                    }),
                    (None, None) if session_token.is_none() => None,
                    _ => {
                        return Err(StoreError::Backend(
                            "invalid S3 configuration: access_key_id and secret_access_key \
                             must be given together (session_token only with them)"
                                .to_owned(),
                        ));
                    }
                };
                Self::new_s3(S3Settings {
                    bucket,
                    prefix: prefix.as_deref(),
                    region,
                    endpoint: endpoint.as_deref(),
                    allow_http: *allow_http,
                    credentials,
                })
            }
        }
    }

    fn new_local(dir: &std::path::Path) -> Result<Self, StoreError> {
        create_private_dir(dir).map_err(|error| {
            StoreError::Backend(format!(
                "cannot create the conversation directory {}: {error}",
                dir.display()
            ))
        })?;
        let backend = LocalFileSystem::new_with_prefix(dir)?.with_fsync(true);
        Ok(Self {
            backend: Arc::new(backend),
            location: format!("local:{}", dir.display()).into(),
            max_session_id_len: MAX_LOCAL_SESSION_ID_LEN,
            shared: false,
        })
    }

    fn new_s3(settings: S3Settings<'_>) -> Result<Self, StoreError> {
        let invalid = |why: &str| StoreError::Backend(format!("invalid S3 configuration: {why}"));
        if settings.bucket.is_empty() {
            return Err(invalid("the bucket name is empty"));
        }
        if settings.region.is_empty() {
            return Err(invalid("the region is empty"));
        }
        let prefix = match settings.prefix {
            None => None,
            Some(raw) => {
                if raw.len() > MAX_PREFIX_BYTES {
                    return Err(invalid("the prefix is longer than 256 bytes"));
                }
                let parsed = Path::parse(raw).map_err(|_| {
                    invalid("the prefix must be `/`-separated non-empty segments, none `.`/`..`")
                })?;
                (!parsed.as_ref().is_empty()).then_some(parsed)
            }
        };

        let mut builder = match &settings.credentials {
            Some(credentials) => {
                let mut builder = AmazonS3Builder::new()
                    .with_access_key_id(credentials.access_key_id)
                    .with_secret_access_key(credentials.secret_access_key.expose_secret());
                if let Some(token) = credentials.session_token {
                    builder = builder.with_token(token.expose_secret());
                }
                builder
            }
            None => credentials_from_env(),
        };
        builder = builder
            .with_bucket_name(settings.bucket)
            .with_region(settings.region)
            .with_allow_http(settings.allow_http)
            .with_virtual_hosted_style_request(false)
            .with_client_options(
                ClientOptions::new()
                    .with_timeout(S3_REQUEST_TIMEOUT)
                    .with_connect_timeout(S3_CONNECT_TIMEOUT)
                    .with_allow_http(settings.allow_http),
            )
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: Duration::from_secs(20),
                ..RetryConfig::default()
            });
        if let Some(endpoint) = settings.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        let s3 = builder.build()?;

        let location = match &prefix {
            Some(prefix) => format!("s3://{}/{prefix}", settings.bucket),
            None => format!("s3://{}", settings.bucket),
        };
        let backend: Arc<dyn ObjectStore> = match prefix {
            Some(prefix) => Arc::new(PrefixStore::new(s3, prefix)),
            None => Arc::new(s3),
        };
        Ok(Self {
            backend,
            location: location.into(),
            max_session_id_len: MAX_SESSION_ID_LEN,
            shared: true,
        })
    }

    /// Validates the inputs, including this backend's own session-id length limit.
    fn path(&self, sub: &str, session_id: &str) -> Result<Path, StoreError> {
        let path = object_path(sub, session_id)?;
        if session_id.len() > self.max_session_id_len {
            return Err(StoreError::InvalidSessionId(format!(
                "the session id is {} characters long, over this backend's limit of {}",
                session_id.len(),
                self.max_session_id_len
            )));
        }
        Ok(path)
    }

    /// Loads the conversation `session_id` of `sub`, or `None` when there is none.
    ///
    /// Objects over [`MAX_CONVERSATION_BYTES`] are refused from their size before their
    /// body is read; bodies that are not JSON for `T` are [`StoreError::Corrupt`].
    pub async fn load<T: serde::de::DeserializeOwned>(
        &self,
        sub: &str,
        session_id: &str,
    ) -> Result<Option<T>, StoreError> {
        let path = self.path(sub, session_id)?;
        let result = match self.backend.get_opts(&path, GetOptions::default()).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        let limit = MAX_CONVERSATION_BYTES;
        if result.meta.size > limit as u64 {
            // Dropping the result closes the file or the response without reading it.
            return Err(StoreError::TooLarge {
                size: result.meta.size,
                limit,
            });
        }
        // The declared size is within the limit; still bound what is actually read.
        let mut body = Vec::with_capacity(usize::try_from(result.meta.size).unwrap_or(limit));
        let mut stream = result.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            if body.len() + chunk.len() > limit {
                return Err(StoreError::TooLarge {
                    size: (body.len() + chunk.len()) as u64,
                    limit,
                });
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|error| StoreError::Corrupt(describe_json_error(&error)))
    }

    /// Saves `value` as the conversation `session_id` of `sub`, replacing any previous one.
    ///
    /// Refuses bodies over [`MAX_CONVERSATION_BYTES`] without writing anything. The write
    /// is atomic: readers see the old or the new conversation, never a mix.
    pub async fn save<T: serde::Serialize>(
        &self,
        sub: &str,
        session_id: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let path = self.path(sub, session_id)?;
        let body = serde_json::to_vec(value)
            .map_err(|error| StoreError::Corrupt(format!("cannot serialize: {}", error)))?;
        if body.len() > MAX_CONVERSATION_BYTES {
            return Err(StoreError::TooLarge {
                size: body.len() as u64,
                limit: MAX_CONVERSATION_BYTES,
            });
        }
        self.backend.put(&path, PutPayload::from(body)).await?;
        Ok(())
    }

    /// Whether the backend answers: a `HEAD` of an object no conversation uses (its path
    /// has no `/`, a conversation's always has one). Found or not found are both answers.
    pub async fn check(&self) -> Result<(), StoreError> {
        match self.backend.head(&Path::from("latchkey-readiness")).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// Deletes the conversation `session_id` of `sub`. Deleting a missing one succeeds.
    pub async fn delete(&self, sub: &str, session_id: &str) -> Result<(), StoreError> {
        let path = self.path(sub, session_id)?;
        match self.backend.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }
}

struct StaticCredentials<'a> {
    access_key_id: &'a str,
    secret_access_key: &'a SecretString,
    session_token: Option<&'a SecretString>,
}

struct S3Settings<'a> {
    bucket: &'a str,
    prefix: Option<&'a str>,
    region: &'a str,
    endpoint: Option<&'a str>,
    allow_http: bool,
    credentials: Option<StaticCredentials<'a>>,
}

/// Environment variables that supply S3 credentials. Only these are read from the
/// environment, so `AWS_ENDPOINT`, `AWS_ALLOW_HTTP` and the like cannot redirect a store
/// whose location the configuration fixes.
const CREDENTIAL_ENV_VARS: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_ENDPOINT_URL_STS",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_METADATA_ENDPOINT",
    "AWS_IMDSV1_FALLBACK",
];

fn credentials_from_env() -> AmazonS3Builder {
    let mut builder = AmazonS3Builder::new();
    for name in CREDENTIAL_ENV_VARS {
        if let (Ok(value), Ok(key)) = (std::env::var(name), name.to_ascii_lowercase().parse()) {
            builder = builder.with_config(key, value);
        }
    }
    builder
}

/// Describes a JSON error by position and kind only: serde_json's own messages can quote
/// stored strings, which are conversation content.
fn describe_json_error(error: &serde_json::Error) -> String {
    let kind = match error.classify() {
        serde_json::error::Category::Io => "read error",
        serde_json::error::Category::Syntax => "invalid JSON",
        serde_json::error::Category::Data => "JSON of an unexpected shape",
        serde_json::error::Category::Eof => "truncated JSON",
    };
    format!("{kind} at line {} column {}", error.line(), error.column())
}

#[cfg(unix)]
fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_subjects_are_base64url_without_padding() -> Result<(), StoreError> {
        assert_eq!(encode_sub("alice")?, "YWxpY2U");
        assert_eq!(encode_sub("../a")?, "Li4vYQ");
        Ok(())
    }

    #[test]
    fn long_subjects_are_hashed() -> Result<(), StoreError> {
        // python3 -c "import hashlib; print(hashlib.sha256(b'a'*181).hexdigest())"
        assert_eq!(
            encode_sub(&"a".repeat(181))?,
            "h.9ce4e58a8e1314bf14ca8a52ac20fa1b1e27a78c40a24b5a287422f992b29b9d"
        );
        assert!(!encode_sub(&"a".repeat(180))?.starts_with(HASHED_SUB_MARKER));
        Ok(())
    }

    #[test]
    fn empty_subject_is_rejected() {
        assert!(matches!(encode_sub(""), Err(StoreError::InvalidSubject(_))));
    }

    #[test]
    fn session_id_rules() {
        for good in [
            "a",
            "0d6c8a7e-5b1f-4c8e-9d2a-6f3e1b7c9a40-extra",
            "a.b:c_d-e",
            "...",
            &"x".repeat(256),
        ] {
            assert!(
                validate_session_id(good).is_ok(),
                "{good:?} should be valid"
            );
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a b",
            "é",
            "a\0b",
            "%2e",
            "a#1",
            &"x".repeat(257),
        ] {
            assert!(
                matches!(
                    validate_session_id(bad),
                    Err(StoreError::InvalidSessionId(_))
                ),
                "{bad:?} should be invalid"
            );
        }
    }

    #[test]
    fn object_path_has_three_segments() -> Result<(), StoreError> {
        let path = object_path("alice", "s-1")?;
        assert_eq!(path.as_ref(), "sessions/YWxpY2U/s-1");
        Ok(())
    }

    #[test]
    fn config_debug_redacts_credentials() {
        let config = StoreConfig::S3 {
            bucket: "b".into(),
            prefix: None,
            region: "us-east-1".into(),
            endpoint: None,
            allow_http: false,
            access_key_id: Some("AKIAEXAMPLEKEYID".into()),
            secret_access_key: Some("super-secret-key".into()),
            session_token: Some("super-secret-token".into()),
        };
        let debug = format!("{config:?}");
        assert!(!debug.contains("AKIAEXAMPLEKEYID"), "{debug}");
        assert!(!debug.contains("super-secret"), "{debug}");
        assert!(debug.contains("[REDACTED]"), "{debug}");
    }

    #[test]
    fn json_errors_do_not_quote_content() {
        let error = serde_json::from_slice::<u64>(br#""secret-conversation-text""#)
            .err()
            .map(|e| describe_json_error(&e))
            .unwrap_or_default();
        assert!(!error.is_empty());
        assert!(!error.contains("secret-conversation-text"), "{error}");
    }
}
