//! Property tests of the edge's request rules (issue 12): `rules::check` never panics on
//! arbitrary request heads, and every request it lets through is safe by an independent
//! reading of the rules: no dot segment, encoded slash, backslash or control character in
//! the path after one, two or three rounds of percent-decoding; no control character in
//! the query; unambiguous framing; one well-formed Host.
//!
//! Bounded: [`CASES`] cases per property, so `cargo test --workspace` runs them.

use http::request::Parts;
use http::{Method, Request, Uri};
use latchkey_edge::rules::{self, MAX_HEADERS};
use proptest::prelude::*;

const CASES: u32 = 512;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        ..ProptestConfig::default()
    }
}

fn parts(method: &str, uri: &str, headers: &[(String, Vec<u8>)]) -> Option<Parts> {
    let uri: Uri = uri.parse().ok()?;
    let method = Method::from_bytes(method.as_bytes()).ok()?;
    let mut builder = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        builder = builder.header(name.as_str(), value.as_slice());
    }
    Some(builder.body(()).ok()?.into_parts().0)
}

/// The pieces attacks are made of.
const PIECES: &[&str] = &[
    "/",
    "/",
    "/",
    "a",
    "b1",
    ".",
    "..",
    "%2e",
    "%2E",
    "%2e%2e",
    ".%2e",
    "%252e",
    "%25252e",
    "%2f",
    "%2F",
    "%252f",
    "%5c",
    "%5C",
    "%255c",
    "\\",
    "%00",
    "%2500",
    "%0a",
    "%0d",
    "%7f",
    "%c2%85",
    "%c0%ae",
    "%e0%80%ae",
    "%ed%a0%80",
    "%",
    "%4",
    "%zz",
    "%25",
    "%2525",
    ";",
    ";x=1",
    "%3b",
    "~",
    "-",
    "_",
    "%41",
    "%c3%a9",
    "é",
    "?",
    "&",
    "=",
    "#",
    " ",
    "%20",
    "*",
];

fn attack_path() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(PIECES), 0..10).prop_map(|p| {
        let mut s = String::from("/");
        s.push_str(&p.concat());
        s
    })
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// One lenient round of percent-decoding, independent of the implementation.
fn decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%'
            && let (Some(h), Some(l)) = (
                input.get(i + 1).copied().and_then(hex),
                input.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

/// What must hold of a path the rules accepted.
fn assert_path_safe(path: &str) -> Result<(), TestCaseError> {
    prop_assert!(path.starts_with('/'), "{path}");
    let mut current = path.as_bytes().to_vec();
    for round in 0..=3 {
        let text = String::from_utf8(current.clone());
        prop_assert!(text.is_ok(), "{path}: round {round} is not UTF-8");
        let text = text.unwrap_or_default();
        prop_assert!(
            !text.chars().any(char::is_control),
            "{path}: control char after {round} rounds"
        );
        prop_assert!(
            !text.contains('\\'),
            "{path}: backslash after {round} rounds"
        );
        for segment in text.split('/') {
            let name = segment.split(';').next().unwrap_or_default();
            prop_assert!(
                name != "." && name != "..",
                "{path}: dot segment after {round} rounds"
            );
        }
        let next = decode(&current);
        if round < 3 {
            // An encoded slash would become a separator the router never saw.
            let lower = String::from_utf8_lossy(&current).to_ascii_lowercase();
            prop_assert!(
                !lower.contains("%2f") && !lower.contains("%5c"),
                "{path}: encoded slash after {round} rounds"
            );
        }
        current = next;
    }
    Ok(())
}

fn header() -> impl Strategy<Value = (String, Vec<u8>)> {
    let names = prop::sample::select(vec![
        "host",
        "content-length",
        "transfer-encoding",
        "x-a",
        "cookie",
        "Host",
        "Content-Length",
    ]);
    let values = prop_oneof![
        "[0-9]{1,4}".prop_map(String::into_bytes),
        "[0-9]{1,3}, ?[0-9]{1,3}".prop_map(String::into_bytes),
        prop::sample::select(vec![
            "chunked",
            "Chunked",
            " chunked ",
            "gzip, chunked",
            "identity",
            "example.com",
            "example.com:443",
            "[::1]:8080",
            "[::1]",
            "ex ample",
            "a@b",
            "a/b",
            "",
            "1e3",
            "+5",
            "-1",
            "99999999999999999999999",
            "localhost:",
            "h:123456",
            "[zz]",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..16),
    ];
    (names.prop_map(str::to_owned), values)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_heads_never_panic(
        method in "[A-Z]{1,8}|GET|POST|[ -~]{1,6}",
        uri in ".{0,64}",
        headers in prop::collection::vec(header(), 0..6),
    ) {
        if let Some(p) = parts(&method, &uri, &headers) {
            let _ = rules::check(&p);
        }
    }

    #[test]
    fn accepted_paths_are_safe(path in attack_path(), query in prop::option::of("[ -~&&[^# ]]{0,24}")) {
        let uri = match &query {
            Some(q) => format!("{path}?{q}"),
            None => path.clone(),
        };
        let Some(p) = parts("GET", &uri, &[]) else { return Ok(()) };
        if rules::check(&p).is_ok() {
            assert_path_safe(p.uri.path())?;
            if let Some(q) = p.uri.query() {
                let decoded = decode(q.as_bytes());
                prop_assert!(!decoded.iter().any(|&b| b < 0x20 || b == 0x7f), "control in query {q}");
            }
        }
    }

    /// The same property on paths built from arbitrary printable ASCII.
    #[test]
    fn accepted_arbitrary_paths_are_safe(path in "/[!-~]{0,40}") {
        let Some(p) = parts("GET", &path, &[]) else { return Ok(()) };
        if rules::check(&p).is_ok() {
            assert_path_safe(p.uri.path())?;
        }
    }

    #[test]
    fn accepted_framing_and_host_are_unambiguous(headers in prop::collection::vec(header(), 0..6)) {
        let Some(p) = parts("POST", "/x", &headers) else { return Ok(()) };
        if rules::check(&p).is_err() {
            return Ok(());
        }
        let h = &p.headers;
        prop_assert!(h.len() <= MAX_HEADERS);
        let lengths: Vec<String> = h
            .get_all("content-length")
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("!").split(',').map(|s| s.trim().to_owned()).collect::<Vec<_>>())
            .collect();
        let te = h.get_all("transfer-encoding").iter().count();
        prop_assert!(lengths.is_empty() || te == 0, "content-length with transfer-encoding");
        prop_assert!(te <= 1);
        if te == 1 {
            let v = h.get("transfer-encoding").and_then(|v| v.to_str().ok()).unwrap_or_default();
            prop_assert!(v.trim().eq_ignore_ascii_case("chunked"), "{v}");
        }
        for l in &lengths {
            prop_assert!(!l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()), "{l}");
            prop_assert_eq!(l.parse::<u64>().ok(), lengths[0].parse::<u64>().ok());
        }
        let hosts: Vec<&[u8]> = h.get_all("host").iter().map(|v| v.as_bytes()).collect();
        prop_assert!(hosts.len() <= 1);
        if let Some(host) = hosts.first() {
            prop_assert!(!host.is_empty());
            prop_assert!(!host.iter().any(|&b| b <= b' ' || b"@/\\".contains(&b) || b >= 0x7f), "{host:?}");
        }
    }
}
