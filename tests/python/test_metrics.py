"""Metrics, readiness and JSON logs, checked by a real Prometheus (Debian `prometheus`).

One `latchkey dev` (the four services in one process, one recorder, every series labelled
with its `service`) with the gateway's metrics listener on, and JSON logs. A browser signs
in (a gateway login), asks the agent (a tool call, a vault miss, an authorization session
created and completed), asks again (a vault hit). Prometheus, started here on a free
loopback port with a generated configuration, scrapes the identity, binding and agent
`/metrics` and the gateway's metrics listener every second; its HTTP API must then hold
the series, and no label value may contain the user, a token, a secret or a session id
the run used. `/ready` answers on every service, and every log line is JSON."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from dev_harness import Browser, Dev, ask, text_of
from gateway_harness import free_port
from secrets_sweep import SWEEP

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"

EXPECTED = [
    'latchkey_http_requests_total{service="identity",operation="GetResourceOauth2Token"}',
    'latchkey_http_requests_total{service="identity",operation="CompleteResourceTokenAuth"}',
    'latchkey_http_requests_total{service="binding"}',
    'latchkey_http_requests_total{service="agent",operation="/invocations"}',
    'latchkey_http_requests_total{service="gateway",operation="proxy"}',
    'latchkey_http_request_duration_seconds_bucket{service="identity"}',
    'latchkey_vault_lookups_total{result="hit"}',
    'latchkey_vault_lookups_total{result="miss"}',
    'latchkey_authorization_sessions_total{outcome="created"}',
    'latchkey_authorization_sessions_total{outcome="completed"}',
    'latchkey_gateway_logins_total{outcome="completed"}',
    'latchkey_gateway_sessions',
    'latchkey_agent_turns_total{outcome="end_turn"}',
    'latchkey_agent_tool_calls_total{tool="github_profile",outcome="ok"}',
    'latchkey_model_requests_total{outcome="ok"}',
    'latchkey_model_request_duration_seconds_count',
]


class Prometheus:
    """A Prometheus on a free loopback port scraping `targets` (job -> host:port) every second."""

    def __init__(self, workdir: Path, targets: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "prometheus.yml"
        jobs = "".join(
            f"  - job_name: {job}\n    metrics_path: /metrics\n    static_configs:\n      - targets: ['{target}']\n"
            for job, target in targets.items()
        )
        config.write_text(f"global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n{jobs}")
        self.log = workdir / "prometheus.log"
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "ab"),
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            assert self.proc.poll() is None, self.log.read_text()
            time.sleep(0.2)
        raise AssertionError(f"prometheus did not start: {self.log.read_text()}")

    def query(self, expr: str) -> list[dict[str, Any]]:
        r = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "success", body
        return body["data"]["result"]

    def series(self) -> list[dict[str, str]]:
        r = requests.get(f"{self.url}/api/v1/series", params={"match[]": '{__name__=~"latchkey_.+"}'}, timeout=5)
        assert r.status_code == 200, r.text
        return r.json()["data"]

    def targets_up(self) -> dict[str, str]:
        r = requests.get(f"{self.url}/api/v1/targets", timeout=5)
        return {t["labels"]["job"]: t["health"] for t in r.json()["data"]["activeTargets"]}

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def hostport(url: str) -> str:
    return url.removeprefix("http://").rstrip("/")


@pytest.mark.skipif(not os.path.exists(PROMETHEUS), reason="Debian prometheus is installed by scripts/test")
def test_prometheus_scrapes_every_service_and_no_label_holds_a_secret(tmp_path: Path) -> None:
    metrics_port = free_port()
    config = tmp_path / "latchkey.toml"
    config.write_text(f'[gateway]\nmetrics_listen = "127.0.0.1:{metrics_port}"\n')
    log = tmp_path / "dev.log"
    dev = Dev(tmp_path / "data", log, args=["--config", str(config)], env={"LATCHKEY_LOG_FORMAT": "json"})
    prometheus = None
    try:
        gateway_metrics = f"http://127.0.0.1:{metrics_port}/metrics"
        deadline = time.monotonic() + 20
        while not any(f"metrics on {gateway_metrics}" in line for line in dev.lines):
            assert time.monotonic() < deadline, dev.lines
            time.sleep(0.2)
        identity, binding, agent = dev.urls["identity service"], dev.urls["binding service"], dev.urls["agent"]

        # Readiness beside liveness, on every service; the gateway's under /oauth2/.
        for url in (identity, binding, agent):
            r = requests.get(f"{url}/ready", timeout=10)
            assert r.status_code == 200 and r.json()["status"] == "ready", (url, r.text)
        r = requests.get(f"{dev.url}/oauth2/ready", timeout=10)
        assert r.status_code == 200 and r.json()["status"] == "ready", r.text
        assert requests.get(f"{identity}/ping", timeout=10).status_code == 200

        # Traffic: a login, a consent (vault miss, session created and completed), a vault hit.
        browser = Browser()
        browser.sign_in(dev, "alice")
        session = str(uuid.uuid4())
        events = ask(browser, dev, session, "who am I on GitHub?", consent_as="alice")
        assert any(n == "authorization_required" for n, _ in events), events
        events = ask(browser, dev, str(uuid.uuid4()), "who am I on GitHub?")
        assert "alice" in text_of(events), events
        # A request on a path with an id in it: the label is the route, never the path.
        requests.get(f"{identity}/identities/oauth2/callback/{session}", timeout=10)
        requests.get(f"{identity}/no/such/{session}", timeout=10)

        # The text format, straight from each listener.
        for url in (identity, binding, agent, f"http://127.0.0.1:{metrics_port}"):
            r = requests.get(f"{url}/metrics", timeout=10)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4"), r.text[:300]
            assert "latchkey_http_requests_total" in r.text
        # The gateway's own port proxies /metrics like any other path (to the agent, which
        # answers it only for a signed-in browser): its metrics are on the other listener.

        targets = {
            "identity": hostport(identity),
            "binding": hostport(binding),
            "agent": hostport(agent),
            "gateway": f"127.0.0.1:{metrics_port}",
        }
        (tmp_path / "prom").mkdir()
        prometheus = Prometheus(tmp_path / "prom", targets)
        missing: list[str] = EXPECTED
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            missing = [expr for expr in EXPECTED if not prometheus.query(expr)]
            if not missing and set(prometheus.targets_up().values()) == {"up"}:
                break
            time.sleep(1)
        assert not missing, f"not in Prometheus: {missing}; targets {prometheus.targets_up()}"
        assert set(prometheus.targets_up().values()) == {"up"}, prometheus.targets_up()

        hits = prometheus.query('sum(latchkey_vault_lookups_total{result="hit"})')
        assert float(hits[0]["value"][1]) >= 1
        unmatched = prometheus.query('latchkey_http_requests_total{service="identity",operation="unmatched",status="404"}')
        assert unmatched, "a request no route matched counts as `unmatched`"

        # No label value holds the user, a token, a secret, a session id or a raw path.
        series = prometheus.series()
        assert len(series) > 20, series
        forbidden = {v: k for v, k in SWEEP.secrets.items() if len(v) >= 6}
        forbidden.update({"alice": "user id", session: "session id", "urn:ietf:params:oauth": "session URI", "arn:aws": "ARN"})
        values = {v for s in series for k, v in s.items() if k not in ("instance",)}
        assert len(forbidden) > 8, forbidden
        for value in values:
            for secret, kind in forbidden.items():
                assert secret not in value, f"a label value holds a {kind}: {value!r}"
            assert "?" not in value, value
        operations = {s["operation"] for s in series if "operation" in s}
        for op in operations:
            assert op in ("unmatched", "proxy") or op[0].isupper() or op.startswith("/"), op
            assert session not in op
    finally:
        if prometheus is not None:
            prometheus.stop()
        dev.stop()

    # Every line dev wrote to standard error is a JSON log record (log_format = json).
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    assert len(lines) > 5, lines
    for line in lines:
        record = json.loads(line)
        assert "level" in record and "fields" in record, line
