//! `CredentialProviderVendorType` and the `oauth2ProviderConfigInput` union members.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::VENDOR_FIELD;
use crate::error::ApiError;

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

    /// The self-hosted edition of a vendor with its own union member, whose endpoints
    /// differ from the preset's: such a vendor also takes `includedOauth2ProviderConfig`
    /// with `authorizationEndpoint` and `tokenEndpoint` (and optionally `issuer`), keeping
    /// its preset's behaviour (token response format, scope separator, authorize
    /// parameters) at the enterprise host or a test provider.
    pub fn self_hosted_edition(self) -> Option<&'static str> {
        match self {
            Self::GithubOauth2 => Some("GitHub Enterprise Server"),
            Self::AtlassianOauth2 => Some("Jira and Confluence Data Center"),
            Self::SalesforceOauth2 => Some("a Salesforce My Domain or sandbox"),
            _ => None,
        }
    }

    /// Whether this vendor may use `variant` (its own member, or the included member with
    /// endpoint overrides for a vendor with a self-hosted edition).
    pub fn accepts(self, variant: ConfigVariant) -> bool {
        self.config_variant() == variant
            || (variant == ConfigVariant::Included && self.self_hosted_edition().is_some())
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

pub(super) fn vendor_enum_message() -> String {
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

    pub(super) fn from_member_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.member_name() == name)
    }

    /// The single vendor of a vendor-specific member (`None` for included and custom).
    pub(super) fn own_vendor(self) -> Option<Vendor> {
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
