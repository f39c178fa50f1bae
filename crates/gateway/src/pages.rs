//! The gateway's own HTML pages: fixed text, nothing reflected from the request.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use latchkey_edge::pages::{STRICT_CSP, harden_page, simple_page};

/// Every page the gateway shows itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// 400: the login response names no pending login of this browser (unknown, used or
    /// expired `state`, or no login cookie).
    InvalidLogin,
    /// 401: the provider answered with an error (the user cancelled or was refused).
    LoginRefused,
    /// 403: the provider's ID token names the user with characters that could forge log
    /// lines or disguise a name (control characters, line separators).
    UnusableSubject,
    /// 502: the code exchange or the ID token failed.
    LoginFailed,
    /// 503: the provider cannot be reached.
    Unavailable,
    /// 200: `GET /oauth2/logout`, a button that signs out (a `POST`); nothing changes yet.
    LogoutConfirm,
    /// 403: a sign-out `POST` that did not come from the gateway's own origin.
    LogoutRefused,
}

/// The logout form: a `POST` to `crate::app::LOGOUT_PATH` (a macro, for `concat!`).
macro_rules! logout_form {
    () => {
        r#"<form method="post" action="/oauth2/logout"><button type="submit">Sign out</button></form>"#
    };
}

/// The hardening policy of every page. `form-action` is left out of the one page with a
/// form: the sign-out answer redirects to the provider's end-session endpoint, and
/// browsers hold the redirect of a form submission to `form-action` too.
const CSP_WITH_FORM: &str = "default-src 'none'; base-uri 'none'; frame-ancestors 'none'";

impl Page {
    /// Status, title, and the body's HTML after the title.
    fn parts(self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Self::InvalidLogin => (
                StatusCode::BAD_REQUEST,
                "Invalid sign-in response",
                "<p>This sign-in link is invalid, expired or was already used. Open the application again to sign in.</p>",
            ),
            Self::LoginRefused => (
                StatusCode::UNAUTHORIZED,
                "Sign-in cancelled",
                "<p>The identity provider did not sign you in. Open the application again to retry.</p>",
            ),
            Self::UnusableSubject => (
                StatusCode::FORBIDDEN,
                "Sign-in refused",
                "<p>The identity provider named your account with an identifier this gateway does not accept: it contains control characters or line separators. Ask your administrator to check the account at the identity provider.</p>",
            ),
            Self::LoginFailed => (
                StatusCode::BAD_GATEWAY,
                "Sign-in failed",
                "<p>The sign-in could not be completed. Open the application again to retry.</p>",
            ),
            Self::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Please try again",
                "<p>Sign-in is temporarily unavailable.</p>",
            ),
            Self::LogoutConfirm => (
                StatusCode::OK,
                "Sign out",
                concat!("<p>Sign out of this site?</p>", logout_form!()),
            ),
            Self::LogoutRefused => (
                StatusCode::FORBIDDEN,
                "Sign-out not confirmed",
                r#"<p>This sign-out request did not come from this site, so you are still signed in. To sign out, open <a href="/oauth2/logout">the sign-out page</a> and confirm there.</p>"#,
            ),
        }
    }
}

/// The page as a response, with hardening headers.
pub fn page(page: Page) -> Response {
    let (status, title, html) = page.parts();
    let body = simple_page(title, html);
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // A form's POST carries this page's origin in `Origin` (under the gateway's usual
    // `no-referrer`, browsers send `Origin: null`); nothing leaves the site.
    let (csp, referrer_policy) = if html.contains("<form") {
        (CSP_WITH_FORM, "same-origin")
    } else {
        (STRICT_CSP, "no-referrer")
    };
    harden_page(headers, csp, referrer_policy);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_logout_page_posts_to_the_logout_path_and_nothing_else_has_a_form() {
        let (status, _, html) = Page::LogoutConfirm.parts();
        assert_eq!(status, StatusCode::OK);
        assert!(html.contains(logout_form!()));
        assert!(logout_form!().contains(&format!("action=\"{}\"", crate::app::LOGOUT_PATH)));
        for other in [
            Page::InvalidLogin,
            Page::LoginRefused,
            Page::UnusableSubject,
            Page::LoginFailed,
            Page::Unavailable,
            Page::LogoutRefused,
        ] {
            assert!(!other.parts().2.contains("<form"), "{other:?}");
        }
    }
}
