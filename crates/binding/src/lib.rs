//! The session binding service (`latchkey serve binding`).
//!
//! After the user consents at a third-party provider, the identity service redirects the
//! browser to `GET /oauth2/session-binding?session_id=<completion URN>` (a one-time URN
//! issued at the callback, not the polling `sessionUri`; it is forwarded unchanged, and
//! the polling `sessionUri` never completes anything). This service, behind
//! the same login as the application, finds out who the signed-in browser user is — from
//! the load balancer's signed `x-amzn-oidc-data` header or from the user's OIDC ID token
//! (`Authorization: Bearer` or a cookie), both by `latchkey_authn::user::UserResolver` —
//! and calls the identity service's `CompleteResourceTokenAuth` through `latchkey-client`
//! with its own `binding` credential ([`upstream`]), so the
//! identity service can check that this user is the user who started the flow. It never
//! sees tokens of the third-party provider; it answers with one of a few fixed HTML pages
//! ([`pages`]) that reflect nothing from the request.
//!
//! It also serves the signed-in user's **connections page** (`/connections`,
//! [`connections`]): the grants the vault holds for exactly that user, each revocable
//! (RFC 7009 at the provider, then deleted; CSRF-protected), through the identity
//! service's `ListUserGrants` / `RevokeUserGrant` with the same credential.
//!
//! `app(state)` builds the router, so tests and `latchkey dev` can mount it without a
//! socket.

pub mod app;
pub mod config;
pub mod connections;
pub mod pages;
pub mod upstream;

pub use app::{BindingState, StartError, app};
pub use config::{
    AlbConfig, BindingConfig, BindingCredential, ConfigError, OidcConfig, UserSources,
};
/// The ALB header verifier (re-exported for tests and callers that inspect its key cache).
pub use latchkey_authn::alb;
