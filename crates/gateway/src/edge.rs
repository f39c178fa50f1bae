//! The edge protections around every request, from `latchkey-edge`: baseline request
//! rules first, then the per-IP rate limit, a time limit on the response head, security
//! headers on every response (HSTS only with TLS), and one access-log line per request.
//! The per-user rate limit runs in the proxy, once the session is known; the body limit is
//! a `RequestBodyLimitLayer` added by [`crate::app`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use latchkey_edge::access_log::AccessLogEntry;
use latchkey_edge::rate::retry_after_header;
use serde_json::json;

use crate::app::GatewayState;

/// The signed-in user of a response, for the access log (set by the proxy).
#[derive(Debug, Clone)]
pub struct LoggedUser(pub String);

/// The upstream a response came from, for the access log (set by the proxy).
#[derive(Debug, Clone)]
pub struct LoggedUpstream(pub String);

/// The client address of a request (`0.0.0.0` when served without connect info).
pub fn client_ip(request: &Request) -> IpAddr {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip())
}

/// 429 with `Retry-After`.
pub fn too_many_requests(wait: Duration) -> Response {
    let mut response = (
        StatusCode::TOO_MANY_REQUESTS,
        axum::Json(json!({"error": "too_many_requests", "message": "slow down"})),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, retry_after_header(wait));
    response
}

/// The middleware (`axum::middleware::from_fn_with_state`).
pub async fn protect(
    State(gateway): State<GatewayState>,
    request: Request,
    next: Next,
) -> Response {
    let edge = gateway.edge();
    let started = Instant::now();
    let time = time::OffsetDateTime::now_utc();
    let client = client_ip(&request);
    let method = request.method().to_string();
    let path = request.uri().path().to_string();

    let (parts, body) = request.into_parts();
    let mut response = if let Err(violation) = latchkey_edge::rules::check(&parts) {
        (
            violation.status(),
            axum::Json(json!({"error": "bad_request", "message": violation.reason()})),
        )
            .into_response()
    } else if let Some(Err(wait)) = edge
        .per_ip
        .as_ref()
        .map(|limiter| limiter.check(&client.to_string()))
    {
        too_many_requests(wait)
    } else {
        let request = Request::from_parts(parts, body);
        match tokio::time::timeout(edge.response_timeout, next.run(request)).await {
            Ok(response) => response,
            Err(_) => (
                StatusCode::GATEWAY_TIMEOUT,
                axum::Json(json!({"error": "timeout", "message": "the request took too long"})),
            )
                .into_response(),
        }
    };
    latchkey_edge::headers::apply_security_headers(response.headers_mut(), edge.hsts);
    if edge.access_log.is_enabled() {
        let bytes = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        edge.access_log.record(&AccessLogEntry {
            time,
            client,
            user: response
                .extensions()
                .get::<LoggedUser>()
                .map(|u| u.0.clone()),
            method,
            path,
            status: response.status().as_u16(),
            bytes,
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            upstream: response
                .extensions()
                .get::<LoggedUpstream>()
                .map(|u| u.0.clone()),
        });
    }
    response
}
