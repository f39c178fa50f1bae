//! The gateway (`latchkey serve gateway`): the OIDC-authenticating edge that replaces the
//! seed architecture's Application Load Balancer.
//!
//! It signs browsers in against any OpenID Provider (authorization code + PKCE S256,
//! `state`, `nonce`; [`oidc`]) with each login in progress sealed in a cookie of its own
//! ([`login`]: nothing is kept server-side until a login completes), keeps sessions
//! server-side behind a sealed cookie ([`session`], [`keys`]), routes requests by longest
//! path prefix to upstream services and streams bodies both ways ([`app`]), and tells
//! upstreams who the user is in the ALB's
//! formats: `x-amzn-oidc-data` (an ES256 JWT with padded base64url parts, verifiable with
//! `latchkey_authn::alb::AlbVerifier` against `{public_url}/.well-known/alb-keys/{kid}`),
//! `x-amzn-oidc-identity` and `x-amzn-oidc-accesstoken`. Client-supplied `x-amzn-oidc-*`
//! headers and the gateway's own cookie never reach an upstream.
//!
//! [`server::serve`] runs a [`GatewayState`] on a listener with one single-threaded
//! runtime per worker thread ([`server`] says why).

pub mod app;
pub mod config;
pub mod edge;
pub mod keys;
pub mod login;
pub mod oidc;
pub mod pages;
pub mod redirect;
pub mod server;
pub mod session;
pub mod shared;
pub mod snapshot;
pub mod upstream;

pub use app::{GatewayState, StartError, Worker};
pub use config::{GatewayConfig, RouteAuth, RouteConfig};
