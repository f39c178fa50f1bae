//! The services behind the HTTP handlers. Each takes its dependencies explicitly (store,
//! clock, key material, the outbound client, the audit sink), never the server state, so
//! the admin CLI and tests can build one without starting a server.
//!
//! Dependencies run one way: `providers` ← `vault` ← `sessions`; `admin` uses `vault`;
//! `workloads` (WAT issue and verification) stands alone; `registry` (the control plane's
//! resources) uses `providers` and `workloads` (whose caches it keeps true).

pub mod admin;
pub mod providers;
pub mod registry;
pub mod sessions;
pub mod vault;
pub mod workloads;
