//! Latchkey's URL rule for discovery URLs, issuers and endpoints (see the module docs).

use std::net::IpAddr;

use url::{Host, Url};

use super::MAX_URL_LEN;
use crate::validate::Validator;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum UrlRole {
    Issuer,
    Endpoint,
    Discovery,
}

/// Full match of the model's `DiscoveryUrlType` pattern
/// `[^\s?#]+/\.well-known/(openid-configuration|oauth-authorization-server)(/[^\s?#]+)?`.
pub fn matches_discovery_pattern(s: &str) -> bool {
    const MARK: &str = "/.well-known/";
    if s.chars().any(|c| c.is_whitespace() || c == '?' || c == '#') {
        return false;
    }
    // Every position, overlapping ones included, as the regex may backtrack to any.
    s.char_indices().any(|(i, _)| {
        i > 0
            && s[i..].strip_prefix(MARK).is_some_and(|after| {
                ["openid-configuration", "oauth-authorization-server"]
                    .iter()
                    .any(|name| {
                        after.strip_prefix(name).is_some_and(|tail| {
                            tail.is_empty() || (tail.len() > 1 && tail.starts_with('/'))
                        })
                    })
            })
    })
}

/// Latchkey's URL rule (see the module docs). The message is client-safe.
pub(super) fn check_url(value: &str, role: UrlRole) -> Result<(), String> {
    if value.is_empty() || value.chars().count() > MAX_URL_LEN {
        return Err(format!(
            "Member must have length between 1 and {MAX_URL_LEN}, inclusive"
        ));
    }
    if value
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
    {
        return Err(
            "Member must be a URL without whitespace, control characters or backslashes".into(),
        );
    }
    let lower = value.get(..8).unwrap_or(value).to_ascii_lowercase();
    if !(lower.starts_with("https://") || lower.starts_with("http://")) {
        return Err("Member must be an absolute http(s) URL".into());
    }
    let url =
        Url::parse(value).map_err(|_| "Member must be an absolute http(s) URL".to_string())?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => {
            return Err("Member must use https (plain http is allowed only for loopback hosts: localhost, 127.0.0.0/8, ::1)".into());
        }
        _ => return Err("Member must be an absolute http(s) URL".into()),
    }
    if url.host().is_none() {
        return Err("Member must be an absolute http(s) URL with a host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("Member must not contain user credentials".into());
    }
    if url.fragment().is_some() {
        return Err("Member must not contain a fragment".into());
    }
    if role == UrlRole::Issuer && url.query().is_some() {
        return Err("Member must not contain a query (an issuer is scheme, host and path)".into());
    }
    Ok(())
}

pub(super) fn check_url_field(v: &mut Validator, field: &str, value: &str, role: UrlRole) -> bool {
    match check_url(value, role) {
        Ok(()) => true,
        Err(message) => {
            v.fail(field, message);
            false
        }
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}
