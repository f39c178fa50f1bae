//! The same storage tests on SQLite and on PostgreSQL. PostgreSQL comes from
//! `LATCHKEY_TEST_DATABASE_URL` (set by `scripts/test`), else 127.0.0.1:5432; an unreachable
//! database fails the test — it is never skipped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use latchkey_store::*;

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        std::process::id() as u64 * 1_000_000
            + (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos() as u64
                % 1_000_000)
    )
}

async fn sqlite() -> (Store, tempdir::Dir) {
    let dir = tempdir::Dir::new();
    let url = format!("sqlite://{}?mode=rwc", dir.path.join("t.db").display());
    (Store::connect(&url).await.expect("sqlite store"), dir)
}

async fn postgres() -> Store {
    let url = std::env::var("LATCHKEY_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    Store::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url} is required for this test: {e}"))
}

mod tempdir {
    pub struct Dir {
        pub path: std::path::PathBuf,
    }
    impl Dir {
        pub fn new() -> Self {
            let path = std::env::temp_dir().join(format!(
                "latchkey-store-test-{}-{}",
                std::process::id(),
                super::unique("d")
            ));
            std::fs::create_dir_all(&path).unwrap();
            Self { path }
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

async fn suite(store: &Store) {
    let p = unique("wl");
    // Workloads: create, conflict, find, update, list pages, delete.
    for i in 0..5 {
        let w = WorkloadRecord {
            name: format!("{p}-{i}"),
            return_urls: vec!["https://a/cb".into()],
            created_ms: 1,
            updated_ms: 1,
        };
        store
            .create_workload(&w, &[("team".into(), "x".into())], &format!("arn:{p}-{i}"))
            .await
            .unwrap();
    }
    let dup = WorkloadRecord {
        name: format!("{p}-0"),
        return_urls: vec![],
        created_ms: 1,
        updated_ms: 1,
    };
    assert!(matches!(
        store.create_workload(&dup, &[], "arn:dup").await,
        Err(StoreError::Conflict)
    ));
    let got = store
        .find_workload(&format!("{p}-0"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.return_urls, vec!["https://a/cb".to_string()]);
    let up = store
        .update_workload(&format!("{p}-0"), &["https://b/cb".into()], 5)
        .await
        .unwrap();
    assert_eq!(
        (up.return_urls[0].as_str(), up.updated_ms, up.created_ms),
        ("https://b/cb", 5, 1)
    );
    let mut seen = vec![];
    let mut after: Option<String> = Some(format!("{p}-"));
    loop {
        let page = store.list_workloads(after.as_deref(), 2).await.unwrap();
        let page: Vec<_> = page
            .into_iter()
            .filter(|w| w.name.starts_with(&p))
            .collect();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|w| w.name.clone());
        seen.extend(page.into_iter().map(|w| w.name));
    }
    assert_eq!(seen.len(), 5);
    assert_eq!(
        store.list_tags(&format!("arn:{p}-1")).await.unwrap(),
        vec![("team".into(), "x".into())]
    );
    store
        .delete_workload(&format!("{p}-1"), &format!("arn:{p}-1"))
        .await
        .unwrap();
    assert!(
        store
            .find_workload(&format!("{p}-1"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .list_tags(&format!("arn:{p}-1"))
            .await
            .unwrap()
            .is_empty(),
        "tags go with the resource"
    );
    assert!(matches!(
        store.delete_workload(&format!("{p}-1"), "x").await,
        Err(StoreError::NotFound)
    ));

    // Credentials.
    let c = CredentialRecord {
        access_key_id: unique("AKID"),
        role: "admin".into(),
        secret_envelope: vec![1, 2, 3],
        description: None,
        created_ms: 1,
        revoked_ms: None,
    };
    store.create_credential(&c).await.unwrap();
    assert_eq!(
        store
            .find_credential(&c.access_key_id)
            .await
            .unwrap()
            .unwrap(),
        c
    );
    store.revoke_credential(&c.access_key_id, 9).await.unwrap();
    assert_eq!(
        store
            .find_credential(&c.access_key_id)
            .await
            .unwrap()
            .unwrap()
            .revoked_ms,
        Some(9)
    );
    assert!(matches!(
        store.revoke_credential(&c.access_key_id, 10).await,
        Err(StoreError::NotFound)
    ));

    // Providers.
    let o = Oauth2ProviderRecord {
        name: unique("gh"),
        vendor: "GithubOauth2".into(),
        config: serde_json::json!({"clientId": "x"}),
        secret_envelope: Some(vec![9; 10]),
        callback_id: unique("cb"),
        created_ms: 1,
        updated_ms: 1,
    };
    store
        .create_oauth2_provider(&o, &[], "arn:o")
        .await
        .unwrap();
    assert_eq!(
        store
            .find_oauth2_provider_by_callback(&o.callback_id)
            .await
            .unwrap()
            .unwrap(),
        o
    );
    let a = ApiKeyProviderRecord {
        name: unique("ak"),
        secret_envelope: None,
        created_ms: 1,
        updated_ms: 1,
    };
    store
        .create_api_key_provider(&a, &[], "arn:a")
        .await
        .unwrap();
    assert_eq!(
        store.find_api_key_provider(&a.name).await.unwrap().unwrap(),
        a
    );

    // Token vault upsert.
    let v = TokenVaultRecord {
        id: unique("tv"),
        key_type: "ServiceManagedKey".into(),
        kms_key_arn: None,
        updated_ms: 1,
    };
    store.upsert_token_vault(&v).await.unwrap();
    let v2 = TokenVaultRecord {
        key_type: "CustomerManagedKey".into(),
        kms_key_arn: Some("arn:k".into()),
        updated_ms: 2,
        ..v.clone()
    };
    store.upsert_token_vault(&v2).await.unwrap();
    assert_eq!(store.find_token_vault(&v.id).await.unwrap().unwrap(), v2);
    // Audit blocks: tests/audit_chain.rs (a database per test: the audit key is sealed
    // under one key file).
}

#[tokio::test]
async fn sqlite_backend() {
    let (store, _dir) = sqlite().await;
    assert_eq!(store.backend(), Backend::Sqlite);
    suite(&store).await;
}

#[tokio::test]
async fn postgres_backend() {
    let store = postgres().await;
    assert_eq!(store.backend(), Backend::Postgres);
    suite(&store).await;
}

#[tokio::test]
async fn unreachable_database_is_unavailable() {
    let err = Store::connect("postgres://postgres@127.0.0.1:1/none")
        .await
        .expect_err("must fail");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}
