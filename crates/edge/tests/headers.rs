//! Security response headers.

use http::{HeaderMap, HeaderValue};
use latchkey_edge::headers::{HSTS, PERMISSIONS_POLICY, apply_security_headers};

fn get<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().expect("ascii"))
}

#[test]
fn adds_baseline_headers_without_hsts() {
    let mut headers = HeaderMap::new();
    apply_security_headers(&mut headers, false);
    assert_eq!(get(&headers, "x-content-type-options"), Some("nosniff"));
    assert_eq!(get(&headers, "x-frame-options"), Some("DENY"));
    assert_eq!(get(&headers, "referrer-policy"), Some("no-referrer"));
    assert_eq!(
        get(&headers, "cross-origin-opener-policy"),
        Some("same-origin")
    );
    assert_eq!(
        get(&headers, "permissions-policy"),
        Some(PERMISSIONS_POLICY)
    );
    assert_eq!(get(&headers, "strict-transport-security"), None);
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
    let mut headers = HeaderMap::new();
    headers.insert("x-frame-options", HeaderValue::from_static("SAMEORIGIN"));
    headers.insert(
        "referrer-policy",
        HeaderValue::from_static("strict-origin-when-cross-origin"),
    );
    headers.insert(
        "strict-transport-security",
        HeaderValue::from_static("max-age=60"),
    );
    apply_security_headers(&mut headers, true);
    assert_eq!(get(&headers, "x-frame-options"), Some("SAMEORIGIN"));
    assert_eq!(
        get(&headers, "referrer-policy"),
        Some("strict-origin-when-cross-origin")
    );
    assert_eq!(
        get(&headers, "strict-transport-security"),
        Some("max-age=60")
    );
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
