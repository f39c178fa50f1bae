//! Rendering of the stored configuration as the `oauth2ProviderConfigOutput` JSON union.

use serde_json::{Map, Value, json};

use super::{
    AuthorizationServerMetadata, BASIC, ConfigVariant, Discovery, OnBehalfOfConfig, POST,
    ProviderConfig,
};

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
