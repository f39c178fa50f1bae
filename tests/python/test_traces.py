"""OpenTelemetry traces over OTLP/HTTP, received by a real OTLP receiver.

`Receiver` is a small HTTP server on a free loopback port that accepts `POST /v1/traces`
and decodes the body as the real OTLP protobuf (`ExportTraceServiceRequest`, PyPI
`opentelemetry-proto`). One `latchkey dev` (the four services in one process, each with
its own `service.name`) exports to it with `LATCHKEY_OTLP_ENDPOINT`.

A browser signs in and consents once; the sandbox's tokens live 2 s, so the next question,
sent with a `traceparent` of the test's own, makes the identity service refresh the token
at the provider inside that request. That one trace must then hold the gateway's server
span (a child of the test's span: the `traceparent` was honoured), the gateway's proxy
call, the agent's server span and its call to the identity service, the identity
service's server span and its call to the provider, each linked to its parent. No span
name, attribute or resource (the raw protobuf bodies are searched) may hold the user,
a session id, a token or a secret of the run. Without the key nothing is exported, even
with the standard `OTEL_EXPORTER_OTLP_ENDPOINT` set."""

from __future__ import annotations

import json
import secrets
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from dev_harness import Browser, Dev, ask, text_of
from gateway_harness import free_port
from lk_harness import latchkey_bin
from secrets_sweep import SWEEP

SERVER, CLIENT = 2, 3  # opentelemetry.proto.trace.v1.Span.SpanKind


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


class Receiver:
    """An OTLP/HTTP trace receiver on a free loopback port: every span it was sent, decoded."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.bodies: list[bytes] = []
        self.posts = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    receiver.posts += 1
                if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
                    self.send_response(404)
                    self.end_headers()
                    return
                request = trace_service_pb2.ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.add(request, body)
                answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def add(self, request: Any, body: bytes) -> None:
        spans = []
        for rs in request.resource_spans:
            resource = {a.key: _value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    spans.append({
                        "service": resource.get("service.name"),
                        "resource": resource,
                        "name": s.name,
                        "kind": s.kind,
                        "trace_id": s.trace_id.hex(),
                        "span_id": s.span_id.hex(),
                        "parent": s.parent_span_id.hex(),
                        "attributes": {a.key: _value(a.value) for a in s.attributes},
                        "status": s.status.code,
                    })
        with self.lock:
            self.spans.extend(spans)
            self.bodies.append(body)

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [s for s in self.spans if s["trace_id"] == trace_id]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def invoke(browser: Browser, dev: Dev, session: str, message: str, traceparent: str) -> list[tuple[str, Any]]:
    """Ask the agent through the gateway with the test's own `traceparent`."""
    r = browser.s.post(
        dev.url + "/invocations",
        json={"sessionId": session, "message": message},
        headers={"Accept": "text/event-stream", "traceparent": traceparent},
        stream=True,
        timeout=120,
    )
    assert r.status_code == 200, r.text
    events, event = [], None
    for raw in r.iter_lines(decode_unicode=True):
        if raw.startswith("event:"):
            event = raw[6:].strip()
        elif raw.startswith("data:") and event:
            events.append((event, json.loads(raw[5:])))
    return events


def one(spans: list[dict[str, Any]], **want: Any) -> dict[str, Any]:
    found = [s for s in spans if all(s.get(k) == v for k, v in want.items())]
    assert len(found) == 1, f"{len(found)} spans with {want}: {spans}"
    return found[0]


def test_one_trace_crosses_gateway_agent_identity_and_provider(tmp_path: Path) -> None:
    receiver = Receiver()
    env = {"LATCHKEY_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "200"}
    dev = Dev(tmp_path / "data", tmp_path / "dev.log", token_lifetime=2, env=env)
    try:
        sandbox_port = int(dev.urls["sandbox GitHub"].rsplit(":", 1)[1])
        browser = Browser()
        browser.sign_in(dev, "alice")
        first = str(uuid.uuid4())
        events = ask(browser, dev, first, "who am I on GitHub?", consent_as="alice")
        assert any(n == "authorization_required" for n, _ in events), events
        time.sleep(3)  # the sandbox token expires: the next turn refreshes it at the provider

        trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
        session = str(uuid.uuid4())
        events = invoke(browser, dev, session, "who am I on GitHub now?", f"00-{trace_id}-{parent_id}-01")
        assert "alice" in text_of(events), events
        assert "authorization_required" not in [n for n, _ in events], events

        def complete(spans: list[dict[str, Any]]) -> bool:
            return any(s["service"] == "latchkey-identity" and s["kind"] == CLIENT for s in spans) and any(
                s["service"] == "latchkey-gateway" and s["kind"] == SERVER for s in spans
            )

        deadline = time.monotonic() + 20
        while not complete(receiver.trace(trace_id)) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)  # the last batches
        spans = receiver.trace(trace_id)
        services = {s["service"] for s in spans}
        assert {"latchkey-gateway", "latchkey-agent", "latchkey-identity"} <= services, spans

        # The test's traceparent was honoured: the gateway's server span is its child.
        gateway = one(spans, service="latchkey-gateway", kind=SERVER)
        assert gateway["parent"] == parent_id, gateway
        assert gateway["name"] == "proxy" and gateway["attributes"]["http.response.status_code"] == 200, gateway
        # Every other span's parent is a span of this trace.
        by_id = {s["span_id"]: s for s in spans}
        assert len(by_id) == len(spans), "span ids are unique"
        for s in spans:
            if s is not gateway:
                assert s["parent"] in by_id, f"orphan span {s}"

        # The chain, from the provider call up: identity → agent → gateway → the test.
        provider = one(spans, service="latchkey-identity", kind=CLIENT, name="POST")
        assert provider["attributes"]["server.port"] == sandbox_port, provider
        assert provider["attributes"]["server.address"] == "127.0.0.1"
        assert provider["attributes"]["http.response.status_code"] == 200, provider
        identity = by_id[provider["parent"]]
        assert (identity["service"], identity["kind"], identity["name"]) == ("latchkey-identity", SERVER, "GetResourceOauth2Token"), identity
        agent_call = by_id[identity["parent"]]
        assert (agent_call["service"], agent_call["kind"], agent_call["name"]) == ("latchkey-agent", CLIENT, "POST /identities/oauth2/token"), agent_call
        agent = by_id[agent_call["parent"]]
        assert (agent["service"], agent["kind"], agent["name"]) == ("latchkey-agent", SERVER, "/invocations"), agent
        proxy = by_id[agent["parent"]]
        assert (proxy["service"], proxy["kind"], proxy["name"]) == ("latchkey-gateway", CLIENT, "proxy"), proxy
        assert proxy["attributes"]["latchkey.upstream"] == dev.urls["agent"], proxy  # the route's configured name
        assert proxy["parent"] == gateway["span_id"]
        # The agent got its workload access token in the same trace.
        assert any(s["service"] == "latchkey-identity" and s["kind"] == SERVER and s["name"].startswith("GetWorkloadAccessToken") for s in spans), spans

        # A request without a traceparent starts a trace of its own at the gateway.
        with receiver.lock:
            roots = [s for s in receiver.spans if s["service"] == "latchkey-gateway" and s["kind"] == SERVER and s["parent"] == ""]
        assert roots, "the gateway starts a trace for a request that carries none"
        # The consent's code exchange at the provider was traced too (its own trace).
        with receiver.lock:
            exchanges = [s for s in receiver.spans if s["service"] == "latchkey-identity" and s["kind"] == CLIENT and s["trace_id"] != trace_id]
        assert exchanges, "the consent's call to the provider"

        # Nothing a client sent and no secret, in any span, attribute or resource.
        with receiver.lock:
            bodies = b"".join(receiver.bodies)
            every = list(receiver.spans)
        forbidden = {v: k for v, k in SWEEP.secrets.items() if len(v) >= 6}
        forbidden.update({"alice": "user id", first: "session id", session: "session id", "arn:aws": "ARN", "urn:ietf:params:oauth": "session URI"})
        cookies = [c.value for c in browser.s.cookies if len(c.value) >= 8]
        forbidden.update({c: "cookie" for c in cookies})
        assert len(forbidden) > 8, forbidden
        for secret, kind in forbidden.items():
            assert secret.encode() not in bodies, f"an exported span holds a {kind}"
        for s in every:
            texts = [s["name"], *map(str, s["attributes"].values())]
            for text in texts:
                assert "?" not in text and "code=" not in text, s
            assert s["service"] in ("latchkey-identity", "latchkey-binding", "latchkey-agent", "latchkey-gateway"), s
        SWEEP.record("otlp export", bodies.decode("utf-8", "replace"))
        assert {s["service"] for s in every} >= {"latchkey-binding"}, "the binding service's spans"
    finally:
        dev.stop()
        receiver.stop()


def test_no_endpoint_no_export(tmp_path: Path) -> None:
    receiver = Receiver()
    # The standard variable does not turn traces on: only `otlp_endpoint` does.
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.url + "/v1/traces", "OTEL_BSP_SCHEDULE_DELAY": "100"}
    dev = Dev(tmp_path / "data", tmp_path / "dev.log", env=env)
    try:
        browser = Browser()
        browser.sign_in(dev, "bob")
        tp = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
        r = browser.s.get(dev.url + "/", headers={"traceparent": tp}, timeout=30)
        assert r.status_code == 200
        requests.get(dev.urls["identity service"] + "/ping", headers={"traceparent": tp}, timeout=10)
        time.sleep(1.5)
        assert receiver.posts == 0 and receiver.spans == []
        assert "exporting traces" not in (tmp_path / "dev.log").read_text()
    finally:
        dev.stop()
        receiver.stop()


def test_an_unusable_endpoint_is_refused(tmp_path: Path) -> None:
    for value in ("ftp://collector:4318", "http://user:pw@collector:4318", "collector:4318"):
        out = subprocess.run(
            [latchkey_bin(), "dev", "--data-dir", str(tmp_path / "data"), "--listen", "127.0.0.1:0"],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LATCHKEY_OTLP_ENDPOINT": value},
        )
        assert out.returncode != 0, out.stdout
        assert "otlp_endpoint" in out.stderr, out.stderr
        assert "user:pw" not in out.stderr, "the configuration error does not echo credentials"
