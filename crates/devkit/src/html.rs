//! The development pages: every one says "development only", escapes all it shows, and
//! carries a strict Content-Security-Policy (the one inline style allowed by its hash; no
//! script at all), `no-store`, no referrer and no framing.

use std::fmt::Write as _;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use latchkey_edge::pages::style_csp;

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:34rem;margin:2rem auto;padding:0 1rem;line-height:1.5;color:#1b1b1b}\
.dev{background:#fff3cd;border:1px solid #e0b400;padding:.4rem .7rem;border-radius:.3rem;font-size:.9rem}\
h1{font-size:1.35rem}ul{padding-left:1.2rem}button{font-size:1rem;padding:.45rem .9rem;margin:.2rem .3rem .2rem 0;cursor:pointer}\
input[type=text]{font-size:1rem;padding:.4rem;width:12rem}.err{color:#a4161a}code{background:#f1f1f1;padding:0 .2rem}";

pub use latchkey_edge::pages::escape;

/// Hidden form fields, escaped.
pub fn hidden_fields<'a>(fields: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    for (name, value) in fields {
        let _ = write!(
            out,
            r#"<input type="hidden" name="{}" value="{}">"#,
            escape(name),
            escape(value)
        );
    }
    out
}

/// A page titled `title` around `body` (already HTML). `form_redirects`: the page's form
/// leads on to the application through redirects (login, consent), so the policy has no
/// `form-action`: browsers apply it to every redirect after the post, and the chain goes
/// through origins the page cannot know (the client's callback, then wherever it sends
/// the browser). Everything on these pages is escaped; there is no script.
pub fn page(
    status: StatusCode,
    provider: &str,
    title: &str,
    body: &str,
    form_redirects: bool,
) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>{title} · {provider}</title><style>{STYLE}</style></head><body>\
<p class=\"dev\" role=\"note\"><strong>Development only.</strong> {provider} is part of <code>latchkey dev</code>; never use it for real accounts.</p>\
<h1>{title}</h1>{body}</body></html>",
        title = escape(title),
        provider = escape(provider),
    );
    let csp = style_csp(STYLE, (!form_redirects).then_some("'none'"));
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if let Ok(csp) = HeaderValue::from_str(&csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    no_store(&mut response);
    response
}

/// The headers every response of the development providers carries.
pub fn no_store(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

/// An error page: the request cannot go back to the application (unknown client or return
/// address), so it stops here.
pub fn error_page(provider: &str, message: &str) -> Response {
    page(
        StatusCode::BAD_REQUEST,
        provider,
        "This request cannot be completed",
        &format!("<p class=\"err\">{}</p>", escape(message)),
        false,
    )
}
