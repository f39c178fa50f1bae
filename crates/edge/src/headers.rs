//! Security headers added to every response leaving the edge.

use http::{HeaderMap, HeaderName, HeaderValue, header};

/// The `Permissions-Policy` sent when the upstream sets none: no powerful features.
pub const PERMISSIONS_POLICY: &str = "camera=(), microphone=(), geolocation=(), payment=(), usb=()";

/// The `Strict-Transport-Security` value sent when HSTS is on.
pub const HSTS: &str = "max-age=31536000; includeSubDomains";

const CROSS_ORIGIN_OPENER_POLICY: HeaderName =
    HeaderName::from_static("cross-origin-opener-policy");
const PERMISSIONS_POLICY_HEADER: HeaderName = HeaderName::from_static("permissions-policy");
const X_POWERED_BY: HeaderName = HeaderName::from_static("x-powered-by");

/// Adds the baseline security headers and removes software banners.
///
/// Each header is added only when the response does not already carry it, so an
/// upstream that sets its own (say `X-Frame-Options: SAMEORIGIN`) is respected:
///
/// - `X-Content-Type-Options: nosniff`
/// - `X-Frame-Options: DENY`
/// - `Referrer-Policy: no-referrer`
/// - `Cross-Origin-Opener-Policy: same-origin`
/// - `Permissions-Policy:` [`PERMISSIONS_POLICY`]
/// - `Strict-Transport-Security:` [`HSTS`], only when `hsts` is true (serve it only
///   over HTTPS).
///
/// `Server` and `X-Powered-By` are always removed.
pub fn apply_security_headers(headers: &mut HeaderMap, hsts: bool) {
    set_if_absent(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set_if_absent(headers, header::X_FRAME_OPTIONS, "DENY");
    set_if_absent(headers, header::REFERRER_POLICY, "no-referrer");
    set_if_absent(headers, CROSS_ORIGIN_OPENER_POLICY, "same-origin");
    set_if_absent(headers, PERMISSIONS_POLICY_HEADER, PERMISSIONS_POLICY);
    if hsts {
        set_if_absent(headers, header::STRICT_TRANSPORT_SECURITY, HSTS);
    }
    headers.remove(header::SERVER);
    headers.remove(X_POWERED_BY);
}

fn set_if_absent(headers: &mut HeaderMap, name: HeaderName, value: &'static str) {
    headers
        .entry(name)
        .or_insert_with(|| HeaderValue::from_static(value));
}
