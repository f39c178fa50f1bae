//! The AWS SDK for Rust (`aws-sdk-bedrockagentcore`, `aws-sdk-bedrockagentcorecontrol`)
//! against the real `latchkey` binary, changing nothing but the endpoint. The SDK signs a
//! different header set than boto3 (`content-length`, `x-amz-user-agent`) and sends
//! compact JSON, so this proves the SigV4 verifier is generic over `SignedHeaders`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Child;

use aws_credential_types::Credentials;
use aws_sdk_bedrockagentcore as dp;
use aws_sdk_bedrockagentcorecontrol as cp;

struct Server {
    child: Child,
    url: String,
    dir: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

mod common;
use common::credential;

fn start() -> (Server, (String, String)) {
    let dir = common::temp_dir("sdk");
    let admin = credential(&dir, "admin");
    let (child, url) = common::spawn_identity(&dir);
    (Server { child, url, dir }, admin)
}

fn creds((id, secret): &(String, String)) -> Credentials {
    Credentials::new(id, secret, None, None, "test")
}

fn control(server: &Server, c: &(String, String)) -> cp::Client {
    let conf = cp::Config::builder()
        .behavior_version(cp::config::BehaviorVersion::latest())
        .region(cp::config::Region::new("us-west-2"))
        .credentials_provider(creds(c))
        .endpoint_url(&server.url)
        .build();
    cp::Client::from_conf(conf)
}

fn data(server: &Server, c: &(String, String)) -> dp::Client {
    let conf = dp::Config::builder()
        .behavior_version(dp::config::BehaviorVersion::latest())
        .region(dp::config::Region::new("eu-central-1"))
        .credentials_provider(creds(c))
        .endpoint_url(&server.url)
        .build();
    dp::Client::from_conf(conf)
}

#[tokio::test]
async fn rust_sdk_control_and_data_plane() {
    let (server, admin) = start();
    let cp = control(&server, &admin);
    let dp = data(&server, &admin);

    let created = cp
        .create_workload_identity()
        .name("sdk-agent")
        .allowed_resource_oauth2_return_urls("https://app.example/cb")
        .send()
        .await
        .expect("create");
    assert_eq!(created.name(), "sdk-agent");
    assert_eq!(
        created.workload_identity_arn(),
        "arn:aws:bedrock-agentcore:us-east-1:000000000000:workload-identity-directory/default/workload-identity/sdk-agent"
    );
    let got = cp
        .get_workload_identity()
        .name("sdk-agent")
        .send()
        .await
        .expect("get");
    assert_eq!(
        got.allowed_resource_oauth2_return_urls(),
        ["https://app.example/cb".to_string()]
    );
    assert!(
        got.created_time().secs() > 1_700_000_000,
        "timestamps are epoch-second numbers"
    );

    let dup = cp
        .create_workload_identity()
        .name("sdk-agent")
        .send()
        .await
        .expect_err("duplicate");
    assert!(dup.into_service_error().is_conflict_exception());
    let missing = cp
        .get_workload_identity()
        .name("no-such-agent")
        .send()
        .await
        .expect_err("missing");
    assert!(
        missing
            .into_service_error()
            .is_resource_not_found_exception()
    );

    for i in 0..5 {
        cp.create_workload_identity()
            .name(format!("sdk-page-{i}"))
            .send()
            .await
            .expect("create page item");
    }
    let mut names = vec![];
    let mut token = None;
    loop {
        let page = cp
            .list_workload_identities()
            .max_results(2)
            .set_next_token(token)
            .send()
            .await
            .expect("list");
        names.extend(
            page.workload_identities()
                .iter()
                .map(|w| w.name().to_string()),
        );
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(names.len(), 6);

    cp.create_api_key_credential_provider()
        .name("sdk-key")
        .api_key("sk-live-rust-sdk-secret")
        .send()
        .await
        .expect("api key provider");
    let wat = dp
        .get_workload_access_token_for_user_id()
        .workload_name("sdk-agent")
        .user_id("alice")
        .send()
        .await
        .expect("wat")
        .workload_access_token()
        .to_string();
    assert_eq!(wat.split('.').count(), 3);
    let key = dp
        .get_resource_api_key()
        .workload_identity_token(&wat)
        .resource_credential_provider_name("sdk-key")
        .send()
        .await
        .expect("api key");
    assert_eq!(key.api_key(), "sk-live-rust-sdk-secret");

    // A workload credential for another workload is refused.
    let other = credential(&server.dir, "workload:someone-else");
    let denied = data(&server, &other)
        .get_workload_access_token()
        .workload_name("sdk-agent")
        .send()
        .await
        .expect_err("denied");
    assert!(denied.into_service_error().is_access_denied_exception());

    // A wrong secret is refused with UnauthorizedException.
    let wrong = (admin.0.clone(), "not-the-secret".to_string());
    let unauth = control(&server, &wrong)
        .list_workload_identities()
        .send()
        .await
        .expect_err("unauthorized");
    assert!(unauth.into_service_error().is_unauthorized_exception());

    cp.delete_workload_identity()
        .name("sdk-agent")
        .send()
        .await
        .expect("delete");
    let gone = dp
        .get_resource_api_key()
        .workload_identity_token(&wat)
        .resource_credential_provider_name("sdk-key")
        .send()
        .await
        .expect_err("deleted workload");
    assert!(gone.into_service_error().is_access_denied_exception());
}
