//! OpenTelemetry traces over OTLP/HTTP (protobuf), off unless `otlp_endpoint` is set.
//!
//! [`init`] builds one tracer provider per service the process runs (`latchkey dev` runs
//! four), each with its own `service.name` resource (`latchkey-identity`, …) and a batch
//! exporter on the tokio runtime. Then:
//! - [`incoming`] starts the server span of a request, continuing the W3C `traceparent`
//!   the request carries (the metrics middleware [`crate::instrument`] and the gateway's
//!   own server call it); the request's future runs inside that span's context;
//! - [`outgoing`] starts a client span for a call made inside that context and writes its
//!   `traceparent` into the call's headers (the gateway's proxy, `latchkey-client`, the
//!   guarded outbound client of `latchkey-authn`).
//!
//! Span names are operation names the code chose (a route template, an AgentCore
//! operation, `proxy`, an HTTP method); attributes are the method, the status, a route
//! or upstream name from the configuration, and the outbound host. Never a raw path, a
//! query, a header value, a user, a session or a token.
//!
//! Without [`init`] every function here returns at its first line (one atomic load):
//! no span, no context, no allocation.

use std::borrow::Cow;
use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use opentelemetry::context::FutureExt as _;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::{
    SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{SdkTracerProvider, Tracer};

use crate::Service;

/// How long [`shutdown`] waits for the last spans to be exported.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);
/// Time limit of one export.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

const SERVICES: [Service; 4] = [
    Service::Identity,
    Service::Binding,
    Service::Agent,
    Service::Gateway,
];

struct Tracing {
    propagator: TraceContextPropagator,
    /// By [`Service::index`]; `None` for a service this process does not run.
    tracers: [Option<Tracer>; 4],
    providers: Vec<SdkTracerProvider>,
}

static TRACING: OnceLock<Tracing> = OnceLock::new();

impl Service {
    fn index(self) -> usize {
        match self {
            Self::Identity => 0,
            Self::Binding => 1,
            Self::Agent => 2,
            Self::Gateway => 3,
        }
    }

    /// The `service.name` of this service's spans.
    pub fn trace_name(self) -> &'static str {
        match self {
            Self::Identity => "latchkey-identity",
            Self::Binding => "latchkey-binding",
            Self::Agent => "latchkey-agent",
            Self::Gateway => "latchkey-gateway",
        }
    }
}

/// Why tracing could not start.
#[derive(Debug)]
pub struct TraceError(String);

impl std::fmt::Display for TraceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TraceError {}

/// The OTLP/HTTP URL spans are posted to: `endpoint` (a collector's base URL, like
/// `http://collector:4318`) with `/v1/traces` appended, unless it already ends with it.
pub fn traces_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_string()
    } else {
        format!("{base}/v1/traces")
    }
}

/// Start exporting the spans of `services` to the OTLP/HTTP `endpoint` (see
/// [`traces_url`]). Call once, inside the tokio runtime (the exporters run on it); a
/// second call changes nothing. Sampling follows the standard `OTEL_TRACES_SAMPLER`
/// variables (default: a sampled parent's decision, else every trace), batching the
/// `OTEL_BSP_*` ones.
pub fn init(endpoint: &str, services: &[Service]) -> Result<(), TraceError> {
    if TRACING.get().is_some() {
        return Ok(());
    }
    let url = traces_url(endpoint);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| TraceError(format!("cannot build the OTLP HTTP client: {e}")))?;
    let mut tracers: [Option<Tracer>; 4] = Default::default();
    let mut providers = Vec::new();
    for service in SERVICES.into_iter().filter(|s| services.contains(s)) {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(http.clone())
            .with_endpoint(url.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| TraceError(format!("cannot build the OTLP exporter for {url}: {e}")))?;
        let processor =
            BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
        let provider = SdkTracerProvider::builder()
            .with_resource(
                Resource::builder_empty()
                    .with_service_name(service.trace_name())
                    .with_attribute(KeyValue::new("service.namespace", "latchkey"))
                    .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                    .build(),
            )
            .with_span_processor(processor)
            .build();
        tracers[service.index()] = Some(provider.tracer("latchkey"));
        providers.push(provider);
    }
    let _ = TRACING.set(Tracing {
        propagator: TraceContextPropagator::new(),
        tracers,
        providers,
    });
    Ok(())
}

/// Whether [`init`] ran (spans are recorded).
#[inline]
pub fn enabled() -> bool {
    TRACING.get().is_some()
}

/// Export what is left and stop the exporters (at the end of the process).
pub async fn shutdown() {
    let Some(tracing) = TRACING.get() else {
        return;
    };
    let providers = tracing.providers.clone();
    // The SDK blocks until its exporter task answers: off the runtime's threads.
    let done = tokio::task::spawn_blocking(move || {
        for provider in providers {
            let _ = provider.shutdown_with_timeout(SHUTDOWN_WAIT);
        }
    });
    let _ = tokio::time::timeout(SHUTDOWN_WAIT, done).await;
}

struct Extract<'a>(&'a HeaderMap);

impl Extractor for Extract<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct Inject<'a>(&'a mut HeaderMap);

impl Injector for Inject<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The server span of one request to `service`, a child of the `traceparent` in
/// `headers` when there is a valid one: its context, to run the request in (see
/// [`within`]) and to [`finish`]. `None` when tracing is off.
pub fn incoming(
    service: Service,
    operation: &str,
    method: &Method,
    headers: &HeaderMap,
) -> Option<Context> {
    let tracing = TRACING.get()?;
    let tracer = tracing.tracers[service.index()].as_ref()?;
    let parent = tracing.propagator.extract(&Extract(headers));
    let span = tracer
        .span_builder(operation.to_string())
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("http.request.method", method.as_str().to_string()),
            KeyValue::new("latchkey.operation", operation.to_string()),
        ])
        .start_with_context(tracer, &parent);
    Some(parent.with_span(span).with_value(service))
}

/// End the server span of `cx` with the response's status (5xx marks it an error).
pub fn finish(cx: &Context, status: StatusCode) {
    let span = cx.span();
    span.set_attribute(KeyValue::new(
        "http.response.status_code",
        i64::from(status.as_u16()),
    ));
    if status.is_server_error() {
        span.set_status(Status::error(""));
    }
    span.end();
}

/// `future`, run inside `cx` (so the calls it makes continue the trace); unchanged when
/// `cx` is `None` (tracing off).
pub fn within<F: Future>(
    cx: Option<Context>,
    future: F,
) -> futures_util::future::Either<opentelemetry::context::WithContext<F>, F> {
    match cx {
        Some(cx) => futures_util::future::Either::Left(future.with_context(cx)),
        None => futures_util::future::Either::Right(future),
    }
}

/// The current context when tracing is on (to carry into a spawned task with
/// [`within`]); `None` when it is off.
pub fn current() -> Option<Context> {
    enabled().then(Context::current)
}

/// A client span, from [`outgoing`]; [`Outgoing::finish`] ends it (dropping it ends it
/// too, without a status).
#[derive(Debug)]
pub struct Outgoing {
    cx: Context,
}

/// Start the client span of a call made inside a traced request and write its
/// `traceparent` into `headers`. `describe` names the call and gives its attributes
/// (never anything a client sent); it runs only when the span is made. `None` (and
/// `headers` unchanged) when tracing is off or the call is not made for a traced request.
pub fn outgoing<N>(
    headers: &mut HeaderMap,
    describe: impl FnOnce() -> (N, Vec<KeyValue>),
) -> Option<Outgoing>
where
    N: Into<Cow<'static, str>>,
{
    let tracing = TRACING.get()?;
    let cx = Context::current();
    let service = *cx.get::<Service>()?;
    let tracer = tracing.tracers[service.index()].as_ref()?;
    let (name, attributes) = describe();
    let span = tracer
        .span_builder(name)
        .with_kind(SpanKind::Client)
        .with_attributes(attributes)
        .start_with_context(tracer, &cx);
    let cx = cx.with_span(span);
    tracing.propagator.inject_context(&cx, &mut Inject(headers));
    Some(Outgoing { cx })
}

impl Outgoing {
    /// End the span: `Ok(status)` the answer's status, `Err(kind)` no answer (a short
    /// fixed description, never an error's text).
    pub fn finish(self, result: Result<u16, &'static str>) {
        let span = self.cx.span();
        match result {
            Ok(status) => {
                span.set_attribute(KeyValue::new(
                    "http.response.status_code",
                    i64::from(status),
                ));
                if status >= 500 {
                    span.set_status(Status::error(""));
                }
            }
            Err(kind) => {
                span.set_attribute(KeyValue::new("error.type", kind));
                span.set_status(Status::error(""));
            }
        }
        span.end();
    }
}

/// `http.request.method`, `server.address` and `server.port` of a call (never its path
/// or query).
pub fn call_attributes(method: &str, host: Option<&str>, port: Option<u16>) -> Vec<KeyValue> {
    let mut attributes = vec![KeyValue::new("http.request.method", method.to_string())];
    if let Some(host) = host {
        attributes.push(KeyValue::new("server.address", host.to_string()));
    }
    if let Some(port) = port {
        attributes.push(KeyValue::new("server.port", i64::from(port)));
    }
    attributes
}

pub use opentelemetry::KeyValue as Attribute;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_url_is_the_base_url_and_v1_traces() {
        assert_eq!(
            traces_url("http://collector:4318"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(
            traces_url("http://c/otlp/v1/traces"),
            "http://c/otlp/v1/traces"
        );
    }

    /// (No test of this binary calls [`init`].)
    #[test]
    fn off_nothing_is_made_and_no_header_is_written() {
        assert!(!enabled());
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            HeaderValue::from_static("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        );
        assert!(incoming(Service::Gateway, "proxy", &Method::GET, &headers).is_none());
        let mut out = HeaderMap::new();
        let called = std::cell::Cell::new(false);
        let span = outgoing(&mut out, || {
            called.set(true);
            ("POST", Vec::new())
        });
        assert!(span.is_none() && out.is_empty() && !called.get());
        assert!(current().is_none());
    }
}
