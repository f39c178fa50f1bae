//! The identity service: AgentCore Identity's control and data planes over HTTP.
//!
//! Layers, each depending only on those below it:
//! - [`app`] (the router) and [`handlers`]: thin HTTP handlers: extract, authenticate and
//!   authorize ([`auth`]), validate in AgentCore's terms, call a service, render.
//! - [`services`]: workloads (WAT issue and verification), providers, the token vault,
//!   authorization sessions and administration,
//!   each taking its dependencies (store, clock, keys, outbound client, audit sink)
//!   explicitly, so the admin CLI calls them without starting a server ([`services::admin`]).
//! - Foundations: [`error`] (one error type; one mapping per wire format: [`http_error`]
//!   for AgentCore JSON, [`pages`] for HTML), [`aad`] (every envelope's associated data,
//!   shared by the services and [`rotation`]), [`audit`], [`caller`], [`cache`],
//!   [`token_client`].
//!
//! [`state::AppState`] builds the services once at start. The guarded outbound client and
//! inbound user-JWT verification come from `latchkey-authn`; domain rules live in
//! `latchkey-core`; persistence in `latchkey-store`. `app(state)` builds the router, so
//! tests and `latchkey dev` can mount it without a socket.

pub mod aad;
pub mod app;
pub mod audit;
pub mod auth;
pub mod cache;
pub mod caller;
pub mod credentials;
pub mod error;
pub mod handlers;
pub mod http_error;
pub mod pages;
pub mod rotation;
pub mod services;
pub mod state;
pub mod token_client;

pub use app::app;
/// The guarded outbound client and inbound JWT verification live in `latchkey-authn`.
pub use latchkey_authn::{inbound, outbound};
pub use services::admin;
pub use state::{AppState, ServiceConfig};
