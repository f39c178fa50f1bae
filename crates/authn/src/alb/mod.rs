//! The ALB's `x-amzn-oidc-data` header format: [`sign`] (the gateway, standing in for an
//! AWS Application Load Balancer) and [`verify`] (the services behind it), side by side.

pub mod sign;
pub mod verify;

pub use sign::{AlbSigner, SignerError};
pub use verify::{AlbError, AlbUser, AlbVerifier};
