//! The same storage tests on SQLite and on PostgreSQL. PostgreSQL comes from
//! `LATCHKEY_TEST_DATABASE_URL` (set by `scripts/test`), else 127.0.0.1:5432; an unreachable
//! database fails the test — it is never skipped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use latchkey_core::UserPrincipal;
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

/// Issue 12, items 1 and 7: a session's moves are compare-and-sets, the completion URN hash
/// is set only at the callback, and completing stores the grant and marks the session
/// COMPLETED together (or neither). Concurrent completions: exactly one wins.
async fn session_transitions(store: &Store) {
    let session = |id: &str| SessionRecord {
        id: id.to_string(),
        state_hash: unique("state"),
        workload: unique("wl"),
        user: UserPrincipal::user_id("alice").unwrap(),
        provider: "gh".into(),
        request: serde_json::json!({"scopes": ["repo"]}),
        secrets_envelope: vec![1, 2, 3],
        code_envelope: None,
        status: SessionStatus::Pending,
        failure: None,
        created_ms: 1,
        expires_ms: i64::MAX / 2,
        updated_ms: 1,
    };
    let tokens = GrantTokens {
        scopes: vec!["repo".into()],
        resources: vec![],
        token_type: "Bearer".into(),
        access_envelope: vec![7; 8],
        refresh_envelope: None,
        expires_ms: 1_000,
    };
    let status = |id: String| async move { store.find_session(&id).await.unwrap().unwrap().status };

    let s = session(&unique("s1"));
    let key = GrantKey {
        workload: s.workload.clone(),
        user: s.user.clone(),
        provider: s.provider.clone(),
    };
    store.create_session(&s).await.unwrap();
    let hash = unique("completion-hash");
    // Before the callback no completion URN names the session.
    assert!(
        store
            .find_session_by_completion(&hash)
            .await
            .unwrap()
            .is_none()
    );
    store
        .receive_callback(&s.id, &[9; 4], &hash, 2)
        .await
        .unwrap();
    assert!(matches!(
        store
            .receive_callback(&s.id, &[8; 4], &unique("other"), 3)
            .await,
        Err(StoreError::NotFound)
    ));
    let found = store
        .find_session_by_completion(&hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, s.id);
    assert_eq!(found.status, SessionStatus::Callback);
    assert_eq!(found.code_envelope.as_deref(), Some(&[9u8; 4][..]));
    assert!(
        store
            .find_session_by_completion(&unique("nope"))
            .await
            .unwrap()
            .is_none()
    );

    // Eight completions race to claim it: exactly one does.
    let mut claims = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        let id = s.id.clone();
        claims.push(tokio::spawn(async move {
            store
                .transition_session(
                    &id,
                    SessionStatus::Callback,
                    SessionStatus::Exchanging,
                    None,
                    None,
                    4,
                )
                .await
        }));
    }
    let mut won = 0;
    for c in claims {
        match c.await.unwrap() {
            Ok(()) => won += 1,
            Err(StoreError::NotFound) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(won, 1);
    // A wrong user's failure of the session it saw in CALLBACK finds it claimed: unchanged.
    assert!(matches!(
        store
            .fail_session(&s.id, SessionStatus::Callback, "user mismatch", 5)
            .await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(status(s.id.clone()).await, SessionStatus::Exchanging);
    // Completed and failed sessions are never failed again.
    assert!(matches!(
        store
            .fail_session(&s.id, SessionStatus::Completed, "x", 5)
            .await,
        Err(StoreError::NotFound)
    ));

    // Eight exchanges race to store: exactly one stores and completes.
    let mut completions = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        let id = s.id.clone();
        let key = key.clone();
        let mut t = tokens.clone();
        t.access_envelope = vec![i; 8];
        completions.push(tokio::spawn(async move {
            store.complete_session(&id, &key, &t, 6).await.map(|()| i)
        }));
    }
    let mut winners = Vec::new();
    for c in completions {
        match c.await.unwrap() {
            Ok(i) => winners.push(i),
            Err(StoreError::NotFound) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let grant = store.find_grant(&key).await.unwrap().unwrap();
    assert_eq!(grant.access_envelope, vec![winners[0]; 8]);
    let done = store.find_session(&s.id).await.unwrap().unwrap();
    assert_eq!(done.status, SessionStatus::Completed);
    assert!(
        done.code_envelope.is_none(),
        "the code is dropped at completion"
    );

    // A session that is not EXCHANGING stores nothing.
    let s2 = session(&unique("s2"));
    let key2 = GrantKey {
        workload: s2.workload.clone(),
        user: s2.user.clone(),
        provider: s2.provider.clone(),
    };
    store.create_session(&s2).await.unwrap();
    assert!(matches!(
        store.complete_session(&s2.id, &key2, &tokens, 7).await,
        Err(StoreError::NotFound)
    ));
    store
        .receive_callback(&s2.id, &[1], &unique("h2"), 7)
        .await
        .unwrap();
    assert!(matches!(
        store.complete_session(&s2.id, &key2, &tokens, 7).await,
        Err(StoreError::NotFound)
    ));
    store
        .fail_session(&s2.id, SessionStatus::Callback, "user mismatch", 8)
        .await
        .unwrap();
    let failed = store.find_session(&s2.id).await.unwrap().unwrap();
    assert_eq!(failed.status, SessionStatus::Failed);
    assert!(failed.code_envelope.is_none());
    assert!(matches!(
        store
            .transition_session(
                &s2.id,
                SessionStatus::Callback,
                SessionStatus::Exchanging,
                None,
                None,
                9
            )
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(store.find_grant(&key2).await.unwrap().is_none());
}

#[tokio::test]
async fn sqlite_backend() {
    let (store, _dir) = sqlite().await;
    assert_eq!(store.backend(), Backend::Sqlite);
    suite(&store).await;
    session_transitions(&store).await;
}

#[tokio::test]
async fn postgres_backend() {
    let store = postgres().await;
    assert_eq!(store.backend(), Backend::Postgres);
    suite(&store).await;
    session_transitions(&store).await;
}

#[tokio::test]
async fn unreachable_database_is_unavailable() {
    let err = Store::connect("postgres://postgres@127.0.0.1:1/none")
        .await
        .expect_err("must fail");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}

/// `url` has no installation (`connect_existing` finds none, twice: looking created
/// nothing); after `connect` sets it up, `connect_existing` opens it.
async fn only_connect_sets_up(url: &str) {
    for _ in 0..2 {
        assert!(
            Store::connect_existing(url).await.unwrap().is_none(),
            "{url}"
        );
    }
    Store::connect(url).await.unwrap().close().await;
    let store = Store::connect_existing(url).await.unwrap().expect("set up");
    assert!(store.list_credentials().await.unwrap().is_empty());
    store.close().await;
}

/// `connect_existing` (the admin commands' way in) creates nothing: no SQLite file, no
/// table in an empty file or an empty PostgreSQL database; a set-up database opens.
#[tokio::test]
async fn connect_existing_creates_nothing() {
    let dir = tempdir::Dir::new();
    let path = dir.path.join("absent.db");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    assert!(Store::connect_existing(&url).await.unwrap().is_none());
    assert!(!path.exists(), "connect_existing created the SQLite file");
    std::fs::write(&path, b"").unwrap();
    only_connect_sets_up(&url).await;

    let base = std::env::var("LATCHKEY_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let admin = sqlx::PgPool::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {base} is required for this test: {e}"));
    let name = unique("latchkey_empty").replace('-', "_");
    let sql = |statement: &str| sqlx::query(sqlx::AssertSqlSafe(statement.to_string()));
    sql(&format!("CREATE DATABASE \"{name}\""))
        .execute(&admin)
        .await
        .unwrap();
    let (prefix, _) = base.rsplit_once('/').unwrap();
    let empty = format!("{prefix}/{name}");
    assert!(Store::connect_existing(&empty).await.unwrap().is_none());
    let db = sqlx::PgPool::connect(&empty).await.unwrap();
    let tables: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    db.close().await;
    assert_eq!(
        tables, 0,
        "connect_existing created tables in an empty database"
    );
    only_connect_sets_up(&empty).await;
    sql(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
        .execute(&admin)
        .await
        .unwrap();
}
