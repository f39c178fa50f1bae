//! A Rust client for the identity **data plane** of Latchkey and of Amazon Bedrock
//! AgentCore Identity (the same wire: restJson1 `POST /identities/…`): workload access
//! tokens, OAuth2 resource tokens with the three-legged consent flow and its session
//! binding, and API keys.
//!
//! This crate owns the caller's side only: authentication (SigV4 as service
//! `bedrock-agentcore`, or Latchkey's bearer keys), the JSON shapes, the AgentCore error
//! names, and a session poller that works in any process. It knows nothing of the server.
//! Secrets (credentials, workload access tokens, user tokens, access tokens, API keys) are
//! [`secrecy::SecretString`]s: never `Debug`-printed, never in an [`Error`].
//!
//! ```no_run
//! # async fn run() -> Result<(), latchkey_client::Error> {
//! use latchkey_client::{Client, Oauth2Flow, PollOptions, ResourceToken, ResourceTokenRequest};
//! use secrecy::ExposeSecret;
//!
//! let endpoint = url::Url::parse("http://127.0.0.1:8080").expect("url");
//! let client = Client::builder(endpoint)
//!     .sigv4("LK…", "secret", None, "us-east-1")
//!     .build()?;
//! let wat = client.get_workload_access_token_for_user_id("my-agent", "alice").await?;
//! let request = ResourceTokenRequest::new(wat, "github", Oauth2Flow::UserFederation)
//!     .with_scopes(["read:user"])
//!     .with_return_url("https://app.example.com/oauth2/session-binding");
//! let token = match client.get_resource_oauth2_token(&request).await? {
//!     ResourceToken::Token(token) => token,
//!     ResourceToken::AuthorizationRequired { authorization_url, session_uri } => {
//!         println!("open {authorization_url}");
//!         let poll = request.clone().with_session_uri(session_uri);
//!         client
//!             .poll_resource_token(&poll, PollOptions::default(), std::future::pending())
//!             .await?
//!     }
//!     other => panic!("unexpected {other:?}"),
//! };
//! # let _ = token.expose_secret();
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod client;
mod error;
mod model;
mod poll;

pub use client::{Client, ClientBuilder, DEFAULT_TIMEOUT, SIGNING_NAME};
pub use error::{Error, ErrorKind, REASON_HEADER, Reason};
pub use latchkey_api::grants::{ProviderRevocation, UserGrant};
pub use model::{Oauth2Flow, ResourceToken, ResourceTokenRequest, UserIdentifier};
pub use poll::PollOptions;
pub use secrecy::{ExposeSecret, SecretString};
pub use url::Url;
