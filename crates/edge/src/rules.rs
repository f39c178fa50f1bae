//! Baseline request rules, checked on the request head before any routing.
//!
//! [`check`] enforces, in this order:
//!
//! 1. **Method**: only `GET`, `HEAD`, `POST`, `PUT`, `PATCH`, `DELETE` and `OPTIONS`
//!    are allowed; any other method (`TRACE`, `CONNECT`, `PROPFIND`, custom verbs) is
//!    `405 Method Not Allowed`.
//! 2. **Header count**: more than [`MAX_HEADERS`] (100) header fields is
//!    `431 Request Header Fields Too Large`.
//! 3. **Request smuggling** (`400`): `Content-Length` together with
//!    `Transfer-Encoding`; several `Content-Length` values (separate fields or a
//!    comma-separated list) that differ; a `Content-Length` that is not a decimal
//!    number; a `Transfer-Encoding` other than exactly `chunked`.
//! 4. **Host** (`400`): more than one `Host` field, an empty one, or one that is not
//!    `host[:port]` where host is a DNS name / IPv4 address (letters, digits, `-`,
//!    `.`, `_`) or a bracketed IPv6 literal, and port is 1–5 digits. Whitespace,
//!    `@`, `/`, `\` and control characters are rejected.
//! 5. **Path** (`400`):
//!    - it must start with `/` (no `*`, no empty path);
//!    - no backslash, raw or percent-encoded (`%5c`), and no encoded slash (`%2f`);
//!    - no NUL or control characters, raw or encoded (`%00`, `%0a`, `%0d`, `%7f`,
//!      C1 controls such as `%c2%85`);
//!    - no malformed percent-encoding (`%zz`, `%4`, a trailing `%`);
//!    - after percent-decoding, the path must be valid UTF-8 (overlong forms such
//!      as `%c0%ae` and lone surrogates are invalid);
//!    - no `.` or `..` segment, raw or after decoding (`%2e%2e`, `%2E%2e`, `.%2e`),
//!      including the Tomcat/Jetty form with path parameters (`..;x`);
//!    - double (and triple) encoding is decoded again and held to the same rules:
//!      `%252e%252e` counts as `..`, `%252f` as an encoded slash, `%2500` as NUL.
//!      A literal `%` that is not followed by two hex digits after the first
//!      decoding (`/100%25`) is allowed.
//! 6. **Query** (`400`): no malformed percent-encoding and no NUL or control
//!    characters, raw or encoded. The query is decoded once (it is data, not a
//!    route) and need not be UTF-8.
//!
//! Empty path segments (`//`) are allowed; routing treats them as not found.

use std::fmt;

use http::{Method, StatusCode, header, request::Parts};

/// The most header fields a request may carry (each repeated field counts).
pub const MAX_HEADERS: usize = 100;

/// How many rounds of percent-decoding the path is checked through.
const MAX_DECODE_ROUNDS: usize = 3;

/// Why a request was rejected. [`Violation::reason`] is safe to send to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// The method is not in the allow-list.
    MethodNotAllowed,
    /// More than [`MAX_HEADERS`] header fields.
    TooManyHeaders,
    /// `Content-Length` and `Transfer-Encoding` together.
    ContentLengthWithTransferEncoding,
    /// Several `Content-Length` values that differ.
    ConflictingContentLength,
    /// A `Content-Length` that is not a decimal number.
    InvalidContentLength,
    /// A `Transfer-Encoding` other than `chunked`.
    UnsupportedTransferEncoding,
    /// More than one `Host` field.
    MultipleHost,
    /// A `Host` that is empty or not `host[:port]`.
    InvalidHost,
    /// The path does not start with `/`.
    PathNotAbsolute,
    /// A `.` or `..` segment, raw or encoded.
    DotSegment,
    /// An encoded slash (`%2f`) or a backslash, raw or encoded.
    SlashOrBackslash,
    /// A NUL or control character in the path, raw or encoded.
    PathControlCharacter,
    /// Malformed percent-encoding in the path.
    PathMalformedEncoding,
    /// The decoded path is not valid UTF-8 (including overlong encodings).
    PathInvalidUtf8,
    /// A NUL or control character in the query, raw or encoded.
    QueryControlCharacter,
    /// Malformed percent-encoding in the query.
    QueryMalformedEncoding,
}

impl Violation {
    /// The status code the request is rejected with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::TooManyHeaders => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// A short, client-safe explanation.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MethodNotAllowed => "method not allowed",
            Self::TooManyHeaders => "too many header fields",
            Self::ContentLengthWithTransferEncoding => {
                "content-length together with transfer-encoding"
            }
            Self::ConflictingContentLength => "conflicting content-length values",
            Self::InvalidContentLength => "invalid content-length",
            Self::UnsupportedTransferEncoding => "unsupported transfer-encoding",
            Self::MultipleHost => "more than one host header",
            Self::InvalidHost => "invalid host header",
            Self::PathNotAbsolute => "path must start with /",
            Self::DotSegment => "dot segment in path",
            Self::SlashOrBackslash => "encoded slash or backslash in path",
            Self::PathControlCharacter => "control character in path",
            Self::PathMalformedEncoding => "malformed percent-encoding in path",
            Self::PathInvalidUtf8 => "path is not valid utf-8",
            Self::QueryControlCharacter => "control character in query",
            Self::QueryMalformedEncoding => "malformed percent-encoding in query",
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for Violation {}

/// Checks a request head against the baseline rules listed in the module docs.
pub fn check(parts: &Parts) -> Result<(), Violation> {
    check_method(&parts.method)?;
    if parts.headers.len() > MAX_HEADERS {
        return Err(Violation::TooManyHeaders);
    }
    check_framing(&parts.headers)?;
    check_host(&parts.headers)?;
    check_path(parts.uri.path())?;
    if let Some(query) = parts.uri.query() {
        check_query(query)?;
    }
    Ok(())
}

fn check_method(method: &Method) -> Result<(), Violation> {
    const ALLOWED: [Method; 7] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
    ];
    if ALLOWED.contains(method) {
        Ok(())
    } else {
        Err(Violation::MethodNotAllowed)
    }
}

fn check_framing(headers: &http::HeaderMap) -> Result<(), Violation> {
    let mut length: Option<u64> = None;
    let mut has_length = false;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        has_length = true;
        let text = value
            .to_str()
            .map_err(|_| Violation::InvalidContentLength)?;
        for item in text.split(',') {
            let item = item.trim_matches([' ', '\t']);
            if item.is_empty() || !item.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Violation::InvalidContentLength);
            }
            let parsed: u64 = item.parse().map_err(|_| Violation::InvalidContentLength)?;
            match length {
                Some(previous) if previous != parsed => {
                    return Err(Violation::ConflictingContentLength);
                }
                _ => length = Some(parsed),
            }
        }
    }
    let mut encodings = headers.get_all(header::TRANSFER_ENCODING).iter().peekable();
    if encodings.peek().is_some() {
        if has_length {
            return Err(Violation::ContentLengthWithTransferEncoding);
        }
        let mut count = 0;
        for value in encodings {
            count += 1;
            let is_chunked = value
                .to_str()
                .map(|v| v.trim_matches([' ', '\t']).eq_ignore_ascii_case("chunked"))
                .unwrap_or(false);
            if !is_chunked || count > 1 {
                return Err(Violation::UnsupportedTransferEncoding);
            }
        }
    }
    Ok(())
}

fn check_host(headers: &http::HeaderMap) -> Result<(), Violation> {
    let mut values = headers.get_all(header::HOST).iter();
    let Some(value) = values.next() else {
        // HTTP/2 carries the authority in the URI, not in a Host field.
        return Ok(());
    };
    if values.next().is_some() {
        return Err(Violation::MultipleHost);
    }
    if is_valid_host(value.as_bytes()) {
        Ok(())
    } else {
        Err(Violation::InvalidHost)
    }
}

fn is_valid_host(value: &[u8]) -> bool {
    let (host, port) = if let Some(rest) = value.strip_prefix(b"[") {
        let Some(end) = rest.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &rest[..end];
        if literal.is_empty()
            || !literal
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return false;
        }
        let after = &rest[end + 1..];
        match after.strip_prefix(b":") {
            Some(port) => (literal, Some(port)),
            None if after.is_empty() => (literal, None),
            None => return false,
        }
    } else {
        match value.iter().position(|&b| b == b':') {
            Some(colon) => (&value[..colon], Some(&value[colon + 1..])),
            None => (value, None),
        }
    };
    let host_ok = !host.is_empty()
        && (value.starts_with(b"[")
            || host
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')));
    let port_ok =
        port.is_none_or(|p| (1..=5).contains(&p.len()) && p.iter().all(u8::is_ascii_digit));
    host_ok && port_ok
}

fn check_path(path: &str) -> Result<(), Violation> {
    if !path.starts_with('/') {
        return Err(Violation::PathNotAbsolute);
    }
    if path.contains('\\') {
        return Err(Violation::SlashOrBackslash);
    }
    // Raw non-ASCII reaches us as UTF-8 text; C1 controls count as controls too.
    if path.chars().any(char::is_control) {
        return Err(Violation::PathControlCharacter);
    }
    let raw = path.as_bytes();
    check_segments(raw)?;

    let mut current = raw.to_vec();
    for round in 0..MAX_DECODE_ROUNDS {
        if !current.contains(&b'%') {
            break;
        }
        let strict = round == 0;
        let decoded = match percent_decode(&current, strict)? {
            Decoded::Unchanged => break,
            Decoded::Bytes(bytes) => bytes,
        };
        let text = std::str::from_utf8(&decoded).map_err(|_| Violation::PathInvalidUtf8)?;
        if text.chars().any(char::is_control) {
            return Err(Violation::PathControlCharacter);
        }
        check_segments(&decoded)?;
        current = decoded;
    }
    Ok(())
}

fn check_segments(path: &[u8]) -> Result<(), Violation> {
    for segment in path.split(|&b| b == b'/') {
        // `..;jsessionid=x` is `..` to Tomcat and Jetty.
        let name = match segment.iter().position(|&b| b == b';') {
            Some(end) => &segment[..end],
            None => segment,
        };
        if name == b"." || name == b".." {
            return Err(Violation::DotSegment);
        }
    }
    Ok(())
}

fn check_query(query: &str) -> Result<(), Violation> {
    if query.bytes().any(is_control_byte) {
        return Err(Violation::QueryControlCharacter);
    }
    let mut bytes = query.as_bytes().iter();
    while let Some(&b) = bytes.next() {
        if b == b'%' {
            let high = bytes.next().and_then(|&h| hex_value(h));
            let low = bytes.next().and_then(|&l| hex_value(l));
            match (high, low) {
                (Some(h), Some(l)) if is_control_byte(h << 4 | l) => {
                    return Err(Violation::QueryControlCharacter);
                }
                (Some(_), Some(_)) => {}
                _ => return Err(Violation::QueryMalformedEncoding),
            }
        }
    }
    Ok(())
}

enum Decoded {
    Unchanged,
    Bytes(Vec<u8>),
}

/// Decodes one round. Strict: a `%` not followed by two hex digits is an error.
/// Lenient (later rounds): such a `%` is a literal. An encoded `/`, `\` or control
/// byte is rejected in every round.
fn percent_decode(input: &[u8], strict: bool) -> Result<Decoded, Violation> {
    let mut out = Vec::with_capacity(input.len());
    let mut changed = false;
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        if b == b'%' {
            let pair = input
                .get(i + 1)
                .and_then(|&h| hex_value(h))
                .zip(input.get(i + 2).and_then(|&l| hex_value(l)));
            match pair {
                Some((h, l)) => {
                    let value = h << 4 | l;
                    if value == b'/' || value == b'\\' {
                        return Err(Violation::SlashOrBackslash);
                    }
                    if is_control_byte(value) {
                        return Err(Violation::PathControlCharacter);
                    }
                    out.push(value);
                    changed = true;
                    i += 3;
                    continue;
                }
                None if strict => return Err(Violation::PathMalformedEncoding),
                None => {}
            }
        }
        out.push(b);
        i += 1;
    }
    Ok(if changed {
        Decoded::Bytes(out)
    } else {
        Decoded::Unchanged
    })
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_control_byte(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

#[cfg(test)]
mod tests {
    use super::*;

    // `http::Uri` refuses raw control characters, so these paths cannot reach
    // `check` through a parsed request; the rule still holds on its own.
    #[test]
    fn raw_control_characters_in_path_and_query() {
        assert_eq!(check_path("/a\u{0}b"), Err(Violation::PathControlCharacter));
        assert_eq!(check_path("/a\nb"), Err(Violation::PathControlCharacter));
        assert_eq!(check_path("/a\u{7f}"), Err(Violation::PathControlCharacter));
        assert_eq!(check_path("/a\u{85}"), Err(Violation::PathControlCharacter));
        assert_eq!(check_query("a=\r\n"), Err(Violation::QueryControlCharacter));
        assert_eq!(check_path(""), Err(Violation::PathNotAbsolute));
    }
}
