//! Serializers that write a secret onto the wire (and nowhere else).

use std::collections::BTreeMap;

use secrecy::{ExposeSecret, SecretString};
use serde::Serializer;
use serde::ser::SerializeMap;

pub(crate) fn expose<S: Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(secret.expose_secret())
}

pub(crate) fn expose_option<S: Serializer>(
    secret: &Option<SecretString>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match secret {
        Some(secret) => s.serialize_some(secret.expose_secret()),
        None => s.serialize_none(),
    }
}

pub(crate) fn expose_map<S: Serializer>(
    map: &Option<BTreeMap<String, SecretString>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match map {
        None => s.serialize_none(),
        Some(map) => {
            let mut out = s.serialize_map(Some(map.len()))?;
            for (k, v) in map {
                out.serialize_entry(k, v.expose_secret())?;
            }
            out.end()
        }
    }
}
