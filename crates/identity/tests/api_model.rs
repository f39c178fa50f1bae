//! The identity service's operation table (`latchkey_identity::app::OPERATIONS`, from which
//! the router is built) against the AgentCore Identity model subset committed in
//! `spec/models/` (the official service models, identity operations only): the same
//! operations, each with the model's HTTP method and request URI, both ways; and the wire
//! structs shared with `latchkey-client` (`latchkey-api`) against the model's input and
//! output shapes, member by member at every depth.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;

use latchkey_identity::app::OPERATIONS;
use serde_json::Value;

fn model_operations() -> BTreeSet<(String, String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../spec/models");
    let mut found = BTreeSet::new();
    for file in [
        "identity-controlplane.subset.json",
        "identity-dataplane.subset.json",
    ] {
        let text = std::fs::read_to_string(dir.join(file)).expect("model file");
        let model: Value = serde_json::from_str(&text).expect("model JSON");
        let operations = model["operations"].as_object().expect("operations");
        assert!(!operations.is_empty(), "{file} declares no operation");
        for (name, op) in operations {
            found.insert((
                name.clone(),
                op["http"]["method"].as_str().expect("method").to_string(),
                op["http"]["requestUri"]
                    .as_str()
                    .expect("requestUri")
                    .to_string(),
            ));
        }
    }
    found
}

#[test]
fn the_operation_table_is_the_model() {
    let model = model_operations();
    let ours: BTreeSet<(String, String, String)> = OPERATIONS
        .iter()
        .map(|(n, m, u)| (n.to_string(), m.to_string(), u.to_string()))
        .collect();
    assert_eq!(
        ours.len(),
        OPERATIONS.len(),
        "an operation is declared twice"
    );
    let missing: Vec<_> = model.difference(&ours).collect();
    let extra: Vec<_> = ours.difference(&model).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "routes differ from spec/models:\n  in the model, not routed (or routed differently): {missing:?}\n  routed, not in the model: {extra:?}"
    );
}

// ------------------------------------------------- the shared wire structs (latchkey-api)

/// All shapes of both model files, by name.
fn model_shapes() -> serde_json::Map<String, Value> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../spec/models");
    let mut shapes = serde_json::Map::new();
    for file in [
        "identity-controlplane.subset.json",
        "identity-dataplane.subset.json",
    ] {
        let text = std::fs::read_to_string(dir.join(file)).expect("model file");
        let model: Value = serde_json::from_str(&text).expect("model JSON");
        shapes.extend(model["shapes"].as_object().expect("shapes").clone());
    }
    shapes
}

/// Every key of `value`, at any depth, is a member of the model shape it stands for.
fn check_against(shapes: &serde_json::Map<String, Value>, shape: &str, value: &Value, at: &str) {
    let def = &shapes[shape];
    match (def["type"].as_str().expect("type"), value) {
        ("structure" | "union", Value::Object(map)) => {
            let members = def["members"].as_object().expect("members");
            for (key, inner) in map {
                let member = members.get(key).unwrap_or_else(|| {
                    panic!(
                        "{at}.{key} is not a member of {shape} (members: {:?})",
                        members.keys().collect::<Vec<_>>()
                    )
                });
                let target = member["shape"].as_str().expect("member shape");
                check_against(shapes, target, inner, &format!("{at}.{key}"));
            }
        }
        ("list", Value::Array(items)) => {
            let target = def["member"]["shape"].as_str().expect("list member");
            for (i, item) in items.iter().enumerate() {
                check_against(shapes, target, item, &format!("{at}[{i}]"));
            }
        }
        ("map", Value::Object(map)) => {
            let target = def["value"]["shape"].as_str().expect("map value");
            for (key, inner) in map {
                check_against(shapes, target, inner, &format!("{at}.{key}"));
            }
        }
        ("structure" | "union" | "list" | "map", other) => {
            panic!("{at} is {other}, but {shape} is a {}", def["type"])
        }
        _ => {}
    }
}

/// `value` serialized is made of `operation`'s input (or output) members, and, with every
/// optional member set, names each member of the shape that Latchkey sends.
fn check(operation: &str, side: &str, value: &impl serde::Serialize, expected: &[&str]) {
    let shapes = model_shapes();
    let json = serde_json::to_value(value).expect("serialize");
    let shape = format!("{operation}{side}");
    assert!(shapes.contains_key(&shape), "no shape {shape} in the model");
    check_against(&shapes, &shape, &json, &shape);
    let keys: BTreeSet<&str> = json
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        expected.iter().copied().collect(),
        "{shape}: the members sent"
    );
    // Responses: members in alphabetical order, so the bytes are those of a sorted map.
    if side == "Response" {
        assert_eq!(
            serde_json::to_string(value).expect("serialize"),
            serde_json::to_string(&json).expect("serialize"),
            "{shape}: members out of alphabetical order"
        );
    }
}

fn secret(s: &str) -> secrecy::SecretString {
    secrecy::SecretString::from(s.to_string())
}

#[test]
fn data_plane_structs_are_the_model() {
    use latchkey_api::data::*;
    let wat = || WorkloadAccessTokenRequest {
        workload_name: "w".into(),
        user_id: None,
        user_token: None,
    };
    check(
        "GetWorkloadAccessToken",
        "Request",
        &wat(),
        &["workloadName"],
    );
    let mut jwt = wat();
    jwt.user_token = Some(secret("a.b.c"));
    check(
        "GetWorkloadAccessTokenForJWT",
        "Request",
        &jwt,
        &["workloadName", "userToken"],
    );
    let mut user_id = wat();
    user_id.user_id = Some("u".into());
    check(
        "GetWorkloadAccessTokenForUserId",
        "Request",
        &user_id,
        &["workloadName", "userId"],
    );
    let token = WorkloadAccessTokenResponse {
        workload_access_token: Some(secret("t")),
    };
    for op in [
        "GetWorkloadAccessToken",
        "GetWorkloadAccessTokenForJWT",
        "GetWorkloadAccessTokenForUserId",
    ] {
        check(op, "Response", &token, &["workloadAccessToken"]);
    }
    let request = GetResourceOauth2TokenRequest {
        workload_identity_token: secret("wat"),
        resource_credential_provider_name: "p".into(),
        scopes: Some(vec!["s".into()]),
        oauth2_flow: Some("USER_FEDERATION".into()),
        session_uri: Some("urn:ietf:params:oauth:request_uri:x".into()),
        resource_oauth2_return_url: Some("https://app/cb".into()),
        force_authentication: Some(true),
        custom_state: Some(secret("cs")),
        custom_parameters: Some([("k".to_string(), secret("v"))].into()),
        resources: Some(vec!["https://r".into()]),
        audiences: Some(vec!["a".into()]),
    };
    check(
        "GetResourceOauth2Token",
        "Request",
        &request,
        &[
            "workloadIdentityToken",
            "resourceCredentialProviderName",
            "scopes",
            "oauth2Flow",
            "sessionUri",
            "resourceOauth2ReturnUrl",
            "forceAuthentication",
            "customState",
            "customParameters",
            "resources",
            "audiences",
        ],
    );
    check(
        "GetResourceOauth2Token",
        "Response",
        &GetResourceOauth2TokenResponse {
            access_token: Some(secret("t")),
            authorization_url: Some("https://idp/authorize".into()),
            session_status: Some("IN_PROGRESS".into()),
            session_uri: Some("urn:ietf:params:oauth:request_uri:x".into()),
        },
        &[
            "accessToken",
            "authorizationUrl",
            "sessionStatus",
            "sessionUri",
        ],
    );
    for (identifier, member) in [
        (
            UserIdentifier {
                user_token: Some(secret("a.b.c")),
                user_id: None,
            },
            "userToken",
        ),
        (
            UserIdentifier {
                user_token: None,
                user_id: Some("u".into()),
            },
            "userId",
        ),
    ] {
        let request = CompleteResourceTokenAuthRequest {
            user_identifier: Some(identifier),
            session_uri: Some("urn:ietf:params:oauth:request_uri:x".into()),
        };
        check(
            "CompleteResourceTokenAuth",
            "Request",
            &request,
            &["userIdentifier", "sessionUri"],
        );
        let json = serde_json::to_value(&request).expect("serialize");
        assert!(json["userIdentifier"].get(member).is_some(), "{json}");
    }
    check(
        "CompleteResourceTokenAuth",
        "Response",
        &CompleteResourceTokenAuthResponse {},
        &[],
    );
    check(
        "GetResourceApiKey",
        "Request",
        &GetResourceApiKeyRequest {
            workload_identity_token: secret("wat"),
            resource_credential_provider_name: "p".into(),
        },
        &["workloadIdentityToken", "resourceCredentialProviderName"],
    );
    check(
        "GetResourceApiKey",
        "Response",
        &GetResourceApiKeyResponse {
            api_key: Some(secret("k")),
        },
        &["apiKey"],
    );
}

#[test]
fn control_plane_responses_are_the_model() {
    use latchkey_api::control::*;
    let workload = WorkloadIdentityResponse {
        allowed_resource_oauth2_return_urls: vec!["https://app/cb".into()],
        created_time: None,
        last_updated_time: None,
        name: "w".into(),
        workload_identity_arn: "arn:w".into(),
    };
    let created = [
        "allowedResourceOauth2ReturnUrls",
        "name",
        "workloadIdentityArn",
    ];
    check("CreateWorkloadIdentity", "Response", &workload, &created);
    let timed = WorkloadIdentityResponse {
        created_time: Some(1.5),
        last_updated_time: Some(2.5),
        ..workload
    };
    let all = [&created[..], &["createdTime", "lastUpdatedTime"]].concat();
    check("GetWorkloadIdentity", "Response", &timed, &all);
    check("UpdateWorkloadIdentity", "Response", &timed, &all);
    check(
        "ListWorkloadIdentities",
        "Response",
        &ListWorkloadIdentitiesResponse {
            next_token: Some("n".into()),
            workload_identities: vec![WorkloadIdentitySummary {
                name: "w".into(),
                workload_identity_arn: "arn:w".into(),
            }],
        },
        &["nextToken", "workloadIdentities"],
    );

    let api_key = ApiKeyCredentialProviderResponse {
        api_key_secret_arn: SecretReference {
            secret_arn: "arn:s".into(),
        },
        api_key_secret_source: MANAGED.into(),
        created_time: None,
        credential_provider_arn: "arn:p".into(),
        last_updated_time: None,
        name: "p".into(),
    };
    let created = [
        "apiKeySecretArn",
        "apiKeySecretSource",
        "credentialProviderArn",
        "name",
    ];
    check(
        "CreateApiKeyCredentialProvider",
        "Response",
        &api_key,
        &created,
    );
    let timed = ApiKeyCredentialProviderResponse {
        created_time: Some(1.5),
        last_updated_time: Some(2.5),
        ..api_key
    };
    let all = [&created[..], &["createdTime", "lastUpdatedTime"]].concat();
    check("GetApiKeyCredentialProvider", "Response", &timed, &all);
    check("UpdateApiKeyCredentialProvider", "Response", &timed, &all);
    check(
        "ListApiKeyCredentialProviders",
        "Response",
        &ListCredentialProvidersResponse {
            credential_providers: vec![ApiKeyCredentialProviderSummary {
                created_time: 1.5,
                credential_provider_arn: "arn:p".into(),
                last_updated_time: 2.5,
                name: "p".into(),
            }],
            next_token: Some("n".into()),
        },
        &["credentialProviders", "nextToken"],
    );

    let oauth2 = Oauth2CredentialProviderResponse {
        callback_url: "https://latchkey/cb".into(),
        client_secret_arn: SecretReference {
            secret_arn: "arn:s".into(),
        },
        client_secret_source: MANAGED.into(),
        created_time: None,
        credential_provider_arn: "arn:p".into(),
        credential_provider_vendor: None,
        last_updated_time: None,
        name: "p".into(),
        oauth2_provider_config_output: serde_json::json!({
            "customOauth2ProviderConfig": {"clientId": "c"}
        }),
        status: "READY".into(),
    };
    let created = [
        "callbackUrl",
        "clientSecretArn",
        "clientSecretSource",
        "credentialProviderArn",
        "name",
        "oauth2ProviderConfigOutput",
        "status",
    ];
    check(
        "CreateOauth2CredentialProvider",
        "Response",
        &oauth2,
        &created,
    );
    let detailed = Oauth2CredentialProviderResponse {
        created_time: Some(1.5),
        credential_provider_vendor: Some("CustomOauth2".into()),
        last_updated_time: Some(2.5),
        ..oauth2
    };
    let all = [
        &created[..],
        &["createdTime", "credentialProviderVendor", "lastUpdatedTime"],
    ]
    .concat();
    check("GetOauth2CredentialProvider", "Response", &detailed, &all);
    check(
        "UpdateOauth2CredentialProvider",
        "Response",
        &detailed,
        &all,
    );
    check(
        "ListOauth2CredentialProviders",
        "Response",
        &ListCredentialProvidersResponse {
            credential_providers: vec![Oauth2CredentialProviderSummary {
                created_time: 1.5,
                credential_provider_arn: "arn:p".into(),
                credential_provider_vendor: "CustomOauth2".into(),
                last_updated_time: 2.5,
                name: "p".into(),
            }],
            next_token: None,
        },
        &["credentialProviders"],
    );

    let vault = TokenVaultResponse {
        kms_configuration: KmsConfiguration {
            key_type: "CustomerManagedKey".into(),
            kms_key_arn: Some("arn:k".into()),
        },
        last_modified_date: 1.5,
        token_vault_id: "default".into(),
    };
    let members = ["kmsConfiguration", "lastModifiedDate", "tokenVaultId"];
    for op in [
        "GetTokenVault",
        "SetTokenVaultCMK",
        "ResetTokenVaultKeyMaterial",
    ] {
        check(op, "Response", &vault, &members);
    }
    check(
        "ListTagsForResource",
        "Response",
        &ListTagsForResourceResponse {
            tags: [("k".to_string(), "v".to_string())].into(),
        },
        &["tags"],
    );
}

/// The checker itself fails on a misspelled member.
#[test]
#[should_panic(expected = "is not a member of GetResourceApiKeyResponse")]
fn a_misspelled_member_fails() {
    #[derive(serde::Serialize)]
    struct Misspelled {
        #[serde(rename = "apikey")]
        api_key: String,
    }
    check(
        "GetResourceApiKey",
        "Response",
        &Misspelled {
            api_key: "k".into(),
        },
        &["apikey"],
    );
}
