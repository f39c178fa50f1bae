//! URL templates of the tools declared in configuration (`[[agent.tools]]`, `url`).
//!
//! A template is `scheme://host[:port]` (literal: the model never chooses where the
//! user's token goes), a path and an optional query, where `{param}` placeholders take the
//! tool call's arguments:
//!
//! - in the path, each argument becomes exactly one percent-encoded segment piece:
//!   everything outside RFC 3986's unreserved characters is encoded (`/`, `?`, `#`, `%`,
//!   spaces, non-ASCII…); an empty argument, `.` or `..` (also once percent-decoded, e.g.
//!   `%2e%2e`) is refused before any token is asked for;
//! - in the query, an argument is encoded as a query value (the same set: `&`, `=`, `+`,
//!   `#` are encoded).
//!
//! After filling, the URL is parsed again and must still have the configured scheme, host
//! and port, exactly the path that was built (nothing normalised away) starting with the
//! template's literal path prefix, and exactly the query that was built.

use std::fmt;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde_json::{Map, Value};

/// RFC 3986 unreserved characters stay; everything else is percent-encoded.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The part of a URL template that must be literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlPart {
    /// `http` / `https`.
    Scheme,
    /// `user:password@`.
    Userinfo,
    /// The host name or address.
    Host,
    /// `:port`.
    Port,
}

impl fmt::Display for UrlPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UrlPart::Scheme => "scheme",
            UrlPart::Userinfo => "userinfo",
            UrlPart::Host => "host",
            UrlPart::Port => "port",
        })
    }
}

/// Why a URL template is refused (configuration error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A placeholder (or a brace) where only literal text is allowed.
    #[error("a placeholder in the {0} is not allowed: the scheme, host and port must be literal")]
    NotLiteral(UrlPart),
    /// Credentials in the URL.
    #[error("the URL must not carry credentials (user:password@)")]
    Userinfo,
    /// Not `http(s)://host…`.
    #[error("must be an absolute http(s) URL with a host")]
    NotHttp,
    /// A `#fragment`.
    #[error("the URL must not have a fragment")]
    Fragment,
    /// `{` without `}`, or the other way round.
    #[error("unbalanced `{0}` in the URL template")]
    Unbalanced(char),
    /// A placeholder name outside `[A-Za-z0-9_]+`.
    #[error("placeholder {{{0}}} must be [A-Za-z0-9_]+")]
    BadName(String),
    /// The literal path or query is not in the form a URL parser keeps unchanged.
    #[error(
        "the path and query must be in normalised form (no `.` or `..` segments, characters outside RFC 3986 percent-encoded)"
    )]
    NotNormalised,
}

/// Why a tool call's arguments cannot fill the template (a message for the model; no
/// request is sent).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgumentError {
    /// A placeholder without an argument.
    #[error("missing argument `{0}`")]
    Missing(String),
    /// An object, array or null.
    #[error("argument `{0}` must be a string, number or boolean")]
    NotScalar(String),
    /// Empty, `.` or `..` (also percent-encoded) in the path.
    #[error("argument `{0}` must not be empty, `.` or `..` (it is one path segment)")]
    DotSegment(String),
    /// The filled URL left the template (defence in depth; not reached by encoding).
    #[error("the arguments do not fit the tool's URL")]
    LeavesTemplate,
}

/// One piece of a path or query template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Param(String),
}

/// A parsed, validated URL template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlTemplate {
    /// `scheme://authority`, as written.
    origin: String,
    scheme: String,
    host: String,
    port: Option<u16>,
    path: Vec<Piece>,
    query: Option<Vec<Piece>>,
    /// The path up to the first placeholder.
    literal_prefix: String,
}

/// A filled template: the URL and the arguments it did not use.
#[derive(Debug, Clone)]
pub struct Filled {
    /// The URL to call (already checked against the template).
    pub url: url::Url,
    /// The arguments that are not placeholders (a JSON body for POST/PUT/PATCH).
    pub rest: Map<String, Value>,
}

impl UrlTemplate {
    /// Parse and check `text`.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let (scheme, after) = text.split_once("://").ok_or_else(|| {
            if text.contains(['{', '}']) {
                TemplateError::NotLiteral(UrlPart::Scheme)
            } else {
                TemplateError::NotHttp
            }
        })?;
        if scheme.contains(['{', '}']) {
            return Err(TemplateError::NotLiteral(UrlPart::Scheme));
        }
        let authority_end = after.find(['/', '?', '#']).unwrap_or(after.len());
        let (authority, rest) = after.split_at(authority_end);
        if authority.contains(['{', '}']) {
            return Err(TemplateError::NotLiteral(authority_part(authority)));
        }
        if authority.contains('@') {
            return Err(TemplateError::Userinfo);
        }
        if authority.contains('\\') {
            return Err(TemplateError::NotHttp);
        }
        if rest.contains('#') {
            return Err(TemplateError::Fragment);
        }
        let (path_text, query_text) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let path_text = if path_text.is_empty() { "/" } else { path_text };
        let path = pieces(path_text)?;
        let query = query_text.map(pieces).transpose()?;

        let origin = format!("{scheme}://{authority}");
        let parsed = url::Url::parse(&format!("{origin}/")).map_err(|_| TemplateError::NotHttp)?;
        if !matches!(parsed.scheme(), "http" | "https")
            || parsed.cannot_be_a_base()
            || !parsed.username().is_empty()
            || parsed.password().is_some()
        {
            return Err(TemplateError::NotHttp);
        }
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or(TemplateError::NotHttp)?
            .to_string();
        let literal_prefix = match path.first() {
            Some(Piece::Literal(l)) => l.clone(),
            _ => String::new(),
        };
        let template = Self {
            origin,
            scheme: parsed.scheme().to_string(),
            host,
            port: parsed.port_or_known_default(),
            path,
            query,
            literal_prefix,
        };
        // The literal parts must survive a URL parser unchanged: fill every placeholder
        // with a plain value and check.
        let names = template.placeholders();
        let sample: Map<String, Value> = names
            .iter()
            .map(|n| (n.clone(), Value::String("x".into())))
            .collect();
        template
            .fill(&Value::Object(sample))
            .map_err(|_| TemplateError::NotNormalised)?;
        Ok(template)
    }

    /// The placeholder names, in order (a name may repeat).
    pub fn placeholders(&self) -> Vec<String> {
        self.path
            .iter()
            .chain(self.query.iter().flatten())
            .filter_map(|p| match p {
                Piece::Param(name) => Some(name.clone()),
                Piece::Literal(_) => None,
            })
            .collect()
    }

    /// Fill the placeholders from `arguments` (a JSON object); the URL is checked to stay
    /// inside the template.
    pub fn fill(&self, arguments: &Value) -> Result<Filled, ArgumentError> {
        let args = arguments.as_object().cloned().unwrap_or_default();
        let value = |name: &str| -> Result<String, ArgumentError> {
            match args.get(name) {
                None => Err(ArgumentError::Missing(name.to_string())),
                Some(Value::String(s)) => Ok(s.clone()),
                Some(Value::Number(n)) => Ok(n.to_string()),
                Some(Value::Bool(b)) => Ok(b.to_string()),
                Some(_) => Err(ArgumentError::NotScalar(name.to_string())),
            }
        };
        let mut path = String::new();
        for piece in &self.path {
            match piece {
                Piece::Literal(l) => path.push_str(l),
                Piece::Param(name) => {
                    let text = value(name)?;
                    if is_dot_segment(&text) {
                        return Err(ArgumentError::DotSegment(name.clone()));
                    }
                    path.extend(utf8_percent_encode(&text, UNRESERVED));
                }
            }
        }
        let query = match &self.query {
            None => None,
            Some(pieces) => {
                let mut query = String::new();
                for piece in pieces {
                    match piece {
                        Piece::Literal(l) => query.push_str(l),
                        Piece::Param(name) => {
                            query.extend(utf8_percent_encode(&value(name)?, UNRESERVED));
                        }
                    }
                }
                Some(query)
            }
        };
        let mut text = format!("{}{path}", self.origin);
        if let Some(q) = &query {
            text.push('?');
            text.push_str(q);
        }
        let url = url::Url::parse(&text).map_err(|_| ArgumentError::LeavesTemplate)?;
        // Defence in depth: where the token goes is exactly what the template says.
        let same_place = url.scheme() == self.scheme
            && url.host_str() == Some(self.host.as_str())
            && url.port_or_known_default() == self.port
            && url.username().is_empty()
            && url.password().is_none()
            && url.fragment().is_none()
            && url.path() == path
            && url.path().starts_with(&self.literal_prefix)
            && !url.path().split('/').any(segment_is_dots)
            && url.query() == query.as_deref();
        if !same_place {
            return Err(ArgumentError::LeavesTemplate);
        }
        let mut rest = args;
        for name in self.placeholders() {
            rest.remove(&name);
        }
        Ok(Filled { url, rest })
    }
}

/// Which literal part of `authority` holds a brace.
fn authority_part(authority: &str) -> UrlPart {
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (u, h),
        None => ("", authority),
    };
    if userinfo.contains(['{', '}']) {
        return UrlPart::Userinfo;
    }
    // `[v6]:port` or `host:port`.
    let port_start = match hostport.rfind(']') {
        Some(end) => hostport[end..].find(':').map(|i| end + i),
        None => hostport.rfind(':'),
    };
    match port_start {
        Some(i) if hostport[i..].contains(['{', '}']) => UrlPart::Port,
        _ => UrlPart::Host,
    }
}

/// Split `text` into literals and `{param}`s.
fn pieces(text: &str) -> Result<Vec<Piece>, TemplateError> {
    let mut out = vec![];
    let mut rest = text;
    while let Some(start) = rest.find(['{', '}']) {
        if rest.as_bytes()[start] == b'}' {
            return Err(TemplateError::Unbalanced('}'));
        }
        if start > 0 {
            out.push(Piece::Literal(rest[..start].to_string()));
        }
        let after = &rest[start + 1..];
        let end = after
            .find(['}', '{'])
            .ok_or(TemplateError::Unbalanced('{'))?;
        if after.as_bytes()[end] == b'{' {
            return Err(TemplateError::Unbalanced('{'));
        }
        let name = &after[..end];
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(TemplateError::BadName(name.to_string()));
        }
        out.push(Piece::Param(name.to_string()));
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Literal(rest.to_string()));
    }
    Ok(out)
}

/// Empty, `.` or `..`, as given or after percent-decoding (repeatedly: `%252e` too).
fn is_dot_segment(text: &str) -> bool {
    if text.is_empty() {
        return true;
    }
    let mut current = text.to_string();
    for _ in 0..4 {
        if segment_is_dots(&current) {
            return true;
        }
        let decoded = percent_decode_str(&current)
            .decode_utf8_lossy()
            .into_owned();
        if decoded == current {
            return false;
        }
        current = decoded;
    }
    // Still decoding after four rounds: nobody needs that in one path segment.
    true
}

/// `.` or `..` once the URL parser's own `%2e` decoding is applied.
fn segment_is_dots(segment: &str) -> bool {
    let lower = segment.to_ascii_lowercase().replace("%2e", ".");
    matches!(lower.as_str(), "." | "..")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fill(template: &str, args: Value) -> Result<String, ArgumentError> {
        UrlTemplate::parse(template)
            .unwrap()
            .fill(&args)
            .map(|f| f.url.to_string())
    }

    #[test]
    fn arguments_are_one_encoded_segment() {
        let t = "https://api.example.com/repos/{owner}/{repo}/issues";
        let ok = |owner: &str| fill(t, json!({"owner": owner, "repo": "r"})).unwrap();
        assert_eq!(ok("a/b"), "https://api.example.com/repos/a%2Fb/r/issues");
        assert_eq!(
            ok("a?x=1"),
            "https://api.example.com/repos/a%3Fx%3D1/r/issues"
        );
        assert_eq!(ok("a#f"), "https://api.example.com/repos/a%23f/r/issues");
        assert_eq!(
            ok("é 😀"),
            "https://api.example.com/repos/%C3%A9%20%F0%9F%98%80/r/issues"
        );
        assert_eq!(
            ok("a%2Fb"),
            "https://api.example.com/repos/a%252Fb/r/issues"
        );
        assert_eq!(ok("..."), "https://api.example.com/repos/.../r/issues");
        assert_eq!(ok("a\\b"), "https://api.example.com/repos/a%5Cb/r/issues");
        assert_eq!(ok("v1.2"), "https://api.example.com/repos/v1.2/r/issues");
        for bad in [
            "",
            ".",
            "..",
            "%2e%2e",
            "%2E%2e",
            ".%2e",
            "%2e.",
            "%2e",
            "%252e%252e",
            "%25252e%25252e",
        ] {
            assert_eq!(
                fill(t, json!({"owner": bad, "repo": "r"})),
                Err(ArgumentError::DotSegment("owner".into())),
                "{bad:?}"
            );
        }
        assert_eq!(
            fill(t, json!({"owner": "a"})),
            Err(ArgumentError::Missing("repo".into()))
        );
        assert_eq!(
            fill(t, json!({"owner": {}, "repo": "r"})),
            Err(ArgumentError::NotScalar("owner".into()))
        );
    }

    #[test]
    fn query_arguments_are_query_values_and_the_rest_is_returned() {
        let t = UrlTemplate::parse("https://x.test/search?q={q}&n={n}").unwrap();
        let filled = t
            .fill(&json!({"q": "a&b=c #d+..", "n": 3, "title": "t"}))
            .unwrap();
        assert_eq!(
            filled.url.as_str(),
            "https://x.test/search?q=a%26b%3Dc%20%23d%2B..&n=3"
        );
        assert_eq!(filled.url.query_pairs().count(), 2);
        assert_eq!(
            filled.rest,
            json!({"title": "t"}).as_object().cloned().unwrap()
        );
        // An empty query value is fine; `..` in a query is just text.
        assert!(t.fill(&json!({"q": "", "n": ".."})).is_ok());
    }

    #[test]
    fn scheme_host_and_port_must_be_literal() {
        use TemplateError::{Fragment, NotHttp, NotLiteral, Userinfo};
        for (template, error) in [
            ("https://{host}/x", NotLiteral(UrlPart::Host)),
            ("https://api.{domain}/x", NotLiteral(UrlPart::Host)),
            ("https://{host}:443/x", NotLiteral(UrlPart::Host)),
            (
                "https://api.example.com:{port}/x",
                NotLiteral(UrlPart::Port),
            ),
            ("https://[::1]:{port}/x", NotLiteral(UrlPart::Port)),
            ("{scheme}://api.example.com/x", NotLiteral(UrlPart::Scheme)),
            ("http{s}://api.example.com/x", NotLiteral(UrlPart::Scheme)),
            (
                "https://{user}@api.example.com/x",
                NotLiteral(UrlPart::Userinfo),
            ),
            (
                "https://u:{password}@api.example.com/x",
                NotLiteral(UrlPart::Userinfo),
            ),
            ("{url}", NotLiteral(UrlPart::Scheme)),
            ("{base}/x", NotLiteral(UrlPart::Scheme)),
            ("https://u:p@api.example.com/x", Userinfo),
            ("https://api.example.com/x#{f}", Fragment),
            ("ftp://api.example.com/x", NotHttp),
            ("https:///{x}", NotHttp),
        ] {
            assert_eq!(UrlTemplate::parse(template), Err(error), "{template}");
        }
        for not_normal in [
            "https://x.test/a/../{b}",
            "https://x.test/a/./{b}",
            "https://x.test/a b/{b}",
            "https://x.test/a\\{b}",
            "https://x.test/{b}/%2e%2e/c",
            "https://x.test/é/{b}",
        ] {
            assert_eq!(
                UrlTemplate::parse(not_normal),
                Err(TemplateError::NotNormalised),
                "{not_normal}"
            );
        }
        assert_eq!(
            UrlTemplate::parse("https://x.test/{a"),
            Err(TemplateError::Unbalanced('{'))
        );
        assert_eq!(
            UrlTemplate::parse("https://x.test/a}"),
            Err(TemplateError::Unbalanced('}'))
        );
        assert_eq!(
            UrlTemplate::parse("https://x.test/{a b}"),
            Err(TemplateError::BadName("a b".into()))
        );
        // Fine: literal origin, placeholders in path and query, a bare host.
        for good in [
            "https://api.example.com:8443/repos/{owner}/{repo}/issues",
            "http://127.0.0.1:9/v1/{id}.json?fields={fields}",
            "https://api.example.com",
            "https://api.example.com/{id}",
        ] {
            assert!(UrlTemplate::parse(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn the_filled_url_keeps_the_configured_origin_and_prefix() {
        let t = UrlTemplate::parse("http://127.0.0.1:9/api/v1/{id}").unwrap();
        for id in [
            "x",
            "@evil.test",
            "//evil.test",
            "\\\\evil.test",
            ":80",
            "%00",
        ] {
            let url = t.fill(&json!({ "id": id })).unwrap().url;
            assert_eq!(url.host_str(), Some("127.0.0.1"), "{id}");
            assert_eq!(url.port(), Some(9), "{id}");
            assert!(url.path().starts_with("/api/v1/"), "{id}");
            assert_eq!(url.path().matches('/').count(), 3, "{id}");
        }
    }
}
