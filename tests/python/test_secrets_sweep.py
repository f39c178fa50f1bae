"""The session-wide secrets sweep (secrets_sweep.py, run by conftest at the end of the
session) can fail: a planted secret is found in a log, in a response body and URL-encoded,
is reported by kind and fingerprint only, and is not reported where a response returns it
by design. And the harness really feeds the session's registry."""

from __future__ import annotations

import uuid
from pathlib import Path

import requests

from lk_harness import Latchkey
from secrets_sweep import SWEEP, Sweep, fingerprint


def planted(kind: str = "planted") -> str:
    return f"{kind}-{uuid.uuid4().hex}"


def test_sweep_finds_a_planted_secret_in_a_log(tmp_path: Path) -> None:
    sweep = Sweep()
    secret, other = planted(), planted()
    log = tmp_path / "server.log"
    log.write_text(f"INFO starting\nDEBUG token={secret}\nINFO done\n")
    sweep.watch_log("identity", log)
    sweep.register("credential-secret", secret, other)
    findings = sweep.scan()
    assert [(f.kind, f.fingerprint) for f in findings] == [("credential-secret", fingerprint(secret))]
    message = str(findings[0])
    assert "identity log" in message and str(log) in message
    assert secret not in message, "a finding must never print the secret"


def test_sweep_finds_url_encoded_secrets_and_response_bodies() -> None:
    sweep = Sweep()
    secret = planted() + "/+=="
    sweep.register("api-key", secret)
    sweep.watch_service("identity", "http://127.0.0.1:1")
    body = f'{{"message":"bad value {requests.utils.quote(secret, safe="")}"}}'.encode()
    sweep.observe("POST", "http://127.0.0.1:1/identities/x", 400, {"content-type": "application/json"}, body)
    findings = sweep.scan()
    assert [f.kind for f in findings] == ["api-key"]
    assert "identity response to POST /identities/x (400)" in findings[0].where


def test_sweep_allows_the_response_that_returns_a_secret_and_learns_it() -> None:
    sweep = Sweep()
    sweep.watch_service("identity", "http://127.0.0.1:1")
    key = planted("api-key")
    body = f'{{"apiKey": "{key}"}}'.encode()
    sweep.observe("POST", "http://127.0.0.1:1/identities/apikey", 200, {"content-type": "application/json"}, body)
    assert sweep.secrets.get(key) == "api-key", "a returned secret is registered"
    assert sweep.scan() == [], "the response that returns it may carry it"
    # Anywhere else it is a finding: another response, an error.
    sweep.observe("POST", "http://127.0.0.1:1/identities/other", 400, {"content-type": "application/json"}, body.replace(b"apiKey", b"message"))
    assert [f.where for f in sweep.scan()] == ["identity response to POST /identities/other (400)"]


def test_sweep_honours_a_declared_expectation_only_where_declared() -> None:
    sweep = Sweep()
    sweep.watch_service("gateway", "http://127.0.0.1:4")
    secret = planted()
    sweep.register("credential-secret", secret)
    sweep.expect(secret, "gateway response to GET /app/echo")
    for path in ("/app/echo", "/app/other"):
        sweep.observe("GET", f"http://127.0.0.1:4{path}", 200, {"content-type": "application/json"}, secret.encode())
    assert [f.where for f in sweep.scan()] == ["gateway response to GET /app/other (200)"]


def test_sweep_learns_idp_tokens_codes_and_key_files(tmp_path: Path) -> None:
    sweep = Sweep()
    access, code = planted("at"), planted("code")
    sweep.observe("POST", "http://127.0.0.1:2/token", 200, {"content-type": "application/json"}, f'{{"access_token":"{access}"}}'.encode())
    sweep.observe("GET", "http://127.0.0.1:2/auth", 303, {"location": f"http://127.0.0.1:3/cb?code={code}&state=s"}, b"")
    kek = tmp_path / "kek.json"
    kek.write_text('{"active": "k1", "keys": {"k1": "c2VjcmV0LWtleS1ieXRlcy0wMTIzNDU2Nzg5YWJjZGVm"}}')
    sweep.watch_key_file("key-encryption-key", kek)
    log = tmp_path / "gw.out"
    log.write_text(f"GET /cb?code={code} kek=c2VjcmV0LWtleS1ieXRlcy0wMTIzNDU2Nzg5YWJjZGVm {access}")
    sweep.watch_log("gateway", log)
    assert sorted(f.kind for f in sweep.scan()) == ["authorization-code", "idp-access-token", "key-encryption-key"]


def test_the_harness_feeds_the_session_registry(server: Latchkey) -> None:
    """The fixtures register what they create, so the end-of-session sweep covers every
    module without per-test edits."""
    assert server.admin is not None
    assert SWEEP.secrets.get(server.admin.secret_access_key) == "credential-secret"
    assert server.log_path in SWEEP.logs
    assert SWEEP.service_for(server.url) == "identity"
    before = len(SWEEP.texts)
    r = requests.post(server.url + "/identities/GetWorkloadAccessToken", json={}, timeout=10)
    assert r.status_code >= 400
    assert len(SWEEP.texts) == before + 1, "the response body was recorded"


def test_sweep_forgets_a_service_whose_port_a_test_peer_reuses() -> None:
    """The kernel may hand a stopped binding service's port to the test IdP; the IdP's own
    cookies and its redirect carrying a code are not the binding service's answers."""
    sweep = Sweep()
    sweep.watch_service("binding", "http://127.0.0.1:5")
    sweep.watch_peer("http://127.0.0.1:5")
    code = planted("code")
    headers = {"content-type": "text/html", "location": f"http://127.0.0.1:6/cb?code={code}", "set-cookie": f"_interaction={planted('cookie')}; path=/"}
    sweep.observe("GET", "http://127.0.0.1:5/auth", 303, headers, f"Redirecting to http://127.0.0.1:6/cb?code={code}".encode())
    assert sweep.scan() == [], "a peer's answer is not swept as a Latchkey service's"
    assert sweep.service_for("http://127.0.0.1:5/auth") is None
