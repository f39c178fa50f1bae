//! Server-side verification of AWS Signature Version 4 (`AWS4-HMAC-SHA256`) requests
//! signed in the `Authorization` header.
//!
//! This module is pure: no HTTP framework, no I/O, no clock. The caller hands over the
//! request as it was received ([`RequestParts`]), one `Authorization` header value parsed
//! with [`parse_authorization`], the secret access key (or a cached derived key) and the
//! current time in [`VerifyOptions`].
//!
//! What is verified, in order:
//! 1. the credential scope names [`VerifyOptions::service`] (any region is accepted);
//! 2. `host` is among the signed headers;
//! 3. the request time comes from `X-Amz-Date` (`yyyymmddThhmmssZ`) or, failing that,
//!    `Date` (IMF-fixdate), and whichever header supplied it is signed;
//! 4. the credential-scope date is the date of that request time;
//! 5. the request time is within ±[`VerifyOptions::max_skew`] of [`VerifyOptions::now`];
//! 6. if `x-amz-content-sha256` is present it is exactly the hex SHA-256 of the body
//!    (`UNSIGNED-PAYLOAD` and `STREAMING-*` are refused);
//! 7. every signed header is present, and the signature over the canonical request
//!    matches, compared in constant time.
//!
//! Presigned URLs (signature in the query string) are not supported.
//!
//! Path canonicalisation follows what the AWS SDKs do for every service but S3: the
//! raw path (as received, still percent-encoded) optionally has `.`/`..` segments removed
//! and runs of `/` collapsed, then every byte outside `A-Za-z0-9-_.~/` is
//! percent-encoded once more, so `%3D` on the wire becomes `%253D` in the canonical
//! request (the "double encoding" of the decoded path). The router must therefore
//! interpret the path the same way the signature does: with normalisation on, `//a/./b`
//! and `/a/b` carry the same signature.

use std::fmt::Write as _;

use aws_lc_rs::{digest, hmac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode, percent_encode};
use subtle::ConstantTimeEq;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};
use zeroize::Zeroizing;

/// The only signing algorithm accepted.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The last element of every SigV4 credential scope.
pub const SCOPE_TERMINATOR: &str = "aws4_request";
/// The service name AgentCore Identity clients sign for.
pub const DEFAULT_SERVICE: &str = "bedrock-agentcore";
/// The clock skew AWS tolerates.
pub const DEFAULT_MAX_SKEW: time::Duration = time::Duration::minutes(5);

/// Header carrying the request time in ISO 8601 basic format.
const X_AMZ_DATE: &str = "x-amz-date";
/// Fallback header carrying the request time in IMF-fixdate format.
const DATE: &str = "date";
/// Header carrying the client's hash of the payload.
const X_AMZ_CONTENT_SHA256: &str = "x-amz-content-sha256";

/// RFC 3986 unreserved characters stay as they are; every other byte is `%XX` (uppercase).
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
/// Same as [`UNRESERVED`] but keeps the path separator.
const UNRESERVED_AND_SLASH: &AsciiSet = &UNRESERVED.remove(b'/');

/// The parts of an HTTP request that SigV4 covers, exactly as received.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    /// The request method, e.g. `POST`.
    pub method: &'a str,
    /// The raw path as received (still percent-encoded), without the query string.
    pub path: &'a str,
    /// The raw query string as received, without the leading `?`; empty if none.
    pub query: &'a str,
    /// Every header as `(name, value)`, in the order received. Names may use any case;
    /// a name may repeat. Over HTTP/2 the caller must supply the `:authority` as `host`.
    pub headers: &'a [(&'a str, &'a str)],
    /// The complete request body.
    pub body: &'a [u8],
}

/// A parsed `Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`
/// header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// The access key id, first element of the credential.
    pub access_key_id: String,
    /// The credential-scope date, `yyyymmdd`.
    pub date: String,
    /// The credential-scope region; any value is accepted.
    pub region: String,
    /// The credential-scope service name.
    pub service: String,
    /// The signed header names: lowercase, strictly ascending, without duplicates.
    pub signed_headers: Vec<String>,
    /// The claimed signature.
    pub signature: [u8; 32],
}

impl Authorization {
    /// The credential scope, `date/region/service/aws4_request`, as used in the string
    /// to sign.
    pub fn credential_scope(&self) -> String {
        format!(
            "{}/{}/{}/{SCOPE_TERMINATOR}",
            self.date, self.region, self.service
        )
    }
}

/// How [`verify`] judges a request.
#[derive(Debug, Clone, Copy)]
pub struct VerifyOptions {
    /// The service name the credential scope must name, e.g. [`DEFAULT_SERVICE`].
    pub service: &'static str,
    /// The largest accepted difference, either way, between the request time and `now`.
    pub max_skew: time::Duration,
    /// The current time.
    pub now: OffsetDateTime,
    /// Remove `.`/`..` segments and collapse repeated `/` before encoding the path.
    /// `true` for every AWS service except S3.
    pub normalize_path: bool,
}

impl VerifyOptions {
    /// Options for AgentCore Identity: service `bedrock-agentcore`, ±5 minutes, normalised
    /// paths.
    pub fn agentcore(now: OffsetDateTime) -> Self {
        Self {
            service: DEFAULT_SERVICE,
            max_skew: DEFAULT_MAX_SKEW,
            now,
            normalize_path: true,
        }
    }
}

/// Why a request was not accepted. The messages are safe to log: they never contain the
/// secret, the derived key or the expected signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SigV4Error {
    /// The `Authorization` value does not start with `AWS4-HMAC-SHA256`.
    #[error("unsupported signing algorithm (only {ALGORITHM} is accepted)")]
    UnsupportedAlgorithm,
    /// The `Authorization` value is malformed; the text names the part.
    #[error("malformed Authorization header: {0}")]
    MalformedAuthorization(&'static str),
    /// The request itself is malformed for SigV4; the text names what.
    #[error("malformed request: {0}")]
    MalformedRequest(&'static str),
    /// The credential scope names another service.
    #[error("credential scope is for service `{found}`, expected `{expected}`")]
    WrongService {
        /// The service this server verifies for.
        expected: &'static str,
        /// The service named in the credential scope.
        found: String,
    },
    /// The credential-scope date is not the date of the request time.
    #[error("credential scope date {credential_date} does not match request date {request_date}")]
    CredentialScopeMismatch {
        /// `yyyymmdd` from the credential.
        credential_date: String,
        /// `yyyymmdd` from `X-Amz-Date` (or `Date`).
        request_date: String,
    },
    /// A header listed in `SignedHeaders` is absent from the request.
    #[error("signed header `{0}` is missing from the request")]
    MissingSignedHeader(String),
    /// `host` is not among the signed headers.
    #[error("the host header must be signed")]
    HostNotSigned,
    /// The request has neither `X-Amz-Date` nor `Date`.
    #[error("the request carries neither X-Amz-Date nor Date")]
    MissingDate,
    /// The header that supplied the request time is not signed.
    #[error("the {0} header must be signed")]
    DateNotSigned(&'static str),
    /// The request time is more than `max_skew` in the past.
    #[error("request time is {skew_seconds}s in the past, beyond the allowed clock skew")]
    RequestTooOld {
        /// How far in the past, in whole seconds.
        skew_seconds: i64,
    },
    /// The request time is more than `max_skew` in the future.
    #[error("request time is {skew_seconds}s in the future, beyond the allowed clock skew")]
    RequestInFuture {
        /// How far in the future, in whole seconds.
        skew_seconds: i64,
    },
    /// `x-amz-content-sha256` is `UNSIGNED-PAYLOAD` or a streaming mode; refused.
    #[error("unsigned or streaming payloads are not accepted")]
    UnsignedPayload,
    /// `x-amz-content-sha256` is not the SHA-256 of the body received.
    #[error("x-amz-content-sha256 does not match the request body")]
    PayloadHashMismatch,
    /// The signature does not match the request.
    #[error("the request signature does not match")]
    SignatureMismatch,
}

/// Parses one `Authorization` header value:
/// `AWS4-HMAC-SHA256 Credential=AKID/20260102/us-east-1/bedrock-agentcore/aws4_request,
/// SignedHeaders=a;b;c, Signature=<64 hex>`.
///
/// The three components may come in any order, each exactly once, separated by commas
/// with optional spaces. `SignedHeaders` must be lowercase, strictly ascending and
/// without duplicates, as every SDK sends it.
pub fn parse_authorization(header_value: &str) -> Result<Authorization, SigV4Error> {
    use SigV4Error::MalformedAuthorization as Bad;

    let value = header_value.trim_matches([' ', '\t']);
    let (algorithm, rest) = value.split_once([' ', '\t']).ok_or(Bad(
        "expected `AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`",
    ))?;
    if algorithm != ALGORITHM {
        return Err(SigV4Error::UnsupportedAlgorithm);
    }

    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for component in rest.split(',') {
        let component = component.trim_matches([' ', '\t']);
        let (key, val) = component
            .split_once('=')
            .ok_or(Bad("component without `=`"))?;
        let slot = match key {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            _ => return Err(Bad("unknown component")),
        };
        if slot.replace(val).is_some() {
            return Err(Bad("duplicate component"));
        }
    }
    let credential = credential.ok_or(Bad("missing Credential"))?;
    let signed_headers = signed_headers.ok_or(Bad("missing SignedHeaders"))?;
    let signature = signature.ok_or(Bad("missing Signature"))?;

    let mut parts = credential.split('/');
    let (Some(akid), Some(date), Some(region), Some(service), Some(terminator), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(Bad(
            "Credential must be access-key-id/date/region/service/aws4_request",
        ));
    };
    if akid.is_empty() || !akid.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Bad("Credential access key id"));
    }
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Bad("Credential date must be yyyymmdd"));
    }
    if region.is_empty()
        || !region
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(Bad("Credential region"));
    }
    if service.is_empty() || !service.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Bad("Credential service"));
    }
    if terminator != SCOPE_TERMINATOR {
        return Err(Bad("Credential scope must end with aws4_request"));
    }

    let signed_headers: Vec<String> = signed_headers.split(';').map(str::to_owned).collect();
    check_signed_headers(&signed_headers)?;

    if signature.len() != 64 {
        return Err(Bad("Signature must be 64 hex digits"));
    }
    let mut sig = [0u8; 32];
    hex::decode_to_slice(signature, &mut sig).map_err(|_| Bad("Signature must be hex"))?;

    Ok(Authorization {
        access_key_id: akid.to_owned(),
        date: date.to_owned(),
        region: region.to_owned(),
        service: service.to_owned(),
        signed_headers,
        signature: sig,
    })
}

/// Derives the SigV4 signing key
/// `HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")`.
///
/// It depends only on `(secret, date, region, service)`, so a server may cache it per
/// credential and day and use [`verify_with_signing_key`].
pub fn signing_key(secret: &[u8], date: &str, region: &str, service: &str) -> [u8; 32] {
    let mut k_secret = Zeroizing::new(Vec::with_capacity(4 + secret.len()));
    k_secret.extend_from_slice(b"AWS4");
    k_secret.extend_from_slice(secret);
    let k_date = hmac_sha256(&k_secret, date.as_bytes());
    let k_region = hmac_sha256(&k_date[..], region.as_bytes());
    let k_service = hmac_sha256(&k_region[..], service.as_bytes());
    *hmac_sha256(&k_service[..], SCOPE_TERMINATOR.as_bytes())
}

/// Verifies a header-signed SigV4 request with the caller's secret access key.
///
/// `auth` is the parsed `Authorization` header of the same request; the caller looks up
/// `secret_access_key` by `auth.access_key_id`. Returns `Ok(())` only if every check in the
/// [module documentation](self) passes.
pub fn verify(
    req: &RequestParts<'_>,
    auth: &Authorization,
    secret_access_key: &[u8],
    opts: &VerifyOptions,
) -> Result<(), SigV4Error> {
    // All the cheap checks run before the key derivation.
    let string_to_sign = prepare(req, auth, opts)?;
    let key = Zeroizing::new(signing_key(
        secret_access_key,
        &auth.date,
        &auth.region,
        &auth.service,
    ));
    check_signature(&key, &string_to_sign, &auth.signature)
}

/// Same as [`verify`], with a key already derived by
/// [`signing_key`]`(secret, &auth.date, &auth.region, &auth.service)`, so a server can
/// cache the derived key per (credential, date, region). A key derived for another scope
/// simply fails with [`SigV4Error::SignatureMismatch`].
pub fn verify_with_signing_key(
    req: &RequestParts<'_>,
    auth: &Authorization,
    signing_key: &[u8; 32],
    opts: &VerifyOptions,
) -> Result<(), SigV4Error> {
    let string_to_sign = prepare(req, auth, opts)?;
    check_signature(signing_key, &string_to_sign, &auth.signature)
}

/// Builds the SigV4 canonical request:
/// `method \n canonical-uri \n canonical-query \n canonical-headers \n signed-headers \n
/// payload-hash`.
///
/// `signed_headers` must be lowercase and strictly ascending (as [`parse_authorization`]
/// guarantees); each must be present in `req.headers`. Repeated headers are joined with
/// `,` in the order received; values are trimmed of spaces, runs of spaces collapse to one,
/// and obs-fold line breaks count as a space.
pub fn canonical_request(
    req: &RequestParts<'_>,
    signed_headers: &[String],
    payload_hash_hex: &str,
    normalize_path: bool,
) -> Result<String, SigV4Error> {
    check_signed_headers(signed_headers)?;
    if req.method.is_empty() || !req.method.bytes().all(is_tchar) {
        return Err(SigV4Error::MalformedRequest("invalid method"));
    }

    let mut out = String::with_capacity(256 + req.path.len() + req.query.len());
    out.push_str(req.method);
    out.push('\n');
    canonical_uri(req.path, normalize_path, &mut out)?;
    out.push('\n');
    canonical_query(req.query, &mut out);
    out.push('\n');
    for name in signed_headers {
        out.push_str(name);
        out.push(':');
        let mut found = false;
        for (_, value) in req
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            if found {
                out.push(',');
            }
            found = true;
            canonical_header_value(value, &mut out);
        }
        if !found {
            return Err(SigV4Error::MissingSignedHeader(name.clone()));
        }
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed_headers.join(";"));
    out.push('\n');
    out.push_str(payload_hash_hex);
    Ok(out)
}

/// Builds the string to sign:
/// `AWS4-HMAC-SHA256 \n amz_date \n credential_scope \n hex(sha256(canonical_request))`.
pub fn string_to_sign(amz_date: &str, credential_scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{credential_scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

/// Lowercase hex SHA-256, as used for payload hashes.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, data))
}

/// Runs every check but the signature and returns the string to sign.
fn prepare(
    req: &RequestParts<'_>,
    auth: &Authorization,
    opts: &VerifyOptions,
) -> Result<String, SigV4Error> {
    if auth.service != opts.service {
        return Err(SigV4Error::WrongService {
            expected: opts.service,
            found: auth.service.clone(),
        });
    }
    check_signed_headers(&auth.signed_headers)?;
    let is_signed = |name: &str| auth.signed_headers.iter().any(|h| h == name);
    if !is_signed("host") {
        return Err(SigV4Error::HostNotSigned);
    }

    let (amz_date, request_time) = if let Some(value) = single_header(req, X_AMZ_DATE)? {
        if !is_signed(X_AMZ_DATE) {
            return Err(SigV4Error::DateNotSigned("X-Amz-Date"));
        }
        let value = value.trim_matches([' ', '\t']);
        let time = parse_amz_date(value).ok_or(SigV4Error::MalformedRequest(
            "X-Amz-Date is not yyyymmddThhmmssZ",
        ))?;
        (value.to_owned(), time)
    } else if let Some(value) = single_header(req, DATE)? {
        if !is_signed(DATE) {
            return Err(SigV4Error::DateNotSigned("Date"));
        }
        let time = parse_http_date(value.trim_matches([' ', '\t']))
            .ok_or(SigV4Error::MalformedRequest("Date is not an IMF-fixdate"))?;
        (format_amz_date(time), time)
    } else {
        return Err(SigV4Error::MissingDate);
    };

    if auth.date != amz_date[..8] {
        return Err(SigV4Error::CredentialScopeMismatch {
            credential_date: auth.date.clone(),
            request_date: amz_date[..8].to_owned(),
        });
    }

    let age = opts.now - request_time;
    if age > opts.max_skew {
        return Err(SigV4Error::RequestTooOld {
            skew_seconds: age.whole_seconds(),
        });
    }
    if -age > opts.max_skew {
        return Err(SigV4Error::RequestInFuture {
            skew_seconds: (-age).whole_seconds(),
        });
    }

    let payload_hash = sha256_hex(req.body);
    if let Some(claimed) = single_header(req, X_AMZ_CONTENT_SHA256)? {
        let claimed = claimed.trim_matches([' ', '\t']);
        if claimed == "UNSIGNED-PAYLOAD" || claimed.starts_with("STREAMING-") {
            return Err(SigV4Error::UnsignedPayload);
        }
        if claimed != payload_hash {
            return Err(SigV4Error::PayloadHashMismatch);
        }
    }

    let creq = canonical_request(
        req,
        &auth.signed_headers,
        &payload_hash,
        opts.normalize_path,
    )?;
    Ok(string_to_sign(&amz_date, &auth.credential_scope(), &creq))
}

fn check_signature(
    key: &[u8; 32],
    string_to_sign: &str,
    claimed: &[u8; 32],
) -> Result<(), SigV4Error> {
    let expected = hmac_sha256(key, string_to_sign.as_bytes());
    if bool::from(expected.ct_eq(claimed)) {
        Ok(())
    } else {
        Err(SigV4Error::SignatureMismatch)
    }
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Zeroizing<[u8; 32]> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let tag = hmac::sign(&key, data);
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(tag.as_ref());
    out
}

/// Signed header names: non-empty, lowercase header tokens, strictly ascending.
fn check_signed_headers(names: &[String]) -> Result<(), SigV4Error> {
    use SigV4Error::MalformedAuthorization as Bad;
    if names.is_empty() {
        return Err(Bad("SignedHeaders is empty"));
    }
    for name in names {
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return Err(Bad("SignedHeaders contains an invalid header name"));
        }
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(Bad("SignedHeaders must be lowercase"));
        }
    }
    if names.windows(2).any(|w| w[0] >= w[1]) {
        return Err(Bad("SignedHeaders must be sorted and without duplicates"));
    }
    Ok(())
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The value of a header that must not repeat, if present.
fn single_header<'a>(req: &RequestParts<'a>, name: &str) -> Result<Option<&'a str>, SigV4Error> {
    let mut values = req
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v);
    let first = values.next();
    if values.next().is_some() {
        return Err(SigV4Error::MalformedRequest(match name {
            X_AMZ_DATE => "X-Amz-Date appears more than once",
            DATE => "Date appears more than once",
            _ => "x-amz-content-sha256 appears more than once",
        }));
    }
    Ok(first)
}

fn canonical_uri(path: &str, normalize: bool, out: &mut String) -> Result<(), SigV4Error> {
    if path.is_empty() {
        out.push('/');
        return Ok(());
    }
    if !path.starts_with('/') {
        return Err(SigV4Error::MalformedRequest("path must start with `/`"));
    }
    if normalize {
        let normalized = normalize_path(path);
        out.extend(percent_encode(normalized.as_bytes(), UNRESERVED_AND_SLASH));
    } else {
        out.extend(percent_encode(path.as_bytes(), UNRESERVED_AND_SLASH));
    }
    Ok(())
}

/// RFC 3986 §5.2.4 dot-segment removal on an absolute path, also dropping empty segments
/// (so runs of `/` collapse). A trailing `/` (or a final `.`/`..` segment) is kept as a
/// trailing `/`.
fn normalize_path(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    let trailing_slash = path.ends_with('/') || path.ends_with("/.") || path.ends_with("/..");
    if segments.is_empty() || trailing_slash {
        out.push('/');
    }
    out
}

/// Parameters split on `&`, each decoded (`+` is a space, `%XX` a byte) and re-encoded with
/// only unreserved characters left bare, sorted by key then value, `=` always present.
fn canonical_query(query: &str, out: &mut String) {
    if query.is_empty() {
        return;
    }
    let decode_encode = |raw: &str| -> String {
        let plus_as_space: Vec<u8> = raw
            .bytes()
            .map(|b| if b == b'+' { b' ' } else { b })
            .collect();
        let decoded: Vec<u8> = percent_decode(&plus_as_space).collect();
        percent_encode(&decoded, UNRESERVED).to_string()
    };
    let mut params: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode_encode(k), decode_encode(v))
        })
        .collect();
    params.sort();
    for (i, (k, v)) in params.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        // Writing to a String cannot fail.
        let _ = write!(out, "{k}={v}");
    }
}

/// Trims spaces, collapses runs of spaces to one, and turns an obs-fold (a line break and
/// the whitespace after it) into one space.
fn canonical_header_value(raw: &str, out: &mut String) {
    let mut chars = raw.chars().peekable();
    let mut pending_space = false;
    let mut started = false;
    while let Some(c) = chars.next() {
        match c {
            '\r' | '\n' => {
                while chars
                    .next_if(|c| matches!(c, ' ' | '\t' | '\r' | '\n'))
                    .is_some()
                {}
                pending_space = true;
            }
            ' ' => pending_space = true,
            c => {
                if pending_space && started {
                    out.push(' ');
                }
                pending_space = false;
                started = true;
                out.push(c);
            }
        }
    }
}

/// `yyyymmddThhmmssZ`, UTC.
fn parse_amz_date(s: &str) -> Option<OffsetDateTime> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        let digits = &b[range];
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(
            digits
                .iter()
                .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0')),
        )
    };
    let year = i32::try_from(num(0..4)?).ok()?;
    let month = Month::try_from(u8::try_from(num(4..6)?).ok()?).ok()?;
    let day = u8::try_from(num(6..8)?).ok()?;
    let hour = u8::try_from(num(9..11)?).ok()?;
    let minute = u8::try_from(num(11..13)?).ok()?;
    let second = u8::try_from(num(13..15)?).ok()?;
    let date = Date::from_calendar_date(year, month, day).ok()?;
    let time = Time::from_hms(hour, minute, second).ok()?;
    Some(PrimitiveDateTime::new(date, time).assume_utc())
}

/// IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
fn parse_http_date(s: &str) -> Option<OffsetDateTime> {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    PrimitiveDateTime::parse(s, format)
        .ok()
        .map(PrimitiveDateTime::assume_utc)
}

fn format_amz_date(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
