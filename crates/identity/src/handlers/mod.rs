//! Thin HTTP handlers: extract (the caller's privilege is in the extractor's type, see
//! [`crate::auth`]), validate in AgentCore's terms, call a service or the store, render.

pub mod common;
pub mod control;
pub mod data;
pub mod flows;
pub mod grants;
pub mod providers;
