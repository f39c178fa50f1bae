//! `latchkey admin vault rotate-key` against a running `latchkey serve identity`: the
//! server keeps serving during and after the rotation, every envelope ends up under the
//! new key, the old key leaves the key file, and a restarted server opens everything.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

mod common;
use common::{bin, run_ok};

/// A data directory removed at the end of the test.
struct DataDir(PathBuf);

impl DataDir {
    fn new(name: &str) -> Self {
        Self(common::temp_dir(&format!("kek-{name}")))
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path) -> Server {
    let (child, url) = common::spawn_identity(dir);
    Server {
        child,
        addr: url.trim_start_matches("http://").to_string(),
    }
}

/// Run `latchkey ARGS --data-dir DIR`; stdout as JSON.
fn cli(dir: &Path, args: &[&str]) -> Value {
    let out = run_ok(
        Command::new(bin())
            .args(args)
            .arg("--data-dir")
            .arg(dir)
            .env("LATCHKEY_LOG_LEVEL", "warn"),
        &format!("latchkey {args:?}"),
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "latchkey {args:?}: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn credential(dir: &Path) -> (String, String) {
    common::credential(dir, "admin")
}

/// `POST path` with a bearer key and a JSON body, over a fresh connection.
fn post(addr: &str, path: &str, (id, secret): &(String, String), body: &Value) -> (u16, Value) {
    let body = body.to_string();
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {id}:{secret}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read response");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut payload = raw[split + 4..].to_vec();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        payload = dechunk(&payload);
    }
    let value = if payload.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&payload)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&payload).to_string()))
    };
    (status, value)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&data[..line_end])
                .split(';')
                .next()
                .unwrap()
                .trim(),
            16,
        )
        .unwrap();
        if size == 0 {
            return out;
        }
        let start = line_end + 2;
        out.extend_from_slice(&data[start..start + size]);
        data = &data[start + size + 2..];
    }
}

fn ok(addr: &str, path: &str, who: &(String, String), body: Value) -> Value {
    let (status, v) = post(addr, path, who, &body);
    assert!((200..300).contains(&status), "{path} {body}: {status} {v}");
    v
}

fn create_api_key(addr: &str, who: &(String, String), name: &str, key: &str) {
    ok(
        addr,
        "/identities/CreateApiKeyCredentialProvider",
        who,
        json!({"name": name, "apiKey": key}),
    );
}

fn wat(addr: &str, who: &(String, String)) -> String {
    ok(
        addr,
        "/identities/GetWorkloadAccessTokenForUserId",
        who,
        json!({"workloadName": "agent", "userId": "alice"}),
    )["workloadAccessToken"]
        .as_str()
        .unwrap()
        .to_string()
}

fn api_key(addr: &str, who: &(String, String), wat: &str, name: &str) -> String {
    ok(
        addr,
        "/identities/api-key",
        who,
        json!({"workloadIdentityToken": wat, "resourceCredentialProviderName": name}),
    )["apiKey"]
        .as_str()
        .unwrap()
        .to_string()
}

fn key_file(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("kek.json")).unwrap()).unwrap()
}

fn file_key_ids(dir: &Path) -> Vec<String> {
    key_file(dir)["keys"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

/// A server on a fresh data directory, with an admin credential and the workload `agent`.
struct Serving {
    dir: DataDir,
    admin: (String, String),
    server: Server,
    addr: String,
    /// The key file's active key id at the start.
    old_key: String,
}

fn serving_agent(name: &str) -> Serving {
    let dir = DataDir::new(name);
    let admin = credential(&dir.0);
    let server = start(&dir.0);
    let addr = server.addr.clone();
    let old_key = key_file(&dir.0)["active"].as_str().unwrap().to_string();
    ok(
        &addr,
        "/identities/CreateWorkloadIdentity",
        &admin,
        json!({"name": "agent"}),
    );
    Serving {
        dir,
        admin,
        server,
        addr,
        old_key,
    }
}

#[test]
fn rotate_while_serving_then_restart() {
    let Serving {
        dir,
        admin,
        server,
        addr,
        old_key,
    } = serving_agent("live");
    create_api_key(&addr, &admin, "k1", "sk-before-rotation");
    let token = wat(&addr, &admin);
    assert_eq!(api_key(&addr, &admin, &token, "k1"), "sk-before-rotation");

    // Traffic during the rotation: reads and writes must keep working throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (stop, addr, admin, token) = (stop.clone(), addr.clone(), admin.clone(), token.clone());
        std::thread::spawn(move || {
            let mut created = vec![];
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                assert_eq!(api_key(&addr, &admin, &token, "k1"), "sk-before-rotation");
                let name = format!("during-{i}");
                create_api_key(&addr, &admin, &name, &format!("sk-{name}"));
                assert_eq!(api_key(&addr, &admin, &token, &name), format!("sk-{name}"));
                created.push(name);
                i += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            created
        })
    };
    let report = cli(
        &dir.0,
        &["admin", "vault", "rotate-key", "--grace-seconds", "3"],
    );
    stop.store(true, Ordering::Relaxed);
    let during = traffic.join().expect("traffic during rotation");
    assert!(during.len() >= 5, "traffic ran during the rotation");

    let new_key = report["activeKeyId"].as_str().unwrap().to_string();
    assert_ne!(new_key, old_key);
    assert_eq!(report["previousKeyId"], json!(old_key));
    assert_eq!(report["retiredKeyIds"], json!([old_key]));
    assert_eq!(report["rewrap"]["total"]["failed"], json!(0));
    // The admin credential, k1, the WAT signing key, and providers created during the
    // grace period (sealed under the old key until the server noticed the new file).
    assert!(report["rewrap"]["total"]["rewrapped"].as_u64().unwrap() >= 3);
    assert_eq!(report["oldKeysStillInUse"], json!({}));
    let text = serde_json::to_string(&report).unwrap();
    assert!(!text.contains("sk-"), "no secrets in the report");
    let file = key_file(&dir.0);
    for k in file["keys"].as_object().unwrap().values() {
        assert!(
            !text.contains(k.as_str().unwrap()),
            "no key material in the report"
        );
    }
    assert_eq!(file_key_ids(&dir.0), vec![new_key.clone()]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.0.join("kek.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // The running server still serves: old data, new data, the old credential, a new one.
    ok(
        &addr,
        "/identities/GetApiKeyCredentialProvider",
        &admin,
        json!({"name": "k1"}),
    );
    assert_eq!(api_key(&addr, &admin, &token, "k1"), "sk-before-rotation");
    create_api_key(&addr, &admin, "k2", "sk-after-rotation");
    assert_eq!(api_key(&addr, &admin, &token, "k2"), "sk-after-rotation");
    let second = credential(&dir.0);
    assert_eq!(api_key(&addr, &second, &token, "k2"), "sk-after-rotation");

    // Every envelope is under the new key.
    let status = cli(&dir.0, &["admin", "vault", "status"]);
    assert_eq!(status["activeKeyId"], json!(new_key));
    assert_eq!(status["keyIds"], json!([new_key]));
    let by_key = status["envelopesByKeyId"].as_object().unwrap();
    assert_eq!(
        by_key.keys().collect::<Vec<_>>(),
        vec![&new_key],
        "{status}"
    );
    // 2 credentials + 1 signing key + the audit key + k1 + k2 + the providers created
    // during rotation.
    assert_eq!(
        by_key[&new_key].as_u64().unwrap(),
        6 + during.len() as u64,
        "{status}"
    );

    // The audit trail records the rotation.
    let out = Command::new(bin())
        .args(["admin", "audit", "list", "--limit", "1000", "--data-dir"])
        .arg(&dir.0)
        .output()
        .unwrap();
    let audit = String::from_utf8_lossy(&out.stdout);
    let event: Value = audit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["action"] == "RotateKeyEncryptionKey")
        .expect("rotation audit event");
    assert_eq!(event["target"], json!(new_key));
    // The audit chain stays verifiable with the rotated key file alone (the audit key
    // was re-wrapped like every other envelope; the old key is retired).
    let verify = Command::new(bin())
        .args(["admin", "audit", "verify", "--data-dir"])
        .arg(&dir.0)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(String::from_utf8_lossy(&verify.stdout).contains("audit chain intact"));

    // A restarted server opens everything with the new key file alone.
    drop(server);
    let server = start(&dir.0);
    let addr = server.addr.clone();
    let token = wat(&addr, &admin);
    assert_eq!(api_key(&addr, &admin, &token, "k1"), "sk-before-rotation");
    assert_eq!(api_key(&addr, &second, &token, "k2"), "sk-after-rotation");
    for name in &during {
        assert_eq!(api_key(&addr, &admin, &token, name), format!("sk-{name}"));
    }
}

#[test]
fn running_server_opens_data_sealed_under_a_key_it_has_not_loaded() {
    let live = serving_agent("unknown-kid");
    let token = wat(&live.addr, &live.admin);

    // Rotate without waiting, keep the old key; then the CLI seals a new credential with
    // the new key, which the server has never seen (it has sealed nothing since).
    let report = cli(
        &live.dir.0,
        &[
            "admin",
            "vault",
            "rotate-key",
            "--grace-seconds",
            "0",
            "--no-retire",
        ],
    );
    let new_key = report["activeKeyId"].as_str().unwrap().to_string();
    assert_eq!(report["retiredKeyIds"], json!([]));
    let mut ids = vec![live.old_key.clone(), new_key.clone()];
    ids.sort();
    assert_eq!(file_key_ids(&live.dir.0), ids);

    let fresh = credential(&live.dir.0);
    let (status, body) = post(
        &live.addr,
        "/identities/CreateApiKeyCredentialProvider",
        &fresh,
        &json!({"name": "k-new", "apiKey": "sk-new"}),
    );
    assert!(
        (200..300).contains(&status),
        "a credential sealed under the new key authenticates: {status} {body}"
    );
    assert_eq!(api_key(&live.addr, &fresh, &token, "k-new"), "sk-new");

    // The reload also moved the server's active key: what it sealed is under the new key.
    let status = cli(&live.dir.0, &["admin", "vault", "status"]);
    let columns = &status["columns"]["api_key_providers.secret_envelope"];
    assert_eq!(columns, &json!({ new_key.clone(): 1 }), "{status}");
    assert_eq!(
        status["envelopesByKeyId"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        vec![&new_key],
        "{status}"
    );
}
