//! The connections page: every grant the signed-in user holds (agent, provider, scopes,
//! granted, last used, last refreshed), each with a **Revoke** button.
//!
//! `GET /connections` lists; `POST /connections` (the page's own form) revokes one grant:
//! RFC 7009 at the provider when it offers it, then removal from the vault, audited by
//! the identity service. The user is resolved exactly as the binding page resolves them,
//! and the identity service lists and revokes only that user's grants, so nobody else's
//! grant is ever shown or reachable from here.
//!
//! A revocation is a state-changing request a browser sends with its cookies, so it must
//! prove it comes from this page (CSRF): a form token, an HMAC of the user and the time
//! under a key derived from this service's credential (replicas sharing the credential
//! accept each other's forms), valid for [`FORM_TOKEN_LIFETIME_SECS`]. A request a browser
//! labels cross-site (`Sec-Fetch-Site`) is refused before anything else.

use std::sync::LazyLock;

use aws_lc_rs::hmac;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latchkey_authn::SignedInUser;
use latchkey_client::{ExposeSecret as _, ProviderRevocation, SecretString, UserGrant};
use latchkey_core::clock::Clock;
use latchkey_edge::pages::{escape, harden_page, style_csp};

use crate::app::{BindingState, credential_refused};
use crate::pages::Page;
use crate::upstream::GrantsFailure;

/// How long a rendered page's Revoke buttons work.
pub const FORM_TOKEN_LIFETIME_SECS: i64 = 3600;
/// The largest form accepted.
const MAX_FORM_BYTES: usize = 4096;

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:56rem;margin:2rem auto;padding:0 1rem;line-height:1.5;color:#1b1b1b}\
h1{font-size:1.4rem}table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.45rem .5rem;border-bottom:1px solid #ddd;vertical-align:top}\
code{background:#f1f1f1;padding:0 .2rem}button{font-size:1rem;padding:.35rem .8rem;cursor:pointer}.ok{color:#146c2e}.err{color:#a4161a}\
@media (max-width:40rem){thead{display:none}tr{display:block;border-bottom:1px solid #ddd;padding:.4rem 0}td{display:block;border:0;padding:.15rem .3rem}td[data-label]::before{content:attr(data-label) \": \";font-weight:600}}";

static CSP: LazyLock<String> = LazyLock::new(|| style_csp(STYLE, Some("'self'")));

/// The key of the page's form tokens (CSRF), derived from the service's credential.
#[derive(Debug)]
pub(crate) struct FormKey(hmac::Key);

impl FormKey {
    pub(crate) fn derive(credential: &SecretString) -> Self {
        let root = hmac::Key::new(hmac::HMAC_SHA256, credential.expose_secret().as_bytes());
        let derived = hmac::sign(&root, b"latchkey binding: connections form token v1");
        Self(hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()))
    }

    fn mac(&self, user: &SignedInUser, issued: i64) -> String {
        let (kind, subject) = match user {
            SignedInUser::UserId(id) => ("user-id", id.as_str()),
            SignedInUser::IdToken { subject, .. } => ("id-token", subject.as_str()),
        };
        let message = format!("{kind}\n{subject}\n{issued}");
        URL_SAFE_NO_PAD.encode(hmac::sign(&self.0, message.as_bytes()).as_ref())
    }

    /// A token for `user`'s forms, issued at `now` (seconds).
    pub(crate) fn issue(&self, user: &SignedInUser, now: i64) -> String {
        format!("{now}.{}", self.mac(user, now))
    }

    /// Whether `token` was issued by this key for `user` within the lifetime.
    pub(crate) fn verify(&self, token: &str, user: &SignedInUser, now: i64) -> bool {
        let Some((issued, mac)) = token.split_once('.') else {
            return false;
        };
        let Ok(issued) = issued.parse::<i64>() else {
            return false;
        };
        if issued > now + 60 || now - issued > FORM_TOKEN_LIFETIME_SECS {
            return false;
        }
        let expected = self.mac(user, issued);
        aws_lc_rs::constant_time::verify_slices_are_equal(expected.as_bytes(), mac.as_bytes())
            .is_ok()
    }
}

/// The outcome a revocation redirects to (a fixed word in the query: nothing of the
/// request is ever reflected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Notice {
    Revoked,
    RevokedHereOnly,
    RevokedNoEndpoint,
    AlreadyGone,
}

impl Notice {
    const ALL: [Self; 4] = [
        Self::Revoked,
        Self::RevokedHereOnly,
        Self::RevokedNoEndpoint,
        Self::AlreadyGone,
    ];

    fn word(self) -> &'static str {
        match self {
            Self::Revoked => "revoked",
            Self::RevokedHereOnly => "revoked-here-only",
            Self::RevokedNoEndpoint => "revoked-no-endpoint",
            Self::AlreadyGone => "already-gone",
        }
    }

    fn html(self) -> &'static str {
        match self {
            Self::Revoked => {
                "<p class=\"ok\" role=\"status\">Revoked. The provider confirmed it, and Latchkey deleted the token. The agent will ask for your consent again next time.</p>"
            }
            Self::RevokedHereOnly => {
                "<p class=\"err\" role=\"status\">Deleted from Latchkey, but the provider did not confirm the revocation. To be sure, also remove the app in your account settings at the provider.</p>"
            }
            Self::RevokedNoEndpoint => {
                "<p class=\"ok\" role=\"status\">Deleted from Latchkey. This provider offers no way to revoke a token remotely: to end the access at the provider too, remove the app in your account settings there.</p>"
            }
            Self::AlreadyGone => {
                "<p class=\"ok\" role=\"status\">That connection was already gone. Nothing else changed.</p>"
            }
        }
    }

    fn from_query(query: Option<&str>) -> Option<Self> {
        let query = query?;
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "done")
            .and_then(|(_, v)| Self::ALL.into_iter().find(|n| n.word() == v))
    }
}

fn now_secs(clock: &dyn Clock) -> i64 {
    clock.now_ms() / 1000
}

fn when(seconds: Option<f64>) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    seconds
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s as i64).ok())
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "never".into())
}

fn html_page(status: StatusCode, body: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Your connections</title><style>{STYLE}</style></head><body>{body}</body></html>\n"
    );
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response();
    // `same-origin`: the form's POST carries `Origin`; nothing leaves the site.
    harden_page(response.headers_mut(), &CSP, "same-origin");
    response
}

fn render(
    user: &SignedInUser,
    grants: &[UserGrant],
    token: &str,
    notice: Option<Notice>,
) -> Response {
    html_page(StatusCode::OK, &render_body(user, grants, token, notice))
}

/// The page's body: every value shown is escaped.
fn render_body(
    user: &SignedInUser,
    grants: &[UserGrant],
    token: &str,
    notice: Option<Notice>,
) -> String {
    let mut body = format!(
        "<h1>Your connections</h1><p>Signed in as <b>{}</b>. These are the accounts you allowed agents to use on your behalf. <b>Revoke</b> takes the access back: the provider is asked to revoke the token, and Latchkey deletes it.</p>",
        escape(user.subject())
    );
    if let Some(notice) = notice {
        body.push_str(notice.html());
    }
    if grants.is_empty() {
        body.push_str("<p>You have no connections.</p>");
        return body;
    }
    body.push_str("<table><thead><tr><th scope=\"col\">Agent (workload)</th><th scope=\"col\">Provider</th><th scope=\"col\">Scopes</th><th scope=\"col\">Granted</th><th scope=\"col\">Last used</th><th scope=\"col\">Last refreshed</th><th scope=\"col\"><span hidden>Action</span></th></tr></thead><tbody>");
    for g in grants {
        let scopes = if g.scopes.is_empty() {
            "(none)".to_string()
        } else {
            g.scopes
                .iter()
                .map(|s| format!("<code>{}</code>", escape(s)))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let state = if g.needs_consent {
            " <span class=\"err\">(needs your consent again)</span>"
        } else {
            ""
        };
        let (workload, provider) = (
            escape(&g.workload_identity_name),
            escape(&g.credential_provider_name),
        );
        body.push_str(&format!(
            "<tr><td data-label=\"Agent\">{workload}</td><td data-label=\"Provider\">{provider}{state}</td><td data-label=\"Scopes\">{scopes}</td>\
             <td data-label=\"Granted\">{}</td><td data-label=\"Last used\">{}</td><td data-label=\"Last refreshed\">{}</td>\
             <td><form method=\"post\" action=\"connections\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{token}\">\
             <input type=\"hidden\" name=\"workload\" value=\"{workload}\">\
             <input type=\"hidden\" name=\"provider\" value=\"{provider}\">\
             <button type=\"submit\" aria-label=\"Revoke {provider} for {workload}\">Revoke</button></form></td></tr>",
            when(Some(g.granted_time)),
            when(g.last_used_time),
            when(g.last_refreshed_time),
        ));
    }
    body.push_str("</tbody></table>");
    body
}

/// A failed grants call as the page the user sees (logged here).
fn failure_page(state: &BindingState, failure: GrantsFailure, what: &'static str) -> Response {
    match failure {
        GrantsFailure::NotSignedIn => {
            tracing::info!(outcome = "not-signed-in", what, "connections refused");
            Page::NotSignedIn.into_response()
        }
        GrantsFailure::CredentialRefused => credential_refused(state).into_response(),
        GrantsFailure::NotFound | GrantsFailure::Unavailable(_) => {
            tracing::error!(outcome = "unavailable", what, error = ?failure, "connections failed");
            Page::TryAgain.into_response()
        }
    }
}

/// `GET /connections`.
pub(crate) async fn list(
    State(state): State<BindingState>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let user = match state.signed_in(&headers).await {
        Ok(user) => user,
        Err(page) => return page.into_response(),
    };
    match state.identity().grants(&user).await {
        Ok(grants) => {
            let token = state.form_key().issue(&user, now_secs(state.clock()));
            render(&user, &grants, &token, Notice::from_query(uri.query()))
        }
        Err(failure) => failure_page(&state, failure, "list"),
    }
}

/// The revocation form's fields, each exactly once.
struct RevokeForm {
    csrf: String,
    workload: String,
    provider: String,
}

fn parse_form(body: &[u8]) -> Option<RevokeForm> {
    let (mut csrf, mut workload, mut provider) = (None, None, None);
    for (name, value) in url::form_urlencoded::parse(body) {
        let slot = match name.as_ref() {
            "csrf" => &mut csrf,
            "workload" => &mut workload,
            "provider" => &mut provider,
            _ => continue,
        };
        if slot.replace(value.into_owned()).is_some() {
            return None;
        }
    }
    Some(RevokeForm {
        csrf: csrf?,
        workload: workload?,
        provider: provider?,
    })
}

/// A refused form: 403 with a fixed explanation; nothing was changed.
fn forbidden() -> Response {
    html_page(
        StatusCode::FORBIDDEN,
        "<h1 class=\"err\">Request refused</h1><p>This request did not come from your connections page, or the page was open too long. Nothing was changed. <a href=\"connections\">Open your connections</a> and try again.</p>",
    )
}

/// `POST /connections`: revoke one of the signed-in user's grants.
pub(crate) async fn revoke(
    State(state): State<BindingState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // A browser says where a request comes from; another site's form never revokes.
    if let Some(site) = headers.get("sec-fetch-site")
        && site != HeaderValue::from_static("same-origin")
    {
        tracing::warn!(outcome = "cross-site", "connections revoke refused");
        return forbidden();
    }
    if body.len() > MAX_FORM_BYTES {
        return forbidden();
    }
    let user = match state.signed_in(&headers).await {
        Ok(user) => user,
        Err(page) => return page.into_response(),
    };
    let Some(form) = parse_form(&body) else {
        tracing::info!(outcome = "malformed-form", "connections revoke refused");
        return forbidden();
    };
    if !state
        .form_key()
        .verify(&form.csrf, &user, now_secs(state.clock()))
    {
        tracing::warn!(outcome = "bad-form-token", "connections revoke refused");
        return forbidden();
    }
    let notice = match state
        .identity()
        .revoke(&user, &form.workload, &form.provider)
        .await
    {
        Ok(ProviderRevocation::Revoked) => Notice::Revoked,
        Ok(ProviderRevocation::Failed) => Notice::RevokedHereOnly,
        Ok(ProviderRevocation::NotOffered) => Notice::RevokedNoEndpoint,
        Err(GrantsFailure::NotFound) => Notice::AlreadyGone,
        Err(failure) => return failure_page(&state, failure, "revoke"),
    };
    tracing::info!(outcome = notice.word(), "connection revoked");
    // Post/redirect/get: a reload does not post again.
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("connections?done={}", notice.word())) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    harden_page(response.headers_mut(), &CSP, "same-origin");
    response
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn key() -> FormKey {
        FormKey::derive(&SecretString::from("AKID:secret"))
    }

    #[test]
    fn a_form_token_is_bound_to_its_user_key_and_time() {
        let alice = SignedInUser::UserId("alice".into());
        let bob = SignedInUser::UserId("bob".into());
        let token = key().issue(&alice, 1_000_000);
        assert!(key().verify(&token, &alice, 1_000_000));
        assert!(key().verify(&token, &alice, 1_000_000 + FORM_TOKEN_LIFETIME_SECS));
        assert!(!key().verify(&token, &alice, 1_000_001 + FORM_TOKEN_LIFETIME_SECS));
        assert!(!key().verify(&token, &bob, 1_000_000), "another user");
        let other = FormKey::derive(&SecretString::from("AKID:other"));
        assert!(!other.verify(&token, &alice, 1_000_000), "another key");
        // The same subject through an ID token is another user.
        let token_user = SignedInUser::IdToken {
            subject: "alice".into(),
            token: SecretString::from("h.p.s"),
        };
        assert!(!key().verify(&token, &token_user, 1_000_000));
        let (issued, mac) = token.split_once('.').unwrap();
        assert!(!key().verify(
            &format!("{}.{mac}", issued.parse::<i64>().unwrap() + 1),
            &alice,
            1_000_000
        ));
        assert!(!key().verify("", &alice, 1_000_000));
        assert!(!key().verify("x.y", &alice, 1_000_000));
    }

    #[test]
    fn forms_need_each_field_once() {
        assert!(parse_form(b"csrf=a&workload=w&provider=p").is_some());
        assert!(parse_form(b"csrf=a&workload=w").is_none());
        assert!(parse_form(b"csrf=a&workload=w&provider=p&provider=q").is_none());
    }

    #[test]
    fn notices_come_only_from_their_fixed_words() {
        assert_eq!(
            Notice::from_query(Some("done=revoked")),
            Some(Notice::Revoked)
        );
        assert_eq!(Notice::from_query(Some("done=<script>")), None);
        assert_eq!(Notice::from_query(None), None);
    }

    #[test]
    fn the_page_escapes_what_it_shows() {
        let user = SignedInUser::UserId("<b>alice</b>".into());
        let grants = vec![UserGrant {
            credential_provider_name: "github".into(),
            granted_time: 1_700_000_000.0,
            last_refreshed_time: None,
            last_used_time: Some(1_700_000_060.0),
            needs_consent: false,
            scopes: vec!["<img src=x>".into()],
            workload_identity_name: "agent".into(),
        }];
        let body = render_body(&user, &grants, "t", None);
        assert!(
            body.contains("&lt;b&gt;alice&lt;/b&gt;") && !body.contains("<b>alice"),
            "{body}"
        );
        assert!(
            body.contains("<code>&lt;img src=x&gt;</code>") && !body.contains("<img"),
            "{body}"
        );
        let response = render(&user, &grants, "t", None);
        let csp = response.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(
            csp.contains("form-action 'self'") && !csp.contains("unsafe"),
            "{csp}"
        );
        assert_eq!(when(Some(1_700_000_060.0)), "2023-11-14 22:14 UTC");
        assert_eq!(when(None), "never");
    }
}
