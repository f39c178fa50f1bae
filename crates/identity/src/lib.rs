//! The identity service: AgentCore Identity's control and data planes over HTTP.
//!
//! Owns: caller authentication (SigV4, bearer keys) and roles, the control plane
//! (workload identities, credential providers, token vault settings, tags), the data plane
//! (workload access tokens, API keys) and the audit sink. The guarded outbound client and
//! inbound user-JWT verification come from `latchkey-authn`; domain rules live in
//! `latchkey-core`; persistence in `latchkey-store`. `app(state)` builds the router, so
//! tests and `latchkey dev` can mount it without a socket.

pub mod app;
pub mod audit;
pub mod auth;
pub mod cache;
pub mod control;
pub mod data;
pub mod flows;
pub mod http_error;
pub mod pages;
pub mod providers;
pub mod rotation;
pub mod state;
pub mod token_client;
pub mod vault;

pub use app::app;
/// The guarded outbound client and inbound JWT verification live in `latchkey-authn`.
pub use latchkey_authn::{inbound, outbound};
pub use state::{AppState, ServiceConfig};
