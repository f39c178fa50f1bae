//! The gateway's own HTML pages: fixed text, nothing reflected from the request.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Every page the gateway shows itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// 400: the login response names no pending login (unknown, used or expired `state`).
    InvalidLogin,
    /// 401: the provider answered with an error (the user cancelled or was refused).
    LoginRefused,
    /// 502: the code exchange or the ID token failed.
    LoginFailed,
    /// 503: the provider cannot be reached, or too many logins are pending.
    Unavailable,
}

impl Page {
    fn parts(self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Self::InvalidLogin => (
                StatusCode::BAD_REQUEST,
                "Invalid sign-in response",
                "This sign-in link is invalid, expired or was already used. Open the application again to sign in.",
            ),
            Self::LoginRefused => (
                StatusCode::UNAUTHORIZED,
                "Sign-in cancelled",
                "The identity provider did not sign you in. Open the application again to retry.",
            ),
            Self::LoginFailed => (
                StatusCode::BAD_GATEWAY,
                "Sign-in failed",
                "The sign-in could not be completed. Open the application again to retry.",
            ),
            Self::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Please try again",
                "Sign-in is temporarily unavailable.",
            ),
        }
    }
}

/// The page as a response, with hardening headers.
pub fn page(page: Page) -> Response {
    let (status, title, text) = page.parts();
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title></head><body><h1>{title}</h1><p>{text}</p></body></html>"
    );
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}
