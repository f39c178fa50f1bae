//! [`Client`], its builder, authentication (SigV4 or bearer) and the data-plane calls.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;
use url::Url;

use crate::error::{Error, Reason, service_error};
use crate::model::{ResourceToken, ResourceTokenRequest, UserIdentifier, resource_token};
use crate::poll::{self, PollOptions};
use latchkey_api::data::{
    CompleteResourceTokenAuthRequest, CompleteResourceTokenAuthResponse, GetResourceApiKeyRequest,
    GetResourceApiKeyResponse, GetResourceOauth2TokenResponse, WorkloadAccessTokenRequest,
    WorkloadAccessTokenResponse,
};
use latchkey_api::grants::{
    ListUserGrantsRequest, ListUserGrantsResponse, ProviderRevocation, RevokeUserGrantRequest,
    RevokeUserGrantResponse, UserGrant,
};

/// The SigV4 signing name of both AgentCore planes.
pub const SIGNING_NAME: &str = "bedrock-agentcore";

/// The default per-request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest response body read (bytes); a longer one is an [`Error::InvalidResponse`].
/// The biggest legitimate member is a 131072-character token.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// A client for the identity data plane of Latchkey or Amazon Bedrock AgentCore.
///
/// Cheap to clone (the connection pool and credentials are shared). Every operation is
/// one `POST` of a JSON body to `{endpoint}/identities/…`; nothing is retried
/// automatically except inside [`Client::poll_resource_token`].
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    endpoint: Url,
    auth: Auth,
    timeout: Duration,
}

enum Auth {
    SigV4 {
        credentials: Credentials,
        region: String,
    },
    Bearer(SecretString),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::SigV4 {
                credentials,
                region,
            } => f
                .debug_struct("SigV4")
                .field("access_key_id", &credentials.access_key_id())
                .field("secret_access_key", &"[REDACTED]")
                .field(
                    "session_token",
                    &credentials.session_token().map(|_| "[REDACTED]"),
                )
                .field("region", region)
                .finish(),
            Auth::Bearer(_) => f.debug_tuple("Bearer").field(&"[REDACTED]").finish(),
        }
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.inner.endpoint.as_str())
            .field("auth", &self.inner.auth)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Client`]: an endpoint, exactly one way to authenticate, and optionally a
/// timeout and a `reqwest::Client` of your own.
pub struct ClientBuilder {
    endpoint: Url,
    auth: Option<Auth>,
    timeout: Duration,
    http: Option<reqwest::Client>,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("endpoint", &self.endpoint.as_str())
            .field("auth", &self.auth)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// Sign every request with AWS Signature Version 4 (service `bedrock-agentcore`) in
    /// `region`. Latchkey accepts any region; AgentCore needs the endpoint's region.
    /// `session_token` is for temporary credentials (sent as `X-Amz-Security-Token`).
    pub fn sigv4(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<SecretString>,
        session_token: Option<SecretString>,
        region: impl Into<String>,
    ) -> Self {
        let secret: SecretString = secret_access_key.into();
        let credentials = Credentials::new(
            access_key_id.into(),
            secret.expose_secret().to_owned(),
            session_token.map(|t| t.expose_secret().to_owned()),
            None,
            "latchkey-client",
        );
        self.auth = Some(Auth::SigV4 {
            credentials,
            region: region.into(),
        });
        self
    }

    /// Send `Authorization: Bearer <api_key>` instead of signing. Latchkey accepts every
    /// credential as `ACCESS_KEY_ID:SECRET_ACCESS_KEY`; AgentCore itself only takes SigV4.
    pub fn bearer(mut self, api_key: impl Into<SecretString>) -> Self {
        self.auth = Some(Auth::Bearer(api_key.into()));
        self
    }

    /// The timeout of each request (default [`DEFAULT_TIMEOUT`]); exceeding it is
    /// [`Error::Timeout`]. It applies to a client given with [`Self::http_client`] too.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Use this `reqwest::Client` (proxies, custom roots…). By default the client builds
    /// its own, which follows no redirects.
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// Check the set-up and build the client. Fails with [`Error::Config`] when no
    /// credentials were given or the endpoint is not a plain `http(s)` base URL (no user
    /// name or password, query or fragment).
    pub fn build(self) -> Result<Client, Error> {
        let auth = self
            .auth
            .ok_or_else(|| Error::Config("no credentials: call sigv4() or bearer()".into()))?;
        let endpoint = self.endpoint;
        if !matches!(endpoint.scheme(), "http" | "https") || endpoint.host().is_none() {
            return Err(Error::Config(
                "the endpoint must be an http or https URL with a host".into(),
            ));
        }
        if !endpoint.username().is_empty() || endpoint.password().is_some() {
            return Err(Error::Config(
                "the endpoint must not contain a user name or password".into(),
            ));
        }
        if endpoint.query().is_some() || endpoint.fragment().is_some() {
            return Err(Error::Config(
                "the endpoint must not have a query or fragment".into(),
            ));
        }
        if let Auth::SigV4 { region, .. } = &auth
            && region.is_empty()
        {
            return Err(Error::Config("the SigV4 region is empty".into()));
        }
        let http = match self.http {
            Some(http) => http,
            None => reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(Error::Transport)?,
        };
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                endpoint,
                auth,
                timeout: self.timeout,
            }),
        })
    }
}

impl Client {
    /// Start building a client for `endpoint`, e.g. `http://127.0.0.1:8080` for Latchkey
    /// or `https://bedrock-agentcore.us-east-1.amazonaws.com`. A path in the endpoint is
    /// kept as a prefix of `/identities/…`.
    pub fn builder(endpoint: Url) -> ClientBuilder {
        ClientBuilder {
            endpoint,
            auth: None,
            timeout: DEFAULT_TIMEOUT,
            http: None,
        }
    }

    /// Latchkey's liveness check, `GET {endpoint}/ping` (no credentials), within
    /// `timeout`: `Ok` on a 2xx answer (the service runs and reaches its database).
    pub async fn ping(&self, timeout: Duration) -> Result<(), Error> {
        let inner = &*self.inner;
        let url = operation_url(&inner.endpoint, "/ping");
        let response = inner
            .http
            .get(url)
            .timeout(timeout.min(inner.timeout))
            .send()
            .await
            .map_err(Error::from_reqwest)?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        Err(service_error(status.as_u16(), None, None, None, b""))
    }

    /// `GetWorkloadAccessToken`: a workload access token (WAT) for a workload acting
    /// without a user.
    pub async fn get_workload_access_token(
        &self,
        workload_name: &str,
    ) -> Result<SecretString, Error> {
        self.workload_access_token(
            "GetWorkloadAccessToken",
            WorkloadAccessTokenRequest {
                workload_name: workload_name.to_string(),
                user_id: None,
                user_token: None,
            },
        )
        .await
    }

    /// `GetWorkloadAccessTokenForUserId`: a WAT for `user_id` (the caller asserts the
    /// user; Latchkey allows it only for admins and workloads tagged for it).
    pub async fn get_workload_access_token_for_user_id(
        &self,
        workload_name: &str,
        user_id: &str,
    ) -> Result<SecretString, Error> {
        self.workload_access_token(
            "GetWorkloadAccessTokenForUserId",
            WorkloadAccessTokenRequest {
                workload_name: workload_name.to_string(),
                user_id: Some(user_id.to_string()),
                user_token: None,
            },
        )
        .await
    }

    /// `GetWorkloadAccessTokenForJWT`: a WAT for the user of `user_token`, a JWT from an
    /// identity provider the service trusts.
    pub async fn get_workload_access_token_for_jwt(
        &self,
        workload_name: &str,
        user_token: &SecretString,
    ) -> Result<SecretString, Error> {
        self.workload_access_token(
            "GetWorkloadAccessTokenForJWT",
            WorkloadAccessTokenRequest {
                workload_name: workload_name.to_string(),
                user_id: None,
                user_token: Some(user_token.clone()),
            },
        )
        .await
    }

    async fn workload_access_token(
        &self,
        operation: &str,
        body: WorkloadAccessTokenRequest,
    ) -> Result<SecretString, Error> {
        let out: WorkloadAccessTokenResponse = self
            .call(&format!("/identities/{operation}"), &body)
            .await?;
        out.workload_access_token
            .filter(|t| !t.expose_secret().is_empty())
            .ok_or_else(|| Error::InvalidResponse("no workloadAccessToken in the response".into()))
    }

    /// `GetResourceOauth2Token`: a token for a third-party resource, or what the user must
    /// do first. See [`ResourceToken`] for the answers.
    pub async fn get_resource_oauth2_token(
        &self,
        request: &ResourceTokenRequest,
    ) -> Result<ResourceToken, Error> {
        let (out, reason): (GetResourceOauth2TokenResponse, _) = self
            .call_with_reason("/identities/oauth2/token", &request.wire())
            .await?;
        resource_token(out, reason.as_deref().and_then(Reason::from_header))
    }

    /// Poll `GetResourceOauth2Token` for `request.session_uri` until the token arrives.
    ///
    /// Works in any process that holds the WAT and the session URI; it needs no hosting
    /// runtime. The first call is made after `options.initial_delay`; the delay then grows
    /// by `options.multiplier` up to `options.max_delay`. `forceAuthentication` is not
    /// sent while polling.
    ///
    /// Ends with:
    /// - the access token;
    /// - [`Error::SessionFailed`] when the session is `FAILED` (refused consent, provider
    ///   error, wrong user, expiry), with the service's [`Reason`] when it gave one
    ///   ([`Reason::SessionCancelled`]: another account opened the link);
    /// - [`Error::Deadline`] when `options.deadline` has passed (measured from this call);
    /// - [`Error::Cancelled`] as soon as `cancel` completes. `cancel` is any future used
    ///   as a signal: `token.cancelled()` of a `tokio_util::sync::CancellationToken`,
    ///   `tokio::signal::ctrl_c()`, a `oneshot::Receiver`, or `std::future::pending()`
    ///   for never;
    /// - [`Error::ConsentRequired`] when the service starts a new consent instead;
    /// - any other error at once, except transport errors, timeouts, 5xx and throttling,
    ///   which are retried with the same backoff.
    ///
    /// Fails with [`Error::Config`] when `request.session_uri` is not set.
    pub async fn poll_resource_token<C>(
        &self,
        request: &ResourceTokenRequest,
        options: PollOptions,
        cancel: C,
    ) -> Result<SecretString, Error>
    where
        C: Future<Output = ()>,
    {
        poll::poll(self, request, options, cancel).await
    }

    /// `CompleteResourceTokenAuth`: bind a consent to the user who gave it, after your
    /// return-URL handler has checked that the signed-in browser user is the user the WAT
    /// was issued for. `session_uri` is the `session_id` of the redirect to your return URL:
    /// Latchkey's one-time completion URN, which only the browser that came back from the
    /// provider receives. The polling `sessionUri` is refused (`ResourceNotFoundException`,
    /// like an unknown session). The next poll with the polling `sessionUri` then returns
    /// the token.
    pub async fn complete_resource_token_auth(
        &self,
        session_uri: &str,
        user: &UserIdentifier,
    ) -> Result<(), Error> {
        let _: CompleteResourceTokenAuthResponse = self
            .call(
                "/identities/CompleteResourceTokenAuth",
                &CompleteResourceTokenAuthRequest {
                    user_identifier: Some(user.wire()),
                    session_uri: Some(session_uri.to_string()),
                },
            )
            .await?;
        Ok(())
    }

    /// Latchkey's `ListUserGrants` (binding or admin credential): every grant held for
    /// `user`, never a token.
    pub async fn list_user_grants(&self, user: &UserIdentifier) -> Result<Vec<UserGrant>, Error> {
        let response: ListUserGrantsResponse = self
            .call(
                "/latchkey/ListUserGrants",
                &ListUserGrantsRequest {
                    user_identifier: Some(user.wire()),
                },
            )
            .await?;
        Ok(response.grants)
    }

    /// Latchkey's `RevokeUserGrant` (binding or admin credential): revoke `user`'s grant for
    /// `workload` and `provider` at the provider (RFC 7009, when it offers it), then delete
    /// it from the vault. `ResourceNotFoundException` when the user holds no such grant.
    pub async fn revoke_user_grant(
        &self,
        user: &UserIdentifier,
        workload: &str,
        provider: &str,
    ) -> Result<ProviderRevocation, Error> {
        let response: RevokeUserGrantResponse = self
            .call(
                "/latchkey/RevokeUserGrant",
                &RevokeUserGrantRequest {
                    user_identifier: Some(user.wire()),
                    workload_identity_name: Some(workload.to_string()),
                    credential_provider_name: Some(provider.to_string()),
                },
            )
            .await?;
        Ok(response.provider_revocation)
    }

    /// `GetResourceApiKey`: the API key stored in credential provider `provider_name`.
    pub async fn get_resource_api_key(
        &self,
        workload_identity_token: &SecretString,
        provider_name: &str,
    ) -> Result<SecretString, Error> {
        let out: GetResourceApiKeyResponse = self
            .call(
                "/identities/api-key",
                &GetResourceApiKeyRequest {
                    workload_identity_token: workload_identity_token.clone(),
                    resource_credential_provider_name: provider_name.to_string(),
                },
            )
            .await?;
        out.api_key
            .filter(|k| !k.expose_secret().is_empty())
            .ok_or_else(|| Error::InvalidResponse("no apiKey in the response".into()))
    }

    /// One operation: POST `body` as JSON to `path`, authenticated; parse a 2xx body as
    /// `T` (an empty body as `{}`), anything else as a service error.
    async fn call<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, Error> {
        self.call_with_reason(path, body).await.map(|(out, _)| out)
    }

    /// [`Self::call`], and the [`REASON_HEADER`](crate::error::REASON_HEADER) of a 2xx
    /// answer (a `FAILED` session status says why in it).
    async fn call_with_reason<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<(T, Option<String>), Error> {
        let inner = &*self.inner;
        let body = serde_json::to_vec(body)
            .map_err(|_| Error::Config("the request could not be encoded as JSON".into()))?;
        let url = operation_url(&inner.endpoint, path);
        let mut request = inner
            .http
            .post(url.clone())
            .timeout(inner.timeout)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in self.auth_headers(&url, &body)? {
            request = request.header(name, value);
        }
        // A client span when the call is made for a traced request: `traceparent` goes with it.
        let mut trace_headers = reqwest::header::HeaderMap::new();
        let traced = latchkey_telemetry::trace::outgoing(&mut trace_headers, || {
            let attributes = latchkey_telemetry::trace::call_attributes(
                "POST",
                url.host_str(),
                url.port_or_known_default(),
            );
            (format!("POST {path}"), attributes)
        });
        if traced.is_some() {
            request = request.headers(trace_headers);
        }
        let sent = request.body(body).send().await;
        if let Some(span) = traced {
            span.finish(match &sent {
                Ok(response) => Ok(response.status().as_u16()),
                Err(_) => Err("unreachable"),
            });
        }
        let mut response = sent.map_err(Error::from_reqwest)?;
        let status = response.status();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let error_type = header("x-amzn-errortype");
        let request_id = header("x-amzn-requestid");
        let reason = header(crate::error::REASON_HEADER);
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(Error::from_reqwest)? {
            if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(Error::InvalidResponse(format!(
                    "the response body is larger than {MAX_RESPONSE_BYTES} bytes"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            return Err(service_error(
                status.as_u16(),
                error_type.as_deref(),
                request_id,
                reason.as_deref(),
                &bytes,
            ));
        }
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        // serde's message can quote a value from the body; keep only where it failed.
        let out = serde_json::from_slice(bytes).map_err(|e| {
            Error::InvalidResponse(format!(
                "HTTP {} body is not the expected JSON ({:?} error at line {}, column {})",
                status.as_u16(),
                e.classify(),
                e.line(),
                e.column()
            ))
        })?;
        Ok((out, reason))
    }

    /// The headers that authenticate a request with this body to this URL.
    fn auth_headers(
        &self,
        url: &Url,
        body: &[u8],
    ) -> Result<Vec<(HeaderName, HeaderValue)>, Error> {
        match &self.inner.auth {
            Auth::Bearer(key) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {}", key.expose_secret()))
                    .map_err(|_| {
                    Error::Config("the bearer key is not a valid header value".into())
                })?;
                value.set_sensitive(true);
                Ok(vec![(AUTHORIZATION, value)])
            }
            Auth::SigV4 {
                credentials,
                region,
            } => sigv4_headers(credentials, region, url, body, SystemTime::now()),
        }
    }
}

/// `{endpoint}{path}`, keeping a path prefix of the endpoint.
fn operation_url(endpoint: &Url, path: &str) -> Url {
    let mut url = endpoint.clone();
    let prefix = endpoint.path().trim_end_matches('/');
    url.set_path(&format!("{prefix}{path}"));
    url
}

/// SigV4 headers (`x-amz-date`, `authorization`, and `x-amz-security-token` with
/// temporary credentials) for a JSON POST. Signs `content-type` and `host` (with the
/// port when it is not the scheme's default), as boto3 does; no `x-amz-content-sha256`.
fn sigv4_headers(
    credentials: &Credentials,
    region: &str,
    url: &Url,
    body: &[u8],
    time: SystemTime,
) -> Result<Vec<(HeaderName, HeaderValue)>, Error> {
    let signing_failed = |_| Error::Config("the request could not be signed".into());
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SIGNING_NAME)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|_| Error::Config("invalid SigV4 signing parameters".into()))?
        .into();
    let signable = SignableRequest::new(
        "POST",
        url.as_str(),
        [("content-type", "application/json")].into_iter(),
        SignableBody::Bytes(body),
    )
    .map_err(signing_failed)?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(signing_failed)?
        .into_parts();
    let (headers, _params) = instructions.into_parts();
    headers
        .into_iter()
        .map(|h| {
            let name = HeaderName::from_static(h.name());
            let mut value = HeaderValue::from_str(h.value())
                .map_err(|_| Error::Config("a SigV4 header value is invalid".into()))?;
            value.set_sensitive(h.sensitive() || name == AUTHORIZATION);
            Ok((name, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_keeps_prefix() -> Result<(), url::ParseError> {
        let base = Url::parse("https://h.example/prefix/")?;
        assert_eq!(
            operation_url(&base, "/identities/api-key").as_str(),
            "https://h.example/prefix/identities/api-key"
        );
        let base = Url::parse("http://127.0.0.1:8080")?;
        assert_eq!(
            operation_url(&base, "/identities/oauth2/token").as_str(),
            "http://127.0.0.1:8080/identities/oauth2/token"
        );
        Ok(())
    }

    #[test]
    fn sigv4_signs_host_with_port_and_content_type() -> Result<(), Box<dyn std::error::Error>> {
        let creds = Credentials::new("AKID", "secret-value", Some("tok".into()), None, "t");
        let url = Url::parse("http://127.0.0.1:8080/identities/api-key")?;
        let headers = sigv4_headers(&creds, "us-east-1", &url, b"{}", SystemTime::UNIX_EPOCH)?;
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k.as_str() == n)
                .and_then(|(_, v)| v.to_str().ok())
                .map(str::to_string)
        };
        let auth = get("authorization").ok_or("no authorization")?;
        assert!(auth.starts_with(
            "AWS4-HMAC-SHA256 Credential=AKID/19700101/us-east-1/bedrock-agentcore/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature="
        ), "{auth}");
        assert_eq!(get("x-amz-security-token").as_deref(), Some("tok"));
        assert!(get("x-amz-content-sha256").is_none());
        Ok(())
    }

    #[test]
    fn build_checks_and_debug_redacts() -> Result<(), Box<dyn std::error::Error>> {
        let url = Url::parse("http://127.0.0.1:1")?;
        assert!(matches!(
            Client::builder(url.clone()).build(),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            Client::builder(Url::parse("http://u:p@127.0.0.1:1")?)
                .bearer("k")
                .build(),
            Err(Error::Config(_))
        ));
        let client = Client::builder(url.clone())
            .sigv4(
                "AKID",
                "very-secret",
                Some("session-tok".into()),
                "eu-west-1",
            )
            .build()?;
        let debug = format!("{client:?}");
        assert!(
            debug.contains("AKID")
                && !debug.contains("very-secret")
                && !debug.contains("session-tok"),
            "{debug}"
        );
        let client = Client::builder(url).bearer("AKID:bearer-secret").build()?;
        assert!(!format!("{client:?}").contains("bearer-secret"));
        Ok(())
    }
}
