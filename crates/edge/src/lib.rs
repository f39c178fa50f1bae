//! Edge hardening for Latchkey's public listeners.
//!
//! This crate owns what every internet-facing Latchkey listener (the OIDC gateway,
//! `latchkey serve gateway`) does before and after a request reaches a handler, and
//! knows nothing about identities or upstreams:
//!
//! - [`rules`]: a baseline request filter (methods, path traversal, encoding tricks,
//!   request smuggling, header abuse) that rejects a request with 400/405/431.
//! - [`headers`]: security response headers.
//! - [`pages`]: the headers of every HTML page a service shows a browser.
//! - [`rate`]: a keyed token-bucket rate limiter with bounded memory.
//! - [`access_log`]: one JSON line per request, never with query strings or secrets.
//! - [`tls`]: a rustls (aws-lc-rs) acceptor whose certificate follows the files on disk.

pub mod access_log;
pub mod headers;
pub mod pages;
pub mod rate;
pub mod rules;
pub mod tls;
