//! The wire structs of the AgentCore Identity API that Latchkey implements: the data-plane
//! requests and responses `latchkey-client` sends and reads (and the identity service
//! parses and answers), and the control-plane responses the identity service returns.
//!
//! Member names are the model's (`spec/models/*.json`), in camelCase; the identity
//! service's `tests/api_model.rs` checks every struct here against the model. Serde only:
//! no HTTP. Tokens, keys and other secrets are [`secrecy::SecretString`] (redacted
//! `Debug`); they are written out only when a struct is serialized onto the wire.
//!
//! Response members are declared in alphabetical order, so a response is byte for byte
//! what a `serde_json::Value` of the same members (a sorted map) would be.

pub mod control;
pub mod data;
pub mod grants;
mod secret;

/// A timestamp on the wire: epoch seconds as a JSON number (the rest-json format).
pub fn epoch_seconds(ms: i64) -> f64 {
    ms as f64 / 1000.0
}
