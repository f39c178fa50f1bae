//! What the control-plane handlers share: request shapes used by several operations,
//! field checks with AgentCore's constraints, pagination arguments and responses.

use std::collections::BTreeMap;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use latchkey_core::ApiError;
use latchkey_core::validate::{
    Validator, is_provider_char, is_return_url, is_tag_char, is_workload_char,
};
use serde::{Deserialize, Serialize};

use crate::services::registry::page_cursor;
use crate::state::ALLOW_USER_ID_TAG;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NameRequest {
    pub(crate) name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListRequest {
    #[serde(default)]
    pub(crate) next_token: Option<String>,
    #[serde(default)]
    pub(crate) max_results: Option<i64>,
}

pub(crate) fn created(body: impl Serialize) -> Response {
    (StatusCode::CREATED, Json(body)).into_response()
}

pub(crate) fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

pub(crate) fn check_workload_name(v: &mut Validator, field: &str, name: &str) {
    v.chars(field, name, 3, 255, is_workload_char, "[A-Za-z0-9_.-]+");
}

pub(crate) fn check_provider_name(v: &mut Validator, field: &str, name: &str) {
    v.chars(field, name, 1, 128, is_provider_char, "[a-zA-Z0-9\\-_]+");
}

pub(crate) fn check_return_urls(v: &mut Validator, urls: &[String]) {
    for (i, u) in urls.iter().enumerate() {
        let field = format!("allowedResourceOauth2ReturnUrls.{i}");
        if v.length(&field, u, 1, 2048) {
            v.check(
                &field,
                is_return_url(u),
                "Member must satisfy regular expression pattern: \\w+:(\\/?\\/?)[^\\s]+",
            );
        }
    }
}

pub(crate) fn check_tags(v: &mut Validator, tags: &BTreeMap<String, String>) {
    v.check(
        "tags",
        tags.len() <= 50,
        "Member must have length less than or equal to 50",
    );
    for (k, val) in tags {
        v.chars(
            "tags.key",
            k,
            1,
            128,
            is_tag_char,
            "[a-zA-Z0-9\\s._:/=+@-]*",
        );
        v.chars(
            &format!("tags.{k}"),
            val,
            0,
            256,
            is_tag_char,
            "[a-zA-Z0-9\\s._:/=+@-]*",
        );
    }
    if let Some(val) = tags.get(ALLOW_USER_ID_TAG) {
        v.check(
            &format!("tags.{ALLOW_USER_ID_TAG}"),
            val == "true" || val == "false",
            "Member must be \"true\" or \"false\"",
        );
    }
}

/// Check a `name` member alone (the `Get*` and `Delete*` operations).
pub(crate) fn checked_workload_name(name: &str) -> Result<(), ApiError> {
    let mut v = Validator::new();
    check_workload_name(&mut v, "name", name);
    v.finish()
}

/// Check a provider's `name` member alone.
pub(crate) fn checked_provider_name(name: &str) -> Result<(), ApiError> {
    let mut v = Validator::new();
    check_provider_name(&mut v, "name", name);
    v.finish()
}

/// Pagination: `maxResults` within `1..=max`, `nextToken` an opaque cursor we issued.
/// The page size and the name after which the page starts.
pub(crate) fn page_args(req: &ListRequest, max: i64) -> Result<(i64, Option<String>), ApiError> {
    let mut v = Validator::new();
    let limit = req.max_results.unwrap_or(max);
    v.check(
        "maxResults",
        (1..=max).contains(&limit),
        format!("Member must have value between 1 and {max}, inclusive"),
    );
    let after = req
        .next_token
        .as_deref()
        .and_then(|t| match page_cursor(t) {
            Some(name) => Some(name),
            None => {
                v.fail(
                    "nextToken",
                    "Member must be a token returned by a previous call",
                );
                None
            }
        });
    v.finish()?;
    Ok((limit.clamp(1, max), after))
}
