//! What every HTML page a Latchkey service shows a browser carries (the identity
//! service's OAuth pages, the binding service's pages, the gateway's own pages): a strict
//! Content-Security-Policy, a referrer policy, no caching, no MIME sniffing, no framing.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, HeaderValue, header};

/// The Content-Security-Policy of a page with no script, style, form or frame.
pub const STRICT_CSP: &str =
    "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Sets the page headers, replacing any value already set: `csp` as the
/// Content-Security-Policy (left out if it is not a valid header value),
/// `Referrer-Policy: referrer_policy`, `Cache-Control: no-store`,
/// `X-Content-Type-Options: nosniff` and `X-Frame-Options: DENY`.
pub fn harden_page(headers: &mut HeaderMap, csp: &str, referrer_policy: &'static str) {
    if let Ok(csp) = HeaderValue::from_str(csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    let fixed = [
        (header::REFERRER_POLICY, referrer_policy),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

/// Escape text for HTML element content and double-quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The Content-Security-Policy of a page with no script whose one inline `<style>` is
/// `style` (allowed by its SHA-256, so no `'unsafe-inline'`), and whose forms may post to
/// `form_action` (`'none'`, or `'self'` for a page with its own form; `None`: no
/// `form-action` directive, for a form whose answer redirects to another origin, which
/// browsers would otherwise refuse to follow).
pub fn style_csp(style: &str, form_action: Option<&str>) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, style.as_bytes());
    let hash = STANDARD.encode(digest.as_ref());
    let form_action = form_action
        .map(|f| format!(" form-action {f};"))
        .unwrap_or_default();
    format!(
        "default-src 'none'; base-uri 'none';{form_action} frame-ancestors 'none'; style-src 'sha256-{hash}'"
    )
}

/// A minimal page: `title` as its title and heading, then `body_html` (fixed HTML, never
/// anything from a request).
pub fn simple_page(title: &str, body_html: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title></head><body><h1>{title}</h1>{body_html}</body></html>"
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_page_header_is_set_and_replaces_an_earlier_value() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=60"),
        );
        harden_page(&mut headers, STRICT_CSP, "no-referrer");
        for (name, value) in [
            (header::CONTENT_SECURITY_POLICY, STRICT_CSP),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
        ] {
            assert_eq!(headers.get_all(&name).iter().count(), 1, "{name}");
            assert_eq!(headers[&name], value, "{name}");
        }
    }

    #[test]
    fn a_policy_that_is_no_header_value_is_left_out() {
        let mut headers = HeaderMap::new();
        harden_page(&mut headers, "default-src 'none'\n", "same-origin");
        assert!(headers.get(header::CONTENT_SECURITY_POLICY).is_none());
        assert_eq!(headers[header::REFERRER_POLICY], "same-origin");
    }

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x" onclick='y'>&"#),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;"
        );
    }

    #[test]
    fn the_style_hash_is_the_standard_base64_sha256() {
        // echo -n 'b{}' | openssl dgst -sha256 -binary | base64
        let csp = style_csp("b{}", Some("'self'"));
        assert!(csp.contains(" form-action 'self';"), "{csp}");
        assert!(!csp.contains("unsafe"));
        let hash = csp
            .rsplit("'sha256-")
            .next()
            .unwrap()
            .trim_end_matches('\'');
        assert_eq!(hash.len(), 44, "{hash}");
        assert!(hash.ends_with('='));
        assert!(!style_csp("x", None).contains("form-action"));
    }

    #[test]
    fn the_simple_page_shows_its_title_twice() {
        assert_eq!(
            simple_page("T", "<p>m</p>"),
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>T</title></head><body><h1>T</h1><p>m</p></body></html>"
        );
    }
}
