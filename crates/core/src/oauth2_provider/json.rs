//! JSON access for the parsers: paths, type errors, `null` as absent, unknown members.

use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::validate::Validator;

pub(super) fn join(path: &str, key: &str) -> String {
    format!("{path}.{key}")
}

pub(super) fn type_error(path: &str, expected: &str) -> ApiError {
    ApiError::cannot_parse(format!("Invalid type for '{path}': expected {expected}"))
}

pub(super) fn object<'a>(value: &'a Value, path: &str) -> Result<&'a Map<String, Value>, ApiError> {
    value
        .as_object()
        .ok_or_else(|| type_error(path, "an object"))
}

/// A member, with JSON `null` treated as absent.
pub(super) fn opt<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).filter(|v| !v.is_null())
}

pub(super) fn opt_str<'a>(
    map: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a str>, ApiError> {
    match opt(map, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(type_error(&join(path, key), "a string")),
    }
}

pub(super) fn opt_obj<'a>(
    map: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a Map<String, Value>>, ApiError> {
    opt(map, key)
        .map(|v| object(v, &join(path, key)))
        .transpose()
}

pub(super) fn opt_strings<'a>(
    map: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<Vec<&'a str>>, ApiError> {
    let Some(value) = opt(map, key) else {
        return Ok(None);
    };
    let field = join(path, key);
    let items = value
        .as_array()
        .ok_or_else(|| type_error(&field, "a list"))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            item.as_str()
                .ok_or_else(|| type_error(&format!("{field}.{i}"), "a string"))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Unknown (non-null) members are failures: a feature Latchkey does not know is never
/// silently ignored.
pub(super) fn check_members(
    v: &mut Validator,
    map: &Map<String, Value>,
    path: &str,
    allowed: &[&str],
) {
    for (key, value) in map {
        if !value.is_null() && !allowed.contains(&key.as_str()) {
            v.fail(
                &join(path, key),
                "not supported by Latchkey: unknown member",
            );
        }
    }
}
