//! Every other path: route, authenticate, forward to the upstream (WebSockets included).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::uri::PathAndQuery;
use latchkey_telemetry::trace::Attribute;
use serde_json::json;

use super::cookies::{clear_cookie, cookie_values};
use super::login::start_login;
use super::user::{User, current_user};
use super::{Inner, Route, UpstreamBody, Worker};
use crate::config::RouteAuth;
use crate::edge::too_many_requests;
use crate::login::LoginCookies;

pub(super) fn route_for<'a>(routes: &'a [Route], path: &str) -> Option<&'a Route> {
    routes.iter().find(|r| {
        let prefix = r.config.prefix.as_str();
        path == prefix
            || (path.starts_with(prefix)
                && (prefix.ends_with('/') || path.as_bytes().get(prefix.len()) == Some(&b'/')))
    })
}

pub(crate) fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(json!({"error": code, "message": message})),
    )
        .into_response()
}

pub(super) fn wants_html(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::GET
        && headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.to_ascii_lowercase().contains("text/html"))
}

/// A response and what the access log says of it.
pub(crate) struct Proxied {
    pub response: Response,
    /// The signed-in user, when the request had one.
    pub user: Option<Arc<str>>,
    /// The upstream the request went to.
    pub upstream: Option<Arc<str>>,
}

impl From<Response> for Proxied {
    fn from(response: Response) -> Self {
        Self {
            response,
            user: None,
            upstream: None,
        }
    }
}

/// Every path the gateway does not answer itself: route, authenticate, forward.
pub(crate) async fn proxy(
    worker: &Worker,
    parts: Parts,
    body: UpstreamBody,
    peer: SocketAddr,
) -> Proxied {
    let state = &*worker.gateway.inner;
    let Some(route) = route_for(&state.routes, parts.uri.path()) else {
        return json_error(StatusCode::NOT_FOUND, "not_found", "no route for this path").into();
    };
    let user = match route.config.auth {
        RouteAuth::Public => None,
        RouteAuth::Login | RouteAuth::Api => match current_user(state, &parts.headers).await {
            Some(user) => Some(user),
            None => return Box::pin(unauthenticated(state, route, &parts)).await.into(),
        },
    };
    if let (Some(limiter), Some(user)) = (&state.edge.per_user, &user)
        && let Err(wait) = limiter.check(&user.subject)
    {
        return Proxied {
            response: too_many_requests(wait),
            user: Some(user.subject.clone()),
            upstream: None,
        };
    }
    let subject = user.as_ref().map(|u| u.subject.clone());
    Proxied {
        response: forward(worker, route, parts, body, peer, user).await,
        user: subject,
        upstream: Some(route.name.clone()),
    }
}

/// No valid session: browsers go to the login, API clients get 401; a dead session
/// cookie is cleared.
async fn unauthenticated(state: &Inner, route: &Route, parts: &Parts) -> Response {
    let had_cookie = cookie_values(&parts.headers, state.cookie_name)
        .next()
        .is_some();
    let mut response =
        if route.config.auth == RouteAuth::Login && wants_html(&parts.method, &parts.headers) {
            let return_path = parts.uri.path_and_query().map_or("/", PathAndQuery::as_str);
            start_login(state, &parts.headers, return_path).await
        } else {
            json_error(StatusCode::UNAUTHORIZED, "unauthorized", "sign in first")
        };
    if had_cookie {
        response
            .headers_mut()
            .append(header::SET_COOKIE, clear_cookie(state));
    }
    response
}

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_AMZN_OIDC_DATA: HeaderName = HeaderName::from_static("x-amzn-oidc-data");
const X_AMZN_OIDC_IDENTITY: HeaderName = HeaderName::from_static("x-amzn-oidc-identity");
const X_AMZN_OIDC_ACCESSTOKEN: HeaderName = HeaderName::from_static("x-amzn-oidc-accesstoken");

/// The hop-by-hop headers of RFC 9110 §7.6.1 (besides those `Connection` names).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Hop-by-hop headers (RFC 9110 §7.6.1) and those the `Connection` header names.
pub(super) fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none, or only `Connection` (`keep-alive` from an upstream): one
    // pass notes which are present (bit i: `HOP_BY_HOP[i]`), and only those are removed.
    let mut present = 0u16;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    // Bit 0: `Connection`.
    if present & 1 != 0 {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            // Connection options, not header names.
            .filter(|token| {
                !token.eq_ignore_ascii_case("keep-alive") && !token.eq_ignore_ascii_case("close")
            })
            .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// Removes the session cookie `ours` and every login cookie from the `Cookie` headers,
/// keeping the others (in one `Cookie` header).
pub(super) fn strip_own_cookies(headers: &mut HeaderMap, ours: &str, logins: &LoginCookies) {
    let is_ours = |pair: &str| {
        let name = pair.split_once('=').map_or(pair, |(k, _)| k).trim();
        name == ours || logins.is_login_cookie(name)
    };
    let values = headers.get_all(header::COOKIE);
    let mut iter = values.iter();
    // The usual case: one Cookie header holding only the session cookie.
    if let (Some(only), None) = (iter.next(), iter.next())
        && only.to_str().is_ok_and(|v| !v.contains(';') && is_ours(v))
    {
        headers.remove(header::COOKIE);
        return;
    }
    let others: Vec<&str> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && !is_ours(pair))
        .collect();
    let joined = (!others.is_empty())
        .then(|| HeaderValue::from_str(&others.join("; ")).ok())
        .flatten();
    headers.remove(header::COOKIE);
    if let Some(value) = joined {
        headers.insert(header::COOKIE, value);
    }
}

/// An IP address as a header value. The last one is kept per thread: a connection's
/// requests all come from one address, and formatting it was a measurable part of a
/// proxied request.
pub(super) fn ip_header(ip: std::net::IpAddr) -> HeaderValue {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(std::net::IpAddr, HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some((cached, value)) if *cached == ip => value.clone(),
            _ => {
                let value = format_ip_header(ip);
                *last = Some((ip, value.clone()));
                value
            }
        }
    })
}

/// An IP address as a header value, without a heap-allocated intermediate string.
fn format_ip_header(ip: std::net::IpAddr) -> HeaderValue {
    use std::io::Write as _;
    // The longest IPv6 text form is 45 bytes.
    let mut buffer = [0u8; 64];
    let mut cursor = std::io::Cursor::new(&mut buffer[..]);
    let _ = write!(cursor, "{ip}");
    let end = usize::try_from(cursor.position()).unwrap_or(0);
    HeaderValue::from_bytes(&buffer[..end]).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

async fn forward(
    worker: &Worker,
    route: &Route,
    mut parts: Parts,
    body: UpstreamBody,
    peer: SocketAddr,
    user: Option<User>,
) -> Response {
    let state = &*worker.gateway.inner;
    let Some(uri) = route.target(parts.uri.path_and_query()) else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "unusable request target",
        );
    };
    // A WebSocket handshake keeps its `Upgrade` (the one hop-by-hop header that must go on).
    let websocket = websocket_upgrade(&parts.method, &parts.headers);
    let client_upgrade = websocket
        .is_some()
        .then(|| parts.extensions.remove::<hyper::upgrade::OnUpgrade>())
        .flatten();
    let headers = &mut parts.headers;
    remove_hop_by_hop(headers);
    if let Some(upgrade) = websocket {
        keep_upgrade(headers, upgrade);
    }

    // Nothing the client says about the user reaches the upstream.
    let forged: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("x-amzn-oidc-"))
        .cloned()
        .collect();
    for name in forged {
        headers.remove(name);
    }
    // The gateway's own cookies stay here.
    if headers.contains_key(header::COOKIE) {
        strip_own_cookies(headers, state.cookie_name, &state.login_cookies);
    }

    // X-Forwarded-*.
    let client_ip = peer.ip();
    // (An empty Vec does not allocate: the usual request, with none, costs nothing here.)
    let previous: Vec<&str> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let forwarded_for = if previous.is_empty() {
        Some(ip_header(client_ip))
    } else {
        HeaderValue::from_str(&format!("{}, {client_ip}", previous.join(", "))).ok()
    };
    if let Some(value) = forwarded_for {
        headers.insert(X_FORWARDED_FOR, value);
    }
    headers.insert(X_FORWARDED_PROTO, state.forwarded_proto.clone());
    match headers.get(header::HOST).cloned() {
        Some(host) => {
            headers.insert(X_FORWARDED_HOST, host);
        }
        None => {
            headers.insert(header::HOST, route.host.clone());
        }
    }

    if let Some(user) = user {
        let Some(identity) = user.headers else {
            return json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "cannot build the identity headers",
            );
        };
        headers.insert(X_AMZN_OIDC_DATA, identity.data);
        headers.insert(X_AMZN_OIDC_IDENTITY, identity.identity);
        headers.insert(X_AMZN_OIDC_ACCESSTOKEN, identity.access_token);
    }

    parts.uri = uri;
    parts.version = http::Version::HTTP_11;
    // The proxy's client span (tracing on): its `traceparent` replaces the client's.
    let method = &parts.method;
    let traced = latchkey_telemetry::trace::outgoing(&mut parts.headers, || {
        let attributes = vec![
            Attribute::new("http.request.method", method.as_str().to_string()),
            Attribute::new("latchkey.upstream", route.name.to_string()),
        ];
        ("proxy", attributes)
    });
    let upstream_request = http::Request::from_parts(parts, body);
    if let Some(client_upgrade) = client_upgrade {
        return Box::pin(forward_websocket(
            worker,
            route,
            upstream_request,
            client_upgrade,
        ))
        .await;
    }
    let sent = worker
        .upstream
        .send(route.index, &route.authority, upstream_request)
        .await;
    if let Some(span) = traced {
        span.finish(match &sent {
            Ok(response) => Ok(response.status().as_u16()),
            Err(_) => Err("upstream_unavailable"),
        });
    }
    match sent {
        Ok(response) => to_client(response),
        Err(error) if error.is_body_too_large() => json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is too large",
        ),
        Err(error) => {
            tracing::warn!(upstream = %route.name, %error, "upstream request failed");
            latchkey_telemetry::gateway_upstream_error(latchkey_telemetry::UpstreamError::Request);
            json_error(
                StatusCode::BAD_GATEWAY,
                "bad_gateway",
                "the upstream service is unavailable",
            )
        }
    }
}

/// The `Upgrade` value of a WebSocket handshake (RFC 6455 §4.1: `GET`, `Connection`
/// naming `upgrade`, `Upgrade: websocket`); `None` for anything else, whose `Upgrade` is
/// dropped like any hop-by-hop header (no `h2c` or other protocol switch goes through).
fn websocket_upgrade(method: &Method, headers: &HeaderMap) -> Option<HeaderValue> {
    if method != Method::GET {
        return None;
    }
    let upgrade = headers.get(header::UPGRADE)?;
    let is_websocket = upgrade.as_bytes().eq_ignore_ascii_case(b"websocket");
    let connection_says_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    (is_websocket && connection_says_upgrade).then(|| upgrade.clone())
}

/// A WebSocket handshake, on a connection of its own: the upstream's answer goes back to
/// the client, and after a `101` the two connections are joined byte for byte until either
/// side closes. (The session was checked for the handshake; like an ALB, the gateway does
/// not cut an open WebSocket when the session later ends.)
async fn forward_websocket(
    worker: &Worker,
    route: &Route,
    request: http::Request<UpstreamBody>,
    client_upgrade: hyper::upgrade::OnUpgrade,
) -> Response {
    let mut response = match worker.upstream.upgrade(&route.authority, request).await {
        Ok(response) => response,
        Err(error) => {
            tracing::warn!(upstream = %route.name, %error, "upstream WebSocket handshake failed");
            latchkey_telemetry::gateway_upstream_error(
                latchkey_telemetry::UpstreamError::WebSocket,
            );
            return json_error(
                StatusCode::BAD_GATEWAY,
                "bad_gateway",
                "the upstream service is unavailable",
            );
        }
    };
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        // Refused upstream: an ordinary answer (its connection is not reused).
        return to_client(response);
    }
    let upstream_upgrade = hyper::upgrade::on(&mut response);
    let upstream = route.name.clone();
    tokio::spawn(async move {
        let (client, upstream_io) = match tokio::join!(client_upgrade, upstream_upgrade) {
            (Ok(client), Ok(upstream_io)) => (client, upstream_io),
            (client, upstream_io) => {
                tracing::debug!(
                    client = client.is_ok(),
                    upstream = upstream_io.is_ok(),
                    "a WebSocket upgrade did not complete"
                );
                return;
            }
        };
        let mut client = hyper_util::rt::TokioIo::new(client);
        let mut upstream_io = hyper_util::rt::TokioIo::new(upstream_io);
        if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut upstream_io).await {
            tracing::debug!(%upstream, %error, "WebSocket connection ended with an error");
        }
    });
    // Keep the handshake's `Upgrade` and `Connection: upgrade`; drop other hop-by-hop headers.
    let upgrade = response.headers().get(header::UPGRADE).cloned();
    let mut response = to_client(response.map(|_| Body::empty()));
    if let Some(upgrade) = upgrade {
        keep_upgrade(response.headers_mut(), upgrade);
    }
    response
}

/// An upstream response as it goes to the client: without hop-by-hop headers, and without
/// the `Content-Length` of a chunked response (meaningless, RFC 9112 §6.3, and it would
/// frame the body wrongly once `Transfer-Encoding` is gone).
fn to_client<B>(response: http::Response<B>) -> Response
where
    B: hyper::body::Body<Data = hyper::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let (mut parts, body) = response.into_parts();
    if parts.headers.contains_key(header::TRANSFER_ENCODING) {
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    remove_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, Body::new(body))
}

/// Puts back the two hop-by-hop headers a WebSocket handshake needs.
fn keep_upgrade(headers: &mut HeaderMap, upgrade: HeaderValue) {
    headers.insert(header::UPGRADE, upgrade);
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
}
