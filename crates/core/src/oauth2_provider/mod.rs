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
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use url::{Host, Url};

use crate::error::ApiError;
use crate::validate::Validator;

/// Longest URL Latchkey accepts anywhere in a provider configuration (the model has no cap).
pub const MAX_URL_LEN: usize = 2048;

const VENDOR_FIELD: &str = "credentialProviderVendor";
const INPUT_FIELD: &str = "oauth2ProviderConfigInput";
const BASIC: &str = "client_secret_basic";
const POST: &str = "client_secret_post";

// ------------------------------------------------------------------------------ vendors

macro_rules! vendors {
    ($($v:ident),+ $(,)?) => {
        /// `CredentialProviderVendorType`: the 25 vendors, spelled exactly as AgentCore does
        /// (the Rust variant names *are* the wire names, for serde too).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum Vendor { $($v),+ }

        impl Vendor {
            /// Every vendor, in the model's order.
            pub const ALL: [Vendor; 25] = [$(Vendor::$v),+];

            /// The AgentCore spelling, e.g. `GithubOauth2`.
            pub fn as_str(self) -> &'static str {
                match self { $(Vendor::$v => stringify!($v)),+ }
            }
        }
    };
}

vendors!(
    GoogleOauth2,
    GithubOauth2,
    SlackOauth2,
    SalesforceOauth2,
    MicrosoftOauth2,
    CustomOauth2,
    AtlassianOauth2,
    LinkedinOauth2,
    XOauth2,
    OktaOauth2,
    OneLoginOauth2,
    PingOneOauth2,
    FacebookOauth2,
    YandexOauth2,
    RedditOauth2,
    ZoomOauth2,
    TwitchOauth2,
    SpotifyOauth2,
    DropboxOauth2,
    NotionOauth2,
    HubspotOauth2,
    CyberArkOauth2,
    FusionAuthOauth2,
    Auth0Oauth2,
    CognitoOauth2,
);

impl Vendor {
    /// The `oauth2ProviderConfigInput` member this vendor takes.
    pub fn config_variant(self) -> ConfigVariant {
        match self {
            Self::GoogleOauth2 => ConfigVariant::Google,
            Self::GithubOauth2 => ConfigVariant::Github,
            Self::SlackOauth2 => ConfigVariant::Slack,
            Self::SalesforceOauth2 => ConfigVariant::Salesforce,
            Self::MicrosoftOauth2 => ConfigVariant::Microsoft,
            Self::AtlassianOauth2 => ConfigVariant::Atlassian,
            Self::LinkedinOauth2 => ConfigVariant::Linkedin,
            Self::CustomOauth2 => ConfigVariant::Custom,
            _ => ConfigVariant::Included,
        }
    }
}

impl fmt::Display for Vendor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Vendor {
    type Err = ApiError;

    /// Exact, case-sensitive match; otherwise a validation error naming
    /// `credentialProviderVendor`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| ApiError::field(VENDOR_FIELD, vendor_enum_message()))
    }
}

fn vendor_enum_message() -> String {
    let names: Vec<&str> = Vendor::ALL.iter().map(|v| v.as_str()).collect();
    format!("Member must satisfy enum value set: [{}]", names.join(", "))
}

/// Which of the 9 union members was used (stored as the short lowercase name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConfigVariant {
    Google,
    Github,
    Slack,
    Salesforce,
    Atlassian,
    Linkedin,
    Microsoft,
    Included,
    Custom,
}

impl ConfigVariant {
    pub const ALL: [ConfigVariant; 9] = [
        Self::Custom,
        Self::Google,
        Self::Github,
        Self::Slack,
        Self::Salesforce,
        Self::Microsoft,
        Self::Atlassian,
        Self::Linkedin,
        Self::Included,
    ];

    /// The union member name on the wire, e.g. `githubOauth2ProviderConfig`.
    pub fn member_name(self) -> &'static str {
        match self {
            Self::Google => "googleOauth2ProviderConfig",
            Self::Github => "githubOauth2ProviderConfig",
            Self::Slack => "slackOauth2ProviderConfig",
            Self::Salesforce => "salesforceOauth2ProviderConfig",
            Self::Atlassian => "atlassianOauth2ProviderConfig",
            Self::Linkedin => "linkedinOauth2ProviderConfig",
            Self::Microsoft => "microsoftOauth2ProviderConfig",
            Self::Included => "includedOauth2ProviderConfig",
            Self::Custom => "customOauth2ProviderConfig",
        }
    }

    fn from_member_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.member_name() == name)
    }

    /// The single vendor of a vendor-specific member (`None` for included and custom).
    fn own_vendor(self) -> Option<Vendor> {
        match self {
            Self::Google => Some(Vendor::GoogleOauth2),
            Self::Github => Some(Vendor::GithubOauth2),
            Self::Slack => Some(Vendor::SlackOauth2),
            Self::Salesforce => Some(Vendor::SalesforceOauth2),
            Self::Atlassian => Some(Vendor::AtlassianOauth2),
            Self::Linkedin => Some(Vendor::LinkedinOauth2),
            Self::Microsoft => Some(Vendor::MicrosoftOauth2),
            Self::Included | Self::Custom => None,
        }
    }
}

// ------------------------------------------------------------------------------ stored types

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

// ------------------------------------------------------------------------------ presets

/// Fixed public endpoints of a built-in vendor.
struct Preset {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    auth_methods: &'static [&'static str],
    oidc_discovery_url: Option<String>,
    revocation_endpoint: Option<&'static str>,
    default_token_lifetime_secs: Option<u64>,
}

impl Preset {
    fn new(
        issuer: &str,
        authorize: &str,
        token: &str,
        auth_methods: &'static [&'static str],
    ) -> Self {
        Self {
            issuer: issuer.to_owned(),
            authorization_endpoint: authorize.to_owned(),
            token_endpoint: token.to_owned(),
            auth_methods,
            oidc_discovery_url: None,
            revocation_endpoint: None,
            default_token_lifetime_secs: None,
        }
    }

    fn discovery(mut self, url: impl Into<String>) -> Self {
        self.oidc_discovery_url = Some(url.into());
        self
    }

    fn revocation(mut self, url: &'static str) -> Self {
        self.revocation_endpoint = Some(url);
        self
    }

    fn metadata(&self) -> AuthorizationServerMetadata {
        AuthorizationServerMetadata {
            issuer: self.issuer.clone(),
            authorization_endpoint: self.authorization_endpoint.clone(),
            token_endpoint: self.token_endpoint.clone(),
            response_types: vec!["code".to_owned()],
            token_endpoint_auth_methods: self
                .auth_methods
                .iter()
                .map(|m| (*m).to_owned())
                .collect(),
        }
    }
}

const BOTH: &[&str] = &[BASIC, POST];
const BASIC_ONLY: &[&str] = &[BASIC];
const POST_ONLY: &[&str] = &[POST];

/// The preset endpoints for `vendor` (`tenant` is used by Microsoft only). `None` for
/// custom and for tenant-based vendors, which have no fixed endpoints.
fn preset(vendor: Vendor, tenant: &str) -> Option<Preset> {
    use Vendor::*;
    let p = match vendor {
        GoogleOauth2 => Preset::new(
            "https://accounts.google.com",
            "https://accounts.google.com/o/oauth2/v2/auth",
            "https://oauth2.googleapis.com/token",
            BOTH,
        )
        .discovery("https://accounts.google.com/.well-known/openid-configuration")
        .revocation("https://oauth2.googleapis.com/revoke"),
        GithubOauth2 => Preset::new(
            "https://github.com",
            "https://github.com/login/oauth/authorize",
            "https://github.com/login/oauth/access_token",
            POST_ONLY,
        ),
        SlackOauth2 => Preset::new(
            "https://slack.com",
            "https://slack.com/oauth/v2/authorize",
            "https://slack.com/api/oauth.v2.access",
            BOTH,
        )
        .revocation("https://slack.com/api/auth.revoke"),
        SalesforceOauth2 => {
            let mut p = Preset::new(
                "https://login.salesforce.com",
                "https://login.salesforce.com/services/oauth2/authorize",
                "https://login.salesforce.com/services/oauth2/token",
                BOTH,
            )
            .discovery("https://login.salesforce.com/.well-known/openid-configuration")
            .revocation("https://login.salesforce.com/services/oauth2/revoke");
            // Salesforce omits expires_in; its default session timeout is two hours.
            p.default_token_lifetime_secs = Some(7200);
            p
        }
        MicrosoftOauth2 => {
            let base = format!("https://login.microsoftonline.com/{tenant}");
            Preset::new(
                &format!("{base}/v2.0"),
                &format!("{base}/oauth2/v2.0/authorize"),
                &format!("{base}/oauth2/v2.0/token"),
                BOTH,
            )
            .discovery(format!("{base}/v2.0/.well-known/openid-configuration"))
        }
        AtlassianOauth2 => Preset::new(
            "https://auth.atlassian.com",
            "https://auth.atlassian.com/authorize",
            "https://auth.atlassian.com/oauth/token",
            POST_ONLY,
        ),
        LinkedinOauth2 => Preset::new(
            "https://www.linkedin.com/oauth",
            "https://www.linkedin.com/oauth/v2/authorization",
            "https://www.linkedin.com/oauth/v2/accessToken",
            POST_ONLY,
        )
        .discovery("https://www.linkedin.com/oauth/.well-known/openid-configuration"),
        XOauth2 => Preset::new(
            "https://x.com",
            "https://x.com/i/oauth2/authorize",
            "https://api.x.com/2/oauth2/token",
            BASIC_ONLY,
        )
        .revocation("https://api.x.com/2/oauth2/revoke"),
        FacebookOauth2 => Preset::new(
            "https://www.facebook.com",
            "https://www.facebook.com/dialog/oauth",
            "https://graph.facebook.com/oauth/access_token",
            POST_ONLY,
        ),
        YandexOauth2 => Preset::new(
            "https://oauth.yandex.com",
            "https://oauth.yandex.com/authorize",
            "https://oauth.yandex.com/token",
            BOTH,
        ),
        RedditOauth2 => Preset::new(
            "https://www.reddit.com",
            "https://www.reddit.com/api/v1/authorize",
            "https://www.reddit.com/api/v1/access_token",
            BASIC_ONLY,
        )
        .revocation("https://www.reddit.com/api/v1/revoke_token"),
        ZoomOauth2 => Preset::new(
            "https://zoom.us",
            "https://zoom.us/oauth/authorize",
            "https://zoom.us/oauth/token",
            BASIC_ONLY,
        )
        .revocation("https://zoom.us/oauth/revoke"),
        TwitchOauth2 => Preset::new(
            "https://id.twitch.tv/oauth2",
            "https://id.twitch.tv/oauth2/authorize",
            "https://id.twitch.tv/oauth2/token",
            POST_ONLY,
        )
        .discovery("https://id.twitch.tv/oauth2/.well-known/openid-configuration")
        .revocation("https://id.twitch.tv/oauth2/revoke"),
        SpotifyOauth2 => Preset::new(
            "https://accounts.spotify.com",
            "https://accounts.spotify.com/authorize",
            "https://accounts.spotify.com/api/token",
            BOTH,
        ),
        DropboxOauth2 => Preset::new(
            "https://www.dropbox.com",
            "https://www.dropbox.com/oauth2/authorize",
            "https://api.dropboxapi.com/oauth2/token",
            BOTH,
        ),
        NotionOauth2 => Preset::new(
            "https://api.notion.com",
            "https://api.notion.com/v1/oauth/authorize",
            "https://api.notion.com/v1/oauth/token",
            BASIC_ONLY,
        ),
        HubspotOauth2 => Preset::new(
            "https://app.hubspot.com",
            "https://app.hubspot.com/oauth/authorize",
            "https://api.hubapi.com/oauth/v1/token",
            POST_ONLY,
        ),
        CustomOauth2 | OktaOauth2 | OneLoginOauth2 | PingOneOauth2 | CyberArkOauth2
        | FusionAuthOauth2 | Auth0Oauth2 | CognitoOauth2 => return None,
    };
    Some(p)
}

/// Vendor quirks, independent of which endpoints are used.
fn quirks(vendor: Vendor) -> Quirks {
    use Vendor::*;
    let mut q = Quirks::default();
    let mut params = |pairs: &[(&str, &str)]| {
        q.authorize_params = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
    };
    match vendor {
        GoogleOauth2 => params(&[("access_type", "offline"), ("prompt", "consent")]),
        AtlassianOauth2 => params(&[("audience", "api.atlassian.com"), ("prompt", "consent")]),
        DropboxOauth2 => params(&[("token_access_type", "offline")]),
        RedditOauth2 => params(&[("duration", "permanent")]),
        NotionOauth2 => params(&[("owner", "user")]),
        _ => {}
    }
    q.offline_scope = match vendor {
        MicrosoftOauth2 | AtlassianOauth2 | OktaOauth2 | Auth0Oauth2 | FusionAuthOauth2 => {
            Some("offline_access".to_owned())
        }
        SalesforceOauth2 => Some("refresh_token".to_owned()),
        XOauth2 => Some("offline.access".to_owned()),
        _ => None,
    };
    if matches!(vendor, SlackOauth2 | FacebookOauth2) {
        q.scope_separator = ",".to_owned();
    }
    q.slack_user_token = vendor == SlackOauth2;
    q.token_accept_json = vendor == GithubOauth2;
    if vendor == Auth0Oauth2 {
        q.client_auth = Some(ClientAuthMethod::ClientSecretPost);
    }
    q
}

// ------------------------------------------------------------------------------ parsing

/// Parses and validates `credentialProviderVendor` and `oauth2ProviderConfigInput` of a
/// `CreateOauth2CredentialProvider` **or** `UpdateOauth2CredentialProvider` request (pass
/// `Value::Null` for a missing member). Every field failure is collected into one
/// `ValidationException` (`FieldValidationFailed`); a wrong JSON type is `CannotParse`.
pub fn parse_create(vendor: &Value, input: &Value) -> Result<ProviderInput, ApiError> {
    let mut v = Validator::new();

    let vendor = match vendor {
        Value::Null => {
            v.fail(VENDOR_FIELD, "Member must not be null");
            None
        }
        Value::String(s) => match s.parse::<Vendor>() {
            Ok(vendor) => Some(vendor),
            Err(_) => {
                v.fail(VENDOR_FIELD, vendor_enum_message());
                None
            }
        },
        _ => return Err(type_error(VENDOR_FIELD, "a string")),
    };

    let member = parse_union(&mut v, input)?;

    // The vendor the member may use for presets: only when it matches.
    let mut matched = vendor;
    if let (Some(vendor), Some((variant, _))) = (vendor, member)
        && vendor.config_variant() != variant
    {
        v.fail(
            VENDOR_FIELD,
            format!(
                "{vendor} takes oauth2ProviderConfigInput.{}, not {}",
                vendor.config_variant().member_name(),
                variant.member_name()
            ),
        );
        matched = None;
    }

    let parsed = match member {
        Some((variant, map)) => parse_member(&mut v, matched, variant, map)?,
        None => None,
    };
    v.finish()?;
    match (vendor, parsed) {
        (Some(vendor), Some((config, client_secret))) => Ok(ProviderInput {
            vendor,
            config,
            client_secret,
        }),
        // Unreachable in practice: every path that yields no config records a failure.
        _ => Err(ApiError::field(
            INPUT_FIELD,
            "Member must be a valid OAuth2 provider configuration",
        )),
    }
}

/// The union member that was set, with its body.
type Member<'a> = (ConfigVariant, &'a Map<String, Value>);

/// Exactly one known member set; unknown members are failures.
fn parse_union<'a>(v: &mut Validator, input: &'a Value) -> Result<Option<Member<'a>>, ApiError> {
    let map = match input {
        Value::Null => {
            v.fail(INPUT_FIELD, "Member must not be null");
            return Ok(None);
        }
        other => object(other, INPUT_FIELD)?,
    };
    let mut set = Vec::new();
    let mut unknown = false;
    for (key, value) in map {
        if value.is_null() {
            continue;
        }
        match ConfigVariant::from_member_name(key) {
            Some(variant) => set.push((variant, key.as_str(), value)),
            None => {
                unknown = true;
                let names: Vec<&str> = ConfigVariant::ALL.iter().map(|c| c.member_name()).collect();
                v.fail(
                    &join(INPUT_FIELD, key),
                    format!(
                        "Unknown union member; expected one of [{}]",
                        names.join(", ")
                    ),
                );
            }
        }
    }
    match set.as_slice() {
        [(variant, key, value)] => Ok(Some((*variant, object(value, &join(INPUT_FIELD, key))?))),
        [] if unknown => Ok(None),
        _ => {
            let names: Vec<&str> = set.iter().map(|(_, k, _)| *k).collect();
            v.fail(
                INPUT_FIELD,
                format!(
                    "Exactly one union member must be set; got {} [{}]",
                    set.len(),
                    names.join(", ")
                ),
            );
            Ok(None)
        }
    }
}

const COMMON_MEMBERS: &[&str] = &[
    "clientId",
    "clientSecret",
    "clientSecretConfig",
    "clientSecretSource",
];
const CUSTOM_MEMBERS: &[&str] = &[
    "oauthDiscovery",
    "onBehalfOfTokenExchangeConfig",
    "clientAuthenticationMethod",
    "privateKeyJwtConfig",
    "privateEndpoint",
    "privateEndpointOverrides",
    "certificateConfigurations",
];

type Parsed = Option<(ProviderConfig, Option<SecretString>)>;

/// One union member. `vendor` is `None` when the vendor is unknown or mismatched: the
/// member is still validated (so the client sees every failure) but nothing is built.
fn parse_member(
    v: &mut Validator,
    vendor: Option<Vendor>,
    variant: ConfigVariant,
    map: &Map<String, Value>,
) -> Result<Parsed, ApiError> {
    let path = join(INPUT_FIELD, variant.member_name());
    let mut allowed = COMMON_MEMBERS.to_vec();
    match variant {
        ConfigVariant::Microsoft => allowed.push("tenantId"),
        ConfigVariant::Included => {
            allowed.extend(["issuer", "authorizationEndpoint", "tokenEndpoint"])
        }
        ConfigVariant::Custom => allowed.extend_from_slice(CUSTOM_MEMBERS),
        _ => {}
    }
    check_members(v, map, &path, &allowed);

    let is_custom = variant == ConfigVariant::Custom;
    let client_id = match opt_str(map, "clientId", &path)? {
        Some(id) => v
            .length(&join(&path, "clientId"), id, usize::from(!is_custom), 256)
            .then(|| id.to_owned()),
        None if is_custom => Some(String::new()),
        None => {
            v.fail(&join(&path, "clientId"), "Member must not be null");
            None
        }
    };
    let client_secret = parse_secret(v, map, &path)?;

    let config = match variant {
        ConfigVariant::Custom => parse_custom(v, map, &path)?,
        ConfigVariant::Included => parse_included(v, vendor, map, &path)?,
        ConfigVariant::Microsoft => {
            let tenant = match opt_str(map, "tenantId", &path)? {
                Some(t) => {
                    let field = join(&path, "tenantId");
                    if v.length(&field, t, 1, 2048)
                        && v.check(
                            &field,
                            is_tenant(t),
                            "Member must be a tenant GUID, a domain name, or one of common, organizations, consumers",
                        )
                    {
                        Some(Some(t.to_owned()))
                    } else {
                        None
                    }
                }
                None => Some(None),
            };
            tenant.and_then(|tenant| {
                preset(
                    Vendor::MicrosoftOauth2,
                    tenant.as_deref().unwrap_or("common"),
                )
                .map(|p| {
                    let mut c = from_preset(variant, Vendor::MicrosoftOauth2, &p);
                    c.tenant_id = tenant;
                    c
                })
            })
        }
        builtin => builtin
            .own_vendor()
            .and_then(|vendor| preset(vendor, "").map(|p| from_preset(builtin, vendor, &p))),
    };

    Ok(match (client_id, config) {
        (Some(client_id), Some(mut config)) if vendor.is_some() => {
            config.client_id = client_id;
            Some((config, client_secret))
        }
        _ => None,
    })
}

fn from_preset(variant: ConfigVariant, vendor: Vendor, p: &Preset) -> ProviderConfig {
    ProviderConfig {
        variant,
        client_id: String::new(),
        tenant_id: None,
        discovery: Discovery::Metadata(p.metadata()),
        oidc_discovery_url: p.oidc_discovery_url.clone(),
        client_authentication_method: None,
        on_behalf_of: None,
        quirks: quirks(vendor),
        revocation_endpoint: p.revocation_endpoint.map(str::to_owned),
        default_token_lifetime_secs: p.default_token_lifetime_secs,
    }
}

/// `clientSecret`, `clientSecretSource` and `clientSecretConfig`, shared by every member.
fn parse_secret(
    v: &mut Validator,
    map: &Map<String, Value>,
    path: &str,
) -> Result<Option<SecretString>, ApiError> {
    if let Some(source) = opt_str(map, "clientSecretSource", path)? {
        let field = join(path, "clientSecretSource");
        match source {
            "MANAGED" => {}
            "EXTERNAL" => v.fail(
                &field,
                "not supported by Latchkey: clientSecretSource EXTERNAL (AWS Secrets Manager); send clientSecret instead",
            ),
            _ => v.fail(&field, "Member must satisfy enum value set: [MANAGED, EXTERNAL]"),
        }
    }
    if opt(map, "clientSecretConfig").is_some() {
        v.fail(
            &join(path, "clientSecretConfig"),
            "not supported by Latchkey: clientSecretConfig (AWS Secrets Manager references); send clientSecret instead",
        );
    }
    Ok(match opt_str(map, "clientSecret", path)? {
        Some(secret)
            if v.length(&join(path, "clientSecret"), secret, 0, 2048) && !secret.is_empty() =>
        {
            Some(SecretString::from(secret.to_owned()))
        }
        _ => None,
    })
}

/// `includedOauth2ProviderConfig`: preset, explicit endpoints, or issuer-only discovery.
fn parse_included(
    v: &mut Validator,
    vendor: Option<Vendor>,
    map: &Map<String, Value>,
    path: &str,
) -> Result<Option<ProviderConfig>, ApiError> {
    let mut url = |key: &str, role: UrlRole| -> Result<Option<Option<String>>, ApiError> {
        // Outer None: given but invalid; inner None: absent.
        Ok(match opt_str(map, key, path)? {
            None => Some(None),
            Some(s) => check_url_field(v, &join(path, key), s, role).then(|| Some(s.to_owned())),
        })
    };
    let (issuer, authorize, token) = (
        url("issuer", UrlRole::Issuer)?,
        url("authorizationEndpoint", UrlRole::Endpoint)?,
        url("tokenEndpoint", UrlRole::Endpoint)?,
    );
    let (Some(vendor), Some(issuer), Some(authorize), Some(token)) =
        (vendor, issuer, authorize, token)
    else {
        return Ok(None);
    };
    let preset = preset(vendor, "");
    let quirks = quirks(vendor);
    let config = |discovery: Discovery| ProviderConfig {
        variant: ConfigVariant::Included,
        client_id: String::new(),
        tenant_id: None,
        discovery,
        oidc_discovery_url: None,
        client_authentication_method: None,
        on_behalf_of: None,
        quirks: quirks.clone(),
        revocation_endpoint: None,
        default_token_lifetime_secs: preset.as_ref().and_then(|p| p.default_token_lifetime_secs),
    };
    let tenant_help = format!(
        "{vendor} has no fixed endpoints: set issuer (Latchkey then uses OIDC discovery at {{issuer}}/.well-known/openid-configuration), or issuer, authorizationEndpoint and tokenEndpoint of your tenant"
    );
    Ok(match (issuer, authorize, token) {
        (issuer, Some(authorization_endpoint), Some(token_endpoint)) => {
            let Some(issuer) = issuer.or_else(|| preset.as_ref().map(|p| p.issuer.clone())) else {
                v.fail(
                    &join(path, "issuer"),
                    format!("Member must not be null: {tenant_help}"),
                );
                return Ok(None);
            };
            let token_endpoint_auth_methods = preset
                .as_ref()
                .map(|p| p.metadata().token_endpoint_auth_methods)
                .unwrap_or_default();
            Some(config(Discovery::Metadata(AuthorizationServerMetadata {
                issuer,
                authorization_endpoint,
                token_endpoint,
                response_types: vec!["code".to_owned()],
                token_endpoint_auth_methods,
            })))
        }
        (_, Some(_), None) => {
            v.fail(
                &join(path, "tokenEndpoint"),
                "Member must not be null when authorizationEndpoint is set",
            );
            None
        }
        (_, None, Some(_)) => {
            v.fail(
                &join(path, "authorizationEndpoint"),
                "Member must not be null when tokenEndpoint is set",
            );
            None
        }
        (Some(issuer), None, None) => match preset {
            Some(_) => {
                v.fail(
                    &join(path, "authorizationEndpoint"),
                    format!("Member must not be null when issuer is set: give authorizationEndpoint and tokenEndpoint too, or omit all three to use {vendor}'s built-in endpoints"),
                );
                None
            }
            None => Some(config(Discovery::DiscoveryUrl(format!(
                "{}/.well-known/openid-configuration",
                issuer.trim_end_matches('/')
            )))),
        },
        (None, None, None) => match &preset {
            Some(p) => {
                let mut c = from_preset(ConfigVariant::Included, vendor, p);
                c.quirks = quirks.clone();
                Some(c)
            }
            None => {
                v.fail(path, tenant_help);
                None
            }
        },
    })
}

/// `customOauth2ProviderConfig` beyond the shared client members.
fn parse_custom(
    v: &mut Validator,
    map: &Map<String, Value>,
    path: &str,
) -> Result<Option<ProviderConfig>, ApiError> {
    let unsupported: [(&str, &str); 4] = [
        (
            "privateKeyJwtConfig",
            "privateKeyJwtConfig (KMS-signed client assertions)",
        ),
        (
            "privateEndpoint",
            "privateEndpoint (VPC Lattice private connectivity)",
        ),
        (
            "privateEndpointOverrides",
            "privateEndpointOverrides (VPC Lattice private connectivity)",
        ),
        (
            "certificateConfigurations",
            "certificateConfigurations (private CA from S3 or Secrets Manager)",
        ),
    ];
    for (key, what) in unsupported {
        match opt(map, key) {
            None => {}
            Some(Value::Array(a)) if a.is_empty() && key == "privateEndpointOverrides" => {}
            Some(_) => v.fail(
                &join(path, key),
                format!("not supported by Latchkey: {what}"),
            ),
        }
    }

    let client_authentication_method = match opt_str(map, "clientAuthenticationMethod", path)? {
        None => Some(None),
        Some(m) => {
            let field = join(path, "clientAuthenticationMethod");
            match m {
                "CLIENT_SECRET_BASIC" => Some(Some(ClientAuthMethod::ClientSecretBasic)),
                "CLIENT_SECRET_POST" => Some(Some(ClientAuthMethod::ClientSecretPost)),
                "AWS_IAM_ID_TOKEN_JWT" | "PRIVATE_KEY_JWT" => {
                    v.fail(
                        &field,
                        format!("not supported by Latchkey: clientAuthenticationMethod {m}; use CLIENT_SECRET_BASIC or CLIENT_SECRET_POST"),
                    );
                    None
                }
                _ => {
                    v.fail(
                        &field,
                        "Member must satisfy enum value set: [CLIENT_SECRET_BASIC, CLIENT_SECRET_POST, AWS_IAM_ID_TOKEN_JWT, PRIVATE_KEY_JWT]",
                    );
                    None
                }
            }
        }
    };

    let on_behalf_of = match opt_obj(map, "onBehalfOfTokenExchangeConfig", path)? {
        None => Some(None),
        Some(obo) => parse_obo(v, obo, &join(path, "onBehalfOfTokenExchangeConfig"))?.map(Some),
    };

    let discovery_path = join(path, "oauthDiscovery");
    let discovery = match opt_obj(map, "oauthDiscovery", path)? {
        None => {
            v.fail(&discovery_path, "Member must not be null");
            None
        }
        Some(d) => parse_discovery(v, d, &discovery_path)?,
    };

    Ok(
        match (client_authentication_method, on_behalf_of, discovery) {
            (Some(client_authentication_method), Some(on_behalf_of), Some(discovery)) => {
                Some(ProviderConfig {
                    variant: ConfigVariant::Custom,
                    client_id: String::new(),
                    tenant_id: None,
                    discovery,
                    oidc_discovery_url: None,
                    client_authentication_method,
                    on_behalf_of,
                    quirks: Quirks::default(),
                    revocation_endpoint: None,
                    default_token_lifetime_secs: None,
                })
            }
            _ => None,
        },
    )
}

/// The `Oauth2Discovery` union.
fn parse_discovery(
    v: &mut Validator,
    map: &Map<String, Value>,
    path: &str,
) -> Result<Option<Discovery>, ApiError> {
    check_members(
        v,
        map,
        path,
        &["discoveryUrl", "authorizationServerMetadata"],
    );
    let url = opt(map, "discoveryUrl");
    let meta = opt(map, "authorizationServerMetadata");
    match (url, meta) {
        (Some(_), None) => {
            let Some(url) = opt_str(map, "discoveryUrl", path)? else {
                return Ok(None);
            };
            let field = join(path, "discoveryUrl");
            let ok = v.check(
                &field,
                matches_discovery_pattern(url),
                "Member must satisfy regular expression pattern: [^\\s?#]+/\\.well-known/(openid-configuration|oauth-authorization-server)(/[^\\s?#]+)?",
            ) && check_url_field(v, &field, url, UrlRole::Discovery);
            Ok(ok.then(|| Discovery::DiscoveryUrl(url.to_owned())))
        }
        (None, Some(m)) => {
            let field = join(path, "authorizationServerMetadata");
            Ok(parse_metadata(v, object(m, &field)?, &field)?.map(Discovery::Metadata))
        }
        (url, meta) => {
            let n = usize::from(url.is_some()) + usize::from(meta.is_some());
            v.fail(path, format!("Exactly one union member must be set (discoveryUrl or authorizationServerMetadata); got {n}"));
            Ok(None)
        }
    }
}

fn parse_metadata(
    v: &mut Validator,
    map: &Map<String, Value>,
    path: &str,
) -> Result<Option<AuthorizationServerMetadata>, ApiError> {
    check_members(
        v,
        map,
        path,
        &[
            "issuer",
            "authorizationEndpoint",
            "tokenEndpoint",
            "responseTypes",
            "tokenEndpointAuthMethods",
        ],
    );
    let mut required = |key: &str, role: UrlRole| -> Result<Option<String>, ApiError> {
        Ok(match opt_str(map, key, path)? {
            None => {
                v.fail(&join(path, key), "Member must not be null");
                None
            }
            Some(s) => check_url_field(v, &join(path, key), s, role).then(|| s.to_owned()),
        })
    };
    let issuer = required("issuer", UrlRole::Issuer)?;
    let authorization_endpoint = required("authorizationEndpoint", UrlRole::Endpoint)?;
    let token_endpoint = required("tokenEndpoint", UrlRole::Endpoint)?;
    let response_types = opt_strings(map, "responseTypes", path)?.unwrap_or_default();

    let mut methods_ok = true;
    let methods = opt_strings(map, "tokenEndpointAuthMethods", path)?;
    if let Some(methods) = &methods {
        let field = join(path, "tokenEndpointAuthMethods");
        methods_ok &= v.check(
            &field,
            (1..=2).contains(&methods.len()),
            "Member must have length between 1 and 2, inclusive",
        );
        for (i, m) in methods.iter().enumerate() {
            methods_ok &= v.check(
                &format!("{field}.{i}"),
                *m == BASIC || *m == POST,
                "Member must satisfy regular expression pattern: (client_secret_post|client_secret_basic)",
            );
        }
    }

    Ok(match (issuer, authorization_endpoint, token_endpoint) {
        (Some(issuer), Some(authorization_endpoint), Some(token_endpoint)) if methods_ok => {
            Some(AuthorizationServerMetadata {
                issuer,
                authorization_endpoint,
                token_endpoint,
                response_types: response_types.into_iter().map(str::to_owned).collect(),
                token_endpoint_auth_methods: methods
                    .unwrap_or_default()
                    .into_iter()
                    .map(str::to_owned)
                    .collect(),
            })
        }
        _ => None,
    })
}

/// `onBehalfOfTokenExchangeConfig`.
fn parse_obo(
    v: &mut Validator,
    map: &Map<String, Value>,
    path: &str,
) -> Result<Option<OnBehalfOfConfig>, ApiError> {
    check_members(
        v,
        map,
        path,
        &[
            "grantType",
            "tokenExchangeGrantTypeConfig",
            "onBehalfOfAuthenticationConfig",
        ],
    );
    let grant_type = match opt_str(map, "grantType", path)? {
        None => {
            v.fail(&join(path, "grantType"), "Member must not be null");
            None
        }
        Some("TOKEN_EXCHANGE") => Some(OboGrantType::TokenExchange),
        Some("JWT_AUTHORIZATION_GRANT") => Some(OboGrantType::JwtAuthorizationGrant),
        Some(_) => {
            v.fail(
                &join(path, "grantType"),
                "Member must satisfy enum value set: [TOKEN_EXCHANGE, JWT_AUTHORIZATION_GRANT]",
            );
            None
        }
    };

    let token_exchange = match opt_obj(map, "tokenExchangeGrantTypeConfig", path)? {
        None => Some(None),
        Some(te) => {
            let te_path = join(path, "tokenExchangeGrantTypeConfig");
            check_members(v, te, &te_path, &["actorTokenContent", "actorTokenScopes"]);
            if grant_type == Some(OboGrantType::JwtAuthorizationGrant) {
                v.fail(
                    &te_path,
                    "Member is only valid with grantType TOKEN_EXCHANGE",
                );
            }
            let field = join(&te_path, "actorTokenContent");
            let content = match opt_str(te, "actorTokenContent", &te_path)? {
                None => {
                    v.fail(&field, "Member must not be null");
                    None
                }
                Some("NONE") => Some(ActorTokenContent::None),
                Some("M2M") => Some(ActorTokenContent::M2m),
                Some("AWS_IAM_ID_TOKEN_JWT") => {
                    v.fail(
                        &field,
                        "not supported by Latchkey: actorTokenContent AWS_IAM_ID_TOKEN_JWT",
                    );
                    None
                }
                Some(_) => {
                    v.fail(
                        &field,
                        "Member must satisfy enum value set: [NONE, M2M, AWS_IAM_ID_TOKEN_JWT]",
                    );
                    None
                }
            };
            let scopes = opt_strings(te, "actorTokenScopes", &te_path)?;
            let mut scopes_ok = true;
            for (i, s) in scopes.iter().flatten().enumerate() {
                scopes_ok &= v.length(&format!("{te_path}.actorTokenScopes.{i}"), s, 1, 128);
            }
            match content {
                Some(actor_token_content) if scopes_ok => Some(Some(TokenExchangeConfig {
                    actor_token_content,
                    actor_token_scopes: scopes.map(|s| s.into_iter().map(str::to_owned).collect()),
                })),
                _ => None,
            }
        }
    };

    let no_client_authentication = match opt_obj(map, "onBehalfOfAuthenticationConfig", path)? {
        None => Some(false),
        Some(auth) => {
            let auth_path = join(path, "onBehalfOfAuthenticationConfig");
            check_members(v, auth, &auth_path, &["clientAuthenticationMethod"]);
            let field = join(&auth_path, "clientAuthenticationMethod");
            match opt_str(auth, "clientAuthenticationMethod", &auth_path)? {
                Some("NO_CLIENT") => Some(true),
                None => {
                    v.fail(&field, "Member must not be null");
                    None
                }
                Some(_) => {
                    v.fail(&field, "Member must satisfy enum value set: [NO_CLIENT]");
                    None
                }
            }
        }
    };

    Ok(
        match (grant_type, token_exchange, no_client_authentication) {
            (Some(grant_type), Some(token_exchange), Some(no_client_authentication)) => {
                Some(OnBehalfOfConfig {
                    grant_type,
                    token_exchange,
                    no_client_authentication,
                })
            }
            _ => None,
        },
    )
}

// ------------------------------------------------------------------------------ rendering

/// Renders `oauth2ProviderConfigOutput`, e.g.
/// `{"githubOauth2ProviderConfig": {"oauthDiscovery": {...}, "clientId": "..."}}`.
/// `resolved` — metadata the caller fetched from the discovery URL — wins over what is
/// stored (AgentCore returns the resolved discovery); without it a stored discovery URL is
/// returned as given. The client secret is not part of [`ProviderConfig`], so it can never
/// appear here.
pub fn render_output(
    cfg: &ProviderConfig,
    resolved: Option<&AuthorizationServerMetadata>,
) -> Value {
    let discovery = match (resolved, &cfg.discovery) {
        (Some(m), _) | (None, Discovery::Metadata(m)) => {
            json!({ "authorizationServerMetadata": metadata_json(m) })
        }
        (None, Discovery::DiscoveryUrl(url)) => json!({ "discoveryUrl": url }),
    };
    let mut body = Map::new();
    body.insert("oauthDiscovery".into(), discovery);
    if !cfg.client_id.is_empty() {
        body.insert("clientId".into(), json!(cfg.client_id));
    }
    if cfg.variant == ConfigVariant::Custom {
        if let Some(m) = cfg.client_authentication_method {
            body.insert("clientAuthenticationMethod".into(), json!(m.as_str()));
        }
        if let Some(obo) = &cfg.on_behalf_of {
            body.insert("onBehalfOfTokenExchangeConfig".into(), obo_json(obo));
        }
    }
    let mut out = Map::new();
    out.insert(cfg.variant.member_name().into(), Value::Object(body));
    Value::Object(out)
}

fn metadata_json(m: &AuthorizationServerMetadata) -> Value {
    let mut o = Map::new();
    o.insert("issuer".into(), json!(m.issuer));
    o.insert(
        "authorizationEndpoint".into(),
        json!(m.authorization_endpoint),
    );
    o.insert("tokenEndpoint".into(), json!(m.token_endpoint));
    if !m.response_types.is_empty() {
        o.insert("responseTypes".into(), json!(m.response_types));
    }
    // The output shape allows 1..2 of the two secret methods.
    let mut methods: Vec<&str> = Vec::new();
    for method in &m.token_endpoint_auth_methods {
        if (method == BASIC || method == POST) && !methods.contains(&method.as_str()) {
            methods.push(method);
        }
    }
    if !methods.is_empty() {
        o.insert("tokenEndpointAuthMethods".into(), json!(methods));
    }
    Value::Object(o)
}

fn obo_json(obo: &OnBehalfOfConfig) -> Value {
    let mut o = Map::new();
    o.insert("grantType".into(), json!(obo.grant_type.as_str()));
    if let Some(te) = &obo.token_exchange {
        let mut t = Map::new();
        t.insert(
            "actorTokenContent".into(),
            json!(te.actor_token_content.as_str()),
        );
        if let Some(scopes) = &te.actor_token_scopes {
            t.insert("actorTokenScopes".into(), json!(scopes));
        }
        o.insert("tokenExchangeGrantTypeConfig".into(), Value::Object(t));
    }
    if obo.no_client_authentication {
        o.insert(
            "onBehalfOfAuthenticationConfig".into(),
            json!({ "clientAuthenticationMethod": "NO_CLIENT" }),
        );
    }
    Value::Object(o)
}

// ------------------------------------------------------------------------------ URL rules

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UrlRole {
    Issuer,
    Endpoint,
    Discovery,
}

/// Full match of the model's `DiscoveryUrlType` pattern
/// `[^\s?#]+/\.well-known/(openid-configuration|oauth-authorization-server)(/[^\s?#]+)?`.
pub fn matches_discovery_pattern(s: &str) -> bool {
    const MARK: &str = "/.well-known/";
    if s.chars().any(|c| c.is_whitespace() || c == '?' || c == '#') {
        return false;
    }
    // Every position, overlapping ones included, as the regex may backtrack to any.
    s.char_indices().any(|(i, _)| {
        i > 0
            && s[i..].strip_prefix(MARK).is_some_and(|after| {
                ["openid-configuration", "oauth-authorization-server"]
                    .iter()
                    .any(|name| {
                        after.strip_prefix(name).is_some_and(|tail| {
                            tail.is_empty() || (tail.len() > 1 && tail.starts_with('/'))
                        })
                    })
            })
    })
}

/// Latchkey's URL rule (see the module docs). The message is client-safe.
fn check_url(value: &str, role: UrlRole) -> Result<(), String> {
    if value.is_empty() || value.chars().count() > MAX_URL_LEN {
        return Err(format!(
            "Member must have length between 1 and {MAX_URL_LEN}, inclusive"
        ));
    }
    if value
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
    {
        return Err(
            "Member must be a URL without whitespace, control characters or backslashes".into(),
        );
    }
    let lower = value.get(..8).unwrap_or(value).to_ascii_lowercase();
    if !(lower.starts_with("https://") || lower.starts_with("http://")) {
        return Err("Member must be an absolute http(s) URL".into());
    }
    let url =
        Url::parse(value).map_err(|_| "Member must be an absolute http(s) URL".to_string())?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => {
            return Err("Member must use https (plain http is allowed only for loopback hosts: localhost, 127.0.0.0/8, ::1)".into());
        }
        _ => return Err("Member must be an absolute http(s) URL".into()),
    }
    if url.host().is_none() {
        return Err("Member must be an absolute http(s) URL with a host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("Member must not contain user credentials".into());
    }
    if url.fragment().is_some() {
        return Err("Member must not contain a fragment".into());
    }
    if role == UrlRole::Issuer && url.query().is_some() {
        return Err("Member must not contain a query (an issuer is scheme, host and path)".into());
    }
    Ok(())
}

fn check_url_field(v: &mut Validator, field: &str, value: &str, role: UrlRole) -> bool {
    match check_url(value, role) {
        Ok(()) => true,
        Err(message) => {
            v.fail(field, message);
            false
        }
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// A Microsoft tenant: a GUID, a domain (`contoso.onmicrosoft.com`) or `common`,
/// `organizations`, `consumers` — all DNS-label shaped, so it is one safe path segment.
fn is_tenant(t: &str) -> bool {
    t.len() <= 253
        && t.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

// ------------------------------------------------------------------------------ JSON access

fn join(path: &str, key: &str) -> String {
    format!("{path}.{key}")
}

fn type_error(path: &str, expected: &str) -> ApiError {
    ApiError::cannot_parse(format!("Invalid type for '{path}': expected {expected}"))
}

fn object<'a>(value: &'a Value, path: &str) -> Result<&'a Map<String, Value>, ApiError> {
    value
        .as_object()
        .ok_or_else(|| type_error(path, "an object"))
}

/// A member, with JSON `null` treated as absent.
fn opt<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).filter(|v| !v.is_null())
}

fn opt_str<'a>(
    map: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a str>, ApiError> {
    match opt(map, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(type_error(&join(path, key), "a string")),
    }
}

fn opt_obj<'a>(
    map: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a Map<String, Value>>, ApiError> {
    opt(map, key)
        .map(|v| object(v, &join(path, key)))
        .transpose()
}

fn opt_strings<'a>(
    map: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<Vec<&'a str>>, ApiError> {
    let Some(value) = opt(map, key) else {
        return Ok(None);
    };
    let field = join(path, key);
    let items = value
        .as_array()
        .ok_or_else(|| type_error(&field, "a list"))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            item.as_str()
                .ok_or_else(|| type_error(&format!("{field}.{i}"), "a string"))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Unknown (non-null) members are failures: a feature Latchkey does not know is never
/// silently ignored.
fn check_members(v: &mut Validator, map: &Map<String, Value>, path: &str, allowed: &[&str]) {
    for (key, value) in map {
        if !value.is_null() && !allowed.contains(&key.as_str()) {
            v.fail(
                &join(path, key),
                "not supported by Latchkey: unknown member",
            );
        }
    }
}

// ------------------------------------------------------------------------------ tests

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::error::ValidationReason;
    use secrecy::ExposeSecret;

    fn parse(vendor: &str, input: Value) -> Result<ProviderInput, ApiError> {
        parse_create(&json!(vendor), &input)
    }

    fn ok(vendor: &str, input: Value) -> ProviderInput {
        match parse(vendor, input) {
            Ok(p) => p,
            Err(e) => panic!("expected {vendor} to parse, got {e:?}"),
        }
    }

    fn err(vendor: &str, input: Value) -> (Vec<(String, String)>, String) {
        match parse(vendor, input) {
            Ok(p) => panic!("expected a validation error, got {p:?}"),
            Err(ApiError::Validation {
                fields, message, ..
            }) => (
                fields.into_iter().map(|f| (f.name, f.message)).collect(),
                message,
            ),
            Err(other) => panic!("expected a validation error, got {other:?}"),
        }
    }

    fn has_field(fields: &[(String, String)], name: &str) -> bool {
        fields.iter().any(|(n, _)| n == name)
    }

    fn custom(discovery: Value) -> Value {
        json!({"customOauth2ProviderConfig": {"clientId": "cid", "clientSecret": "s3cr3t", "oauthDiscovery": discovery}})
    }

    fn custom_with(extra: Value) -> Value {
        let mut body = json!({"clientId": "cid", "oauthDiscovery": {"discoveryUrl": "https://idp.example.com/.well-known/openid-configuration"}});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        json!({ "customOauth2ProviderConfig": body })
    }

    fn rendered_metadata(out: &Value, member: &str) -> Value {
        out[member]["oauthDiscovery"]["authorizationServerMetadata"].clone()
    }

    #[test]
    fn all_25_vendor_names_round_trip() {
        let names = [
            "GoogleOauth2",
            "GithubOauth2",
            "SlackOauth2",
            "SalesforceOauth2",
            "MicrosoftOauth2",
            "CustomOauth2",
            "AtlassianOauth2",
            "LinkedinOauth2",
            "XOauth2",
            "OktaOauth2",
            "OneLoginOauth2",
            "PingOneOauth2",
            "FacebookOauth2",
            "YandexOauth2",
            "RedditOauth2",
            "ZoomOauth2",
            "TwitchOauth2",
            "SpotifyOauth2",
            "DropboxOauth2",
            "NotionOauth2",
            "HubspotOauth2",
            "CyberArkOauth2",
            "FusionAuthOauth2",
            "Auth0Oauth2",
            "CognitoOauth2",
        ];
        assert_eq!(Vendor::ALL.len(), names.len());
        for (name, vendor) in names.iter().zip(Vendor::ALL) {
            assert_eq!(vendor.as_str(), *name);
            assert_eq!(name.parse::<Vendor>().unwrap(), vendor);
            assert_eq!(serde_json::to_value(vendor).unwrap(), json!(name));
            assert_eq!(
                serde_json::from_value::<Vendor>(json!(name)).unwrap(),
                vendor
            );
            assert_eq!(vendor.to_string(), *name);
        }
        for bad in ["githuboauth2", "Github", "", "GithubOauth2 "] {
            let Err(ApiError::Validation { fields, .. }) = bad.parse::<Vendor>() else {
                panic!("{bad} parsed")
            };
            assert_eq!(fields[0].name, "credentialProviderVendor");
        }
        let (fields, _) = err(
            "Nope",
            json!({"githubOauth2ProviderConfig": {"clientId": "a"}}),
        );
        assert!(has_field(&fields, "credentialProviderVendor"));
    }

    #[test]
    fn builtin_presets_parse_and_render() {
        let cases = [
            (
                "GoogleOauth2",
                "googleOauth2ProviderConfig",
                "https://accounts.google.com/o/oauth2/v2/auth",
                "https://oauth2.googleapis.com/token",
            ),
            (
                "GithubOauth2",
                "githubOauth2ProviderConfig",
                "https://github.com/login/oauth/authorize",
                "https://github.com/login/oauth/access_token",
            ),
            (
                "SlackOauth2",
                "slackOauth2ProviderConfig",
                "https://slack.com/oauth/v2/authorize",
                "https://slack.com/api/oauth.v2.access",
            ),
            (
                "SalesforceOauth2",
                "salesforceOauth2ProviderConfig",
                "https://login.salesforce.com/services/oauth2/authorize",
                "https://login.salesforce.com/services/oauth2/token",
            ),
            (
                "AtlassianOauth2",
                "atlassianOauth2ProviderConfig",
                "https://auth.atlassian.com/authorize",
                "https://auth.atlassian.com/oauth/token",
            ),
            (
                "LinkedinOauth2",
                "linkedinOauth2ProviderConfig",
                "https://www.linkedin.com/oauth/v2/authorization",
                "https://www.linkedin.com/oauth/v2/accessToken",
            ),
            (
                "MicrosoftOauth2",
                "microsoftOauth2ProviderConfig",
                "https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
                "https://login.microsoftonline.com/common/oauth2/v2.0/token",
            ),
        ];
        for (vendor, member, authorize, token) in cases {
            let p = ok(
                vendor,
                json!({ member: {"clientId": "client-1", "clientSecret": "pw"} }),
            );
            assert_eq!(p.vendor.as_str(), vendor);
            assert_eq!(p.config.variant.member_name(), member);
            assert_eq!(p.config.client_id, "client-1");
            assert_eq!(p.client_secret.as_ref().unwrap().expose_secret(), "pw");
            let m = p.config.metadata().unwrap();
            assert_eq!(m.authorization_endpoint, authorize);
            assert_eq!(m.token_endpoint, token);
            let out = render_output(&p.config, None);
            assert_eq!(out.as_object().unwrap().len(), 1);
            assert_eq!(out[member]["clientId"], "client-1");
            let md = rendered_metadata(&out, member);
            assert_eq!(md["authorizationEndpoint"], authorize);
            assert_eq!(md["tokenEndpoint"], token);
            assert!(md["issuer"].as_str().unwrap().starts_with("https://"));
            assert_eq!(md["responseTypes"], json!(["code"]));
            let methods = md["tokenEndpointAuthMethods"].as_array().unwrap();
            assert!((1..=2).contains(&methods.len()));
            // Stored JSON round-trips exactly.
            let stored = serde_json::to_value(&p.config).unwrap();
            assert_eq!(
                serde_json::from_value::<ProviderConfig>(stored).unwrap(),
                p.config
            );
        }
    }

    #[test]
    fn preset_quirks_and_extras() {
        let g = ok(
            "GoogleOauth2",
            json!({"googleOauth2ProviderConfig": {"clientId": "a"}}),
        )
        .config;
        assert_eq!(
            g.quirks
                .authorize_params
                .get("access_type")
                .map(String::as_str),
            Some("offline")
        );
        assert_eq!(
            g.quirks.authorize_params.get("prompt").map(String::as_str),
            Some("consent")
        );
        assert_eq!(
            g.revocation_endpoint.as_deref(),
            Some("https://oauth2.googleapis.com/revoke")
        );
        assert_eq!(
            g.oidc_discovery_url.as_deref(),
            Some("https://accounts.google.com/.well-known/openid-configuration")
        );

        let gh = ok(
            "GithubOauth2",
            json!({"githubOauth2ProviderConfig": {"clientId": "a"}}),
        )
        .config;
        assert!(gh.quirks.token_accept_json);
        assert_eq!(gh.oidc_discovery_url, None);
        assert_eq!(
            gh.client_auth_method(None),
            ClientAuthMethod::ClientSecretPost
        );

        let s = ok(
            "SlackOauth2",
            json!({"slackOauth2ProviderConfig": {"clientId": "a"}}),
        )
        .config;
        assert!(s.quirks.slack_user_token);
        assert_eq!(s.quirks.scope_separator, ",");
        assert_eq!(
            s.revocation_endpoint.as_deref(),
            Some("https://slack.com/api/auth.revoke")
        );

        let a = ok(
            "AtlassianOauth2",
            json!({"atlassianOauth2ProviderConfig": {"clientId": "a"}}),
        )
        .config;
        assert_eq!(
            a.quirks
                .authorize_params
                .get("audience")
                .map(String::as_str),
            Some("api.atlassian.com")
        );
        assert_eq!(
            a.quirks.authorize_params.get("prompt").map(String::as_str),
            Some("consent")
        );

        let sf = ok(
            "SalesforceOauth2",
            json!({"salesforceOauth2ProviderConfig": {"clientId": "a"}}),
        )
        .config;
        assert_eq!(
            sf.revocation_endpoint.as_deref(),
            Some("https://login.salesforce.com/services/oauth2/revoke")
        );
        assert_eq!(
            sf.oidc_discovery_url.as_deref(),
            Some("https://login.salesforce.com/.well-known/openid-configuration")
        );
        assert_eq!(sf.default_token_lifetime_secs, Some(7200));
        assert_eq!(sf.quirks.scope_separator, " ");
    }

    #[test]
    fn included_vendors_with_fixed_endpoints_get_presets() {
        for vendor in Vendor::ALL
            .into_iter()
            .filter(|v| v.config_variant() == ConfigVariant::Included)
        {
            let input =
                json!({"includedOauth2ProviderConfig": {"clientId": "a", "clientSecret": "b"}});
            match preset(vendor, "") {
                Some(p) => {
                    let cfg = ok(vendor.as_str(), input).config;
                    assert_eq!(cfg.metadata().unwrap(), &p.metadata());
                    let out = render_output(&cfg, None);
                    assert_eq!(
                        rendered_metadata(&out, "includedOauth2ProviderConfig")["tokenEndpoint"],
                        json!(p.token_endpoint)
                    );
                }
                None => {
                    let (fields, message) = err(vendor.as_str(), input);
                    assert!(
                        has_field(
                            &fields,
                            "oauth2ProviderConfigInput.includedOauth2ProviderConfig"
                        ),
                        "{vendor}: {fields:?}"
                    );
                    assert!(message.contains("has no fixed endpoints"), "{message}");
                }
            }
        }
        let x = ok(
            "XOauth2",
            json!({"includedOauth2ProviderConfig": {"clientId": "a"}}),
        )
        .config;
        assert_eq!(
            x.metadata().unwrap().authorization_endpoint,
            "https://x.com/i/oauth2/authorize"
        );
        assert_eq!(
            x.client_auth_method(None),
            ClientAuthMethod::ClientSecretBasic
        );
        let d = ok(
            "DropboxOauth2",
            json!({"includedOauth2ProviderConfig": {"clientId": "a"}}),
        )
        .config;
        assert_eq!(
            d.quirks
                .authorize_params
                .get("token_access_type")
                .map(String::as_str),
            Some("offline")
        );
    }

    #[test]
    fn included_tenant_vendors() {
        // Issuer only: OIDC discovery derived from it.
        let okta = ok(
            "OktaOauth2",
            json!({"includedOauth2ProviderConfig": {"clientId": "a", "issuer": "https://dev-1.okta.com/oauth2/default/"}}),
        );
        assert_eq!(
            okta.config.discovery_url(),
            Some("https://dev-1.okta.com/oauth2/default/.well-known/openid-configuration")
        );
        assert!(matches_discovery_pattern(
            okta.config.discovery_url().unwrap()
        ));
        assert_eq!(
            okta.config.quirks.offline_scope.as_deref(),
            Some("offline_access")
        );
        let out = render_output(&okta.config, None);
        assert_eq!(
            out["includedOauth2ProviderConfig"]["oauthDiscovery"]["discoveryUrl"],
            json!(okta.config.discovery_url())
        );

        // All three: explicit metadata.
        let cognito = ok(
            "CognitoOauth2",
            json!({"includedOauth2ProviderConfig": {
                "clientId": "a",
                "issuer": "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_abc",
                "authorizationEndpoint": "https://x.auth.us-east-1.amazoncognito.com/oauth2/authorize",
                "tokenEndpoint": "https://x.auth.us-east-1.amazoncognito.com/oauth2/token"
            }}),
        );
        let m = cognito.config.metadata().unwrap();
        assert_eq!(
            m.token_endpoint,
            "https://x.auth.us-east-1.amazoncognito.com/oauth2/token"
        );

        // Endpoints without issuer for a tenant vendor: issuer required.
        let (fields, _) = err(
            "Auth0Oauth2",
            json!({"includedOauth2ProviderConfig": {"clientId": "a", "authorizationEndpoint": "https://t.auth0.com/authorize", "tokenEndpoint": "https://t.auth0.com/oauth/token"}}),
        );
        assert!(has_field(
            &fields,
            "oauth2ProviderConfigInput.includedOauth2ProviderConfig.issuer"
        ));

        // Half the endpoints.
        let (fields, _) = err(
            "OktaOauth2",
            json!({"includedOauth2ProviderConfig": {"clientId": "a", "issuer": "https://o.okta.com", "authorizationEndpoint": "https://o.okta.com/authorize"}}),
        );
        assert!(has_field(
            &fields,
            "oauth2ProviderConfigInput.includedOauth2ProviderConfig.tokenEndpoint"
        ));

        // Auth0 pins client_secret_post.
        let auth0 = ok(
            "Auth0Oauth2",
            json!({"includedOauth2ProviderConfig": {"clientId": "a", "issuer": "https://t.auth0.com/"}}),
        );
        assert_eq!(
            auth0.config.client_auth_method(None),
            ClientAuthMethod::ClientSecretPost
        );

        // A fixed-endpoint vendor overridden for an isolated tenant keeps its issuer preset.
        let zoom = ok(
            "ZoomOauth2",
            json!({"includedOauth2ProviderConfig": {"clientId": "a", "authorizationEndpoint": "https://zoom.example.com/oauth/authorize", "tokenEndpoint": "https://zoom.example.com/oauth/token"}}),
        );
        let m = zoom.config.metadata().unwrap();
        assert_eq!(m.issuer, "https://zoom.us");
        assert_eq!(m.token_endpoint, "https://zoom.example.com/oauth/token");
        assert_eq!(zoom.config.revocation_endpoint, None);

        // Issuer alone for a fixed-endpoint vendor is ambiguous.
        let (fields, _) = err(
            "ZoomOauth2",
            json!({"includedOauth2ProviderConfig": {"clientId": "a", "issuer": "https://zoom.us"}}),
        );
        assert!(has_field(
            &fields,
            "oauth2ProviderConfigInput.includedOauth2ProviderConfig.authorizationEndpoint"
        ));
    }

    #[test]
    fn union_needs_exactly_one_member() {
        let (fields, _) = err("GithubOauth2", json!({}));
        assert!(has_field(&fields, "oauth2ProviderConfigInput"));
        let (fields, message) = err(
            "GithubOauth2",
            json!({"githubOauth2ProviderConfig": {"clientId": "a"}, "googleOauth2ProviderConfig": {"clientId": "b"}}),
        );
        assert!(has_field(&fields, "oauth2ProviderConfigInput"));
        assert!(message.contains("got 2"), "{message}");
        let (fields, _) = err(
            "GithubOauth2",
            json!({"gitlabOauth2ProviderConfig": {"clientId": "a"}}),
        );
        assert!(has_field(
            &fields,
            "oauth2ProviderConfigInput.gitlabOauth2ProviderConfig"
        ));
        let (fields, _) = err("GithubOauth2", Value::Null);
        assert!(has_field(&fields, "oauth2ProviderConfigInput"));
        let (fields, _) = err("GithubOauth2", json!({"githubOauth2ProviderConfig": null}));
        assert!(has_field(&fields, "oauth2ProviderConfigInput"));
        let Err(ApiError::Validation { reason, .. }) =
            parse_create(&json!("GithubOauth2"), &json!("nope"))
        else {
            panic!()
        };
        assert_eq!(reason, ValidationReason::CannotParse);
        let Err(ApiError::Validation { reason, .. }) = parse_create(
            &json!(7),
            &json!({"githubOauth2ProviderConfig": {"clientId": "a"}}),
        ) else {
            panic!()
        };
        assert_eq!(reason, ValidationReason::CannotParse);
        let (fields, _) = err("GithubOauth2", json!({"githubOauth2ProviderConfig": {}}));
        assert!(has_field(
            &fields,
            "oauth2ProviderConfigInput.githubOauth2ProviderConfig.clientId"
        ));
    }

    #[test]
    fn vendor_variant_mismatch() {
        let (fields, message) = err(
            "GoogleOauth2",
            json!({"githubOauth2ProviderConfig": {"clientId": "a"}}),
        );
        assert_eq!(fields.len(), 1);
        assert_eq!(fields[0].0, "credentialProviderVendor");
        assert!(message.contains("googleOauth2ProviderConfig"), "{message}");
        let (fields, _) = err(
            "GithubOauth2",
            custom(
                json!({"discoveryUrl": "https://idp.example.com/.well-known/openid-configuration"}),
            ),
        );
        assert!(has_field(&fields, "credentialProviderVendor"));
        let (fields, message) = err(
            "CustomOauth2",
            json!({"includedOauth2ProviderConfig": {"clientId": "a"}}),
        );
        assert!(has_field(&fields, "credentialProviderVendor"));
        assert!(message.contains("customOauth2ProviderConfig"));
        let (fields, _) = err(
            "OktaOauth2",
            json!({"githubOauth2ProviderConfig": {"clientId": "a"}}),
        );
        assert!(has_field(&fields, "credentialProviderVendor"));
        let (fields, _) = err(
            "GithubOauth2",
            json!({"includedOauth2ProviderConfig": {"clientId": "a"}}),
        );
        assert!(has_field(&fields, "credentialProviderVendor"));
    }

    #[test]
    fn lengths_are_enforced() {
        let long = "a".repeat(257);
        let (fields, _) = err(
            "GithubOauth2",
            json!({"githubOauth2ProviderConfig": {"clientId": long}}),
        );
        assert_eq!(fields.len(), 1);
        assert_eq!(
            fields[0].0,
            "oauth2ProviderConfigInput.githubOauth2ProviderConfig.clientId"
        );
        assert!(fields[0].1.contains("between 1 and 256"));
        ok(
            "GithubOauth2",
            json!({"githubOauth2ProviderConfig": {"clientId": "a".repeat(256)}}),
        );
        let (fields, _) = err(
            "GithubOauth2",
            json!({"githubOauth2ProviderConfig": {"clientId": ""}}),
        );
        assert!(has_field(
            &fields,
            "oauth2ProviderConfigInput.githubOauth2ProviderConfig.clientId"
        ));

        // Custom allows an empty or absent client id.
        let p = ok(
            "CustomOauth2",
            json!({"customOauth2ProviderConfig": {"clientId": "", "oauthDiscovery": {"discoveryUrl": "https://i.example/.well-known/openid-configuration"}}}),
        );
        assert_eq!(p.config.client_id, "");
        assert!(
            render_output(&p.config, None)["customOauth2ProviderConfig"]
                .get("clientId")
                .is_none()
        );
        let (fields, _) = err("CustomOauth2", custom_with(json!({"clientId": long})));
        assert!(has_field(
            &fields,
            "oauth2ProviderConfigInput.customOauth2ProviderConfig.clientId"
        ));

        let (fields, _) = err(
            "GithubOauth2",
            json!({"githubOauth2ProviderConfig": {"clientId": "a", "clientSecret": "s".repeat(2049)}}),
        );
        assert!(has_field(
            &fields,
            "oauth2ProviderConfigInput.githubOauth2ProviderConfig.clientSecret"
        ));
        assert!(ok("GithubOauth2", json!({"githubOauth2ProviderConfig": {"clientId": "a", "clientSecret": "s".repeat(2048)}})).client_secret.is_some());

        let (fields, _) = err(
            "MicrosoftOauth2",
            json!({"microsoftOauth2ProviderConfig": {"clientId": "a", "tenantId": ""}}),
        );
        assert!(has_field(
            &fields,
            "oauth2ProviderConfigInput.microsoftOauth2ProviderConfig.tenantId"
        ));
    }

    #[test]
    fn empty_secret_means_absent() {
        let p = ok(
            "GithubOauth2",
            json!({"githubOauth2ProviderConfig": {"clientId": "a", "clientSecret": ""}}),
        );
        assert!(p.client_secret.is_none());
        let p = ok(
            "GithubOauth2",
            json!({"githubOauth2ProviderConfig": {"clientId": "a"}}),
        );
        assert!(p.client_secret.is_none());
        let p = ok(
            "GithubOauth2",
            json!({"githubOauth2ProviderConfig": {"clientId": "a", "clientSecretSource": "MANAGED"}}),
        );
        assert!(p.client_secret.is_none());
    }

    #[test]
    fn bad_discovery_urls() {
        let field =
            "oauth2ProviderConfigInput.customOauth2ProviderConfig.oauthDiscovery.discoveryUrl";
        for bad in [
            "https://idp.example.com/openid-configuration",
            "https://idp.example.com/.well-known/openid-configuration?x=1",
            "https://idp.example.com/.well-known/openid-configuration#frag",
            "https://idp.example.com/.well-known/openid-configuration ",
            "https://idp example.com/.well-known/openid-configuration",
            "ftp://idp.example.com/.well-known/openid-configuration",
            "http://idp.example.com/.well-known/openid-configuration",
            "https://idp.example.com/.well-known/jwks.json",
            "/.well-known/openid-configuration",
            "https://idp.example.com/.well-known/openid-configuration/",
            "https://user:pw@idp.example.com/.well-known/openid-configuration",
            "https:idp.example.com/.well-known/openid-configuration",
            "https:\\\\idp.example.com/.well-known/openid-configuration",
        ] {
            let (fields, _) = err("CustomOauth2", custom(json!({ "discoveryUrl": bad })));
            assert!(has_field(&fields, field), "{bad}: {fields:?}");
        }
        for good in [
            "https://idp.example.com/.well-known/openid-configuration",
            "https://idp.example.com/tenant/.well-known/oauth-authorization-server",
            "https://idp.example.com/.well-known/oauth-authorization-server/tenant1",
            "http://localhost:8080/.well-known/openid-configuration",
            "http://127.0.0.1:9000/realms/x/.well-known/openid-configuration",
            "http://[::1]/.well-known/openid-configuration",
        ] {
            let p = ok("CustomOauth2", custom(json!({ "discoveryUrl": good })));
            assert_eq!(p.config.discovery_url(), Some(good));
            let out = render_output(&p.config, None);
            assert_eq!(
                out["customOauth2ProviderConfig"]["oauthDiscovery"]["discoveryUrl"],
                good
            );
        }
        assert!(matches_discovery_pattern(
            "x/.well-known/.well-known/openid-configuration"
        ));
        assert!(!matches_discovery_pattern(
            "https://a/.well-known/openid-configurationX"
        ));
        assert!(!matches_discovery_pattern(
            "https://a/.well-known/openid-configuration/a b"
        ));
    }

    #[test]
    fn metadata_urls() {
        let md = |issuer: &str, auth: &str, token: &str| {
            custom(
                json!({"authorizationServerMetadata": {"issuer": issuer, "authorizationEndpoint": auth, "tokenEndpoint": token}}),
            )
        };
        let path = "oauth2ProviderConfigInput.customOauth2ProviderConfig.oauthDiscovery.authorizationServerMetadata";
        let (fields, message) = err(
            "CustomOauth2",
            md(
                "https://idp.example.com",
                "http://idp.example.com/authorize",
                "https://idp.example.com/token",
            ),
        );
        assert_eq!(fields.len(), 1);
        assert_eq!(fields[0].0, format!("{path}.authorizationEndpoint"));
        assert!(message.contains("https"), "{message}");
        let (fields, _) = err(
            "CustomOauth2",
            md(
                "http://10.0.0.1",
                "https://idp.example.com/authorize",
                "https://idp.example.com/token",
            ),
        );
        assert!(has_field(&fields, &format!("{path}.issuer")));
        let (fields, _) = err(
            "CustomOauth2",
            md(
                "https://idp.example.com?x=1",
                "https://idp.example.com/a",
                "https://idp.example.com/t#f",
            ),
        );
        assert!(has_field(&fields, &format!("{path}.issuer")));
        assert!(has_field(&fields, &format!("{path}.tokenEndpoint")));
        let (fields, _) = err(
            "CustomOauth2",
            md("https://idp.example.com", "not a url", "/token"),
        );
        assert!(has_field(&fields, &format!("{path}.authorizationEndpoint")));
        assert!(has_field(&fields, &format!("{path}.tokenEndpoint")));
        let (fields, _) = err(
            "CustomOauth2",
            custom(json!({"authorizationServerMetadata": {"issuer": "https://idp.example.com"}})),
        );
        assert!(has_field(&fields, &format!("{path}.authorizationEndpoint")));
        assert!(has_field(&fields, &format!("{path}.tokenEndpoint")));

        // Loopback http is fine; a query on an endpoint is fine.
        let p = ok(
            "CustomOauth2",
            md(
                "http://localhost:9000",
                "http://127.0.0.1:9000/authorize?x=1",
                "http://[::1]:9000/token",
            ),
        );
        let m = p.config.metadata().unwrap();
        assert_eq!(
            m.authorization_endpoint,
            "http://127.0.0.1:9000/authorize?x=1"
        );

        // Both discovery members, or none.
        let (fields, _) = err(
            "CustomOauth2",
            custom(
                json!({"discoveryUrl": "https://i.example/.well-known/openid-configuration", "authorizationServerMetadata": {"issuer": "https://i.example", "authorizationEndpoint": "https://i.example/a", "tokenEndpoint": "https://i.example/t"}}),
            ),
        );
        assert!(has_field(
            &fields,
            "oauth2ProviderConfigInput.customOauth2ProviderConfig.oauthDiscovery"
        ));
        let (fields, _) = err("CustomOauth2", custom(json!({})));
        assert!(has_field(
            &fields,
            "oauth2ProviderConfigInput.customOauth2ProviderConfig.oauthDiscovery"
        ));
        let (fields, _) = err(
            "CustomOauth2",
            json!({"customOauth2ProviderConfig": {"clientId": "a"}}),
        );
        assert!(has_field(
            &fields,
            "oauth2ProviderConfigInput.customOauth2ProviderConfig.oauthDiscovery"
        ));
    }

    #[test]
    fn token_endpoint_auth_methods() {
        let with = |methods: Value| {
            custom(
                json!({"authorizationServerMetadata": {"issuer": "https://i.example", "authorizationEndpoint": "https://i.example/a", "tokenEndpoint": "https://i.example/t", "tokenEndpointAuthMethods": methods, "responseTypes": ["code"]}}),
            )
        };
        let field = "oauth2ProviderConfigInput.customOauth2ProviderConfig.oauthDiscovery.authorizationServerMetadata.tokenEndpointAuthMethods";
        let (fields, _) = err("CustomOauth2", with(json!([])));
        assert!(has_field(&fields, field));
        let (fields, _) = err("CustomOauth2", with(json!([POST, BASIC, POST])));
        assert!(has_field(&fields, field));
        let (fields, _) = err("CustomOauth2", with(json!(["private_key_jwt"])));
        assert!(has_field(&fields, &format!("{field}.0")));
        let p = ok("CustomOauth2", with(json!([POST])));
        assert_eq!(
            p.config.client_auth_method(None),
            ClientAuthMethod::ClientSecretPost
        );
        let out = render_output(&p.config, None);
        let md = rendered_metadata(&out, "customOauth2ProviderConfig");
        assert_eq!(md["tokenEndpointAuthMethods"], json!([POST]));
        assert_eq!(md["responseTypes"], json!(["code"]));
        let p = ok("CustomOauth2", with(json!([POST, BASIC])));
        assert_eq!(
            p.config.client_auth_method(None),
            ClientAuthMethod::ClientSecretBasic
        );
        // The explicit method wins.
        let mut body = with(json!([BASIC]));
        body["customOauth2ProviderConfig"]["clientAuthenticationMethod"] =
            json!("CLIENT_SECRET_POST");
        let p = ok("CustomOauth2", body);
        assert_eq!(
            p.config.client_auth_method(None),
            ClientAuthMethod::ClientSecretPost
        );
        let out = render_output(&p.config, None);
        assert_eq!(
            out["customOauth2ProviderConfig"]["clientAuthenticationMethod"],
            "CLIENT_SECRET_POST"
        );
        let (fields, _) = err(
            "CustomOauth2",
            custom_with(json!({"clientAuthenticationMethod": "BOGUS"})),
        );
        assert!(has_field(
            &fields,
            "oauth2ProviderConfigInput.customOauth2ProviderConfig.clientAuthenticationMethod"
        ));
    }

    #[test]
    fn unsupported_features_are_rejected() {
        let cases = [
            json!({"privateEndpoint": {"selfManagedLatticeResource": {"resourceConfigurationIdentifier": "rcfg-0123456789abcdefg"}}}),
            json!({"privateEndpointOverrides": [{"domain": "a.example", "privateEndpoint": {}}]}),
            json!({"certificateConfigurations": [{"s3": {"uri": "s3://b/k"}}]}),
            json!({"privateKeyJwtConfig": {"signingAlgorithm": "RS256"}}),
            json!({"clientAuthenticationMethod": "PRIVATE_KEY_JWT"}),
            json!({"clientAuthenticationMethod": "AWS_IAM_ID_TOKEN_JWT"}),
            json!({"clientSecretSource": "EXTERNAL"}),
            json!({"clientSecretConfig": {"secretId": "s", "jsonKey": "k"}}),
            json!({"onBehalfOfTokenExchangeConfig": {"grantType": "TOKEN_EXCHANGE", "tokenExchangeGrantTypeConfig": {"actorTokenContent": "AWS_IAM_ID_TOKEN_JWT"}}}),
            json!({"someFutureMember": true}),
        ];
        for extra in cases {
            let (fields, message) = err("CustomOauth2", custom_with(extra.clone()));
            assert!(
                message.contains("not supported by Latchkey"),
                "{extra}: {message}"
            );
            assert!(
                fields
                    .iter()
                    .all(|(n, _)| n
                        .starts_with("oauth2ProviderConfigInput.customOauth2ProviderConfig.")),
                "{fields:?}"
            );
        }
        for extra in [
            json!({"clientSecretSource": "EXTERNAL"}),
            json!({"clientSecretConfig": {"secretId": "s", "jsonKey": "k"}}),
        ] {
            let mut body = json!({"clientId": "a"});
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            let (_, message) = err(
                "GithubOauth2",
                json!({ "githubOauth2ProviderConfig": body }),
            );
            assert!(message.contains("not supported by Latchkey"), "{message}");
        }
        let (fields, _) = err(
            "GithubOauth2",
            json!({"githubOauth2ProviderConfig": {"clientId": "a", "clientSecretSource": "OTHER"}}),
        );
        assert!(has_field(
            &fields,
            "oauth2ProviderConfigInput.githubOauth2ProviderConfig.clientSecretSource"
        ));
        // tenantId belongs to Microsoft only.
        let (fields, _) = err(
            "GithubOauth2",
            json!({"githubOauth2ProviderConfig": {"clientId": "a", "tenantId": "common"}}),
        );
        assert!(has_field(
            &fields,
            "oauth2ProviderConfigInput.githubOauth2ProviderConfig.tenantId"
        ));
        // Empty overrides and explicit nulls are harmless.
        ok(
            "CustomOauth2",
            custom_with(json!({"privateEndpointOverrides": [], "privateEndpoint": null})),
        );
    }

    #[test]
    fn on_behalf_of_is_stored_and_rendered() {
        let obo = json!({
            "grantType": "TOKEN_EXCHANGE",
            "tokenExchangeGrantTypeConfig": {"actorTokenContent": "M2M", "actorTokenScopes": ["a", "b"]},
            "onBehalfOfAuthenticationConfig": {"clientAuthenticationMethod": "NO_CLIENT"}
        });
        let p = ok(
            "CustomOauth2",
            custom_with(json!({ "onBehalfOfTokenExchangeConfig": obo.clone() })),
        );
        let stored = p.config.on_behalf_of.clone().unwrap();
        assert_eq!(stored.grant_type, OboGrantType::TokenExchange);
        assert!(stored.no_client_authentication);
        let out = render_output(&p.config, None);
        assert_eq!(
            out["customOauth2ProviderConfig"]["onBehalfOfTokenExchangeConfig"],
            obo
        );
        let back: ProviderConfig =
            serde_json::from_value(serde_json::to_value(&p.config).unwrap()).unwrap();
        assert_eq!(back, p.config);

        let jwt = json!({"grantType": "JWT_AUTHORIZATION_GRANT"});
        let p = ok(
            "CustomOauth2",
            custom_with(json!({ "onBehalfOfTokenExchangeConfig": jwt.clone() })),
        );
        assert_eq!(
            render_output(&p.config, None)["customOauth2ProviderConfig"]["onBehalfOfTokenExchangeConfig"],
            jwt
        );

        let base =
            "oauth2ProviderConfigInput.customOauth2ProviderConfig.onBehalfOfTokenExchangeConfig";
        let (fields, _) = err(
            "CustomOauth2",
            custom_with(json!({"onBehalfOfTokenExchangeConfig": {}})),
        );
        assert!(has_field(&fields, &format!("{base}.grantType")));
        let (fields, _) = err(
            "CustomOauth2",
            custom_with(
                json!({"onBehalfOfTokenExchangeConfig": {"grantType": "TOKEN_EXCHANGE", "tokenExchangeGrantTypeConfig": {"actorTokenContent": "M2M", "actorTokenScopes": [""]}}}),
            ),
        );
        assert!(has_field(
            &fields,
            &format!("{base}.tokenExchangeGrantTypeConfig.actorTokenScopes.0")
        ));
        let (fields, _) = err(
            "CustomOauth2",
            custom_with(
                json!({"onBehalfOfTokenExchangeConfig": {"grantType": "TOKEN_EXCHANGE", "onBehalfOfAuthenticationConfig": {"clientAuthenticationMethod": "BASIC"}}}),
            ),
        );
        assert!(has_field(
            &fields,
            &format!("{base}.onBehalfOfAuthenticationConfig.clientAuthenticationMethod")
        ));
        let (fields, _) = err(
            "CustomOauth2",
            custom_with(
                json!({"onBehalfOfTokenExchangeConfig": {"grantType": "JWT_AUTHORIZATION_GRANT", "tokenExchangeGrantTypeConfig": {"actorTokenContent": "NONE"}}}),
            ),
        );
        assert!(has_field(
            &fields,
            &format!("{base}.tokenExchangeGrantTypeConfig")
        ));
    }

    #[test]
    fn secrets_never_leak() {
        let secret = "sUp3r-s3cret-VALUE-9f8e7d";
        let inputs = [
            (
                "GithubOauth2",
                json!({"githubOauth2ProviderConfig": {"clientId": "a", "clientSecret": secret}}),
            ),
            (
                "MicrosoftOauth2",
                json!({"microsoftOauth2ProviderConfig": {"clientId": "a", "clientSecret": secret, "tenantId": "contoso.onmicrosoft.com"}}),
            ),
            (
                "SpotifyOauth2",
                json!({"includedOauth2ProviderConfig": {"clientId": "a", "clientSecret": secret}}),
            ),
            (
                "CustomOauth2",
                custom(
                    json!({"discoveryUrl": "https://i.example/.well-known/openid-configuration"}),
                ),
            ),
        ];
        for (vendor, mut input) in inputs {
            if vendor == "CustomOauth2" {
                input["customOauth2ProviderConfig"]["clientSecret"] = json!(secret);
            }
            let p = ok(vendor, input);
            assert_eq!(p.client_secret.as_ref().unwrap().expose_secret(), secret);
            assert!(!format!("{p:?}").contains(secret));
            assert!(!format!("{:?}", p.config).contains(secret));
            assert!(!render_output(&p.config, None).to_string().contains(secret));
            assert!(!serde_json::to_string(&p.config).unwrap().contains(secret));
        }
        // Nor in error messages.
        let (fields, message) = err(
            "GithubOauth2",
            json!({"githubOauth2ProviderConfig": {"clientId": "", "clientSecret": format!("{secret}{}", "x".repeat(2048))}}),
        );
        assert!(!message.contains(secret));
        assert!(fields.iter().all(|(_, m)| !m.contains(secret)));
    }

    #[test]
    fn microsoft_tenants() {
        let ms = |tenant: &str| json!({"microsoftOauth2ProviderConfig": {"clientId": "a", "tenantId": tenant}});
        for bad in [
            "../evil",
            "a/b",
            "evil?x=1",
            "evil#x",
            "a b",
            "..",
            ".",
            "-a",
            "a..b",
            "%2e%2e",
            "a\\b",
            "tenant@evil.com",
        ] {
            let (fields, _) = err("MicrosoftOauth2", ms(bad));
            assert!(
                has_field(
                    &fields,
                    "oauth2ProviderConfigInput.microsoftOauth2ProviderConfig.tenantId"
                ),
                "{bad}"
            );
        }
        for (tenant, expect) in [
            (
                "72f988bf-86f1-41af-91ab-2d7cd011db47",
                "72f988bf-86f1-41af-91ab-2d7cd011db47",
            ),
            ("contoso.onmicrosoft.com", "contoso.onmicrosoft.com"),
            ("organizations", "organizations"),
            ("consumers", "consumers"),
        ] {
            let p = ok("MicrosoftOauth2", ms(tenant));
            assert_eq!(p.config.tenant_id.as_deref(), Some(tenant));
            let m = p.config.metadata().unwrap();
            assert_eq!(
                m.authorization_endpoint,
                format!("https://login.microsoftonline.com/{expect}/oauth2/v2.0/authorize")
            );
            assert_eq!(
                m.token_endpoint,
                format!("https://login.microsoftonline.com/{expect}/oauth2/v2.0/token")
            );
            assert_eq!(
                p.config.oidc_discovery_url.as_deref(),
                Some(format!("https://login.microsoftonline.com/{expect}/v2.0/.well-known/openid-configuration").as_str())
            );
            assert_eq!(
                p.config.quirks.offline_scope.as_deref(),
                Some("offline_access")
            );
        }
        let p = ok(
            "MicrosoftOauth2",
            json!({"microsoftOauth2ProviderConfig": {"clientId": "a"}}),
        );
        assert_eq!(p.config.tenant_id, None);
        assert!(
            p.config
                .metadata()
                .unwrap()
                .token_endpoint
                .contains("/common/")
        );
    }

    #[test]
    fn wrong_types_cannot_parse() {
        for input in [
            json!({"githubOauth2ProviderConfig": {"clientId": 5}}),
            json!({"githubOauth2ProviderConfig": {"clientId": "a", "clientSecret": ["x"]}}),
            json!({"githubOauth2ProviderConfig": "a"}),
        ] {
            let Err(ApiError::Validation {
                reason, message, ..
            }) = parse("GithubOauth2", input)
            else {
                panic!()
            };
            assert_eq!(reason, ValidationReason::CannotParse);
            assert!(message.contains("githubOauth2ProviderConfig"), "{message}");
        }
    }

    #[test]
    fn resolved_metadata_wins_in_output() {
        let p = ok(
            "CustomOauth2",
            custom(json!({"discoveryUrl": "https://i.example/.well-known/openid-configuration"})),
        );
        let doc = json!({
            "issuer": "https://i.example",
            "authorization_endpoint": "https://i.example/authorize",
            "token_endpoint": "https://i.example/token",
            "response_types_supported": ["code", "id_token"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_post"]
        });
        let resolved = AuthorizationServerMetadata::from_discovery_document(&doc).unwrap();
        assert_eq!(resolved.token_endpoint_auth_methods, vec![POST.to_owned()]);
        assert_eq!(
            p.config.client_auth_method(Some(&resolved)),
            ClientAuthMethod::ClientSecretPost
        );
        assert_eq!(
            p.config.client_auth_method(None),
            ClientAuthMethod::ClientSecretBasic
        );
        let out = render_output(&p.config, Some(&resolved));
        let md = rendered_metadata(&out, "customOauth2ProviderConfig");
        assert_eq!(md["tokenEndpoint"], "https://i.example/token");
        assert_eq!(md["tokenEndpointAuthMethods"], json!([POST]));
        assert!(
            out["customOauth2ProviderConfig"]["oauthDiscovery"]
                .get("discoveryUrl")
                .is_none()
        );

        let mut bad = doc.clone();
        bad["token_endpoint"] = json!("http://i.example/token");
        assert!(AuthorizationServerMetadata::from_discovery_document(&bad).is_err());
        let mut missing = doc.clone();
        missing
            .as_object_mut()
            .unwrap()
            .remove("authorization_endpoint");
        assert!(AuthorizationServerMetadata::from_discovery_document(&missing).is_err());
        let mut default_methods = doc;
        default_methods
            .as_object_mut()
            .unwrap()
            .remove("token_endpoint_auth_methods_supported");
        let m = AuthorizationServerMetadata::from_discovery_document(&default_methods).unwrap();
        assert_eq!(m.token_endpoint_auth_methods, vec![BASIC.to_owned()]);
    }

    #[test]
    fn stored_json_shape() {
        let p = ok(
            "GithubOauth2",
            json!({"githubOauth2ProviderConfig": {"clientId": "cid", "clientSecret": "x"}}),
        );
        let stored = serde_json::to_value(&p.config).unwrap();
        assert_eq!(stored["variant"], "github");
        assert_eq!(stored["client_id"], "cid");
        assert_eq!(
            stored["discovery"]["metadata"]["token_endpoint"],
            "https://github.com/login/oauth/access_token"
        );
        assert_eq!(stored["quirks"]["token_accept_json"], true);
        // Older rows without optional fields still load.
        let minimal = json!({"variant": "custom", "client_id": "", "discovery": {"discovery_url": "https://i.example/.well-known/openid-configuration"}});
        let cfg: ProviderConfig = serde_json::from_value(minimal).unwrap();
        assert_eq!(cfg.quirks, Quirks::default());
        assert_eq!(
            cfg.discovery_url(),
            Some("https://i.example/.well-known/openid-configuration")
        );
    }
}
