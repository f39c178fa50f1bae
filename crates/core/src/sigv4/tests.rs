use super::*;
use time::macros::datetime;

const AKID: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const BODY: &[u8] = br#"{"workloadName": "my-agent", "userId": "alice"}"#;
const PATH: &str = "/identities/GetWorkloadAccessTokenForUserId";
const SIGNATURE: &str = "9f8d2a239a7a3a36528eb180afe951ccb8f1f75dd5398def8d8581c07107379c";
const NOW: OffsetDateTime = datetime!(2026-01-02 03:04:05 UTC);

fn auth_header(date: &str, service: &str, signed: &str, signature: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential={AKID}/{date}/us-east-1/{service}/aws4_request, \
             SignedHeaders={signed}, Signature={signature}"
    )
}

/// The vector's authorization, its credential scope dated `date` for `service`.
fn scoped_auth(date: &str, service: &str) -> Authorization {
    parse_authorization(&auth_header(
        date,
        service,
        "content-type;host;x-amz-date",
        SIGNATURE,
    ))
    .unwrap()
}

fn vector_auth() -> Authorization {
    scoped_auth("20260102", "bedrock-agentcore")
}

/// Verifies the vector's request and signature under another credential scope.
fn verify_vector_scope(date: &str, service: &str) -> Result<(), SigV4Error> {
    let headers = vector_headers("20260102T030405Z");
    verify(
        &request(&headers, BODY),
        &scoped_auth(date, service),
        SECRET.as_bytes(),
        &VerifyOptions::agentcore(NOW),
    )
}

fn vector_headers(amz_date: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("Content-Type", "application/json"),
        ("Host", "127.0.0.1:18099"),
        ("X-Amz-Date", amz_date),
    ]
}

fn request<'a>(headers: &'a [(&'a str, &'a str)], body: &'a [u8]) -> RequestParts<'a> {
    RequestParts {
        method: "POST",
        path: PATH,
        query: "",
        headers,
        body,
    }
}

#[test]
fn botocore_vector_verifies() {
    let headers = vector_headers("20260102T030405Z");
    let req = request(&headers, BODY);
    let auth = vector_auth();
    assert_eq!(auth.access_key_id, AKID);
    assert_eq!(auth.region, "us-east-1");
    let opts = VerifyOptions::agentcore(NOW);
    verify(&req, &auth, SECRET.as_bytes(), &opts).unwrap();
    let key = signing_key(
        SECRET.as_bytes(),
        "20260102",
        "us-east-1",
        "bedrock-agentcore",
    );
    verify_with_signing_key(&req, &auth, &key, &opts).unwrap();
    // A key derived for another region is just a mismatch.
    let other = signing_key(
        SECRET.as_bytes(),
        "20260102",
        "us-west-2",
        "bedrock-agentcore",
    );
    assert_eq!(
        verify_with_signing_key(&req, &auth, &other, &opts),
        Err(SigV4Error::SignatureMismatch)
    );
    // Skew is allowed up to the limit, both ways.
    for now in [NOW + DEFAULT_MAX_SKEW, NOW - DEFAULT_MAX_SKEW] {
        verify(
            &req,
            &auth,
            SECRET.as_bytes(),
            &VerifyOptions::agentcore(now),
        )
        .unwrap();
    }
}

#[test]
fn tampered_body_is_rejected() {
    let headers = vector_headers("20260102T030405Z");
    let body = br#"{"workloadName": "my-agent", "userId": "mallory"}"#;
    let err = verify(
        &request(&headers, body),
        &vector_auth(),
        SECRET.as_bytes(),
        &VerifyOptions::agentcore(NOW),
    );
    assert_eq!(err, Err(SigV4Error::SignatureMismatch));
}

#[test]
fn wrong_secret_is_rejected() {
    let headers = vector_headers("20260102T030405Z");
    let err = verify(
        &request(&headers, BODY),
        &vector_auth(),
        b"wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEz",
        &VerifyOptions::agentcore(NOW),
    );
    assert_eq!(err, Err(SigV4Error::SignatureMismatch));
}

#[test]
fn skew_is_enforced() {
    let headers = vector_headers("20260102T030405Z");
    let req = request(&headers, BODY);
    let late = VerifyOptions::agentcore(NOW + time::Duration::minutes(6));
    assert_eq!(
        verify(&req, &vector_auth(), SECRET.as_bytes(), &late),
        Err(SigV4Error::RequestTooOld { skew_seconds: 360 })
    );
    let early = VerifyOptions::agentcore(NOW - time::Duration::minutes(6));
    assert_eq!(
        verify(&req, &vector_auth(), SECRET.as_bytes(), &early),
        Err(SigV4Error::RequestInFuture { skew_seconds: 360 })
    );
}

#[test]
fn wrong_service_is_rejected() {
    assert_eq!(
        verify_vector_scope("20260102", "s3"),
        Err(SigV4Error::WrongService {
            expected: "bedrock-agentcore",
            found: "s3".into()
        })
    );
}

#[test]
fn credential_date_must_match_request_date() {
    assert_eq!(
        verify_vector_scope("20260101", "bedrock-agentcore"),
        Err(SigV4Error::CredentialScopeMismatch {
            credential_date: "20260101".into(),
            request_date: "20260102".into()
        })
    );
}

#[test]
fn host_and_date_must_be_signed() {
    let headers = vector_headers("20260102T030405Z");
    let req = request(&headers, BODY);
    let opts = VerifyOptions::agentcore(NOW);
    let auth = parse_authorization(&auth_header(
        "20260102",
        "bedrock-agentcore",
        "content-type;x-amz-date",
        SIGNATURE,
    ))
    .unwrap();
    assert_eq!(
        verify(&req, &auth, SECRET.as_bytes(), &opts),
        Err(SigV4Error::HostNotSigned)
    );
    let auth = parse_authorization(&auth_header(
        "20260102",
        "bedrock-agentcore",
        "content-type;host",
        SIGNATURE,
    ))
    .unwrap();
    assert_eq!(
        verify(&req, &auth, SECRET.as_bytes(), &opts),
        Err(SigV4Error::DateNotSigned("X-Amz-Date"))
    );
    let no_date = [
        ("Host", "127.0.0.1:18099"),
        ("Content-Type", "application/json"),
    ];
    assert_eq!(
        verify(
            &request(&no_date, BODY),
            &vector_auth(),
            SECRET.as_bytes(),
            &opts
        ),
        Err(SigV4Error::MissingDate)
    );
}

#[test]
fn missing_signed_header_is_named() {
    let headers = [
        ("Host", "127.0.0.1:18099"),
        ("X-Amz-Date", "20260102T030405Z"),
    ];
    let err = verify(
        &request(&headers, BODY),
        &vector_auth(),
        SECRET.as_bytes(),
        &VerifyOptions::agentcore(NOW),
    );
    assert_eq!(
        err,
        Err(SigV4Error::MissingSignedHeader("content-type".into()))
    );
}

#[test]
fn payload_hash_header_is_checked() {
    let wrong = sha256_hex(b"something else");
    let right = sha256_hex(BODY);
    let cases = [
        ("UNSIGNED-PAYLOAD", Err(SigV4Error::UnsignedPayload)),
        (
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
            Err(SigV4Error::UnsignedPayload),
        ),
        (wrong.as_str(), Err(SigV4Error::PayloadHashMismatch)),
        // The right hash, even unsigned, changes nothing: the body is covered anyway.
        (right.as_str(), Ok(())),
    ];
    for (value, expected) in cases {
        let mut headers: Vec<(&str, &str)> = vector_headers("20260102T030405Z");
        headers.push(("X-Amz-Content-Sha256", value));
        let got = verify(
            &request(&headers, BODY),
            &vector_auth(),
            SECRET.as_bytes(),
            &VerifyOptions::agentcore(NOW),
        );
        assert_eq!(got, expected, "x-amz-content-sha256: {value}");
    }
}

#[test]
fn duplicate_date_headers_are_rejected() {
    let mut headers = vector_headers("20260102T030405Z");
    headers.push(("x-amz-date", "20260102T030405Z"));
    assert!(matches!(
        verify(
            &request(&headers, BODY),
            &vector_auth(),
            SECRET.as_bytes(),
            &VerifyOptions::agentcore(NOW)
        ),
        Err(SigV4Error::MalformedRequest(_))
    ));
}

#[test]
fn date_header_is_a_fallback() {
    // Sign with X-Amz-Date, then present the same instant as a signed `Date` header:
    // the string to sign uses the ISO basic form of it either way.
    let secret = SECRET.as_bytes();
    let headers = [("Host", "h"), ("Date", "Fri, 02 Jan 2026 03:04:05 GMT")];
    let req = request(&headers, BODY);
    let creq = canonical_request(
        &req,
        &["date".into(), "host".into()],
        &sha256_hex(BODY),
        true,
    )
    .unwrap();
    let scope = "20260102/eu-west-1/bedrock-agentcore/aws4_request";
    let sts = string_to_sign("20260102T030405Z", scope, &creq);
    let key = signing_key(secret, "20260102", "eu-west-1", "bedrock-agentcore");
    let sig = hex::encode(*hmac_sha256(&key, sts.as_bytes()));
    let auth = parse_authorization(&format!(
        "AWS4-HMAC-SHA256 Credential=AK/{scope}, SignedHeaders=date;host, Signature={sig}"
    ))
    .unwrap();
    verify(&req, &auth, secret, &VerifyOptions::agentcore(NOW)).unwrap();
    let unsigned = parse_authorization(&format!(
        "AWS4-HMAC-SHA256 Credential=AK/{scope}, SignedHeaders=host, Signature={sig}"
    ))
    .unwrap();
    assert_eq!(
        verify(&req, &unsigned, secret, &VerifyOptions::agentcore(NOW)),
        Err(SigV4Error::DateNotSigned("Date"))
    );
}

#[test]
fn authorization_parsing() {
    let ok = vector_auth();
    assert_eq!(
        ok.signed_headers,
        ["content-type", "host", "x-amz-date"].map(String::from)
    );
    assert_eq!(
        ok.credential_scope(),
        "20260102/us-east-1/bedrock-agentcore/aws4_request"
    );
    // Components in another order, no spaces after commas.
    let reordered = format!(
        "AWS4-HMAC-SHA256 Signature={SIGNATURE},SignedHeaders=content-type;host;x-amz-date,\
             Credential={AKID}/20260102/us-east-1/bedrock-agentcore/aws4_request"
    );
    assert_eq!(parse_authorization(&reordered).unwrap(), ok);

    let cred = "Credential=AK/20260102/us-east-1/svc/aws4_request";
    let sig = format!("Signature={SIGNATURE}");
    for value in [
        format!("AWS4-HMAC-SHA1 {cred}, SignedHeaders=host, {sig}"),
        "Bearer abc".to_owned(),
    ] {
        assert_eq!(
            parse_authorization(&value),
            Err(SigV4Error::UnsupportedAlgorithm),
            "{value}"
        );
    }
    let malformed = [
        "AWS4-HMAC-SHA256".to_owned(),
        format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=host"),
        format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=host;Date, {sig}"),
        format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=x-amz-date;host, {sig}"),
        format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=host;host, {sig}"),
        format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=, {sig}"),
        format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=host, {sig}, {sig}"),
        format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=host, {sig}, Extra=1"),
        format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=host, Signature=abcd"),
        format!(
            "AWS4-HMAC-SHA256 {cred}, SignedHeaders=host, Signature={}",
            "zz".repeat(32)
        ),
        format!(
            "AWS4-HMAC-SHA256 Credential=AK/20260102/us-east-1/svc/aws5_request, \
                 SignedHeaders=host, {sig}"
        ),
        format!(
            "AWS4-HMAC-SHA256 Credential=AK/2026012/us-east-1/svc/aws4_request, \
                 SignedHeaders=host, {sig}"
        ),
        format!(
            "AWS4-HMAC-SHA256 Credential=AK/20260102/us-east-1/svc/x/aws4_request, \
                 SignedHeaders=host, {sig}"
        ),
        format!(
            "AWS4-HMAC-SHA256 Credential=/20260102/us-east-1/svc/aws4_request, \
                 SignedHeaders=host, {sig}"
        ),
    ];
    for value in malformed {
        let err = parse_authorization(&value).unwrap_err();
        assert!(
            matches!(err, SigV4Error::MalformedAuthorization(_)),
            "{value}: got {err:?}"
        );
    }
}

#[test]
fn errors_do_not_leak_the_expected_signature() {
    let headers = vector_headers("20260102T030405Z");
    let mut auth = vector_auth();
    auth.signature[0] ^= 1;
    let err = verify(
        &request(&headers, BODY),
        &auth,
        SECRET.as_bytes(),
        &VerifyOptions::agentcore(NOW),
    )
    .unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(!text.contains(SIGNATURE) && !text.contains(&SIGNATURE[2..]));
    assert!(!text.contains(SECRET));
}

#[test]
fn canonicalisation_details() {
    assert_eq!(normalize_path("/a/b/../c/./d//"), "/a/c/d/");
    assert_eq!(normalize_path("/.."), "/");
    assert_eq!(normalize_path("/a/.."), "/");
    assert_eq!(normalize_path("/a/."), "/a/");
    let mut s = String::new();
    canonical_uri("/a%3Db/c d/%E1%88%B4", false, &mut s).unwrap();
    assert_eq!(s, "/a%253Db/c%20d/%25E1%2588%25B4");
    let mut q = String::new();
    canonical_query("b=2&a=x+y&a=%41&c&&d=%2b", &mut q);
    assert_eq!(q, "a=A&a=x%20y&b=2&c=&d=%2B");
    let mut v = String::new();
    canonical_header_value("  a   b\r\n \t c  ", &mut v);
    assert_eq!(v, "a b c");
    assert_eq!(
        parse_amz_date("20260102T030405Z"),
        Some(datetime!(2026-01-02 03:04:05 UTC))
    );
    assert_eq!(parse_amz_date("20260230T030405Z"), None);
    assert_eq!(parse_amz_date("2026-01-02T03:04:05Z"), None);
    assert_eq!(
        parse_http_date("Fri, 02 Jan 2026 03:04:05 GMT"),
        Some(datetime!(2026-01-02 03:04:05 UTC))
    );
    assert_eq!(
        format_amz_date(datetime!(2026-01-02 03:04:05 UTC)),
        "20260102T030405Z"
    );
}

/// Round trip through the real Rust SDK signer.
mod sdk_round_trip {
    use super::*;
    use aws_credential_types::Credentials;
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    use aws_sigv4::sign::v4;
    use aws_smithy_runtime_api::client::identity::Identity;

    const AUTHORITY: &str = "bedrock-agentcore.us-west-2.amazonaws.com";

    /// Signs like the SDK does and returns the headers as a server would receive them.
    fn sdk_sign(
        path_and_query: &str,
        body: &[u8],
        session_token: Option<&str>,
        at: OffsetDateTime,
    ) -> Vec<(String, String)> {
        let creds = Credentials::new(AKID, SECRET, session_token.map(str::to_owned), None, "test");
        let identity: Identity = creds.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region("us-west-2")
            .name("bedrock-agentcore")
            .time(at.into())
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let content_length = body.len().to_string();
        let mut headers: Vec<(String, String)> = vec![
            ("content-type".into(), "application/x-amz-json-1.0".into()),
            ("content-length".into(), content_length),
            (
                "x-amz-user-agent".into(),
                "aws-sdk-rust/1.3.9 api/bedrockagentcore/1.83.0 os/linux lang/rust/1.95.0".into(),
            ),
            // Excluded from signing by the signer itself.
            ("user-agent".into(), "aws-sdk-rust/1.3.9 os/linux".into()),
        ];
        let signable = SignableRequest::new(
            "POST",
            format!("https://{AUTHORITY}{path_and_query}"),
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::Bytes(body),
        )
        .unwrap();
        let (instructions, _signature) = sign(signable, &params).unwrap().into_parts();
        let (added, _) = instructions.into_parts();
        for h in added {
            headers.push((h.name().to_owned(), h.value().to_owned()));
        }
        // The HTTP client adds Host from the URI.
        headers.push(("host".into(), AUTHORITY.into()));
        headers
    }

    fn check(path: &str, query: &str, session_token: Option<&str>, signed: &str) {
        let at = datetime!(2026-01-02 03:04:05 UTC);
        let body = br#"{"workloadName":"my-agent","userId":"alice"}"#;
        let target = if query.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{query}")
        };
        let owned = sdk_sign(&target, body, session_token, at);
        let headers: Vec<(&str, &str)> = owned
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let authz = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            .unwrap()
            .1;
        let auth = parse_authorization(authz).unwrap();
        assert_eq!(auth.signed_headers.join(";"), signed);
        assert_eq!(auth.region, "us-west-2");
        let req = RequestParts {
            method: "POST",
            path,
            query,
            headers: &headers,
            body,
        };
        let opts = VerifyOptions::agentcore(at + time::Duration::seconds(30));
        verify(&req, &auth, SECRET.as_bytes(), &opts).unwrap();

        let tampered = RequestParts {
            body: br#"{"workloadName":"my-agent","userId":"bob"}"#,
            ..req
        };
        assert_eq!(
            verify(&tampered, &auth, SECRET.as_bytes(), &opts),
            Err(SigV4Error::SignatureMismatch)
        );
        if let Some(token) = session_token {
            let swapped: Vec<(&str, &str)> = headers
                .iter()
                .map(|&(k, v)| {
                    if v == token {
                        (k, "another-token")
                    } else {
                        (k, v)
                    }
                })
                .collect();
            let swapped = RequestParts {
                headers: &swapped,
                ..req
            };
            assert_eq!(
                verify(&swapped, &auth, SECRET.as_bytes(), &opts),
                Err(SigV4Error::SignatureMismatch)
            );
        }
    }

    #[test]
    fn sdk_signed_request_verifies() {
        check(
            "/identities/GetWorkloadAccessTokenForUserId",
            "",
            None,
            "content-length;content-type;host;x-amz-date;x-amz-user-agent",
        );
    }

    #[test]
    fn sdk_signed_request_with_session_token_verifies() {
        check(
            "/identities/GetWorkloadAccessTokenForUserId",
            "",
            Some("FQoGZXIvYXdzEXAMPLE//token+with/odd=chars"),
            "content-length;content-type;host;x-amz-date;x-amz-security-token;x-amz-user-agent",
        );
    }

    #[test]
    fn sdk_signed_request_with_encoded_path_and_query_verifies() {
        check(
            "/workloadidentities/my%3Aagent/a%20b",
            "maxResults=10&nextToken=abc%2Fdef%3D%3D&b=%E1%88%B4",
            None,
            "content-length;content-type;host;x-amz-date;x-amz-user-agent",
        );
    }
}
