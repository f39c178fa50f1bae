//! The agent workload (`latchkey serve agent`).
//!
//! `POST /invocations` with `{sessionId, message}` answers with typed Server-Sent Events
//! ([`events`]). The user is the verified `sub` of the load balancer's
//! `x-amzn-oidc-data` header (the same verifier as the session binding service) or of a
//! bearer OIDC ID token; without one the answer is 401 and nothing runs. Each turn loads
//! the user's conversation ([`conversation`], stored with `latchkey-conversations`), runs the model/tool loop
//! ([`turn`]) through a provider-agnostic [`latchkey_llm::ChatModel`], and saves it.
//!
//! Tools ([`tools`]) call third-party APIs as the user: for each call the agent gets a
//! workload access token for the user and asks the identity service
//! (`GetResourceOauth2Token`, `USER_FEDERATION`) for a token with exactly that tool's
//! scopes. When the user has not consented yet, the stream carries an
//! `authorization_required` event with the authorization URL and the turn ends (or, with
//! `consent_wait_seconds`, waits for the consent); the next message continues the pending
//! tool call. Tokens never appear in events, logs or stored conversations: a tool's URL
//! template has a literal origin and each argument is one encoded path segment
//! ([`template`]), and what a tool returns is cleared of the token it was called with
//! ([`redact`]).
//!
//! `app(state)` builds the router (with `/docs` and `/openapi.json`, [`openapi`]), so
//! tests and `latchkey dev` can mount it without a socket.

pub mod app;
mod chat;
pub mod config;
pub mod conversation;
pub mod events;
pub mod openapi;
pub mod redact;
pub mod template;
pub mod tools;
mod turn;

pub use app::{AgentState, StartError, app, openapi};
pub use config::{AgentConfig, AgentCredential, HttpMethod, HttpToolConfig};
pub use latchkey_conversations::StoreConfig;
