//! The authorization endpoint both development providers share: a page for a checked
//! authorization request whose form (the request's parameters and the browser-bound
//! token) names a user, and the post of that form, which issues a one-time code and sends
//! the browser back to the client. The providers differ only in the page's words.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use latchkey_core::clock::Clock;

use crate::html::{self, escape};
use crate::oauth::{
    AUTHORIZATION_PARAMETERS, AuthorizationRequest, Clients, CodeGrant, Codes, FormGuard,
    OAuthError, redeem_code, scope_list,
};
use crate::tokens::{Issued, TokenGrant, Tokens};
use crate::{DEMO_USERS, is_valid_user_name};

/// One provider's authorization endpoint.
#[derive(Debug)]
pub struct Authorizer {
    /// The provider's name on its pages.
    pub provider: &'static str,
    /// The `iss` of its redirects (RFC 9207).
    pub issuer: String,
    pub clients: Clients,
    pub codes: Codes,
    pub guard: FormGuard,
    /// Refuse requests without an S256 code challenge.
    pub require_pkce: bool,
    pub clock: Arc<dyn Clock>,
}

/// What a page for a checked request shows.
#[derive(Debug)]
pub struct FormPage {
    pub request: AuthorizationRequest,
    /// The client's display name, escaped.
    pub client: String,
}

impl Authorizer {
    /// `GET`: the page `body` renders for a checked request, with the form's hidden fields
    /// (`{hidden}`) and the user choice (`{users}`, its buttons labelled `verb as NAME`).
    pub fn page(
        &self,
        headers: &HeaderMap,
        params: &HashMap<String, String>,
        title: impl FnOnce(&FormPage) -> String,
        body: impl FnOnce(&FormPage, &str) -> String,
        verb: &str,
    ) -> Response {
        let request = match AuthorizationRequest::parse(params, &self.clients, self.require_pkce) {
            Ok(r) => r,
            Err(refusal) => return refusal.into_response(self.provider),
        };
        let (browser, set_cookie) = self.guard.browser(headers);
        let token = self.guard.field(&browser, params);
        let mut fields: Vec<(&str, &str)> = AUTHORIZATION_PARAMETERS
            .iter()
            .filter_map(|name| params.get(*name).map(|v| (*name, v.as_str())))
            .collect();
        fields.push(("form_token", &token));
        let client = self
            .clients
            .get(&request.client_id)
            .map_or(String::new(), |c| escape(&c.name));
        let page = FormPage { request, client };
        let buttons: String = DEMO_USERS
            .iter()
            .map(|u| {
                format!(r#"<button type="submit" name="user" value="{u}">{verb} as {u}</button>"#)
            })
            .collect();
        let users = format!(
            r#"{hidden}<p>{buttons}</p>
<p><label for="name">Another name</label><br><input type="text" id="name" name="user_name" autocomplete="username" maxlength="64" pattern="[A-Za-z0-9][A-Za-z0-9._-]*">
<button type="submit" name="user" value="">{verb}</button></p>"#,
            hidden = html::hidden_fields(fields),
        );
        let mut response = html::page(
            StatusCode::OK,
            self.provider,
            &title(&page),
            &body(&page, &users),
            true,
        );
        if let Some(cookie) = set_cookie {
            response.headers_mut().insert(header::SET_COOKIE, cookie);
        }
        response
    }

    /// `POST`: the form of a page this browser loaded for this request. `deny`: the user
    /// pressed Deny (the client gets `access_denied`); otherwise a code for the named user.
    pub fn decide(&self, headers: &HeaderMap, form: &HashMap<String, String>) -> Response {
        let request = match AuthorizationRequest::parse(form, &self.clients, self.require_pkce) {
            Ok(r) => r,
            Err(refusal) => return refusal.into_response(self.provider),
        };
        if !self.guard.check(headers, form) {
            return html::error_page(
                self.provider,
                "This form was not loaded by this browser for this request. Start again from the application.",
            );
        }
        if form.get("decision").map(String::as_str) == Some("deny") {
            return request.denied();
        }
        let user = match form.get("user").map(String::as_str) {
            Some("") | None => form.get("user_name").map(|s| s.trim()).unwrap_or(""),
            Some(u) => u,
        };
        if !is_valid_user_name(user) {
            return html::error_page(
                self.provider,
                "A name is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit. Go back and try again.",
            );
        }
        let now = self.clock.now_secs();
        let grant = CodeGrant {
            request,
            user: user.to_string(),
            expires_at: now + 60,
        };
        let Some(code) = self.codes.issue(grant.clone(), now) else {
            return OAuthError::server_error().into_response();
        };
        tracing::info!(
            provider = self.provider,
            user,
            client = %grant.request.client_id,
            scopes = ?grant.request.scopes,
            "development sign-in or consent"
        );
        grant.request.success(&code, &self.issuer)
    }
}

/// What a token request was granted: the grant the new tokens stand for and, for the code
/// grant, the authorization request's `nonce`.
#[derive(Debug)]
pub struct Granted {
    pub grant: TokenGrant,
    pub issued: Issued,
    pub nonce: Option<String>,
}

impl Authorizer {
    /// The token endpoint's grants for an authenticated client: `authorization_code` (the
    /// one-time code, its redirect URI and PKCE; `required_scope` must have been asked
    /// for) and `refresh_token` (rotating; `scope` may only narrow the grant).
    pub fn token(
        &self,
        tokens: &Tokens,
        headers: &HeaderMap,
        form: &HashMap<String, String>,
        required_scope: Option<&str>,
    ) -> Result<Granted, OAuthError> {
        let client = self.clients.authenticate(headers, form)?;
        let now = self.clock.now_secs();
        match form.get("grant_type").map(String::as_str) {
            Some("authorization_code") => {
                let code = redeem_code(&self.codes, client, form, now)?;
                let scopes = code.request.scopes;
                if required_scope.is_some_and(|r| !scopes.iter().any(|s| s == r)) {
                    return Err(OAuthError::invalid_grant(
                        "the request did not ask for the required scope",
                    ));
                }
                let (grant, issued) = tokens.issue(code.user, client.id.clone(), scopes, now)?;
                let nonce = code.request.nonce;
                Ok(Granted {
                    grant,
                    issued,
                    nonce,
                })
            }
            Some("refresh_token") => {
                let refresh = (form.get("refresh_token")).ok_or(OAuthError::invalid_request(
                    "the request has no refresh_token",
                ))?;
                let narrowed = form.get("scope").map(|s| scope_list(s));
                let (grant, issued) = tokens.refresh(refresh, &client.id, narrowed, now)?;
                Ok(Granted {
                    grant,
                    issued,
                    nonce: None,
                })
            }
            Some(_) => Err(OAuthError::unsupported_grant_type()),
            None => Err(OAuthError::invalid_request("the request has no grant_type")),
        }
    }
}
