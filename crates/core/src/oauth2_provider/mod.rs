//! OAuth2 credential provider configuration: parse and validate the
//! `oauth2ProviderConfigInput` union together with `credentialProviderVendor`, resolve the
//! built-in vendor presets, and render the `oauth2ProviderConfigOutput` union.
//!
//! Pure: no HTTP, no SQL, no I/O. The service crate calls [`parse_create`] from the Create
//! *and* Update handlers (Update replaces the whole configuration), stores
//! [`ProviderInput::config`] as JSON, envelope-encrypts [`ProviderInput::client_secret`], and
//! later calls [`render_output`] for Create/Get/Update responses.
//!
//! # Choices where AgentCore's model is silent
//!
//! * **Vendor ↔ union member.** `googleOauth2ProviderConfig` only with `GoogleOauth2`, and
//!   likewise for GitHub, Slack, Salesforce, Microsoft, Atlassian and LinkedIn;
//!   `customOauth2ProviderConfig` only with `CustomOauth2`; `includedOauth2ProviderConfig`
//!   with the other 17 built-in vendors. Anything else names `credentialProviderVendor`.
//! * **Self-hosted editions.** GitHub (Enterprise Server), Atlassian (Data Center) and
//!   Salesforce (My Domain, sandboxes) also take `includedOauth2ProviderConfig` with
//!   `authorizationEndpoint` and `tokenEndpoint` (and optionally `issuer`): the preset's
//!   behaviour at another host, without falling back to `CustomOauth2`. The output then
//!   shows that member, as it was given.
//! * **Included vendors.** Vendors with fixed public endpoints (X, Facebook, Yandex, Reddit,
//!   Zoom, Twitch, Spotify, Dropbox, Notion, HubSpot) get a preset when `issuer`,
//!   `authorizationEndpoint` and `tokenEndpoint` are all omitted; giving both endpoints
//!   overrides the preset ("isolated tenant"). Tenant-based vendors (Okta, OneLogin, PingOne,
//!   CyberArk, FusionAuth, Auth0, Cognito) need either `issuer` alone (Latchkey then uses OIDC
//!   discovery at `{issuer}/.well-known/openid-configuration`) or all three.
//! * **URLs** (discovery URL, issuer, endpoints) must be absolute `https` URLs; plain `http`
//!   is accepted only for loopback hosts (`localhost`, `127.0.0.0/8`, `::1`) so local
//!   development and test identity providers work. User info (`user:pass@`) and fragments
//!   are rejected, an issuer may not carry a query, and every URL is capped at 2048
//!   characters (the model sets no maximum).
//! * **Unsupported AgentCore features** are rejected with a `ValidationException` whose
//!   message says `not supported by Latchkey: …`: `privateEndpoint`,
//!   `privateEndpointOverrides` (unless empty), `certificateConfigurations`,
//!   `privateKeyJwtConfig`, `clientAuthenticationMethod` `AWS_IAM_ID_TOKEN_JWT` /
//!   `PRIVATE_KEY_JWT`, `clientSecretSource: EXTERNAL`, `clientSecretConfig`, and an
//!   on-behalf-of `actorTokenContent` of `AWS_IAM_ID_TOKEN_JWT`. Unknown members inside a
//!   configuration are rejected too, so a feature a newer SDK sends is never silently
//!   ignored. JSON `null` counts as absent.
//! * **Client secret.** Optional (public client with PKCE); an empty string means absent.
//! * **Wrong JSON types** (a number where a string belongs) are `CannotParse` errors naming
//!   the path; values, and secrets in particular, never appear in error messages.

use std::collections::BTreeMap;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::Value;

mod custom;
mod json;
mod parse;
mod presets;
mod render;
mod urls;
mod vendor;

pub use parse::parse_create;
pub use render::render_output;
pub use urls::matches_discovery_pattern;
pub use vendor::{ConfigVariant, Vendor};

use urls::{UrlRole, check_url};

/// Longest URL Latchkey accepts anywhere in a provider configuration (the model has no cap).
pub const MAX_URL_LEN: usize = 2048;

const VENDOR_FIELD: &str = "credentialProviderVendor";
const INPUT_FIELD: &str = "oauth2ProviderConfigInput";
const BASIC: &str = "client_secret_basic";
const POST: &str = "client_secret_post";

/// The result of parsing a Create/Update request: what to store, and the secret to
/// envelope-encrypt separately. `Debug` redacts the secret.
#[derive(Debug)]
pub struct ProviderInput {
    pub vendor: Vendor,
    pub config: ProviderConfig,
    /// `None` when `clientSecret` was absent or empty (a public client using PKCE).
    pub client_secret: Option<SecretString>,
}

/// The non-secret provider configuration, stored as JSON by the caller. Optional fields
/// default when absent so rows written by older versions keep deserializing.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ProviderConfig {
    /// The union member the client used.
    pub variant: ConfigVariant,
    /// The client id; empty only for a custom provider that gave none.
    pub client_id: String,
    /// Microsoft only: the tenant as given (`None` means `common`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// Endpoints: the custom provider's discovery union as given, a vendor preset's
    /// metadata, an included vendor's explicit endpoints, or a discovery URL derived from
    /// an included vendor's issuer. A `DiscoveryUrl` must be fetched before use.
    pub discovery: Discovery,
    /// For presets whose vendor also publishes OIDC discovery (Google, Microsoft,
    /// Salesforce, LinkedIn, Twitch): where to find it (JWKS, userinfo). Never required —
    /// the preset metadata in `discovery` is enough for the authorization-code flow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc_discovery_url: Option<String>,
    /// Custom providers only: the explicit token-endpoint client authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_authentication_method: Option<ClientAuthMethod>,
    /// Custom providers only: the on-behalf-of token exchange settings (stored, validated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<OnBehalfOfConfig>,
    /// What the vendor needs beyond plain OAuth 2.0.
    #[serde(default)]
    pub quirks: Quirks,
    /// RFC 7009 (or vendor) token revocation endpoint, where the vendor has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_endpoint: Option<String>,
    /// Lifetime to assume when a token response has no `expires_in` (`None`: the caller's
    /// global default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_token_lifetime_secs: Option<u64>,
}

/// `Oauth2Discovery`, as stored.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Discovery {
    /// An RFC 8414 / OIDC discovery document URL (to be fetched by the caller).
    DiscoveryUrl(String),
    /// Explicit authorization server metadata.
    Metadata(AuthorizationServerMetadata),
}

/// `Oauth2AuthorizationServerMetadata`, as stored. `token_endpoint_auth_methods` holds the
/// RFC names (`client_secret_basic`, `client_secret_post`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct AuthorizationServerMetadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    #[serde(default)]
    pub response_types: Vec<String>,
    #[serde(default)]
    pub token_endpoint_auth_methods: Vec<String>,
}

/// The token-endpoint client authentication Latchkey can perform.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClientAuthMethod {
    /// HTTP Basic with the form-urlencoded client id and secret (RFC 6749 §2.3.1).
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
}

impl ClientAuthMethod {
    /// AgentCore's `ClientAuthenticationMethodType` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientSecretBasic => "CLIENT_SECRET_BASIC",
            Self::ClientSecretPost => "CLIENT_SECRET_POST",
        }
    }

    /// The RFC 8414 name.
    pub fn rfc_name(self) -> &'static str {
        match self {
            Self::ClientSecretBasic => BASIC,
            Self::ClientSecretPost => POST,
        }
    }
}

/// `onBehalfOfTokenExchangeConfig`, validated and stored (the exchange itself comes later).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct OnBehalfOfConfig {
    pub grant_type: OboGrantType,
    /// `tokenExchangeGrantTypeConfig`; only with [`OboGrantType::TokenExchange`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_exchange: Option<TokenExchangeConfig>,
    /// `onBehalfOfAuthenticationConfig.clientAuthenticationMethod == NO_CLIENT`: send no
    /// client authentication on the exchange.
    #[serde(default)]
    pub no_client_authentication: bool,
}

/// `OnBehalfOfTokenExchangeGrantTypeType`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OboGrantType {
    /// RFC 8693 token exchange.
    TokenExchange,
    /// RFC 7523 JWT bearer authorization grant.
    JwtAuthorizationGrant,
}

impl OboGrantType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TokenExchange => "TOKEN_EXCHANGE",
            Self::JwtAuthorizationGrant => "JWT_AUTHORIZATION_GRANT",
        }
    }
}

/// `TokenExchangeGrantTypeConfigType`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TokenExchangeConfig {
    pub actor_token_content: ActorTokenContent,
    /// As given (`None` when absent, so the output echoes the input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_token_scopes: Option<Vec<String>>,
}

/// `ActorTokenContentType` minus `AWS_IAM_ID_TOKEN_JWT`, which Latchkey cannot produce.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ActorTokenContent {
    None,
    M2m,
}

impl ActorTokenContent {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::M2m => "M2M",
        }
    }
}

/// Vendor behaviour beyond plain OAuth 2.0, applied by the authorize/token code.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(default)]
pub struct Quirks {
    /// Query parameters added to every authorization request (Google
    /// `access_type=offline&prompt=consent` to get a refresh token; Atlassian
    /// `audience=api.atlassian.com&prompt=consent`; Dropbox `token_access_type=offline`;
    /// Reddit `duration=permanent`; Notion `owner=user`). They are defaults: the caller
    /// decides whether a request's custom parameters may replace them.
    pub authorize_params: BTreeMap<String, String>,
    /// How scopes are joined in the `scope` parameter: `" "` (RFC 6749) or `","` (Slack,
    /// Facebook).
    pub scope_separator: String,
    /// The scope a vendor wants before it issues a refresh token (Microsoft, Atlassian,
    /// Okta, Auth0, FusionAuth `offline_access`; Salesforce `refresh_token`; X
    /// `offline.access`). The caller may add it to requested scopes.
    pub offline_scope: Option<String>,
    /// Slack OAuth v2 user tokens: requested scopes go in `user_scope` (not `scope`), the
    /// user token is `authed_user.access_token` of the `oauth.v2.access` response, and
    /// errors come back as HTTP 200 with `"ok": false`.
    pub slack_user_token: bool,
    /// Send `Accept: application/json` to the token endpoint (GitHub answers
    /// form-urlencoded otherwise, and reports errors with HTTP 200).
    pub token_accept_json: bool,
    /// A vendor-mandated token-endpoint client authentication that overrides what the
    /// metadata lists (Auth0 applications default to `client_secret_post`).
    pub client_auth: Option<ClientAuthMethod>,
}

impl Default for Quirks {
    fn default() -> Self {
        Self {
            authorize_params: BTreeMap::new(),
            scope_separator: " ".to_owned(),
            offline_scope: None,
            slack_user_token: false,
            token_accept_json: false,
            client_auth: None,
        }
    }
}

impl ProviderConfig {
    /// The stored metadata, when no discovery fetch is needed.
    pub fn metadata(&self) -> Option<&AuthorizationServerMetadata> {
        match &self.discovery {
            Discovery::Metadata(m) => Some(m),
            Discovery::DiscoveryUrl(_) => None,
        }
    }

    /// The discovery URL the caller must fetch (and validate with
    /// [`AuthorizationServerMetadata::from_discovery_document`]) before use.
    pub fn discovery_url(&self) -> Option<&str> {
        match &self.discovery {
            Discovery::DiscoveryUrl(u) => Some(u),
            Discovery::Metadata(_) => None,
        }
    }

    /// How to authenticate at the token endpoint: the custom provider's explicit method,
    /// else a vendor quirk, else from the metadata (`resolved` wins over stored):
    /// `client_secret_basic` when listed or when nothing is listed (the RFC 8414 default),
    /// otherwise `client_secret_post`.
    pub fn client_auth_method(
        &self,
        resolved: Option<&AuthorizationServerMetadata>,
    ) -> ClientAuthMethod {
        if let Some(m) = self
            .client_authentication_method
            .or(self.quirks.client_auth)
        {
            return m;
        }
        let methods = resolved
            .or(self.metadata())
            .map(|m| m.token_endpoint_auth_methods.as_slice())
            .unwrap_or(&[]);
        if methods.is_empty()
            || methods.iter().any(|m| m == BASIC)
            || !methods.iter().any(|m| m == POST)
        {
            ClientAuthMethod::ClientSecretBasic
        } else {
            ClientAuthMethod::ClientSecretPost
        }
    }
}

impl AuthorizationServerMetadata {
    /// Reads a fetched RFC 8414 / OIDC discovery document with the same URL rules as
    /// configuration input. Unsupported client authentication methods are dropped. The
    /// caller compares `issuer` with what it expected (RFC 8414 §3.3). The error is safe to
    /// show the client.
    pub fn from_discovery_document(doc: &Value) -> Result<Self, String> {
        let doc = doc
            .as_object()
            .ok_or("the discovery document is not a JSON object")?;
        let url = |key: &str, role: UrlRole| -> Result<String, String> {
            let s = doc
                .get(key)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("the discovery document has no {key}"))?;
            check_url(s, role)
                .map_err(|m| format!("the discovery document's {key} is invalid: {m}"))?;
            Ok(s.to_owned())
        };
        let strings = |key: &str| -> Vec<String> {
            doc.get(key)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        let methods = match doc.get("token_endpoint_auth_methods_supported") {
            // RFC 8414: omitted means client_secret_basic.
            None | Some(Value::Null) => vec![BASIC.to_owned()],
            Some(_) => strings("token_endpoint_auth_methods_supported")
                .into_iter()
                .filter(|m| m == BASIC || m == POST)
                .collect(),
        };
        Ok(Self {
            issuer: url("issuer", UrlRole::Issuer)?,
            authorization_endpoint: url("authorization_endpoint", UrlRole::Endpoint)?,
            token_endpoint: url("token_endpoint", UrlRole::Endpoint)?,
            response_types: strings("response_types_supported"),
            token_endpoint_auth_methods: methods,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
