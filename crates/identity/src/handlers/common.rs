//! What the control-plane handlers share: request shapes used by several operations,
//! field checks with AgentCore's constraints, pagination, timestamps and responses.

use std::collections::BTreeMap;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use latchkey_core::ApiError;
use latchkey_core::validate::{
    Validator, is_provider_char, is_return_url, is_tag_char, is_workload_char,
};
use serde::Deserialize;
use serde_json::{Value, json};

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

/// Epoch seconds as a JSON number (the rest-json timestamp format).
pub fn epoch(ms: i64) -> Value {
    json!(ms as f64 / 1000.0)
}

pub(crate) fn created(body: Value) -> Response {
    (StatusCode::CREATED, Json(body)).into_response()
}

pub(crate) fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// Store errors about one named resource, in the client's words.
pub(crate) fn about<'a>(
    kind: &'static str,
    name: &'a str,
) -> impl FnOnce(latchkey_store::StoreError) -> ApiError + 'a {
    move |e| match e {
        latchkey_store::StoreError::Conflict => {
            ApiError::Conflict(format!("{kind} {name:?} already exists"))
        }
        latchkey_store::StoreError::NotFound => {
            ApiError::NotFound(format!("{kind} {name:?} not found"))
        }
        e => e.into(),
    }
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

pub(crate) fn tag_pairs(tags: Option<BTreeMap<String, String>>) -> Vec<(String, String)> {
    tags.unwrap_or_default().into_iter().collect()
}

/// Pagination: `maxResults` within `1..=max`, `nextToken` an opaque cursor we issued.
pub(crate) fn page_args(
    v: &mut Validator,
    max_results: Option<i64>,
    max: i64,
    next_token: Option<&str>,
) -> (i64, Option<String>) {
    let limit = max_results.unwrap_or(max);
    v.check(
        "maxResults",
        (1..=max).contains(&limit),
        format!("Member must have value between 1 and {max}, inclusive"),
    );
    let after =
        next_token.and_then(
            |t| match B64.decode(t).ok().and_then(|b| String::from_utf8(b).ok()) {
                Some(name) => Some(name),
                None => {
                    v.fail(
                        "nextToken",
                        "Member must be a token returned by a previous call",
                    );
                    None
                }
            },
        );
    (limit.clamp(1, max), after)
}

/// A list response: `{key: items}` plus `nextToken` when there is more.
pub(crate) fn page_body(key: &str, items: Vec<Value>, next: Option<String>) -> Value {
    let mut body = json!({ key: items });
    if let Some(t) = next {
        body["nextToken"] = json!(t);
    }
    body
}

/// Given `limit + 1` rows fetched, the page and the next token.
pub(crate) fn paginate<T>(
    mut rows: Vec<T>,
    limit: i64,
    name: impl Fn(&T) -> &str,
) -> (Vec<T>, Option<String>) {
    let limit = limit as usize;
    if rows.len() > limit {
        rows.truncate(limit);
        let token = rows.last().map(|r| B64.encode(name(r)));
        (rows, token)
    } else {
        (rows, None)
    }
}
