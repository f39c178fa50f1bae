//! Parsing and validation of `customOauth2ProviderConfig`: the discovery union, explicit
//! authorization server metadata, the client authentication method and the on-behalf-of
//! token exchange settings.

use serde_json::{Map, Value};

use super::json::{check_members, join, object, opt, opt_obj, opt_str, opt_strings};
use super::urls::{UrlRole, check_url_field, matches_discovery_pattern};
use super::{
    ActorTokenContent, AuthorizationServerMetadata, BASIC, ClientAuthMethod, ConfigVariant,
    Discovery, OboGrantType, OnBehalfOfConfig, POST, ProviderConfig, Quirks, TokenExchangeConfig,
};
use crate::error::ApiError;
use crate::validate::Validator;

/// `customOauth2ProviderConfig` beyond the shared client members.
pub(super) fn parse_custom(
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
