//! Latchkey's domain core: typed errors and validation that mirror AgentCore's service
//! models, envelope encryption of stored secrets, SigV4 request verification, workload
//! access tokens, ARNs, audit events, and protocol values as types ([`protocol`]: workload
//! and provider names, session URIs, scopes). It knows nothing of HTTP or SQL; the service and
//! storage crates build on it.

pub mod arn;
pub mod audit;
pub mod clock;
pub mod crypto;
pub mod error;
pub mod oauth2_provider;
pub mod protocol;
pub mod sigv4;
pub mod user;
pub mod validate;
pub mod wat;

pub use error::{ApiError, ApiResult, FieldError, ValidationReason};
pub use protocol::{CredentialProviderName, InvalidValue, Scopes, SessionUri, WorkloadName};
pub use user::{UserPrincipal, UserPrincipalError, UserSource};
