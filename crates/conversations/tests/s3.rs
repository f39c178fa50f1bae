//! The store against a real S3 API: `moto_server` on a free loopback port.
//!
//! `moto_server` comes from `tests/python/requirements.txt` (`moto[server]`), installed into
//! `/work/main/.venv` by `scripts/test`; `LATCHKEY_MOTO_SERVER` overrides its path. A missing
//! server fails the suite: it never skips.

mod common;

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::{Conversation, SESSION_ID, conversation, hostile_subs};
use futures_util::TryStreamExt as _;
use latchkey_conversations::{
    ConversationStore, MAX_CONVERSATION_BYTES, StoreConfig, StoreError, encode_sub,
};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ObjectStore as _, ObjectStoreExt as _, PutPayload};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const ACCESS_KEY_ID: &str = "testing";
const SECRET_ACCESS_KEY: &str = "testing-secret";
const REGION: &str = "us-east-1";
const BUCKET: &str = "latchkey-conversations";
const PREFIX: &str = "tenant-a/agent";

/// A `moto_server` child process, killed when dropped.
struct MotoServer {
    child: Child,
    endpoint: String,
    _log_dir: tempfile::TempDir,
}

impl MotoServer {
    fn binary() -> PathBuf {
        let path = std::env::var_os("LATCHKEY_MOTO_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/moto_server")
            });
        assert!(
            path.is_file(),
            "moto_server not found at {}.\nInstall it with:\n  \
             python3 -m venv .venv && .venv/bin/pip install -r tests/python/requirements.txt\n\
             (it pins moto[server]), or point LATCHKEY_MOTO_SERVER at a moto_server binary. \
             The S3 tests never skip.",
            path.display()
        );
        path
    }

    fn start() -> Result<Self, Box<dyn std::error::Error>> {
        let binary = Self::binary();
        let mut last_log = String::new();
        // A free port can be taken between probing and binding; retry a few times.
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let log_dir = tempfile::tempdir()?;
            let log_path = log_dir.path().join("moto.log");
            let log = std::fs::File::create(&log_path)?;
            let child = Command::new(&binary)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
            let mut server = Self {
                child,
                endpoint: format!("http://127.0.0.1:{port}"),
                _log_dir: log_dir,
            };
            let address = SocketAddr::from(([127, 0, 0, 1], port));
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Some(status) = server.child.try_wait()? {
                    last_log = format!(
                        "moto_server exited with {status}:\n{}",
                        std::fs::read_to_string(&log_path).unwrap_or_default()
                    );
                    break;
                }
                if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                    return Ok(server);
                }
                if Instant::now() > deadline {
                    panic!(
                        "moto_server did not listen on {address} within 60 s:\n{}",
                        std::fs::read_to_string(&log_path).unwrap_or_default()
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        panic!("moto_server failed to start three times; last output:\n{last_log}");
    }

    /// Creates a bucket with a SigV4-signed `PUT /{bucket}` (object_store cannot).
    async fn create_bucket(&self, bucket: &str) -> TestResult {
        use aws_sigv4::http_request::{
            PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings, sign,
        };
        use aws_sigv4::sign::v4;

        let url = format!("{}/{bucket}", self.endpoint);
        let identity = aws_credential_types::Credentials::new(
            ACCESS_KEY_ID,
            SECRET_ACCESS_KEY,
            None,
            None,
            "latchkey-tests",
        )
        .into();
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(REGION)
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()?
            .into();
        let signable =
            SignableRequest::new("PUT", &url, std::iter::empty(), SignableBody::Bytes(&[]))?;
        let (instructions, _signature) = sign(signable, &params)?.into_parts();
        let mut request = http::Request::builder()
            .method("PUT")
            .uri(&url)
            .body(Vec::<u8>::new())?;
        instructions.apply_to_request_http1x(&mut request);

        let response = reqwest::Client::new()
            .execute(reqwest::Request::try_from(request)?)
            .await?;
        let status = response.status();
        let body = response.text().await?;
        assert!(status.is_success(), "create bucket: {status}: {body}");
        Ok(())
    }

    fn config(&self, prefix: Option<&str>) -> StoreConfig {
        StoreConfig::S3 {
            bucket: BUCKET.to_owned(),
            prefix: prefix.map(str::to_owned),
            region: REGION.to_owned(),
            endpoint: Some(self.endpoint.clone()),
            allow_http: true,
            access_key_id: Some(ACCESS_KEY_ID.to_owned()),
            secret_access_key: Some(SECRET_ACCESS_KEY.into()),
            session_token: None,
        }
    }

    /// A plain client on the whole bucket, to inspect and plant objects.
    fn raw(&self) -> Result<AmazonS3, object_store::Error> {
        AmazonS3Builder::new()
            .with_bucket_name(BUCKET)
            .with_region(REGION)
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .with_access_key_id(ACCESS_KEY_ID)
            .with_secret_access_key(SECRET_ACCESS_KEY)
            .build()
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn keys(raw: &AmazonS3) -> Result<BTreeSet<String>, object_store::Error> {
    raw.list(None)
        .map_ok(|meta| meta.location.to_string())
        .try_collect()
        .await
}

async fn clear(raw: &AmazonS3) -> TestResult {
    for key in keys(raw).await? {
        raw.delete(&Path::from(key)).await?;
    }
    Ok(())
}

fn expected_key(prefix: &str, sub: &str, session_id: &str) -> Result<String, StoreError> {
    Ok(format!(
        "{prefix}/sessions/{}/{session_id}",
        encode_sub(sub)?
    ))
}

/// One server for the whole suite; each scenario starts from an empty bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_backend_against_moto() -> TestResult {
    let moto = MotoServer::start()?;
    moto.create_bucket(BUCKET).await?;
    let raw = moto.raw()?;

    round_trip_under_prefix(&moto, &raw).await?;
    clear(&raw).await?;
    users_are_isolated(&moto).await?;
    clear(&raw).await?;
    hostile_subjects_stay_one_segment(&moto, &raw).await?;
    clear(&raw).await?;
    prefixes_partition_the_bucket(&moto, &raw).await?;
    clear(&raw).await?;
    limits_and_corruption(&moto, &raw).await?;
    Ok(())
}

async fn round_trip_under_prefix(moto: &MotoServer, raw: &AmazonS3) -> TestResult {
    let store = ConversationStore::new(&moto.config(Some(PREFIX)))?;
    assert_eq!(store.load::<Conversation>("alice", SESSION_ID).await?, None);
    store.delete("alice", SESSION_ID).await?;

    let first = conversation("alice", "hello");
    store.save("alice", SESSION_ID, &first).await?;
    assert_eq!(
        store.load::<Conversation>("alice", SESSION_ID).await?,
        Some(first)
    );
    let second = conversation("alice", "again");
    store.save("alice", SESSION_ID, &second).await?;
    assert_eq!(
        store.load::<Conversation>("alice", SESSION_ID).await?,
        Some(second)
    );
    assert_eq!(
        keys(raw).await?,
        BTreeSet::from([expected_key(PREFIX, "alice", SESSION_ID)?])
    );

    // The full AgentCore session-id length fits in S3.
    let long_id = "s".repeat(256);
    store
        .save("alice", &long_id, &conversation("alice", "long"))
        .await?;
    assert!(
        store
            .load::<Conversation>("alice", &long_id)
            .await?
            .is_some()
    );

    store.delete("alice", SESSION_ID).await?;
    store.delete("alice", &long_id).await?;
    assert_eq!(store.load::<Conversation>("alice", SESSION_ID).await?, None);
    assert!(keys(raw).await?.is_empty());

    // Debug shows where, not with what.
    let debug = format!("{store:?}");
    assert!(
        debug.contains("s3://latchkey-conversations/tenant-a/agent"),
        "{debug}"
    );
    assert!(!debug.contains(SECRET_ACCESS_KEY), "{debug}");
    Ok(())
}

async fn users_are_isolated(moto: &MotoServer) -> TestResult {
    let store = ConversationStore::new(&moto.config(Some(PREFIX)))?;
    let alice = conversation("alice", "alice's secret");
    store.save("alice", SESSION_ID, &alice).await?;
    for other in ["bob", "Alice", "alice ", "ALICE"] {
        assert_eq!(
            store.load::<Conversation>(other, SESSION_ID).await?,
            None,
            "{other:?} read alice's conversation"
        );
    }
    let bob = conversation("bob", "bob's own");
    store.save("bob", SESSION_ID, &bob).await?;
    store.delete("bob", SESSION_ID).await?;
    assert_eq!(
        store.load::<Conversation>("alice", SESSION_ID).await?,
        Some(alice)
    );
    Ok(())
}

async fn hostile_subjects_stay_one_segment(moto: &MotoServer, raw: &AmazonS3) -> TestResult {
    let store = ConversationStore::new(&moto.config(Some(PREFIX)))?;
    let subs = hostile_subs();
    let mut expected = BTreeSet::new();
    for sub in &subs {
        store
            .save(sub, SESSION_ID, &conversation(sub, "mine"))
            .await?;
        expected.insert(expected_key(PREFIX, sub, SESSION_ID)?);
    }
    let written = keys(raw).await?;
    assert_eq!(written, expected);
    for key in &written {
        assert!(key.len() < 1024, "{} bytes", key.len());
        let parts: Vec<&str> = key.split('/').collect();
        assert_eq!(parts.len(), 5, "{key}");
        assert_eq!(parts[..3], ["tenant-a", "agent", "sessions"]);
        assert!(parts[3] != "." && parts[3] != ".." && !parts[3].is_empty());
        assert_eq!(parts[4], SESSION_ID);
    }
    for sub in &subs {
        let loaded = store.load::<Conversation>(sub, SESSION_ID).await?;
        assert_eq!(loaded.map(|c| c.owner), Some(sub.clone()));
    }
    Ok(())
}

async fn prefixes_partition_the_bucket(moto: &MotoServer, raw: &AmazonS3) -> TestResult {
    let tenant_a = ConversationStore::new(&moto.config(Some(PREFIX)))?;
    let tenant_b = ConversationStore::new(&moto.config(Some("tenant-b/agent")))?;
    let unprefixed = ConversationStore::new(&moto.config(None))?;

    tenant_a
        .save("alice", SESSION_ID, &conversation("alice", "a"))
        .await?;
    assert_eq!(
        tenant_b.load::<Conversation>("alice", SESSION_ID).await?,
        None
    );
    assert_eq!(
        unprefixed.load::<Conversation>("alice", SESSION_ID).await?,
        None
    );
    unprefixed
        .save("alice", SESSION_ID, &conversation("alice", "root"))
        .await?;
    assert_eq!(
        keys(raw).await?,
        BTreeSet::from([
            expected_key(PREFIX, "alice", SESSION_ID)?,
            format!("sessions/{}/{SESSION_ID}", encode_sub("alice")?),
        ])
    );
    assert_eq!(
        tenant_a
            .load::<Conversation>("alice", SESSION_ID)
            .await?
            .map(|c| c.messages[0].text.clone()),
        Some("a".to_owned())
    );
    Ok(())
}

async fn limits_and_corruption(moto: &MotoServer, raw: &AmazonS3) -> TestResult {
    let store = ConversationStore::new(&moto.config(Some(PREFIX)))?;

    // Too large to save: refused before any request.
    let over = "x".repeat(MAX_CONVERSATION_BYTES - 1);
    assert!(matches!(
        store.save("alice", SESSION_ID, &over).await,
        Err(StoreError::TooLarge { .. })
    ));
    assert!(keys(raw).await?.is_empty());

    // Bad session ids: refused before any request.
    for id in ["", "..", "a/b", "%2e%2e"] {
        assert!(matches!(
            store.save("alice", id, &conversation("alice", "x")).await,
            Err(StoreError::InvalidSessionId(_))
        ));
    }
    assert!(keys(raw).await?.is_empty());

    // Planted objects: corrupt JSON, and one byte over the limit.
    raw.put(
        &Path::from(expected_key(PREFIX, "alice", "corrupt")?),
        PutPayload::from_static(b"{not json"),
    )
    .await?;
    assert!(matches!(
        store.load::<Conversation>("alice", "corrupt").await,
        Err(StoreError::Corrupt(_))
    ));

    let just_over = MAX_CONVERSATION_BYTES + 1;
    raw.put(
        &Path::from(expected_key(PREFIX, "alice", "big")?),
        PutPayload::from(vec![b' '; just_over]),
    )
    .await?;
    let result = store.load::<Conversation>("alice", "big").await;
    assert!(
        matches!(result, Err(StoreError::TooLarge { size, .. }) if size == just_over as u64),
        "{result:?}"
    );
    Ok(())
}
