//! The migration that keys users by (kind, issuer, subject), run on databases holding rows
//! written before it — SQLite, and PostgreSQL (a fresh database on the server named by
//! `LATCHKEY_TEST_DATABASE_URL`, else 127.0.0.1:5432; never skipped).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use latchkey_core::UserPrincipal;
use latchkey_store::*;

/// The migration under test: every migration sorting before it is the "old" schema.
const MIGRATION: &str = "0004_user_principal.sql";
const ISSUER_A: &str = "https://idp-a.example";

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 1_000_000_000
    )
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique(&format!("latchkey-migration-{tag}")));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Apply the migrations before [`MIGRATION`] only (copies of the real files, so their
/// checksums are the ones `Store::connect` expects afterwards).
async fn old_schema(url: &str, backend: &str, scratch: &Path) {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    let old = scratch.join(format!("old-{backend}"));
    std::fs::create_dir_all(&old).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&source)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert!(names.iter().any(|n| n == MIGRATION), "{MIGRATION} exists");
    for name in names.iter().filter(|n| n.as_str() < MIGRATION) {
        std::fs::copy(source.join(name), old.join(name)).unwrap();
    }
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    sqlx::migrate::Migrator::new(old.as_path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    // Rows as the previous version wrote them: grants keyed by subject alone; a session
    // started from a token (its issuer in the request) and one started for a user id.
    for (user, provider, envelope) in [
        ("alice", "gh", b"alice-env".to_vec()),
        ("bob", "gh", b"bob-env".to_vec()),
    ] {
        sqlx::query("INSERT INTO grants (workload, user_id, provider, scopes, resources, token_type, access_envelope, refresh_envelope, expires_ms, needs_consent, version, lease_owner, lease_until_ms, created_ms, updated_ms) VALUES ('wl', $1, $2, '[\"repo\"]', '[]', 'Bearer', $3, NULL, 5000, 0, 3, NULL, NULL, 1, 2)")
            .bind(user)
            .bind(provider)
            .bind(envelope)
            .execute(&pool)
            .await
            .unwrap();
    }
    for (id, user, request) in [
        (
            "s-jwt",
            "alice",
            format!(r#"{{"scopes":["repo"],"resources":[],"audiences":[],"return_url":null,"user_issuer":"{ISSUER_A}"}}"#),
        ),
        (
            "s-id",
            "bob",
            r#"{"scopes":["repo"],"resources":[],"audiences":[],"return_url":null,"user_issuer":null}"#.to_string(),
        ),
        (
            "s-old",
            "carol",
            r#"{"scopes":["repo"]}"#.to_string(),
        ),
    ] {
        sqlx::query("INSERT INTO auth_sessions (id, state_hash, workload, user_id, provider, request, secrets_envelope, code_envelope, status, failure, created_ms, expires_ms, updated_ms) VALUES ($1, $2, 'wl', $3, 'gh', $4, $5, NULL, 'PENDING', NULL, 1, 9000000000000, 1)")
            .bind(id)
            .bind(format!("hash-{id}"))
            .bind(user)
            .bind(request)
            .bind(b"sealed".to_vec())
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
}

async fn check_migrated(store: &Store) {
    let key = |user: UserPrincipal| GrantKey {
        workload: "wl".into(),
        user,
        provider: "gh".into(),
    };
    let alice_id = key(UserPrincipal::user_id("alice").unwrap());
    let alice_a = key(UserPrincipal::jwt(ISSUER_A, "alice").unwrap());
    // Existing grants belong to the user-id namespace, whole (envelope, version, scopes)…
    let g = store
        .find_grant(&alice_id)
        .await
        .unwrap()
        .expect("kept for the user id");
    assert_eq!(g.access_envelope, b"alice-env");
    assert_eq!(g.version, 3);
    assert_eq!(g.scopes, ["repo"]);
    assert!(
        store
            .find_grant(&key(UserPrincipal::user_id("bob").unwrap()))
            .await
            .unwrap()
            .is_some()
    );
    // …and never to a token user of the same subject (fail closed: consent again).
    assert!(store.find_grant(&alice_a).await.unwrap().is_none());
    // Sessions map exactly: the recorded issuer makes a token user.
    let s = store.find_session("s-jwt").await.unwrap().unwrap();
    assert_eq!(s.user, UserPrincipal::jwt(ISSUER_A, "alice").unwrap());
    let s = store.find_session("s-id").await.unwrap().unwrap();
    assert_eq!(s.user, UserPrincipal::user_id("bob").unwrap());
    let s = store.find_session("s-old").await.unwrap().unwrap();
    assert_eq!(s.user, UserPrincipal::user_id("carol").unwrap());
    // The new key: the token user's own grant is a separate row next to the user id's.
    let tokens = GrantTokens {
        scopes: vec!["repo".into()],
        resources: vec![],
        token_type: "Bearer".into(),
        access_envelope: b"alice-a-env".to_vec(),
        refresh_envelope: None,
        expires_ms: 6000,
    };
    store.put_grant(&alice_a, &tokens, 10).await.unwrap();
    assert_eq!(
        store
            .find_grant(&alice_a)
            .await
            .unwrap()
            .unwrap()
            .access_envelope,
        b"alice-a-env"
    );
    assert_eq!(
        store
            .find_grant(&alice_id)
            .await
            .unwrap()
            .unwrap()
            .access_envelope,
        b"alice-env"
    );
    assert_eq!(store.count_grants().await.unwrap(), 3);
    let listed = store
        .list_grants(Some("wl"), Some("alice"), None, 10)
        .await
        .unwrap();
    assert_eq!(listed.len(), 2);
    // Pages continue after a key in another namespace.
    let rest = store
        .list_grants(Some("wl"), None, Some(&listed[0].key), 10)
        .await
        .unwrap();
    assert_eq!(rest.len(), 2);
    assert!(rest.iter().all(|g| g.key != listed[0].key));
    store.delete_grant(&alice_id).await.unwrap();
    assert!(store.find_grant(&alice_a).await.unwrap().is_some());
}

#[tokio::test]
async fn sqlite_rows_from_before_the_migration() {
    let dir = temp_dir("sqlite");
    let url = format!("sqlite://{}?mode=rwc", dir.join("m.db").display());
    old_schema(&url, "sqlite", &dir).await;
    let store = Store::connect(&url).await.expect("migrates");
    check_migrated(&store).await;
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn postgres_rows_from_before_the_migration() {
    let base = std::env::var("LATCHKEY_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    sqlx::any::install_default_drivers();
    let admin = sqlx::AnyPool::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {base} is required for this test: {e}"));
    let name = unique("latchkey_migration");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .unwrap();
    let (prefix, _) = base.rsplit_once('/').unwrap();
    let url = format!("{prefix}/{name}");
    let dir = temp_dir("postgres");
    old_schema(&url, "postgres", &dir).await;
    let store = Store::connect(&url).await.expect("migrates");
    check_migrated(&store).await;
    store.close().await;
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&admin)
    .await;
    admin.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}
