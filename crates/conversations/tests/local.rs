//! The store against a real local directory.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Conversation, SESSION_ID, conversation, hostile_subs, injectivity_subs};
use latchkey_conversations::{
    ConversationStore, MAX_CONVERSATION_BYTES, MAX_LOCAL_SESSION_ID_LEN, StoreConfig, StoreError,
    encode_sub, object_path, validate_session_id,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn open(root: &Path) -> Result<ConversationStore, StoreError> {
    ConversationStore::new(&StoreConfig::Local {
        dir: root.to_path_buf(),
    })
}

/// Every regular file under `root`, relative to it, with `/` separators.
fn files_under(root: &Path) -> std::io::Result<BTreeSet<String>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            assert!(!kind.is_symlink(), "unexpected symlink {:?}", entry.path());
            if kind.is_dir() {
                walk(root, &entry.path(), out)?;
            } else {
                let relative = entry
                    .path()
                    .strip_prefix(root)
                    .map_err(std::io::Error::other)?
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                out.insert(relative);
            }
        }
        Ok(())
    }
    let mut out = BTreeSet::new();
    if root.exists() {
        walk(root, root, &mut out)?;
    }
    Ok(out)
}

fn expected_file(sub: &str, session_id: &str) -> Result<String, StoreError> {
    Ok(format!("sessions/{}/{session_id}", encode_sub(sub)?))
}

fn plant(root: &Path, sub: &str, session_id: &str) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let path = root.join(expected_file(sub, session_id)?);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    Ok(path)
}

#[tokio::test]
async fn save_then_load_round_trips_and_overwrites() -> TestResult {
    let root = tempfile::tempdir()?;
    let store = open(root.path())?;

    let first = conversation("alice", "hello");
    store.save("alice", SESSION_ID, &first).await?;
    assert_eq!(
        store.load::<Conversation>("alice", SESSION_ID).await?,
        Some(first)
    );

    let second = conversation("alice", "second turn");
    store.save("alice", SESSION_ID, &second).await?;
    assert_eq!(
        store.load::<Conversation>("alice", SESSION_ID).await?,
        Some(second)
    );

    // Exactly one object, at the documented path; no staging file (`…#N`) left behind.
    assert_eq!(
        files_under(root.path())?,
        BTreeSet::from([expected_file("alice", SESSION_ID)?])
    );
    assert_eq!(
        object_path("alice", SESSION_ID)?.as_ref(),
        expected_file("alice", SESSION_ID)?
    );
    Ok(())
}

#[tokio::test]
async fn missing_conversation_is_none_and_delete_is_idempotent() -> TestResult {
    let root = tempfile::tempdir()?;
    let store = open(root.path())?;
    assert_eq!(store.load::<Conversation>("alice", SESSION_ID).await?, None);
    store.delete("alice", SESSION_ID).await?;

    store
        .save("alice", SESSION_ID, &conversation("alice", "hi"))
        .await?;
    store.delete("alice", SESSION_ID).await?;
    assert_eq!(store.load::<Conversation>("alice", SESSION_ID).await?, None);
    store.delete("alice", SESSION_ID).await?;
    assert!(files_under(root.path())?.is_empty());
    Ok(())
}

#[tokio::test]
async fn users_never_read_each_others_conversations() -> TestResult {
    let root = tempfile::tempdir()?;
    let store = open(root.path())?;
    let alice = conversation("alice", "alice's secret");
    store.save("alice", SESSION_ID, &alice).await?;

    // Same session id, different user (including a case variant): nothing to read.
    for other in ["bob", "Alice", "alice ", "ALICE"] {
        assert_eq!(
            store.load::<Conversation>(other, SESSION_ID).await?,
            None,
            "{other:?} read alice's conversation"
        );
    }

    let bob = conversation("bob", "bob's own");
    store.save("bob", SESSION_ID, &bob).await?;
    assert_eq!(
        store.load::<Conversation>("alice", SESSION_ID).await?,
        Some(alice.clone())
    );
    assert_eq!(
        store.load::<Conversation>("bob", SESSION_ID).await?,
        Some(bob)
    );

    // Bob deleting "his" session leaves alice's alone.
    store.delete("bob", SESSION_ID).await?;
    assert_eq!(
        store.load::<Conversation>("alice", SESSION_ID).await?,
        Some(alice)
    );
    Ok(())
}

#[tokio::test]
async fn hostile_subjects_stay_one_segment_inside_the_root() -> TestResult {
    let parent = tempfile::tempdir()?;
    let root = parent.path().join("root");
    let store = open(&root)?;
    let canonical_root = std::fs::canonicalize(&root)?;

    let subs = hostile_subs();
    let mut expected = BTreeSet::new();
    for sub in &subs {
        let segment = encode_sub(sub)?;
        assert!(!segment.is_empty());
        assert!(!segment.contains('/'), "{segment:?}");
        assert!(!segment.contains('\\'), "{segment:?}");
        assert!(segment != "." && segment != "..", "{segment:?}");
        assert!(segment.len() <= 240, "{} bytes", segment.len());
        assert!(
            segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
            "{segment:?}"
        );
        let path = object_path(sub, SESSION_ID)?;
        assert_eq!(path.parts().count(), 3, "{path}");
        assert_eq!(path.as_ref(), format!("sessions/{segment}/{SESSION_ID}"));
        assert!(path.as_ref().len() < 1024);

        store
            .save(sub, SESSION_ID, &conversation(sub, "mine"))
            .await?;
        expected.insert(expected_file(sub, SESSION_ID)?);
    }

    // Nothing escaped: the parent holds only the root, and the root holds exactly the
    // expected files, each at sessions/<segment>/<id>.
    let siblings: Vec<_> = std::fs::read_dir(parent.path())?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    assert_eq!(siblings, vec![std::ffi::OsString::from("root")]);
    let written = files_under(&root)?;
    assert_eq!(written, expected);
    assert_eq!(written.len(), subs.len());
    for file in &written {
        let absolute = std::fs::canonicalize(root.join(file))?;
        assert!(absolute.starts_with(&canonical_root), "{absolute:?}");
        assert_eq!(
            absolute.strip_prefix(&canonical_root)?.components().count(),
            3
        );
    }

    // And each subject reads back its own conversation.
    for sub in &subs {
        let loaded = store.load::<Conversation>(sub, SESSION_ID).await?;
        assert_eq!(loaded.map(|c| c.owner), Some(sub.clone()));
    }
    Ok(())
}

#[test]
fn encode_sub_is_injective() -> TestResult {
    let subs: HashSet<String> = injectivity_subs().into_iter().collect();
    let mut segments = HashSet::new();
    for sub in &subs {
        assert!(segments.insert(encode_sub(sub)?), "collision for {sub:?}");
    }
    assert_eq!(segments.len(), subs.len());

    // The boundary between the two forms.
    assert!(!encode_sub(&"a".repeat(180))?.starts_with("h."));
    assert_eq!(encode_sub(&"a".repeat(180))?.len(), 240);
    let hashed = encode_sub(&"a".repeat(181))?;
    assert!(hashed.starts_with("h.") && hashed.len() == 66, "{hashed}");
    assert!(!encode_sub(&"é".repeat(90))?.starts_with("h."));
    assert!(encode_sub(&format!("{}a", "é".repeat(90)))?.starts_with("h."));
    Ok(())
}

#[test]
fn empty_subject_is_rejected() {
    assert!(matches!(encode_sub(""), Err(StoreError::InvalidSubject(_))));
    assert!(matches!(
        object_path("", SESSION_ID),
        Err(StoreError::InvalidSubject(_))
    ));
}

#[tokio::test]
async fn bad_session_ids_are_rejected_and_nothing_is_written() -> TestResult {
    let root = tempfile::tempdir()?;
    let store = open(root.path())?;
    let huge = "x".repeat(100_000);
    let bad = [
        "",
        ".",
        "..",
        "../x",
        "a/b",
        "/abs",
        "a b",
        "a\0b",
        "%2e%2e",
        "a#1",
        "a\\b",
        "é",
        "\u{202E}abc",
        &"x".repeat(257),
        &huge,
    ];
    for id in bad {
        let error = validate_session_id(id).err();
        assert!(
            matches!(error, Some(StoreError::InvalidSessionId(_))),
            "accepted"
        );
        // The message explains without echoing the input.
        let message = error.map(|e| e.to_string()).unwrap_or_default();
        assert!(message.len() < 200, "{message}");
        if id.len() > 20 {
            assert!(!message.contains(&id[..20]), "{message}");
        }

        let value = conversation("alice", "x");
        assert!(matches!(
            store.save("alice", id, &value).await,
            Err(StoreError::InvalidSessionId(_))
        ));
        assert!(matches!(
            store.load::<Conversation>("alice", id).await,
            Err(StoreError::InvalidSessionId(_))
        ));
        assert!(matches!(
            store.delete("alice", id).await,
            Err(StoreError::InvalidSessionId(_))
        ));
    }
    assert!(files_under(root.path())?.is_empty());
    assert!(!root.path().join("sessions").exists());

    // Accepted shapes.
    for id in ["a", "A.b_c:d-e", "...", SESSION_ID] {
        store.save("alice", id, &conversation("alice", id)).await?;
        assert!(
            store
                .load::<Conversation>("alice", id)
                .await?
                .is_some_and(|c| c.messages[0].text == id)
        );
    }
    Ok(())
}

#[tokio::test]
async fn local_backend_limits_session_id_length_to_file_name_size() -> TestResult {
    let root = tempfile::tempdir()?;
    let store = open(root.path())?;
    let longest = "s".repeat(MAX_LOCAL_SESSION_ID_LEN);
    store
        .save("alice", &longest, &conversation("alice", "long"))
        .await?;
    assert!(
        store
            .load::<Conversation>("alice", &longest)
            .await?
            .is_some()
    );

    // 256 is a valid id in general (S3 takes it) but does not fit a local file name.
    let too_long = "s".repeat(256);
    validate_session_id(&too_long)?;
    assert!(matches!(
        store
            .save("alice", &too_long, &conversation("alice", "x"))
            .await,
        Err(StoreError::InvalidSessionId(_))
    ));
    assert_eq!(
        files_under(root.path())?,
        BTreeSet::from([expected_file("alice", &longest)?])
    );
    Ok(())
}

#[tokio::test]
async fn too_large_save_is_refused_and_nothing_is_written() -> TestResult {
    let root = tempfile::tempdir()?;
    let store = open(root.path())?;

    // A JSON string of n characters serializes to n + 2 bytes.
    let over = "x".repeat(MAX_CONVERSATION_BYTES - 1);
    let result = store.save("alice", SESSION_ID, &over).await;
    assert!(
        matches!(result, Err(StoreError::TooLarge { size, limit })
            if size == MAX_CONVERSATION_BYTES as u64 + 1 && limit == MAX_CONVERSATION_BYTES),
        "{result:?}"
    );
    assert!(files_under(root.path())?.is_empty());

    // Exactly at the limit is accepted and reads back.
    let at_limit = "y".repeat(MAX_CONVERSATION_BYTES - 2);
    store.save("alice", SESSION_ID, &at_limit).await?;
    assert_eq!(
        store.load::<String>("alice", SESSION_ID).await?,
        Some(at_limit)
    );

    // A refused overwrite leaves the previous conversation intact.
    assert!(matches!(
        store.save("alice", SESSION_ID, &over).await,
        Err(StoreError::TooLarge { .. })
    ));
    assert_eq!(
        store
            .load::<String>("alice", SESSION_ID)
            .await?
            .map(|s| s.len()),
        Some(MAX_CONVERSATION_BYTES - 2)
    );
    Ok(())
}

#[tokio::test]
async fn corrupt_objects_are_reported_without_their_content() -> TestResult {
    let root = tempfile::tempdir()?;
    let store = open(root.path())?;

    std::fs::write(plant(root.path(), "alice", "syntax")?, b"{not json")?;
    assert!(matches!(
        store.load::<Conversation>("alice", "syntax").await,
        Err(StoreError::Corrupt(_))
    ));

    std::fs::write(plant(root.path(), "alice", "empty")?, b"")?;
    assert!(matches!(
        store.load::<Conversation>("alice", "empty").await,
        Err(StoreError::Corrupt(_))
    ));

    // Valid JSON of the wrong shape; serde_json would quote the string in its message.
    std::fs::write(
        plant(root.path(), "alice", "shape")?,
        br#"{"owner":"top-secret-words","messages":"top-secret-words"}"#,
    )?;
    let error = store.load::<Conversation>("alice", "shape").await.err();
    let message = error.as_ref().map(|e| e.to_string()).unwrap_or_default();
    assert!(matches!(error, Some(StoreError::Corrupt(_))), "{message}");
    assert!(!message.contains("top-secret-words"), "{message}");
    Ok(())
}

#[tokio::test]
async fn huge_planted_file_is_refused_without_reading_it() -> TestResult {
    let root = tempfile::tempdir()?;
    let store = open(root.path())?;

    // A sparse 64 GiB file: reading it whole would take minutes and exhaust memory.
    let huge: u64 = 64 * 1024 * 1024 * 1024;
    std::fs::File::create(plant(root.path(), "alice", "huge")?)?.set_len(huge)?;
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        store.load::<Conversation>("alice", "huge"),
    )
    .await?;
    assert!(
        matches!(result, Err(StoreError::TooLarge { size, .. }) if size == huge),
        "{result:?}"
    );

    // One byte over the limit is refused too.
    let just_over = MAX_CONVERSATION_BYTES as u64 + 1;
    std::fs::File::create(plant(root.path(), "alice", "just-over")?)?.set_len(just_over)?;
    let result = store.load::<Conversation>("alice", "just-over").await;
    assert!(
        matches!(result, Err(StoreError::TooLarge { size, .. }) if size == just_over),
        "{result:?}"
    );
    Ok(())
}

#[cfg(unix)]
#[test]
fn local_directory_is_created_private() -> TestResult {
    use std::os::unix::fs::PermissionsExt as _;
    let parent = tempfile::tempdir()?;
    let dir = parent.path().join("a").join("conversations");
    let store = open(&dir)?;
    let mode = std::fs::metadata(&dir)?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{mode:o}");
    let debug = format!("{store:?}");
    assert!(debug.contains("local:"), "{debug}");
    // Opening an existing directory works, and clones share the backend.
    let again = open(&dir)?;
    let _clone = again.clone();
    Ok(())
}

#[test]
fn config_deserializes_from_tagged_tables() -> TestResult {
    let local: StoreConfig =
        serde_json::from_str(r#"{"kind":"local","dir":"/var/lib/latchkey/conversations"}"#)?;
    assert!(matches!(local, StoreConfig::Local { .. }));

    let s3: StoreConfig = serde_json::from_str(
        r#"{"kind":"s3","bucket":"b","region":"eu-west-1","prefix":"tenant-a",
            "access_key_id":"AKIAEXAMPLEKEYID","secret_access_key":"super-secret-key"}"#,
    )?;
    let debug = format!("{s3:?}");
    assert!(!debug.contains("AKIAEXAMPLEKEYID") && !debug.contains("super-secret-key"));
    let store = ConversationStore::new(&s3)?;
    let debug = format!("{store:?}");
    assert!(debug.contains("s3://b/tenant-a"), "{debug}");
    assert!(!debug.contains("AKIAEXAMPLEKEYID") && !debug.contains("super-secret-key"));

    // Unknown keys and unknown kinds are configuration errors, not silently ignored.
    assert!(
        serde_json::from_str::<StoreConfig>(r#"{"kind":"local","dir":"/x","bucket":"b"}"#).is_err()
    );
    assert!(serde_json::from_str::<StoreConfig>(r#"{"kind":"gcs","dir":"/x"}"#).is_err());
    Ok(())
}

#[test]
fn s3_config_errors_are_reported_without_secrets() {
    let half = StoreConfig::S3 {
        bucket: "b".into(),
        prefix: None,
        region: "us-east-1".into(),
        endpoint: None,
        allow_http: false,
        access_key_id: None,
        secret_access_key: Some("super-secret-key".into()),
        session_token: None,
    };
    let error = ConversationStore::new(&half).err();
    let message = error.as_ref().map(|e| e.to_string()).unwrap_or_default();
    assert!(matches!(error, Some(StoreError::Backend(_))), "{message}");
    assert!(!message.contains("super-secret-key"), "{message}");

    for prefix in ["../up", "a//b", "a/../b", "."] {
        let config = StoreConfig::S3 {
            bucket: "b".into(),
            prefix: Some(prefix.into()),
            region: "us-east-1".into(),
            endpoint: None,
            allow_http: false,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
        };
        assert!(
            matches!(ConversationStore::new(&config), Err(StoreError::Backend(_))),
            "prefix {prefix:?} accepted"
        );
    }
}
