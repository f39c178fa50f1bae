//! Shared by the binary's integration tests: start the real `latchkey serve identity`,
//! create credentials with the real CLI.
#![allow(dead_code)] // each test binary uses a subset

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_latchkey")
}

/// `latchkey serve identity` on a free loopback port over `dir`; the child and its
/// `http://ADDR` from the line it prints once listening.
pub fn spawn_identity(dir: &Path) -> (Child, String) {
    spawn_identity_with(dir, &[])
}

/// [`spawn_identity`] with extra environment variables.
pub fn spawn_identity_with(dir: &Path, env: &[(&str, &str)]) -> (Child, String) {
    let mut child = Command::new(bin())
        .envs(env.iter().copied())
        .args(["serve", "identity", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("LATCHKEY_LOG_LEVEL", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn server");
    let url = listening_url(&mut child);
    (child, url)
}

/// Read the first stdout line of `child` and return the `http://…` URL in it (no trailing
/// slash).
pub fn listening_url(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read listening line");
    line.split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("did not start: {line:?}"))
        .trim_end_matches('/')
        .to_string()
}

/// `latchkey admin init` over `dir`: the installation every other admin command needs.
pub fn init(dir: &Path) {
    run_ok(
        Command::new(bin())
            .args(["admin", "init", "--data-dir"])
            .arg(dir),
        "admin init",
    );
}

/// `latchkey admin credentials create --role ROLE --json` over `dir` (initialised first,
/// as an operator does): (access key id, secret).
pub fn credential(dir: &Path, role: &str) -> (String, String) {
    init(dir);
    let out = run_ok(
        Command::new(bin())
            .args([
                "admin",
                "credentials",
                "create",
                "--role",
                role,
                "--json",
                "--data-dir",
            ])
            .arg(dir),
        "admin credentials create",
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let field = |k: &str| v[k].as_str().expect("credential field").to_string();
    (field("accessKeyId"), field("secretAccessKey"))
}

/// Runs `command` to its end; it must succeed (else the failure shows `what` and its
/// stderr). Its output.
pub fn run_ok(command: &mut Command, what: &str) -> std::process::Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A child process killed on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A fresh directory under the system temp dir, unique per process and call.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "latchkey-test-{name}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}
