//! The one guarded outbound HTTP client: OIDC discovery, JWKS fetches and OAuth token calls.
//!
//! Every request Latchkey makes to a URL that came from configuration or from another
//! server goes through [`OutboundClient`], which enforces one [`OutboundPolicy`]:
//!
//! - **Addresses.** Unless `allow_private_addresses` is on, a request may only reach a
//!   public unicast address. Loopback, private (RFC 1918), link-local (169.254/16, where
//!   cloud metadata endpoints live), CGNAT (100.64/10), unspecified, multicast, broadcast,
//!   reserved, benchmarking and documentation ranges are refused, and so are IPv6
//!   loopback, unique-local (fc00::/7), link-local (fe80::/10), site-local, multicast and
//!   documentation ranges, and every IPv6 form that embeds an IPv4 address (IPv4-mapped
//!   `::ffff:a.b.c.d`, IPv4-compatible, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) when the
//!   embedded address is refused. Host names are checked by a DNS resolver installed in
//!   the HTTP client, so the addresses checked are exactly the addresses connected to (no
//!   time-of-check/time-of-use gap for DNS rebinding); literal IP hosts never reach a
//!   resolver, so they are checked before sending. Proxies are disabled (a proxy would
//!   resolve names for us).
//! - **Schemes.** Only `http` and `https`. Plain `http` is refused unless
//!   `allow_private_addresses` is on: with the flag off, loopback is refused anyway, so
//!   plain http could only go to a remote host in clear text. With the flag on (tests and
//!   `latchkey dev`) plain http is allowed to any host. URLs carrying credentials
//!   (`https://user:pass@host/`) are refused.
//! - **Redirects** are never followed; a 3xx is reported as a status.
//! - **Time and size.** A connect timeout and a whole-request timeout (headers and body),
//!   and a cap on the response body counted while reading (a `Content-Length` above the
//!   cap fails early, but a smaller or missing one is not trusted).
//! - **Errors** never carry response bodies or full URLs, which may hold secrets.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde::de::DeserializeOwned;

/// Default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default whole-request timeout (headers and body).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default cap on a response body: 1 MiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// What outbound requests may do. Strict by default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundPolicy {
    /// Allow loopback, private, link-local and other non-public addresses, and plain http
    /// to any host. Off by default; on in tests and `latchkey dev`.
    pub allow_private_addresses: bool,
    /// Time allowed to establish a TCP connection.
    pub connect_timeout: Duration,
    /// Time allowed for the whole request, including reading the body.
    pub request_timeout: Duration,
    /// Largest response body accepted, in bytes.
    pub max_response_bytes: usize,
}

impl Default for OutboundPolicy {
    fn default() -> Self {
        Self {
            allow_private_addresses: false,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

impl OutboundPolicy {
    /// Whether a request to `url` would be allowed, judged now and before anything is
    /// sent: the checks every request gets ([`OutboundClient`]: scheme, credentials, a
    /// literal IP host) and, for a host name, the addresses it resolves to now (the rule
    /// the client's resolver applies when it connects). For refusing configuration early
    /// — a provider's endpoints when it is created, a service's URLs at start — instead of
    /// failing once a user is mid-flow; every request is still checked when it is sent.
    ///
    /// Only a refusal by the policy is an error: a name that does not resolve (or not
    /// within the connect timeout) passes, since that is not the policy's to judge.
    pub async fn check_destination(&self, url: &str) -> Result<(), OutboundError> {
        let url = check_url(url, self.allow_private_addresses)?;
        if self.allow_private_addresses {
            return Ok(());
        }
        let Some(url::Host::Domain(host)) = url.host() else {
            return Ok(());
        };
        let lookup = resolve_checked(host.to_string(), false);
        match tokio::time::timeout(self.connect_timeout, lookup).await {
            Ok(Err(ResolveFailure::Blocked(blocked))) => Err(OutboundError::Blocked {
                host: blocked.host,
                reason: blocked.reason,
            }),
            Ok(Err(ResolveFailure::Lookup(_)) | Ok(_)) | Err(_) => Ok(()),
        }
    }
}

/// Why an outbound request failed. Messages never include response bodies or URLs.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    /// The destination is not allowed by the policy.
    #[error("outbound request to {host} blocked: {reason}")]
    Blocked { host: String, reason: &'static str },
    /// The connect or request timeout elapsed.
    #[error("outbound request timed out")]
    Timeout,
    /// The response body exceeded the configured cap.
    #[error("outbound response larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// The server answered with a non-success status (redirects are not followed).
    #[error("outbound request answered with HTTP status {0}")]
    Status(u16),
    /// The URL cannot be used.
    #[error("invalid outbound URL: {0}")]
    InvalidUrl(&'static str),
    /// Connection or protocol failure (a short description, no body).
    #[error("outbound request failed: {0}")]
    Network(String),
    /// The body is not what was expected (position and category only, no content).
    #[error("outbound response could not be decoded: {0}")]
    Decode(String),
}

/// The guarded HTTP client. Cheap to clone (shares one connection pool).
#[derive(Debug, Clone)]
pub struct OutboundClient {
    http: reqwest::Client,
    policy: Arc<OutboundPolicy>,
}

impl OutboundClient {
    /// Build a client enforcing `policy`.
    pub fn new(policy: OutboundPolicy) -> Result<Self, OutboundError> {
        let resolver: Arc<dyn Resolve> = Arc::new(GuardedResolver {
            allow_private_addresses: policy.allow_private_addresses,
        });
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(policy.connect_timeout)
            .timeout(policy.request_timeout)
            .user_agent(concat!("latchkey/", env!("CARGO_PKG_VERSION")))
            .no_proxy()
            .dns_resolver(resolver)
            .build()
            .map_err(|e| OutboundError::Network(describe_reqwest_error(&e)))?;
        Ok(Self {
            http,
            policy: Arc::new(policy),
        })
    }

    /// The policy this client enforces.
    pub fn policy(&self) -> &OutboundPolicy {
        &self.policy
    }

    /// GET `url` and decode a JSON body. Non-2xx statuses are errors.
    pub async fn get_json<T: DeserializeOwned>(&self, url: &str) -> Result<T, OutboundError> {
        let (_, body) = self.get_bytes_accepting(url, "application/json").await?;
        serde_json::from_slice(&body).map_err(|e| OutboundError::Decode(describe_json_error(&e)))
    }

    /// GET `url` and return the headers and body. Non-2xx statuses are errors.
    pub async fn get_bytes(&self, url: &str) -> Result<(http::HeaderMap, Bytes), OutboundError> {
        self.get_bytes_accepting(url, "*/*").await
    }

    async fn get_bytes_accepting(
        &self,
        url: &str,
        accept: &str,
    ) -> Result<(http::HeaderMap, Bytes), OutboundError> {
        let url = self.check_url(url)?;
        let request = self.http.get(url).header(http::header::ACCEPT, accept);
        let response = send(&self.http, request)
            .await
            .map_err(|e| map_reqwest_error(&e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(OutboundError::Status(status.as_u16()));
        }
        let headers = response.headers().clone();
        let body = self.read_limited(response).await?;
        Ok((headers, body))
    }

    /// POST an `application/x-www-form-urlencoded` body, optionally with HTTP Basic
    /// authentication, and return the status and body whatever the status (OAuth token
    /// endpoints answer errors as 400 with a JSON body). The body is still size-capped.
    ///
    /// `basic_auth` is sent as given: a caller following RFC 6749 §2.3.1 form-encodes the
    /// client id and secret first.
    pub async fn post_form(
        &self,
        url: &str,
        form: &[(&str, &str)],
        basic_auth: Option<(&str, &str)>,
    ) -> Result<(u16, Bytes), OutboundError> {
        let url = self.check_url(url)?;
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut request = self
            .http
            .post(url)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json")
            .body(body);
        if let Some((user, password)) = basic_auth {
            request = request.basic_auth(user, Some(password));
        }
        let response = send(&self.http, request)
            .await
            .map_err(|e| map_reqwest_error(&e))?;
        let status = response.status().as_u16();
        let body = self.read_limited(response).await?;
        Ok((status, body))
    }

    /// Parse and check a URL against the policy before anything is sent.
    fn check_url(&self, raw: &str) -> Result<url::Url, OutboundError> {
        check_url(raw, self.policy.allow_private_addresses)
    }

    /// Read the body chunk by chunk, failing as soon as it exceeds the cap.
    async fn read_limited(&self, mut response: reqwest::Response) -> Result<Bytes, OutboundError> {
        let limit = self.policy.max_response_bytes;
        if response.content_length().is_some_and(|n| n > limit as u64) {
            return Err(OutboundError::TooLarge { limit });
        }
        let mut buffer = BytesMut::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| map_reqwest_error(&e))? {
            if buffer.len().saturating_add(chunk.len()) > limit {
                return Err(OutboundError::TooLarge { limit });
            }
            buffer.extend_from_slice(&chunk);
        }
        Ok(buffer.freeze())
    }
}

fn check_url(raw: &str, allow_private_addresses: bool) -> Result<url::Url, OutboundError> {
    let url = url::Url::parse(raw).map_err(|_| OutboundError::InvalidUrl("not an absolute URL"))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_private_addresses => {}
        "http" => {
            return Err(OutboundError::Blocked {
                host: url.host_str().unwrap_or_default().to_string(),
                reason: "plain http is only allowed when private addresses are allowed (tests and dev)",
            });
        }
        _ => {
            return Err(OutboundError::InvalidUrl(
                "only http and https URLs are allowed",
            ));
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(OutboundError::InvalidUrl(
            "credentials in the URL are not allowed",
        ));
    }
    let ip = match url.host() {
        None => return Err(OutboundError::InvalidUrl("the URL has no host")),
        Some(url::Host::Domain(_)) => None,
        Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
        Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
    };
    // Literal IP hosts are connected to directly, without the resolver: check them here.
    if let Some(ip) = ip
        && !allow_private_addresses
        && let Some(reason) = blocked_reason(ip)
    {
        return Err(OutboundError::Blocked {
            host: ip.to_string(),
            reason,
        });
    }
    Ok(url)
}

/// Send `request` with a client span and its `traceparent` when it is made for a traced
/// request. The span names the method and the host, never the path or the query.
async fn send(
    http: &reqwest::Client,
    request: reqwest::RequestBuilder,
) -> Result<reqwest::Response, reqwest::Error> {
    let mut request = request.build()?;
    let (method, url) = (request.method(), request.url());
    let mut headers = http::HeaderMap::new();
    let traced = latchkey_telemetry::trace::outgoing(&mut headers, || {
        let attributes = latchkey_telemetry::trace::call_attributes(
            method.as_str(),
            url.host_str(),
            url.port_or_known_default(),
        );
        (method.as_str().to_string(), attributes)
    });
    request.headers_mut().extend(headers);
    let sent = http.execute(request).await;
    if let Some(span) = traced {
        span.finish(match &sent {
            Ok(response) => Ok(response.status().as_u16()),
            Err(_) => Err("unreachable"),
        });
    }
    sent
}

/// Why `ip` is not a public unicast address, or `None` when it is.
///
/// IPv6 forms that embed an IPv4 address (mapped, compatible, NAT64, 6to4) are judged by
/// the embedded address.
pub fn blocked_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => blocked_reason_v4(v4),
        IpAddr::V6(v6) => blocked_reason_v6(v6),
    }
}

fn blocked_reason_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    if ip.is_unspecified() || a == 0 {
        Some("unspecified or \"this network\" address")
    } else if ip.is_loopback() {
        Some("loopback address")
    } else if a == 10 || (a == 172 && (16..=31).contains(&b)) || (a == 192 && b == 168) {
        Some("private address")
    } else if a == 169 && b == 254 {
        Some("link-local address (cloud metadata range)")
    } else if a == 100 && (64..=127).contains(&b) {
        Some("carrier-grade NAT address")
    } else if ip.is_broadcast() {
        Some("broadcast address")
    } else if ip.is_multicast() {
        Some("multicast address")
    } else if a >= 240 {
        Some("reserved address")
    } else if (a == 192 && b == 0 && c == 2)
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
    {
        Some("documentation address")
    } else if a == 198 && (b == 18 || b == 19) {
        Some("benchmarking address")
    } else if a == 192 && b == 0 && c == 0 {
        Some("IETF protocol assignment address")
    } else {
        None
    }
}

fn blocked_reason_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let segments = ip.segments();
    let embedded_v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if ip.is_unspecified() {
        return Some("unspecified address");
    }
    if ip.is_loopback() {
        return Some("loopback address");
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return blocked_reason_v4(v4);
    }
    match segments {
        // Deprecated IPv4-compatible ::a.b.c.d (:: and ::1 handled above).
        [0, 0, 0, 0, 0, 0, hi, lo] => {
            return blocked_reason_v4(embedded_v4(hi, lo)).or(Some("IPv4-compatible address"));
        }
        // NAT64 well-known prefix 64:ff9b::/96.
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => return blocked_reason_v4(embedded_v4(hi, lo)),
        // 6to4 2002::/16 embeds an IPv4 address in bits 16..48.
        [0x2002, hi, lo, ..] => return blocked_reason_v4(embedded_v4(hi, lo)),
        _ => {}
    }
    let first = segments[0];
    if first & 0xfe00 == 0xfc00 {
        Some("unique local address")
    } else if first & 0xffc0 == 0xfe80 {
        Some("link-local address")
    } else if first & 0xffc0 == 0xfec0 {
        Some("site-local address")
    } else if first & 0xff00 == 0xff00 {
        Some("multicast address")
    } else if (first == 0x2001 && segments[1] == 0x0db8)
        || (first == 0x3fff && segments[1] & 0xf000 == 0)
    {
        Some("documentation address")
    } else if first == 0x0064 && segments[1] == 0xff9b && segments[2] == 0x0001 {
        Some("local-use NAT64 address")
    } else if first == 0x2001 && segments[1] == 0 {
        Some("Teredo address")
    } else if first == 0x0100 && segments[1..4] == [0, 0, 0] {
        Some("discard-only address")
    } else {
        None
    }
}

/// Refusal raised by [`GuardedResolver`]; found again in the error chain by
/// [`map_reqwest_error`].
#[derive(Debug)]
struct BlockedAddress {
    host: String,
    reason: &'static str,
}

impl fmt::Display for BlockedAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} resolves to a blocked address: {}",
            self.host, self.reason
        )
    }
}

impl std::error::Error for BlockedAddress {}

/// Resolves with tokio's resolver and refuses names with any non-public address.
#[derive(Debug, Clone, Copy)]
struct GuardedResolver {
    allow_private_addresses: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let lookup = resolve_checked(name.as_str().to_string(), self.allow_private_addresses);
        Box::pin(async move {
            match lookup.await {
                Ok(addresses) => Ok(Box::new(addresses.into_iter()) as Addrs),
                Err(ResolveFailure::Blocked(blocked)) => Err(Box::new(blocked) as _),
                Err(ResolveFailure::Lookup(e)) => Err(e),
            }
        })
    }
}

/// Why [`resolve_checked`] gave no addresses.
enum ResolveFailure {
    /// The name resolves to an address the policy refuses.
    Blocked(BlockedAddress),
    /// The name could not be resolved.
    Lookup(Box<dyn std::error::Error + Send + Sync>),
}

/// Resolve `host`; unless `allow_private_addresses`, any non-public address refuses the
/// whole name (a public name has no business resolving to an internal address).
async fn resolve_checked(
    host: String,
    allow_private_addresses: bool,
) -> Result<Vec<SocketAddr>, ResolveFailure> {
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
        .await
        .map_err(|e| ResolveFailure::Lookup(Box::new(e)))?
        .collect();
    if addresses.is_empty() {
        let why = format!("{host} resolved to no addresses");
        return Err(ResolveFailure::Lookup(why.into()));
    }
    if !allow_private_addresses
        && let Some(reason) = addresses.iter().find_map(|a| blocked_reason(a.ip()))
    {
        return Err(ResolveFailure::Blocked(BlockedAddress { host, reason }));
    }
    Ok(addresses)
}

fn map_reqwest_error(error: &reqwest::Error) -> OutboundError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(blocked) = e.downcast_ref::<BlockedAddress>() {
            return OutboundError::Blocked {
                host: blocked.host.clone(),
                reason: blocked.reason,
            };
        }
        source = e.source();
    }
    if error.is_timeout() {
        return OutboundError::Timeout;
    }
    OutboundError::Network(describe_reqwest_error(error))
}

/// A short description of a transport error: the error chain without the URL, truncated.
fn describe_reqwest_error(error: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    // reqwest's own Display names the URL; its sources (hyper, io, rustls) do not.
    let mut source = std::error::Error::source(error);
    let top = if error.is_connect() {
        "connection failed"
    } else if error.is_body() || error.is_decode() {
        "reading the response failed"
    } else if error.is_builder() {
        "building the client failed"
    } else {
        "request failed"
    };
    parts.push(top.to_string());
    while let Some(e) = source {
        parts.push(e.to_string());
        source = e.source();
        if parts.len() >= 4 {
            break;
        }
    }
    truncate(parts.join(": "), 200)
}

fn describe_json_error(error: &serde_json::Error) -> String {
    // serde_json's own message can quote values from the body; keep only where and what.
    let category = match error.classify() {
        serde_json::error::Category::Io => "I/O error",
        serde_json::error::Category::Syntax => "invalid JSON",
        serde_json::error::Category::Data => "JSON of the wrong shape",
        serde_json::error::Category::Eof => "truncated JSON",
    };
    format!(
        "{category} at line {} column {}",
        error.line(),
        error.column()
    )
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
