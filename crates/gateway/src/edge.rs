//! The edge protections around every request, from `latchkey-edge`, and the dispatch
//! between the gateway's own paths and the proxy: baseline request rules first, then the
//! per-IP rate limit and the body limit, a time limit on the response head, security
//! headers on every response (HSTS only with TLS), and one access-log line per request.
//! The per-user rate limit runs in the proxy, once the session is known.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::Limited;
use hyper::body::Incoming;
use latchkey_edge::access_log::AccessLogEntry;
use latchkey_edge::rate::retry_after_header;
use serde_json::json;
use tower::ServiceExt as _;

use crate::app::{Proxied, Worker, is_own_path, json_error, proxy};

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

/// One request, from its head to the response head.
pub async fn handle(
    worker: Arc<Worker>,
    request: hyper::Request<Incoming>,
    peer: SocketAddr,
) -> Response {
    let gateway = worker.gateway();
    let edge = gateway.edge();
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let operation = crate::app::operation_of(parts.uri.path());
    // Kept for the access log only (clones of shared bytes).
    let logged = edge.access_log.is_enabled().then(|| {
        (
            time::OffsetDateTime::now_utc(),
            parts.method.clone(),
            parts.uri.clone(),
        )
    });

    let max_body = gateway.max_body_bytes();
    let declared_length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut traced = None;
    let proxied: Proxied = if let Err(violation) = latchkey_edge::rules::check(&parts) {
        (
            violation.status(),
            axum::Json(json!({"error": "bad_request", "message": violation.reason()})),
        )
            .into_response()
            .into()
    } else if let Some(Err(wait)) = edge
        .per_ip
        .as_ref()
        .map(|limiter| limiter.check(&peer.ip().to_string()))
    {
        too_many_requests(wait).into()
    } else if declared_length.is_some_and(|n| n > max_body as u64) {
        json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is too large",
        )
        .into()
    } else {
        // A body without a declared length is cut off at the limit while it streams.
        let body = http_body_util::Either::Left(Limited::new(body, max_body));
        // The request's server span (tracing on), continuing a `traceparent` it carries.
        traced = latchkey_telemetry::trace::incoming(
            latchkey_telemetry::Service::Gateway,
            operation,
            &parts.method,
            &parts.headers,
        );
        let answer = async {
            if is_own_path(parts.uri.path()) {
                let mut request = hyper::Request::from_parts(parts, Body::new(body));
                request.extensions_mut().insert(ConnectInfo(peer));
                // Boxed: the proxy path's future stays small (see `current_user`).
                match Box::pin(worker.own_routes().clone().oneshot(request)).await {
                    Ok(response) => Proxied::from(response),
                    Err(never) => match never {},
                }
            } else {
                proxy(&worker, parts, body, peer).await
            }
        };
        let answer = latchkey_telemetry::trace::within(traced.clone(), answer);
        match tokio::time::timeout(edge.response_timeout, answer).await {
            Ok(proxied) => proxied,
            Err(_) => (
                StatusCode::GATEWAY_TIMEOUT,
                axum::Json(json!({"error": "timeout", "message": "the request took too long"})),
            )
                .into_response()
                .into(),
        }
    };
    let Proxied {
        mut response,
        user,
        upstream,
    } = proxied;
    if let Some(cx) = &traced {
        latchkey_telemetry::trace::finish(cx, response.status());
    }
    latchkey_telemetry::http_request(
        latchkey_telemetry::Service::Gateway,
        operation.to_string(),
        response.status(),
        started.elapsed(),
    );
    latchkey_edge::headers::apply_security_headers(response.headers_mut(), edge.hsts);
    if let Some((time, method, uri)) = logged {
        let bytes = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        edge.access_log.record(&AccessLogEntry {
            time,
            client: peer.ip(),
            user: user.as_deref(),
            method: method.as_str(),
            path: uri.path(),
            status: response.status().as_u16(),
            bytes,
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            upstream: upstream.as_deref(),
        });
    }
    response
}
