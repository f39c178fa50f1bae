//! OAuth2 credential providers as the rest of the service uses them: a stored provider
//! opened into a [`ProviderRuntime`] (endpoints resolved, client secret still sealed), and
//! a create/update request checked, discovered (RFC 8414 / OIDC Discovery through the
//! guarded outbound client) and sealed before it is stored. Parsing and vendor presets
//! live in `latchkey_core::oauth2_provider`.

use std::sync::Arc;

use latchkey_core::ApiError;
use latchkey_core::crypto::{self, KeyProvider};
use latchkey_core::oauth2_provider::{
    self, AuthorizationServerMetadata, ConfigVariant, Discovery, ProviderConfig,
};
use latchkey_store::{Oauth2ProviderRecord, Store};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::aad;
use crate::error::{Error, Result};
use crate::outbound::{OutboundClient, OutboundError};

/// What we store as the provider's non-secret configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredConfig {
    pub config: ProviderConfig,
    /// Endpoints resolved from `discoveryUrl` at create/update time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<AuthorizationServerMetadata>,
    /// Optional facts of the discovery document the flows use.
    #[serde(default)]
    pub discovered: Discovered,
}

/// What discovery told us beyond the endpoints the AgentCore output shows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Discovered {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revocation_endpoint: Option<String>,
    /// RFC 9207: the provider sends `iss` on its authorization responses.
    #[serde(default)]
    iss_parameter_supported: bool,
}

/// How the flows find a provider.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ProviderLookup<'a> {
    Name(&'a str),
    Callback(&'a str),
}

/// Everything the OAuth flows need of a provider. The client secret stays sealed until a
/// token request needs it ([`ProviderRuntime::open_secret`]).
#[derive(Debug)]
pub(crate) struct ProviderRuntime {
    pub name: String,
    pub config: ProviderConfig,
    pub metadata: AuthorizationServerMetadata,
    pub callback_url: String,
    secret_envelope: Option<Vec<u8>>,
    pub revocation_endpoint: Option<String>,
    pub iss_parameter_supported: bool,
    pub updated_ms: i64,
}

impl ProviderRuntime {
    pub fn client_auth_method(&self) -> oauth2_provider::ClientAuthMethod {
        self.config.client_auth_method(Some(&self.metadata))
    }

    /// The client secret, opened (`None`: a public client).
    pub async fn open_secret(&self, keys: &dyn KeyProvider) -> Result<Option<SecretString>> {
        let Some(env) = &self.secret_envelope else {
            return Ok(None);
        };
        crypto::decrypt_string(keys, aad::oauth2_provider(&self.name).as_bytes(), env)
            .await
            .map(Some)
            .map_err(|e| {
                Error::internal(format!(
                    "could not open the client secret of the OAuth2 credential provider {:?}: {e}",
                    self.name
                ))
            })
    }
}

/// A provider request checked, discovered and sealed: ready to store.
#[derive(Debug)]
pub(crate) struct PreparedProvider {
    pub vendor: String,
    pub config: StoredConfig,
    pub secret_envelope: Option<Vec<u8>>,
}

/// The provider service: store, key material, the guarded outbound client and the public
/// URL callback URLs are built from.
#[derive(Debug, Clone)]
pub struct Providers {
    store: Store,
    keys: Arc<dyn KeyProvider>,
    outbound: OutboundClient,
    public_url: String,
}

#[derive(Debug, Deserialize)]
struct DiscoveryDocument {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    #[serde(default)]
    response_types_supported: Vec<String>,
    #[serde(default)]
    token_endpoint_auth_methods_supported: Vec<String>,
    #[serde(default)]
    revocation_endpoint: Option<String>,
    #[serde(default)]
    authorization_response_iss_parameter_supported: bool,
}

/// The identity service's opt-in for loopback and private addresses and plain http, as an
/// operator sets it (declared with the service's keys in the `latchkey` binary, whose
/// configuration tests check this text against the declaration).
pub const ALLOW_PRIVATE_ADDRESSES_SETTING: &str = "`outbound.allow_private_addresses` (LATCHKEY_OUTBOUND_ALLOW_PRIVATE_ADDRESSES, --outbound-allow-private-addresses)";

/// The request field that holds the URL discovery is fetched from: the custom provider's
/// `discoveryUrl`, or the `issuer` an included vendor's discovery URL is derived from.
fn discovery_field(variant: ConfigVariant) -> String {
    match variant {
        ConfigVariant::Custom => format!("{}.oauthDiscovery.discoveryUrl", member_field(variant)),
        _ => format!("{}.issuer", member_field(variant)),
    }
}

/// `oauth2ProviderConfigInput.<union member>`.
fn member_field(variant: ConfigVariant) -> String {
    format!("oauth2ProviderConfigInput.{}", variant.member_name())
}

/// Why the outbound policy refuses a URL, in the client's words, naming the setting that
/// allows it (for tests and development).
fn policy_refusal(e: &OutboundError) -> String {
    let why = match e {
        OutboundError::Blocked { host, reason } if reason.starts_with("plain http") => {
            format!("plain http (to {host})")
        }
        OutboundError::Blocked { host, reason } => format!("{host} is not public ({reason})"),
        _ => "the URL cannot be used".into(),
    };
    format!(
        "{why}, which this server's outbound policy refuses: a flow would fail when it calls it. Use a public https URL, or allow loopback and private addresses and plain http (tests and development only) with the identity service's setting {ALLOW_PRIVATE_ADDRESSES_SETTING}"
    )
}

/// Why a discovery document could not be fetched, in the client's words: the category of
/// the failure, never the transport's own text (that goes to the log).
fn discovery_failure(e: &OutboundError, field: &str) -> Error {
    let why = match e {
        OutboundError::Blocked { .. } => {
            let message = format!("the discovery URL: {}", policy_refusal(e));
            return Error::new(ApiError::field(field, message)).with_internal(e);
        }
        OutboundError::Timeout => "the request timed out",
        OutboundError::TooLarge { .. } => "the document is too large",
        OutboundError::Status(_) => "the server did not answer with the document",
        OutboundError::InvalidUrl(_) => "the URL cannot be used",
        OutboundError::Network(_) => "the server could not be reached",
        OutboundError::Decode(_) => "the answer is not a discovery document",
    };
    let mut message = format!("the discovery document could not be fetched: {why}");
    if let OutboundError::Status(status) = e {
        message.push_str(&format!(" (HTTP {status})"));
    }
    Error::new(ApiError::field(field, message)).with_internal(e)
}

impl Providers {
    pub fn new(
        store: Store,
        keys: Arc<dyn KeyProvider>,
        outbound: OutboundClient,
        public_url: impl Into<String>,
    ) -> Self {
        Self {
            store,
            keys,
            outbound,
            public_url: public_url.into().trim_end_matches('/').to_string(),
        }
    }

    pub fn outbound(&self) -> &OutboundClient {
        &self.outbound
    }

    pub fn callback_url(&self, callback_id: &str) -> String {
        format!(
            "{}/identities/oauth2/callback/{callback_id}",
            self.public_url
        )
    }

    /// Load a provider (`Ok(None)`: no such provider).
    pub(crate) async fn runtime(
        &self,
        lookup: ProviderLookup<'_>,
    ) -> Result<Option<ProviderRuntime>> {
        let record = match lookup {
            ProviderLookup::Name(n) => self.store.find_oauth2_provider(n).await?,
            ProviderLookup::Callback(c) => self.store.find_oauth2_provider_by_callback(c).await?,
        };
        let Some(record) = record else {
            return Ok(None);
        };
        let cfg = stored(&record)?;
        let metadata = cfg
            .resolved
            .clone()
            .or_else(|| cfg.config.metadata().cloned())
            .ok_or_else(|| {
                Error::internal(format!(
                    "provider {:?} has no resolved endpoints",
                    record.name
                ))
            })?;
        Ok(Some(ProviderRuntime {
            callback_url: self.callback_url(&record.callback_id),
            revocation_endpoint: cfg
                .config
                .revocation_endpoint
                .clone()
                .or(cfg.discovered.revocation_endpoint.clone()),
            iss_parameter_supported: cfg.discovered.iss_parameter_supported,
            name: record.name,
            config: cfg.config,
            metadata,
            secret_envelope: record.secret_envelope,
            updated_ms: record.updated_ms,
        }))
    }

    /// A provider by name, or `ResourceNotFoundException`.
    pub(crate) async fn require(&self, name: &str) -> Result<ProviderRuntime> {
        self.runtime(ProviderLookup::Name(name))
            .await?
            .ok_or_else(|| not_found(name))
    }

    /// Fetch and check a discovery document (RFC 8414 / OIDC Discovery); `field` names
    /// where its URL came from.
    async fn discover(
        &self,
        url: &str,
        field: &str,
    ) -> Result<(AuthorizationServerMetadata, Discovered)> {
        let doc: DiscoveryDocument = self
            .outbound
            .get_json(url)
            .await
            .map_err(|e| discovery_failure(&e, field))?;
        // The issuer must be the discovery URL's prefix (OIDC Discovery §4.3, RFC 8414 §3.3).
        let (prefix, rest) = url.split_once("/.well-known/").unwrap_or((url, ""));
        let expected = match rest.split_once('/') {
            // RFC 8414 §3.1: the issuer's path follows the well-known suffix.
            Some((_, issuer_path)) => format!("{prefix}/{issuer_path}"),
            None => prefix.to_string(),
        };
        if doc.issuer.trim_end_matches('/') != expected.trim_end_matches('/') {
            return Err(ApiError::field(
                field,
                format!(
                    "the discovery document's issuer {:?} does not match the discovery URL",
                    doc.issuer
                ),
            )
            .into());
        }
        for (name, endpoint) in [
            ("authorization_endpoint", &doc.authorization_endpoint),
            ("token_endpoint", &doc.token_endpoint),
        ] {
            let ok =
                url::Url::parse(endpoint).is_ok_and(|u| matches!(u.scheme(), "https" | "http"));
            if !ok {
                return Err(ApiError::field(
                    field,
                    format!("the discovery document's {name} is not an http(s) URL"),
                )
                .into());
            }
        }
        let revocation_endpoint = doc
            .revocation_endpoint
            .filter(|e| url::Url::parse(e).is_ok_and(|u| matches!(u.scheme(), "https" | "http")));
        let discovered = Discovered {
            revocation_endpoint,
            iss_parameter_supported: doc.authorization_response_iss_parameter_supported,
        };
        let metadata = AuthorizationServerMetadata {
            issuer: doc.issuer,
            authorization_endpoint: doc.authorization_endpoint,
            token_endpoint: doc.token_endpoint,
            response_types: doc.response_types_supported,
            token_endpoint_auth_methods: doc
                .token_endpoint_auth_methods_supported
                .into_iter()
                .filter(|m| m == "client_secret_basic" || m == "client_secret_post")
                .collect(),
        };
        Ok((metadata, discovered))
    }

    /// Parse, discover, and seal a provider request (the name is already validated):
    /// everything before the store is touched.
    pub(crate) async fn prepare(
        &self,
        name: &str,
        vendor: &Value,
        config_input: &Value,
    ) -> Result<PreparedProvider> {
        let input = oauth2_provider::parse_create(vendor, config_input)?;
        let (resolved, discovered) = match &input.config.discovery {
            Discovery::DiscoveryUrl(url) => {
                let (m, d) = self
                    .discover(url, &discovery_field(input.config.variant))
                    .await?;
                (Some(m), d)
            }
            Discovery::Metadata(_) => (None, Discovered::default()),
        };
        self.check_endpoints(&input.config, resolved.as_ref(), &discovered)
            .await?;
        let secret_envelope = match &input.client_secret {
            Some(secret) => Some(
                crypto::encrypt(
                    self.keys.as_ref(),
                    aad::oauth2_provider(name).as_bytes(),
                    secret.expose_secret().as_bytes(),
                )
                .await
                .map_err(|e| Error::internal(format!("could not seal a client secret: {e}")))?,
            ),
            None => None,
        };
        Ok(PreparedProvider {
            vendor: input.vendor.as_str().to_string(),
            config: StoredConfig {
                config: input.config,
                resolved,
                discovered,
            },
            secret_envelope,
        })
    }
}

impl Providers {
    /// Refuse endpoints the outbound policy would refuse once a flow calls them (plain
    /// http, or a loopback or private address — literal or resolved now — without the
    /// opt-in), naming the request field and the setting: at create/update, not with a
    /// 502/503 after a user has consented. The authorization endpoint is the browser's,
    /// not an outbound call, but it is held to the same rule: a provider whose token
    /// endpoint the policy admits is not served from a private or plain-http host either.
    /// The same check as every outbound request ([`OutboundPolicy::check_destination`]).
    ///
    /// [`OutboundPolicy::check_destination`]: crate::outbound::OutboundPolicy::check_destination
    async fn check_endpoints(
        &self,
        config: &ProviderConfig,
        resolved: Option<&AuthorizationServerMetadata>,
        discovered: &Discovered,
    ) -> Result<()> {
        let variant = config.variant;
        let member = member_field(variant);
        let (metadata, field) = match (&config.discovery, resolved) {
            (Discovery::Metadata(m), _) => {
                let field = |name: &str| match variant {
                    ConfigVariant::Custom => {
                        format!("{member}.oauthDiscovery.authorizationServerMetadata.{name}")
                    }
                    _ => format!("{member}.{name}"),
                };
                let fields = [field("authorizationEndpoint"), field("tokenEndpoint")];
                (m, fields)
            }
            (Discovery::DiscoveryUrl(_), Some(m)) => {
                let field = discovery_field(variant);
                (m, [field.clone(), field])
            }
            (Discovery::DiscoveryUrl(_), None) => return Ok(()),
        };
        let revocation = match (&config.revocation_endpoint, &discovered.revocation_endpoint) {
            (Some(preset), _) => Some((preset, member.clone())),
            (None, Some(found)) => Some((found, discovery_field(variant))),
            (None, None) => None,
        };
        let [authorize_field, token_field] = field;
        let endpoints = [
            (
                &metadata.authorization_endpoint,
                authorize_field,
                "authorization endpoint",
            ),
            (&metadata.token_endpoint, token_field, "token endpoint"),
        ]
        .into_iter()
        .chain(revocation.map(|(url, field)| (url, field, "revocation endpoint")));
        let policy = self.outbound.policy();
        for (url, field, what) in endpoints {
            if let Err(e) = policy.check_destination(url).await {
                let from_discovery = matches!(config.discovery, Discovery::DiscoveryUrl(_));
                let source = if from_discovery {
                    "the discovery document's "
                } else {
                    "the "
                };
                let message = format!("{source}{what}: {}", policy_refusal(&e));
                return Err(Error::new(ApiError::field(&field, message)).with_internal(e));
            }
        }
        Ok(())
    }
}

/// `ResourceNotFoundException` for a provider name.
pub(crate) fn not_found(name: &str) -> Error {
    ApiError::NotFound(format!("OAuth2 credential provider {name:?} not found")).into()
}

/// A stored provider's configuration (unreadable: an internal error, detail logged).
pub(crate) fn stored(record: &Oauth2ProviderRecord) -> Result<StoredConfig> {
    serde_json::from_value(record.config.clone()).map_err(|e| {
        Error::internal(format!(
            "stored provider config of {:?} is unreadable: {e}",
            record.name
        ))
    })
}
