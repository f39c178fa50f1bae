//! Shared by the binary's integration tests: start the real `latchkey serve identity`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_latchkey")
}

/// `latchkey serve identity` on a free loopback port over `dir`; the child and its
/// `http://ADDR` from the line it prints once listening.
pub fn spawn_identity(dir: &Path) -> (Child, String) {
    let mut child = Command::new(bin())
        .args(["serve", "identity", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("LATCHKEY_LOG_LEVEL", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read listening line");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("server did not start: {line:?}"))
        .to_string();
    (child, url)
}
