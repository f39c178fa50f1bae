//! The built-in vendors: fixed public endpoints and the quirks each vendor needs beyond
//! plain OAuth 2.0.

use super::{AuthorizationServerMetadata, BASIC, ClientAuthMethod, POST, Quirks, Vendor};

/// Fixed public endpoints of a built-in vendor.
pub(super) struct Preset {
    pub(super) issuer: String,
    pub(super) authorization_endpoint: String,
    pub(super) token_endpoint: String,
    pub(super) auth_methods: &'static [&'static str],
    pub(super) oidc_discovery_url: Option<String>,
    pub(super) revocation_endpoint: Option<&'static str>,
    pub(super) default_token_lifetime_secs: Option<u64>,
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

    pub(super) fn metadata(&self) -> AuthorizationServerMetadata {
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
pub(super) fn preset(vendor: Vendor, tenant: &str) -> Option<Preset> {
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
pub(super) fn quirks(vendor: Vendor) -> Quirks {
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
