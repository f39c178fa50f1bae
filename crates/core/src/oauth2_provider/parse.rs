//! Parsing and validation of `credentialProviderVendor` with the `oauth2ProviderConfigInput`
//! union: the vendor-specific, included and shared client members. The custom provider's
//! members are in [`super::custom`].

use secrecy::SecretString;
use serde_json::{Map, Value};

use super::custom::parse_custom;
use super::json::{check_members, join, object, opt, opt_str, type_error};
use super::presets::{Preset, preset, quirks};
use super::urls::{UrlRole, check_url_field};
use super::vendor::vendor_enum_message;
use super::{
    AuthorizationServerMetadata, ConfigVariant, Discovery, INPUT_FIELD, ProviderConfig,
    ProviderInput, VENDOR_FIELD, Vendor,
};
use crate::error::ApiError;
use crate::validate::Validator;

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
        && !vendor.accepts(variant)
    {
        let overrides = if vendor.self_hosted_edition().is_some() {
            format!(
                " (or {} with endpoint overrides)",
                ConfigVariant::Included.member_name()
            )
        } else {
            String::new()
        };
        v.fail(
            VENDOR_FIELD,
            format!(
                "{vendor} takes oauth2ProviderConfigInput.{}{overrides}, not {}",
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

pub(super) fn from_preset(variant: ConfigVariant, vendor: Vendor, p: &Preset) -> ProviderConfig {
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
        (None, None, None) if vendor.config_variant() != ConfigVariant::Included => {
            v.fail(
                &join(path, "authorizationEndpoint"),
                format!(
                    "Member must not be null: {vendor} takes {} only to override its endpoints ({}); without overrides use {}",
                    ConfigVariant::Included.member_name(),
                    vendor.self_hosted_edition().unwrap_or("a self-hosted edition"),
                    vendor.config_variant().member_name()
                ),
            );
            None
        }
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
