//! The binding service's HTML pages. Fixed text only: nothing from the request, the
//! user's token or the identity service's answer is ever reflected. Every response (pages,
//! `/ping`, 404s) carries the same hardening headers, added by [`harden`].
//!
//! The pages' one inline `<style>` is allowed by its SHA-256 hash in the
//! Content-Security-Policy (computed once, at first use, from the same constant), so the
//! policy needs no `'unsafe-inline'`.

use std::sync::LazyLock;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use latchkey_edge::pages::{harden_page, style_csp};

/// The inline style of every page.
pub const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;line-height:1.5;color:#1b1b1b}h1{font-size:1.4rem}.ok{color:#146c2e}.err{color:#a4161a}";

/// `default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none';
/// style-src 'sha256-…'` with the hash of [`STYLE`].
pub static CSP: LazyLock<String> = LazyLock::new(|| style_csp(STYLE, Some("'none'")));

/// Add the hardening headers to any response that has not set its own (a page with a
/// Content-Security-Policy of its own, the connections page, hardened itself).
pub fn harden(mut response: Response) -> Response {
    if !response
        .headers()
        .contains_key(header::CONTENT_SECURITY_POLICY)
    {
        harden_page(response.headers_mut(), &CSP, "no-referrer");
    }
    response
}

/// Every page the service shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// 200: the consent is bound to the user.
    Success,
    /// 403: the signed-in user is not the user who started the authorization.
    WrongUser,
    /// 410: the authorization session expired.
    Expired,
    /// 410: another account opened the link, so the authorization was cancelled.
    Cancelled,
    /// 401: no (valid) signed-in user.
    NotSignedIn,
    /// 400: the link is malformed, already used or no longer valid.
    InvalidLink,
    /// 404: the identity service knows no session by this completion URN (unknown, purged,
    /// or not a completion URN at all, e.g. the polling `sessionUri`).
    UnknownLink,
    /// 502: the identity service refused this service's own credential.
    Misconfigured,
    /// 502: the identity service (or the key endpoint) failed or could not be reached.
    TryAgain,
    /// 404: not a path of this service.
    NotFound,
}

impl Page {
    pub fn status(self) -> StatusCode {
        match self {
            Self::Success => StatusCode::OK,
            Self::WrongUser => StatusCode::FORBIDDEN,
            Self::Expired | Self::Cancelled => StatusCode::GONE,
            Self::NotSignedIn => StatusCode::UNAUTHORIZED,
            Self::InvalidLink => StatusCode::BAD_REQUEST,
            Self::UnknownLink | Self::NotFound => StatusCode::NOT_FOUND,
            Self::Misconfigured | Self::TryAgain => StatusCode::BAD_GATEWAY,
        }
    }

    /// Title and message, fixed text.
    pub fn text(self) -> (&'static str, &'static str) {
        match self {
            Self::Success => (
                "Authorization complete",
                "Authorization complete \u{2014} you can close this tab and return to the agent.",
            ),
            Self::WrongUser => (
                "Wrong account",
                "You are signed in as a different user than the one who started this authorization. Nothing was granted. Sign in as the right user and start again from the agent.",
            ),
            Self::Expired => (
                "Authorization expired",
                "This authorization took too long and has expired. Nothing was granted. Start again from the agent.",
            ),
            Self::Cancelled => (
                "Link cancelled",
                "Another account opened this authorization link, so it was cancelled to protect you. Nothing was granted. Start again from the agent.",
            ),
            Self::NotSignedIn => (
                "Not signed in",
                "You are not signed in, or your sign-in could not be verified. Sign in to the application and open the link again.",
            ),
            Self::InvalidLink => (
                "Invalid link",
                "This link was already used or is not valid. Start again from the agent.",
            ),
            Self::UnknownLink => (
                "Unknown link",
                "This link does not complete any authorization. Only the link your browser is sent back with right after you approve access at the provider can complete it, once; a link copied from the agent or from someone else never does. Nothing was granted. Start again from the agent.",
            ),
            Self::Misconfigured => (
                "Service misconfigured",
                "The authorization could not be completed because this service is misconfigured. Please tell your administrator.",
            ),
            Self::TryAgain => (
                "Please try again",
                "The authorization service could not be reached. Please reload this page in a moment.",
            ),
            Self::NotFound => ("Not found", "There is nothing here."),
        }
    }

    /// The page's HTML.
    pub fn html(self) -> String {
        let (title, message) = self.text();
        let class = if self == Self::Success { "ok" } else { "err" };
        format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <meta name=\"referrer\" content=\"no-referrer\">\
             <title>{title}</title><style>{STYLE}</style></head>\
             <body><h1 class=\"{class}\">{title}</h1><p>{message}</p></body></html>\n"
        )
    }
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let mut response = (
            self.status(),
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            self.html(),
        )
            .into_response();
        if self == Self::NotSignedIn {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"latchkey-binding\""),
            );
        }
        harden(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;

    #[test]
    fn csp_hash_matches_the_inline_style() {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, STYLE.as_bytes());
        let expected = format!("'sha256-{}'", STANDARD.encode(digest.as_ref()));
        assert!(CSP.ends_with(&expected), "{}", *CSP);
        assert!(!CSP.contains("unsafe"));
        assert!(
            Page::Success
                .html()
                .contains(&format!("<style>{STYLE}</style>"))
        );
    }

    #[test]
    fn a_cancelled_link_says_so_plainly() {
        let page = Page::Cancelled;
        assert_eq!(page.status(), StatusCode::GONE);
        let html = page.html();
        assert!(
            html.contains("<h1 class=\"err\">Link cancelled</h1>"),
            "{html}"
        );
        assert!(html.contains("Another account opened this authorization link"));
        assert!(html.contains("Nothing was granted"));
        assert!(html.contains("Start again from the agent"));
    }
}
