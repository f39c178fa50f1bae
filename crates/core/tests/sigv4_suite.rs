//! Runs the official SigV4 signing test suite (the CRT suite vendored in the `aws-sigv4`
//! crate, `aws-signing-test-suite/v4/<case>/`) against the server-side verifier.
//!
//! For each case we parse `header-signed-request.txt` — the request as a server receives
//! it, with `X-Amz-Date` and `Authorization` — rather than `request.txt`, which is the
//! unsigned input of the signer and has neither. Then:
//! (a) our canonical request equals `header-canonical-request.txt`, and our string to sign
//!     equals `header-string-to-sign.txt`;
//! (b) the `Authorization` header parses, carries the signature of `header-signature.txt`,
//!     and `verify` accepts it with the case's service, region, secret, timestamp and
//!     `normalize` flag;
//! (c) a flipped bit in the signature, and one in the secret, are rejected.
//!
//! The `query-*` files of every case describe presigned URLs (signature in the query
//! string); the verifier only accepts header signatures, so they are not used.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use common::OwnedRequest;
use latchkey_core::sigv4::{
    self, Authorization, SigV4Error, VerifyOptions, canonical_request, parse_authorization,
    sha256_hex, signing_key, string_to_sign, verify, verify_with_signing_key,
};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The example secret of the AWS documentation, used by the suite's legacy cases too.
const EXAMPLE_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

/// Cases that cannot run in full against a verifier, and why. Each must exist in the suite.
const PARTIAL: &[(&str, &str)] = &[(
    "double-encode-path",
    "legacy case migrated by aws-sigv4 without context.json or signature: its request says \
     X-amz-date 20150830T123600Z but its expected canonical request was produced at the SDK \
     test clock (20210511T154045Z), and the ANOTREAL secret is not given. Only the canonical \
     request is checked, with the X-Amz-Date header set to the canonical request's value.",
)];

fn suite_dir() -> PathBuf {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .expect("neither CARGO_HOME nor HOME is set: cannot locate the SigV4 test suite");
    let registry = cargo_home.join("registry").join("src");
    let mut found: Vec<PathBuf> = Vec::new();
    for index in fs::read_dir(&registry)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", registry.display()))
    {
        let index = index.unwrap().path();
        let Ok(crates) = fs::read_dir(&index) else {
            continue;
        };
        for krate in crates {
            let krate = krate.unwrap().path();
            let name = krate.file_name().unwrap().to_string_lossy().into_owned();
            let suite = krate.join("aws-signing-test-suite").join("v4");
            if name.starts_with("aws-sigv4-1.6") && suite.is_dir() {
                found.push(suite);
            }
        }
    }
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!(
            "SigV4 test suite not found: expected {}/*/aws-sigv4-1.6*/aws-signing-test-suite/v4 \
             (run `cargo fetch` so the aws-sigv4 dev-dependency source is present)",
            registry.display()
        )
    })
}

fn read(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .replace("\r\n", "\n")
}

/// A raw HTTP/1.1 request from the suite.
type RawRequest = OwnedRequest;

/// Parses a suite request file. The request target may contain raw spaces and UTF-8 (the
/// suite is written that way), the `HTTP/1.1` suffix may be absent, and header lines that
/// start with whitespace continue the previous header (obs-fold): they are kept as raw
/// `\n`-joined text, as a lenient server would hand them over.
fn parse_request(text: &str) -> RawRequest {
    let text = text.trim_end();
    let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
    let mut lines = head.lines();
    let request_line = lines.next().expect("empty request file");
    let (method, rest) = request_line.split_once(' ').expect("no request target");
    let target = match rest.rsplit_once(' ') {
        Some((target, version)) if version.starts_with("HTTP/") => target,
        _ => rest,
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));

    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            let last = headers
                .last_mut()
                .expect("continuation line before any header");
            last.1.push('\n');
            last.1.push_str(line);
        } else {
            let (name, value) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("bad header line {line:?}"));
            headers.push((name.to_owned(), value.to_owned()));
        }
    }
    RawRequest {
        method: method.to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        headers,
        body: body.as_bytes().to_vec(),
    }
}

/// What a case's `context.json` says (or the legacy defaults).
struct Context {
    access_key_id: String,
    secret: String,
    region: String,
    service: String,
    now: OffsetDateTime,
    normalize: bool,
}

fn parse_context(path: &Path) -> Context {
    let json: serde_json::Value = serde_json::from_str(&read(path)).unwrap();
    let s = |v: &serde_json::Value| v.as_str().unwrap().to_owned();
    Context {
        access_key_id: s(&json["credentials"]["access_key_id"]),
        secret: s(&json["credentials"]["secret_access_key"]),
        region: s(&json["region"]),
        service: s(&json["service"]),
        now: OffsetDateTime::parse(json["timestamp"].as_str().unwrap(), &Rfc3339).unwrap(),
        normalize: json["normalize"].as_bool().unwrap(),
    }
}

fn opts(ctx: &Context) -> VerifyOptions {
    VerifyOptions {
        service: Box::leak(ctx.service.clone().into_boxed_str()),
        max_skew: sigv4::DEFAULT_MAX_SKEW,
        now: ctx.now,
        normalize_path: ctx.normalize,
    }
}

/// Checks (a), (b) and (c) for one fully specified case.
fn run_case(dir: &Path, raw: &RawRequest, ctx: &Context) {
    let name = dir.file_name().unwrap().to_string_lossy();
    let headers = raw.header_refs();
    let req = raw.parts(&headers);
    let auth: Authorization = parse_authorization(
        raw.header("authorization")
            .unwrap_or_else(|| panic!("{name}: no Authorization header")),
    )
    .unwrap_or_else(|e| panic!("{name}: Authorization does not parse: {e}"));
    assert_eq!(auth.access_key_id, ctx.access_key_id, "{name}");
    assert_eq!(auth.region, ctx.region, "{name}");
    assert_eq!(auth.service, ctx.service, "{name}");

    // (a) canonical request and string to sign.
    let creq = canonical_request(
        &req,
        &auth.signed_headers,
        &sha256_hex(&raw.body),
        ctx.normalize,
    )
    .unwrap_or_else(|e| panic!("{name}: canonical request failed: {e}"));
    let expected = read(&dir.join("header-canonical-request.txt"));
    assert_eq!(creq, expected.trim_end(), "{name}: canonical request");
    let sts_file = dir.join("header-string-to-sign.txt");
    if sts_file.exists() {
        let amz_date = raw.header("x-amz-date").unwrap().trim();
        let sts = string_to_sign(amz_date, &auth.credential_scope(), &creq);
        assert_eq!(sts, read(&sts_file).trim_end(), "{name}: string to sign");
    }

    // (b) the suite's signature verifies.
    let sig_file = dir.join("header-signature.txt");
    if sig_file.exists() {
        assert_eq!(
            hex::encode(auth.signature),
            read(&sig_file).trim(),
            "{name}: Authorization signature differs from header-signature.txt"
        );
    }
    let opts = opts(ctx);
    verify(&req, &auth, ctx.secret.as_bytes(), &opts)
        .unwrap_or_else(|e| panic!("{name}: suite signature rejected: {e}"));
    let key = signing_key(
        ctx.secret.as_bytes(),
        &auth.date,
        &auth.region,
        &auth.service,
    );
    verify_with_signing_key(&req, &auth, &key, &opts)
        .unwrap_or_else(|e| panic!("{name}: rejected with derived key: {e}"));

    // (c) one flipped bit in the signature or the secret is rejected.
    for i in [0, 17, 31] {
        let mut bad = auth.clone();
        bad.signature[i] ^= 0x01;
        assert_eq!(
            verify(&req, &bad, ctx.secret.as_bytes(), &opts),
            Err(SigV4Error::SignatureMismatch),
            "{name}: flipped signature byte {i} accepted"
        );
    }
    let mut bad_secret = ctx.secret.clone().into_bytes();
    bad_secret[5] ^= 0x01;
    assert_eq!(
        verify(&req, &auth, &bad_secret, &opts),
        Err(SigV4Error::SignatureMismatch),
        "{name}: wrong secret accepted"
    );
}

/// `double-encode-path`: canonical request only (see [`PARTIAL`]).
fn run_double_encode_path(dir: &Path) {
    let mut raw = parse_request(&read(&dir.join("header-signed-request.txt")));
    let expected = read(&dir.join("header-canonical-request.txt"));
    let expected_date = expected
        .lines()
        .find_map(|l| l.strip_prefix("x-amz-date:"))
        .unwrap()
        .to_owned();
    for (n, v) in &mut raw.headers {
        if n.eq_ignore_ascii_case("x-amz-date") {
            *v = expected_date.clone();
        }
    }
    let headers = raw.header_refs();
    let req = raw.parts(&headers);
    let auth = parse_authorization(raw.header("authorization").unwrap()).unwrap();
    let creq = canonical_request(&req, &auth.signed_headers, &sha256_hex(&raw.body), true).unwrap();
    assert_eq!(creq, expected.trim_end(), "double-encode-path");
}

#[test]
fn official_sigv4_suite() {
    let root = suite_dir();
    let mut cases: Vec<PathBuf> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();

    let partial: BTreeSet<&str> = PARTIAL.iter().map(|(n, _)| *n).collect();
    for name in &partial {
        assert!(
            root.join(name).is_dir(),
            "{name} is listed as partial but is not in the suite"
        );
    }

    let mut full = 0usize;
    let mut ran = Vec::new();
    for dir in &cases {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        if name == "double-encode-path" {
            run_double_encode_path(dir);
            ran.push(name);
            continue;
        }
        let raw = parse_request(&read(&dir.join("header-signed-request.txt")));
        let context = dir.join("context.json");
        let ctx = if context.exists() {
            parse_context(&context)
        } else {
            // Legacy case (`double-url-encode`) without context.json: the scope is in its
            // Authorization header, the time in its X-Amz-Date, and it is signed with the
            // documentation's example secret and normalised paths.
            let auth = parse_authorization(raw.header("authorization").unwrap()).unwrap();
            let amz_date = raw.header("x-amz-date").unwrap().trim();
            let now = time::PrimitiveDateTime::parse(
                amz_date,
                time::macros::format_description!("[year][month][day]T[hour][minute][second]Z"),
            )
            .unwrap()
            .assume_utc();
            Context {
                access_key_id: auth.access_key_id,
                secret: EXAMPLE_SECRET.to_owned(),
                region: auth.region,
                service: auth.service,
                now,
                normalize: true,
            }
        };
        assert!(
            !partial.contains(name.as_str()),
            "{name} is listed as partial but ran in full"
        );
        run_case(dir, &raw, &ctx);
        full += 1;
        ran.push(name);
    }

    eprintln!(
        "SigV4 suite at {}: {full} cases checked in full, {} partial: {ran:?}",
        root.display(),
        partial.len()
    );
    assert_eq!(
        ran.len(),
        cases.len(),
        "every case directory is accounted for"
    );
    assert!(
        full >= 25,
        "only {full} SigV4 suite cases ran in full; the suite looks empty or unreadable"
    );
}
