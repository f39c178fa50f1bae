//! The real binary's text log written to a file (not a terminal): no colour escape
//! sequences, one line per event.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{Proc, bin, temp_dir};

#[test]
fn text_log_to_a_file_has_no_escape_sequences() {
    let dir = temp_dir("log-file");
    let log_path = dir.join("stderr.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(bin())
        .args(["serve", "identity", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("data"))
        .env("LATCHKEY_LOG_LEVEL", "debug")
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("spawn server");
    let stdout = child.stdout.take().unwrap();
    let server = Proc(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let address = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http://"))
        .unwrap_or_else(|| panic!("server did not start: {line:?}"))
        .to_string();
    // A refused request adds a log line of its own.
    let _ = std::net::TcpStream::connect(&address).map(|mut s| {
        use std::io::{Read, Write};
        let _ = s.write_all(
            b"POST /identities/GetWorkloadAccessToken HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
        );
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = std::fs::read(&log_path).unwrap();
        if text.windows(5).any(|w| w == b"INFO ") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(server);
    let shown = String::from_utf8_lossy(&text);
    assert!(shown.contains("identity service starting"), "{shown}");
    assert!(
        !text.contains(&0x1b),
        "the log file holds ANSI escape sequences: {shown:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
