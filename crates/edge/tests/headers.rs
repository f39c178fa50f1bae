//! Security response headers.

use http::{HeaderMap, HeaderValue};
use latchkey_edge::headers::{HSTS, PERMISSIONS_POLICY, apply_security_headers};

fn get<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().expect("ascii"))
}

/// Each header has the value given (`None`: absent).
fn assert_headers(headers: &HeaderMap, expected: &[(&str, Option<&str>)]) {
    for (name, value) in expected {
        assert_eq!(get(headers, name), *value, "{name}");
    }
}

#[test]
fn adds_baseline_headers_without_hsts() {
    let mut headers = HeaderMap::new();
    apply_security_headers(&mut headers, false);
    assert_headers(
        &headers,
        &[
            ("x-content-type-options", Some("nosniff")),
            ("x-frame-options", Some("DENY")),
            ("referrer-policy", Some("no-referrer")),
            ("cross-origin-opener-policy", Some("same-origin")),
            ("permissions-policy", Some(PERMISSIONS_POLICY)),
            ("strict-transport-security", None),
        ],
    );
}

#[test]
fn hsts_only_when_asked() {
    let mut headers = HeaderMap::new();
    apply_security_headers(&mut headers, true);
    assert_eq!(get(&headers, "strict-transport-security"), Some(HSTS));
    assert_eq!(HSTS, "max-age=31536000; includeSubDomains");
}

#[test]
fn does_not_overwrite_upstream_choices() {
    let upstream = [
        ("x-frame-options", "SAMEORIGIN"),
        ("referrer-policy", "strict-origin-when-cross-origin"),
        ("strict-transport-security", "max-age=60"),
    ];
    let mut headers = HeaderMap::new();
    for (name, value) in upstream {
        headers.insert(name, HeaderValue::from_static(value));
    }
    apply_security_headers(&mut headers, true);
    for (name, value) in upstream {
        assert_eq!(get(&headers, name), Some(value), "{name}");
    }
    assert_eq!(headers.get_all("x-frame-options").iter().count(), 1);
}

#[test]
fn removes_banners() {
    let mut headers = HeaderMap::new();
    headers.insert("server", HeaderValue::from_static("nginx/1.2.3"));
    headers.append("x-powered-by", HeaderValue::from_static("Express"));
    headers.append("x-powered-by", HeaderValue::from_static("PHP/8"));
    apply_security_headers(&mut headers, false);
    assert!(headers.get("server").is_none());
    assert!(headers.get("x-powered-by").is_none());
}
