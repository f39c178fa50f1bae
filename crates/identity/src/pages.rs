//! The few HTML pages the identity service shows a browser (during the OAuth redirects):
//! the one mapping of browser-step errors to pages.
//! Fixed text only: nothing from the request is reflected (the completion page shows a
//! one-time code Latchkey generated). Strict CSP, no caching, no
//! framing, no referrer (authorization URLs carry a `request_uri`).

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use latchkey_edge::pages::{STRICT_CSP, harden_page, simple_page};

use crate::services::sessions::BrowserError;

/// Headers every browser-facing answer carries.
pub(crate) fn harden(mut r: Response) -> Response {
    harden_page(r.headers_mut(), STRICT_CSP, "no-referrer");
    r
}

/// A page with a fixed title and message.
pub(crate) fn page(status: StatusCode, title: &'static str, message: &'static str) -> Response {
    let body = simple_page(title, &format!("<p>{message}</p>"));
    harden(
        (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response(),
    )
}

/// Latchkey's own page after a consent in a flow without a return URL: it shows the
/// one-time completion URN to the user who came back from the provider (the only person
/// who ever sees it), to hand to the application they started from. `code` is a URN
/// Latchkey generated (`urn:ietf:params:oauth:request_uri:` + base64url), never input; it
/// is checked again here so that nothing else can reach the HTML.
pub(crate) fn completion_code_page(code: &str) -> Response {
    let safe = code
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'-' | b'_' | b'.' | b'~'));
    if !safe {
        return page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Try again",
            "The service could not finish this step. Start again from the application.",
        );
    }
    let title = "Authorization received";
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body><h1>{title}</h1>\
         <p>To finish, give this one-time completion code to the application you started this authorization from, signed in as yourself:</p>\
         <p><code id=\"completion-code\">{code}</code></p>\
         <p>It works once, only for the user who started the authorization, and expires with it. \
         If you did not start this authorization yourself, close this tab and give the code to nobody: nothing has been granted yet.</p>\
         </body></html>"
    );
    harden(
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response(),
    )
}

/// A redirect (302) with the page headers.
pub(crate) fn redirect(to: &str) -> Response {
    harden(Redirect::to(to).into_response())
}

/// The page of each reason a browser step fails: the HTML mapping of the session
/// service's browser errors.
impl IntoResponse for BrowserError {
    fn into_response(self) -> Response {
        match self {
            Self::BadRequest => page(
                StatusCode::BAD_REQUEST,
                "Invalid request",
                "This sign-in link is not valid. Start again from the application.",
            ),
            Self::UnknownSession => page(
                StatusCode::NOT_FOUND,
                "Unknown sign-in",
                "This sign-in link is unknown or was already used. Start again from the application.",
            ),
            Self::Expired => page(
                StatusCode::GONE,
                "Sign-in expired",
                "This sign-in link has expired. Start again from the application.",
            ),
            Self::AlreadyUsed => page(
                StatusCode::CONFLICT,
                "Sign-in already used",
                "This sign-in link was already used. Start again from the application.",
            ),
            Self::Cancelled => page(
                StatusCode::GONE,
                "Link cancelled",
                "Another account opened this authorization link, so it was cancelled to protect you. Nothing was granted. Start again from the application.",
            ),
            Self::WrongProvider | Self::IssuerMismatch => page(
                StatusCode::BAD_REQUEST,
                "Sign-in refused",
                "The answer from the provider does not belong to this sign-in. Nothing was stored. Start again from the application.",
            ),
            Self::Unavailable => page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again",
                "The service is temporarily unavailable. Reload this page in a moment.",
            ),
        }
    }
}
