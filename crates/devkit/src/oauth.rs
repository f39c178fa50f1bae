//! What both development providers do the same way as authorization servers: registered
//! clients and their authentication (RFC 6749 §2.3.1, `client_secret_basic` or
//! `client_secret_post`), the authorization request (§4.1.1, with PKCE S256, RFC 7636),
//! a browser-bound form token for the login and consent forms, one-time authorization codes,
//! and RFC 6749 error answers.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::json;
use subtle::ConstantTimeEq as _;
use url::Url;

use crate::html;

/// A registered OAuth client. `Debug` never shows the secret.
#[derive(Clone)]
pub struct Client {
    /// `client_id`.
    pub id: String,
    /// `client_secret`.
    pub secret: String,
    /// The name the consent page shows for the application asking.
    pub name: String,
    /// The exact redirect URIs the client may use.
    pub redirect_uris: Vec<String>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("redirect_uris", &self.redirect_uris)
            .finish_non_exhaustive()
    }
}

/// A random token: `prefix` and 32 random bytes, base64url.
pub fn random_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    // The system generator does not fail on the platforms Latchkey runs on; should it, the
    // token is refused downstream as too short rather than issued predictable.
    if SystemRandom::new().fill(&mut bytes).is_err() {
        return String::new();
    }
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// How a token or code is kept: its SHA-256, hex.
pub fn token_hash(token: &str) -> String {
    hex::encode(digest(&SHA256, token.as_bytes()))
}

/// An RFC 6749 §5.2 error answer (JSON, `no-store`).
#[derive(Debug)]
pub struct OAuthError {
    pub status: StatusCode,
    pub code: &'static str,
    pub description: &'static str,
}

impl OAuthError {
    pub fn invalid_request(description: &'static str) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            description,
        }
    }
    pub fn invalid_grant(description: &'static str) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_grant",
            description,
        }
    }
    pub fn invalid_client() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            code: "invalid_client",
            description: "client authentication failed",
        }
    }
    pub fn unsupported_grant_type() -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "unsupported_grant_type",
            description: "the grant type is not supported",
        }
    }
    pub fn server_error() -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "server_error",
            description: "the provider could not complete the request",
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(json!({"error": self.code, "error_description": self.description})),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"latchkey-dev\""),
            );
        }
        html::no_store(&mut response);
        response
    }
}

/// The registered clients of one provider.
#[derive(Debug, Default)]
pub struct Clients(HashMap<String, Client>);

impl Clients {
    pub fn new(clients: impl IntoIterator<Item = Client>) -> Self {
        Self(clients.into_iter().map(|c| (c.id.clone(), c)).collect())
    }

    pub fn get(&self, id: &str) -> Option<&Client> {
        self.0.get(id)
    }

    /// The client a token, revocation or introspection request authenticates as: HTTP Basic
    /// (form-encoded id and secret) or `client_id`/`client_secret` in the body, not both.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        form: &HashMap<String, String>,
    ) -> Result<&Client, OAuthError> {
        let basic = headers
            .get(header::AUTHORIZATION)
            .map(|v| parse_basic(v).ok_or_else(OAuthError::invalid_client))
            .transpose()?;
        let (id, secret) = match (basic, form.get("client_secret")) {
            (Some(_), Some(_)) => {
                return Err(OAuthError::invalid_request(
                    "use one client authentication method",
                ));
            }
            (Some(pair), None) => pair,
            (None, Some(secret)) => (
                form.get("client_id")
                    .cloned()
                    .ok_or_else(OAuthError::invalid_client)?,
                secret.clone(),
            ),
            (None, None) => return Err(OAuthError::invalid_client()),
        };
        if let Some(body_id) = form.get("client_id")
            && *body_id != id
        {
            return Err(OAuthError::invalid_client());
        }
        let client = self.get(&id).ok_or_else(OAuthError::invalid_client)?;
        if bool::from(client.secret.as_bytes().ct_eq(secret.as_bytes())) {
            Ok(client)
        } else {
            Err(OAuthError::invalid_client())
        }
    }
}

fn parse_basic(value: &HeaderValue) -> Option<(String, String)> {
    let encoded = value.to_str().ok()?.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let decode = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
    };
    Some((decode(id)?, decode(secret)?))
}

/// A checked authorization request (RFC 6749 §4.1.1 with PKCE S256).
#[derive(Debug, Clone)]
pub struct AuthorizationRequest {
    pub client_id: String,
    pub redirect_uri: String,
    pub scopes: Vec<String>,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
}

/// Why an authorization request was refused.
#[derive(Debug)]
pub enum AuthorizationRefusal {
    /// The client or its redirect URI is unknown: show a page, never redirect (§4.1.2.1).
    Page(&'static str),
    /// Everything else goes back to the client as `error` on its redirect URI.
    Redirect(Url),
}

impl AuthorizationRefusal {
    pub fn into_response(self, provider: &str) -> Response {
        match self {
            Self::Page(message) => html::error_page(provider, message),
            Self::Redirect(url) => redirect(&url),
        }
    }
}

/// A 303 to `url` with the development headers.
pub fn redirect(url: &Url) -> Response {
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, url.as_str())]).into_response();
    html::no_store(&mut response);
    response
}

/// The parameters of a request that are also sent back in the login/consent form.
pub const AUTHORIZATION_PARAMETERS: [&str; 8] = [
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
];

impl AuthorizationRequest {
    /// Check the request. `require_pkce`: a request without an S256 challenge is refused.
    pub fn parse(
        params: &HashMap<String, String>,
        clients: &Clients,
        require_pkce: bool,
    ) -> Result<Self, AuthorizationRefusal> {
        let client_id = params
            .get("client_id")
            .ok_or(AuthorizationRefusal::Page("the request names no client_id"))?;
        let client = clients.get(client_id).ok_or(AuthorizationRefusal::Page(
            "the client_id is not registered here",
        ))?;
        let redirect_uri = match params.get("redirect_uri") {
            Some(uri) if client.redirect_uris.iter().any(|r| r == uri) => uri.clone(),
            Some(_) => {
                return Err(AuthorizationRefusal::Page(
                    "the redirect_uri is not registered for this client",
                ));
            }
            None if client.redirect_uris.len() == 1 => client.redirect_uris[0].clone(),
            None => {
                return Err(AuthorizationRefusal::Page(
                    "the request names no redirect_uri",
                ));
            }
        };
        let state = params.get("state").cloned();
        let back = |error: &str, description: &str| {
            let mut url = Url::parse(&redirect_uri).ok();
            if let Some(url) = url.as_mut() {
                let mut q = url.query_pairs_mut();
                q.append_pair("error", error)
                    .append_pair("error_description", description);
                if let Some(state) = &state {
                    q.append_pair("state", state);
                }
            }
            url.map_or(
                AuthorizationRefusal::Page("the redirect_uri is not a URL"),
                AuthorizationRefusal::Redirect,
            )
        };
        if params.get("response_type").map(String::as_str) != Some("code") {
            return Err(back("unsupported_response_type", "only response_type=code"));
        }
        let code_challenge = match (
            params.get("code_challenge"),
            params.get("code_challenge_method").map(String::as_str),
        ) {
            (Some(c), Some("S256")) if is_challenge(c) => Some(c.clone()),
            (Some(_), _) => {
                return Err(back(
                    "invalid_request",
                    "PKCE: an S256 code_challenge of 43 characters",
                ));
            }
            (None, _) if require_pkce => {
                return Err(back("invalid_request", "PKCE (S256) is required"));
            }
            (None, _) => None,
        };
        let scopes = params
            .get("scope")
            .map(|s| scope_list(s))
            .unwrap_or_default();
        Ok(Self {
            client_id: client.id.clone(),
            redirect_uri,
            scopes,
            state,
            nonce: params.get("nonce").cloned(),
            code_challenge,
        })
    }

    /// The client's redirect URI with `code`, `state` and `iss` (RFC 9207).
    pub fn success(&self, code: &str, issuer: &str) -> Response {
        let mut url = match Url::parse(&self.redirect_uri) {
            Ok(url) => url,
            Err(_) => return html::error_page("", "the redirect_uri is not a URL"),
        };
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("code", code);
            if let Some(state) = &self.state {
                q.append_pair("state", state);
            }
            q.append_pair("iss", issuer);
        }
        redirect(&url)
    }

    /// The client's redirect URI with `error=access_denied`.
    pub fn denied(&self) -> Response {
        match Url::parse(&self.redirect_uri) {
            Ok(mut url) => {
                {
                    let mut q = url.query_pairs_mut();
                    q.append_pair("error", "access_denied")
                        .append_pair("error_description", "the user denied the request");
                    if let Some(state) = &self.state {
                        q.append_pair("state", state);
                    }
                }
                redirect(&url)
            }
            Err(_) => html::error_page("", "the redirect_uri is not a URL"),
        }
    }
}

/// A `scope` parameter: space-separated (RFC 6749), or comma-separated as GitHub writes it.
pub fn scope_list(text: &str) -> Vec<String> {
    (text.split([' ', ',']).filter(|s| !s.is_empty()))
        .map(str::to_string)
        .collect()
}

fn is_challenge(c: &str) -> bool {
    c.len() == 43
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Check a PKCE verifier against the stored S256 challenge.
pub fn pkce_matches(challenge: &str, verifier: Option<&String>) -> bool {
    let Some(verifier) = verifier else {
        return false;
    };
    (43..=128).contains(&verifier.len())
        && bool::from(
            latchkey_authn::pkce::code_challenge(verifier)
                .as_bytes()
                .ct_eq(challenge.as_bytes()),
        )
}

/// Binds the login and consent forms to the browser that loaded them: a random cookie
/// value, and a form field that is the HMAC of that value and the authorization request.
/// A page of another site cannot read the cookie, so it cannot post a valid form.
#[derive(Debug)]
pub struct FormGuard {
    key: hmac::Key,
    cookie: &'static str,
}

impl FormGuard {
    pub fn new(cookie: &'static str) -> Self {
        let mut secret = [0u8; 32];
        let _ = SystemRandom::new().fill(&mut secret);
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
            cookie,
        }
    }

    fn tag(&self, browser: &str, params: &HashMap<String, String>) -> String {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(browser.as_bytes());
        for name in AUTHORIZATION_PARAMETERS {
            ctx.update(b"\0");
            ctx.update(name.as_bytes());
            ctx.update(b"=");
            ctx.update(params.get(name).map_or("", String::as_str).as_bytes());
        }
        URL_SAFE_NO_PAD.encode(ctx.sign().as_ref())
    }

    /// The browser's value (from its cookie, or a new one with the `Set-Cookie` to send).
    pub fn browser(&self, headers: &HeaderMap) -> (String, Option<HeaderValue>) {
        if let Some(value) = self.read(headers) {
            return (value, None);
        }
        let value = random_token("");
        let cookie = format!(
            "{}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age=3600",
            self.cookie
        );
        (value, HeaderValue::from_str(&cookie).ok())
    }

    fn read(&self, headers: &HeaderMap) -> Option<String> {
        let mut found = None;
        for (name, value) in latchkey_authn::user::cookie_pairs(headers) {
            if name == self.cookie {
                if found.is_some() {
                    return None;
                }
                found = Some(value.to_string());
            }
        }
        found.filter(|v| v.len() == 43)
    }

    /// The form field for this browser and request.
    pub fn field(&self, browser: &str, params: &HashMap<String, String>) -> String {
        self.tag(browser, params)
    }

    /// Whether a posted form came from a page this browser loaded for the same request.
    pub fn check(&self, headers: &HeaderMap, form: &HashMap<String, String>) -> bool {
        let (Some(browser), Some(posted)) = (self.read(headers), form.get("form_token")) else {
            return false;
        };
        bool::from(self.tag(&browser, form).as_bytes().ct_eq(posted.as_bytes()))
    }
}

/// What an authorization code stands for until it is redeemed (once, within a minute).
#[derive(Debug, Clone)]
pub struct CodeGrant {
    pub request: AuthorizationRequest,
    pub user: String,
    pub expires_at: i64,
}

/// One-time authorization codes, kept by hash, bounded.
#[derive(Debug, Default)]
pub struct Codes(Mutex<HashMap<String, CodeGrant>>);

const MAX_CODES: usize = 10_000;

impl Codes {
    /// A new code for `grant`, or `None` when too many codes are outstanding.
    pub fn issue(&self, grant: CodeGrant, now: i64) -> Option<String> {
        let mut codes = self.0.lock().unwrap_or_else(|e| e.into_inner());
        codes.retain(|_, g| g.expires_at > now);
        if codes.len() >= MAX_CODES {
            return None;
        }
        let code = random_token("");
        codes.insert(token_hash(&code), grant);
        Some(code)
    }

    /// Redeem `code` for `client_id`: the grant, once. A code presented by another client
    /// is spent too (RFC 6749 §10.5: a stolen code is worth nothing to anyone after).
    pub fn redeem(&self, code: &str, client_id: &str, now: i64) -> Result<CodeGrant, OAuthError> {
        let grant = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&token_hash(code))
            .ok_or_else(|| OAuthError::invalid_grant("the code is unknown, used or expired"))?;
        if grant.expires_at <= now {
            return Err(OAuthError::invalid_grant(
                "the code is unknown, used or expired",
            ));
        }
        if grant.request.client_id != client_id {
            return Err(OAuthError::invalid_grant(
                "the code was issued to another client",
            ));
        }
        Ok(grant)
    }
}

/// The token request checks common to both providers for `grant_type=authorization_code`:
/// the code, the redirect URI it was issued for, and the PKCE verifier.
pub fn redeem_code(
    codes: &Codes,
    client: &Client,
    form: &HashMap<String, String>,
    now: i64,
) -> Result<CodeGrant, OAuthError> {
    let code = form
        .get("code")
        .ok_or(OAuthError::invalid_request("the request has no code"))?;
    let grant = codes.redeem(code, &client.id, now)?;
    if form.get("redirect_uri") != Some(&grant.request.redirect_uri) {
        return Err(OAuthError::invalid_grant(
            "the redirect_uri differs from the authorization request's",
        ));
    }
    match &grant.request.code_challenge {
        Some(challenge) if !pkce_matches(challenge, form.get("code_verifier")) => Err(
            OAuthError::invalid_grant("the code_verifier does not match the code_challenge"),
        ),
        None if form.contains_key("code_verifier") => Err(OAuthError::invalid_grant(
            "a code_verifier for a request without a code_challenge",
        )),
        _ => Ok(grant),
    }
}

/// A successful token answer: JSON, `no-store`.
pub fn token_response(body: serde_json::Value) -> Response {
    let mut response = Json(body).into_response();
    html::no_store(&mut response);
    response
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn clients() -> Clients {
        Clients::new([Client {
            id: "app".into(),
            secret: "s3cret:/&".into(),
            name: "App".into(),
            redirect_uris: vec!["http://127.0.0.1:9/cb".into()],
        }])
    }

    #[test]
    fn basic_authentication_is_form_decoded_and_constant() {
        let c = clients();
        let mut headers = HeaderMap::new();
        let pair = format!("app:{}", "s3cret%3A%2F%26");
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {}", STANDARD.encode(pair))).unwrap(),
        );
        assert_eq!(c.authenticate(&headers, &HashMap::new()).unwrap().id, "app");
        let wrong = HashMap::from([("client_id".to_string(), "other".to_string())]);
        assert!(c.authenticate(&headers, &wrong).is_err());
        let both = HashMap::from([("client_secret".to_string(), "s3cret:/&".to_string())]);
        assert!(c.authenticate(&headers, &both).is_err());
        let post = HashMap::from([
            ("client_id".to_string(), "app".to_string()),
            ("client_secret".to_string(), "s3cret:/&".to_string()),
        ]);
        assert!(c.authenticate(&HeaderMap::new(), &post).is_ok());
        let bad = HashMap::from([
            ("client_id".to_string(), "app".to_string()),
            ("client_secret".to_string(), "s3cret".to_string()),
        ]);
        assert_eq!(
            c.authenticate(&HeaderMap::new(), &bad).unwrap_err().code,
            "invalid_client"
        );
    }

    #[test]
    fn unknown_client_or_redirect_is_a_page_never_a_redirect() {
        let c = clients();
        let p = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>()
        };
        assert!(matches!(
            AuthorizationRequest::parse(&p(&[("client_id", "nope")]), &c, true),
            Err(AuthorizationRefusal::Page(_))
        ));
        assert!(matches!(
            AuthorizationRequest::parse(
                &p(&[
                    ("client_id", "app"),
                    ("redirect_uri", "http://evil.example/cb")
                ]),
                &c,
                true
            ),
            Err(AuthorizationRefusal::Page(_))
        ));
        match AuthorizationRequest::parse(
            &p(&[
                ("client_id", "app"),
                ("response_type", "code"),
                ("state", "s1"),
            ]),
            &c,
            true,
        ) {
            Err(AuthorizationRefusal::Redirect(url)) => {
                assert!(
                    url.as_str()
                        .starts_with("http://127.0.0.1:9/cb?error=invalid_request")
                );
                assert!(url.as_str().ends_with("&state=s1"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn codes_are_one_time_and_bound_to_their_client() {
        let codes = Codes::default();
        let request = AuthorizationRequest {
            client_id: "app".into(),
            redirect_uri: "http://127.0.0.1:9/cb".into(),
            scopes: vec![],
            state: None,
            nonce: None,
            code_challenge: None,
        };
        let grant = CodeGrant {
            request,
            user: "alice".into(),
            expires_at: 100,
        };
        let code = codes.issue(grant.clone(), 0).unwrap();
        assert!(codes.redeem(&code, "other", 1).is_err());
        assert!(
            codes.redeem(&code, "app", 1).is_err(),
            "spent by the wrong client"
        );
        let code = codes.issue(grant.clone(), 0).unwrap();
        assert_eq!(codes.redeem(&code, "app", 1).unwrap().user, "alice");
        assert!(codes.redeem(&code, "app", 1).is_err());
        let code = codes.issue(grant, 0).unwrap();
        assert!(codes.redeem(&code, "app", 100).is_err(), "expired");
    }
}
