//! Authentication plumbing shared by the Latchkey services (below them in the crate graph;
//! no service crate depends on another):
//!
//! - [`outbound`]: the guarded outbound HTTP client (SSRF policy, bounded bodies, no
//!   redirects to private addresses);
//! - [`inbound`]: OIDC discovery, JWKS and ID-token / user-JWT verification;
//! - [`alb`]: the ALB `x-amzn-oidc-data` format, signing and verifying side by side;
//! - [`user`]: the one resolver of "who is the signed-in user" (ALB header, bearer or cookie
//!   ID token) with one duplicate-header policy, and its configuration;
//! - [`pkce`]: PKCE (RFC 7636) verifiers and challenges;
//! - [`credential`]: a service's own `ACCESS_KEY_ID:SECRET` credential;
//! - [`config`]: the user sources' configuration keys and the configuration error.

pub mod alb;
pub mod config;
pub mod credential;
pub mod inbound;
pub mod outbound;
pub mod pkce;
pub mod user;

pub use config::ConfigError;
pub use credential::{CredentialError, ServiceCredential};
pub use user::{
    AlbConfig, OidcConfig, ResolveError, SignedInUser, Source, UserResolver, UserSources,
};
