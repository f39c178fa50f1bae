//! The baseline request rules against attack strings.

use http::request::Parts;
use http::{Method, Request, Uri};
use latchkey_edge::rules::{self, MAX_HEADERS, Violation};

fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> Option<Parts> {
    // Some attack strings are already refused by the `http` URI parser; that is a
    // rejection before the rules run, which is just as good.
    let uri: Uri = uri.parse().ok()?;
    let mut builder = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).expect("method"))
        .uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    Some(builder.body(()).expect("request").into_parts().0)
}

/// The status the edge answers with: 200 when allowed.
fn outcome(method: &str, uri: &str, headers: &[(&str, &str)]) -> u16 {
    match parts(method, uri, headers) {
        None => 400,
        Some(parts) => match rules::check(&parts) {
            Ok(()) => 200,
            Err(violation) => violation.status().as_u16(),
        },
    }
}

#[test]
fn table_of_paths_methods_and_queries() {
    let cases: &[(&str, &str, u16)] = &[
        // Allowed.
        ("GET", "/", 200),
        ("GET", "/oauth2/authorize?client_id=a&state=xyz%20y", 200),
        ("POST", "/oauth2/token", 200),
        ("HEAD", "/healthz", 200),
        ("PUT", "/v1/items/42", 200),
        ("PATCH", "/v1/items/42", 200),
        ("DELETE", "/v1/items/42", 200),
        ("OPTIONS", "/v1/items", 200),
        ("GET", "/.well-known/openid-configuration", 200),
        ("GET", "/files/a%20b.txt", 200),
        ("GET", "/caf%C3%A9", 200),
        ("GET", "/100%25", 200),
        ("GET", "/a...b/...", 200),
        ("GET", "/q?redirect=https%3A%2F%2Fexample.com%2Fcb", 200),
        ("GET", "http://example.com/absolute-form", 200),
        // Methods.
        ("TRACE", "/", 405),
        ("CONNECT", "/", 405),
        ("PROPFIND", "/", 405),
        ("FOO", "/", 405),
        // Path must be absolute.
        ("OPTIONS", "*", 400),
        // Traversal, raw and encoded.
        ("GET", "/a/../etc/passwd", 400),
        ("GET", "/a/./b", 400),
        ("GET", "/a/..", 400),
        ("GET", "/%2e%2e/etc/passwd", 400),
        ("GET", "/%2E%2e/etc/passwd", 400),
        ("GET", "/.%2e/etc/passwd", 400),
        ("GET", "/%2e./etc/passwd", 400),
        ("GET", "/a/%2e/b", 400),
        ("GET", "/%252e%252e/etc/passwd", 400),
        ("GET", "/%25252e%25252e/etc/passwd", 400),
        ("GET", "/..;/admin", 400),
        ("GET", "/a/..;jsessionid=1/admin", 400),
        // Overlong and invalid UTF-8.
        ("GET", "/%c0%ae%c0%ae/etc/passwd", 400),
        ("GET", "/%e0%80%ae", 400),
        ("GET", "/%ff", 400),
        ("GET", "/%ed%a0%80", 400),
        ("GET", "/%25c0%25ae", 400),
        // Slashes and backslashes.
        ("GET", "/a%2fb", 400),
        ("GET", "/a%2Fb", 400),
        ("GET", "/a%5cb", 400),
        ("GET", "/a%5C..%5Cb", 400),
        ("GET", "/a\\b", 400),
        ("GET", "/a%252fb", 400),
        // NUL and control characters.
        ("GET", "/a%00b", 400),
        ("GET", "/a%0ab", 400),
        ("GET", "/a%0d%0aSet-Cookie:x", 400),
        ("GET", "/a%7f", 400),
        ("GET", "/a%c2%85", 400),
        ("GET", "/a%2500", 400),
        ("GET", "/a\u{1}b", 400),
        ("GET", "/a\u{85}b", 400),
        ("GET", "/caf\u{e9}", 200),
        // Malformed encoding.
        ("GET", "/a%zz", 400),
        ("GET", "/a%4", 400),
        ("GET", "/a%", 400),
        // Query.
        ("GET", "/cb?code=abc%00", 400),
        ("GET", "/cb?code=abc%0d%0a", 400),
        ("GET", "/cb?code=%zz", 400),
        ("GET", "/cb?code=%4", 400),
        ("GET", "/cb?code=abc%", 400),
    ];
    let mut failures = Vec::new();
    for (method, uri, expected) in cases {
        let got = outcome(method, uri, &[("host", "gateway.example.com")]);
        if got != *expected {
            failures.push(format!("{method} {uri}: expected {expected}, got {got}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(cases.len() >= 40);
}

#[test]
fn violations_are_specific() {
    let check =
        |uri: &str| rules::check(&parts("GET", uri, &[]).expect("parses")).expect_err("rejected");
    assert_eq!(check("/%2e%2e/x"), Violation::DotSegment);
    assert_eq!(check("/%252e%252e/x"), Violation::DotSegment);
    assert_eq!(check("/a%2fb"), Violation::SlashOrBackslash);
    assert_eq!(check("/a%00"), Violation::PathControlCharacter);
    assert_eq!(check("/a%zz"), Violation::PathMalformedEncoding);
    assert_eq!(check("/%c0%ae"), Violation::PathInvalidUtf8);
    assert_eq!(check("/?a=%00"), Violation::QueryControlCharacter);
    assert_eq!(check("/?a=%z"), Violation::QueryMalformedEncoding);
    let violation = check("/a%2fb");
    assert_eq!(violation.to_string(), violation.reason());
    assert_eq!(violation.status(), http::StatusCode::BAD_REQUEST);
}

#[test]
fn header_count_limit() {
    let names: Vec<String> = (0..=MAX_HEADERS).map(|i| format!("x-h{i}")).collect();
    let headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    assert_eq!(outcome("GET", "/", &headers[..MAX_HEADERS]), 200);
    assert_eq!(outcome("GET", "/", &headers), 431);
    // Repeated fields count one by one.
    let repeated = vec![("x-same", "v"); MAX_HEADERS + 1];
    assert_eq!(outcome("GET", "/", &repeated), 431);
}

#[test]
fn smuggling() {
    let cases: &[(&[(&str, &str)], u16)] = &[
        (&[("content-length", "5")], 200),
        (&[("transfer-encoding", "chunked")], 200),
        (&[("transfer-encoding", "Chunked")], 200),
        (&[("content-length", "5"), ("content-length", "5")], 200),
        (&[("content-length", "5, 5")], 200),
        (
            &[("content-length", "5"), ("transfer-encoding", "chunked")],
            400,
        ),
        (
            &[("transfer-encoding", "chunked"), ("content-length", "0")],
            400,
        ),
        (&[("content-length", "5"), ("content-length", "6")], 400),
        (&[("content-length", "5, 6")], 400),
        (&[("content-length", "-1")], 400),
        (&[("content-length", "+5")], 400),
        (&[("content-length", "0x10")], 400),
        (&[("content-length", "")], 400),
        (&[("transfer-encoding", "gzip, chunked")], 400),
        (&[("transfer-encoding", "chunked, identity")], 400),
        (&[("transfer-encoding", "xchunked")], 400),
        (
            &[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked"),
            ],
            400,
        ),
    ];
    for (headers, expected) in cases {
        assert_eq!(outcome("POST", "/token", headers), *expected, "{headers:?}");
    }
}

#[test]
fn host_header() {
    let cases: &[(&[(&str, &str)], u16)] = &[
        (&[], 200),
        (&[("host", "example.com")], 200),
        (&[("host", "example.com:8443")], 200),
        (&[("host", "127.0.0.1:80")], 200),
        (&[("host", "[::1]:8080")], 200),
        (&[("host", "[2001:db8::1]")], 200),
        (&[("host", "my_host.internal")], 200),
        (&[("host", "")], 400),
        (&[("host", "exa mple.com")], 400),
        (&[("host", "example.com\t")], 400),
        (&[("host", "user@example.com")], 400),
        (&[("host", "example.com/path")], 400),
        (&[("host", "example.com:80:90")], 400),
        (&[("host", "example.com:abc")], 400),
        (&[("host", "example.com:123456")], 400),
        (&[("host", "[::1")], 400),
        (&[("host", "[::1]x")], 400),
        (&[("host", "a\\b")], 400),
        (&[("host", "a.com"), ("host", "b.com")], 400),
    ];
    for (headers, expected) in cases {
        assert_eq!(outcome("GET", "/", headers), *expected, "{headers:?}");
    }
}
