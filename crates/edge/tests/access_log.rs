//! The JSON-lines access log.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use latchkey_edge::access_log::{AccessLog, AccessLogEntry, strip_query};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Test entries live for the whole test run.
fn leak(text: String) -> &'static str {
    Box::leak(text.into_boxed_str())
}

/// Each field of a logged line has the value given.
fn assert_fields(value: &Value, expected: &[(&str, Value)]) {
    for (field, want) in expected {
        assert_eq!(&value[field], want, "{field}");
    }
}

fn entry(i: usize) -> AccessLogEntry<'static> {
    AccessLogEntry {
        time: OffsetDateTime::now_utc(),
        client: if i.is_multiple_of(2) {
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))
        } else {
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        },
        user: i.is_multiple_of(3).then(|| leak(format!("user-{i}"))),
        method: "GET",
        path: leak(format!(
            "/oauth2/callback/{i}?code=SECRET-CODE-{i}&state=s#frag"
        )),
        status: 302,
        bytes: i as u64,
        latency_ms: 1.25,
        upstream: Some("http://127.0.0.1:9000"),
    }
}

#[test]
fn one_json_line_without_query() {
    let line = entry(3).to_json_line();
    assert!(line.ends_with('\n'));
    assert_eq!(line.matches('\n').count(), 1);
    let mut value: Value = serde_json::from_str(&line).expect("json");
    let fields = value.as_object_mut().expect("object");
    assert_eq!(fields.len(), 9, "{fields:?}");
    let time = fields.remove("time").expect("time");
    OffsetDateTime::parse(time.as_str().expect("time is a string"), &Rfc3339).expect("RFC 3339");
    assert!(!line.contains("SECRET"));
    assert_eq!(
        value,
        json!({
            "path": "/oauth2/callback/3",
            "client": "::1",
            "user": "user-3",
            "method": "GET",
            "status": 302,
            "bytes": 3,
            "latency_ms": 1.25,
            "upstream": "http://127.0.0.1:9000",
        })
    );
}

#[test]
fn line_format_edge_cases() {
    let mut e = entry(0);
    e.time = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_000_000_007).expect("time");
    e.client = IpAddr::V6("2001:db8::1".parse().expect("ip"));
    e.user = Some("a\"b\\c\u{1}é");
    e.path = "/p\"q?secret";
    e.latency_ms = 1234.5678;
    e.status = 0;
    e.bytes = u64::MAX;
    let line = e.to_json_line();
    let value: Value = serde_json::from_str(&line).expect("json");
    assert_fields(
        &value,
        &[
            ("time", json!("2023-11-14T22:13:20.000000007Z")),
            ("client", json!("2001:db8::1")),
            ("user", json!("a\"b\\c\u{1}é")),
            ("path", json!("/p\"q")),
            ("latency_ms", json!(1234.568)),
            ("status", json!(0)),
            ("bytes", json!(u64::MAX)),
        ],
    );
    e.latency_ms = f64::NAN;
    e.user = None;
    e.upstream = None;
    let value: Value = serde_json::from_str(&e.to_json_line()).expect("json");
    assert_eq!(value["latency_ms"], 0.0);
    assert!(value["user"].is_null() && value["upstream"].is_null());
}

#[test]
fn strips_query_and_fragment() {
    assert_eq!(strip_query("/a?b=c"), "/a");
    assert_eq!(strip_query("/a#x?y"), "/a");
    assert_eq!(strip_query("/plain"), "/plain");
    assert_eq!(strip_query("?only"), "");
}

#[test]
fn concurrent_writers_to_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("access.log");
    let log = AccessLog::file(&path).expect("open");
    assert!(log.is_enabled());
    let threads = 8;
    let per_thread = 2_000;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    log.record(&entry(t * per_thread + i));
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("writer");
    }
    log.flush();
    let text = std::fs::read_to_string(&path).expect("read");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), threads * per_thread);
    let mut seen = vec![false; threads * per_thread];
    for line in &lines {
        let value: Value = serde_json::from_str(line).expect("every line is JSON");
        let path = value["path"].as_str().expect("path");
        assert!(!path.contains('?') && !line.contains("SECRET"), "{line}");
        let n: usize = path
            .rsplit('/')
            .next()
            .and_then(|n| n.parse().ok())
            .expect("index");
        seen[n] = true;
    }
    assert!(seen.iter().all(|&s| s), "every entry written once");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o077, 0, "not readable by others: {mode:o}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_writers_and_drop_flushes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nested-append.log");
    std::fs::write(&path, "").expect("create");
    let log = Arc::new(AccessLog::file(&path).expect("open"));
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let log = log.clone();
            tokio::spawn(async move {
                for i in 0..100 {
                    log.record(&entry(t * 100 + i));
                    if i % 10 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    // Dropping the last handle drains and flushes the writer.
    tokio::task::spawn_blocking(move || drop(log))
        .await
        .expect("drop");
    let text = std::fs::read_to_string(&path).expect("read");
    assert_eq!(text.lines().count(), 1_600);
    for line in text.lines() {
        serde_json::from_str::<Value>(line).expect("JSON line");
    }
    // Appending keeps earlier lines.
    let again = AccessLog::file(&path).expect("reopen");
    again.record(&entry(0));
    again.flush();
    let text = std::fs::read_to_string(&path).expect("read");
    assert_eq!(text.lines().count(), 1_601);
}

#[test]
fn disabled_and_stdout() {
    let disabled = AccessLog::disabled();
    assert!(!disabled.is_enabled());
    disabled.record(&entry(1));
    disabled.flush();
    let stdout = AccessLog::stdout();
    assert!(stdout.is_enabled());
    stdout.record(&entry(2));
    stdout.flush();
    assert!(format!("{stdout:?}").contains("stdout"));
}
