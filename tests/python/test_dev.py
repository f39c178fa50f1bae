"""`latchkey dev`: the whole secured agent from one command, driven over HTTP as a browser
would: sign in at the gateway through the development OpenID provider, ask the agent a
question, follow the Authorize link through the sandbox's consent page and the session
binding page, and watch the same stream continue with the user's sandbox login. Then: the
vaulted token serves the next question without consent, another user opening the link gets
"wrong account" and nothing is bound, and a restart on the same data directory keeps the
grant. Real processes and real crypto on loopback; nothing is mocked."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, urljoin, urlparse

import pytest
import requests

from lk_harness import latchkey_bin
from secrets_sweep import SWEEP

READY = re.compile(r"latchkey dev ready in (\d+) ms: open (http://127\.0\.0\.1:\d+)")


class Dev:
    """One `latchkey dev` process on free loopback ports."""

    def __init__(self, data_dir: Path, log: Path, token_lifetime: int = 600) -> None:
        self.data_dir, self.log = data_dir, log
        lifetime = str(token_lifetime)
        cmd = [latchkey_bin(), "dev", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0", "--sandbox-token-lifetime", lifetime]
        env = {"PATH": "/usr/bin:/bin", "HOME": str(data_dir.parent), "LATCHKEY_LOG_LEVEL": "info"}
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=open(log, "ab"), stdin=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        self.urls: dict[str, str] = {}
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = READY.search(line)
            if m:
                self.ready_ms, self.url = int(m.group(1)), m.group(2)
            for name in ("identity service", "binding service", "agent", "dev OpenID provider", "sandbox GitHub"):
                m2 = re.match(rf"\s+{name}:\s+(http://127\.0\.0\.1:\d+)", line)
                if m2:
                    self.urls[name] = m2.group(1)
            if line.startswith("Ctrl-C"):
                break
        assert hasattr(self, "url"), f"latchkey dev did not start: {''.join(lines)} {log.read_text()}"
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()
        SWEEP.watch_log("dev", log)
        for label, url in [("gateway", self.url), ("identity", self.urls["identity service"]), ("binding", self.urls["binding service"]), ("agent", self.urls["agent"])]:
            SWEEP.watch_service(label, url)
        state = json.loads((data_dir / "dev.json").read_text())
        SWEEP.register("gateway-client-secret", state["gateway_client_secret"])
        SWEEP.register("idp-client-secret", state["sandbox_client_secret"])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)


class Browser:
    """A person's browser: one cookie jar, following redirects by hand so each page is seen."""

    def __init__(self) -> None:
        self.s = requests.Session()
        self.s.headers["Accept"] = "text/html"

    def go(self, url: str, max_hops: int = 10) -> requests.Response:
        for _ in range(max_hops):
            r = self.s.get(url, allow_redirects=False, timeout=30)
            if r.status_code in (301, 302, 303, 307, 308):
                url = urljoin(url, r.headers["Location"])
                continue
            r.final_url = url  # type: ignore[attr-defined]
            return r
        raise AssertionError(f"too many redirects at {url}")

    def submit(self, page: requests.Response, fields: dict[str, str]) -> requests.Response:
        """Post the page's form (its hidden fields plus `fields`) and follow the redirects."""
        html = page.text
        action = re.search(r'<form method="post" action="([^"]+)"', html)
        assert action, html
        data = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', html))
        data = {k: v.replace("&amp;", "&").replace("&quot;", '"').replace("&#39;", "'") for k, v in data.items()}
        data.update(fields)
        url = urljoin(page.final_url, action.group(1))  # type: ignore[attr-defined]
        r = self.s.post(url, data=data, allow_redirects=False, timeout=30)
        if r.status_code in (302, 303):
            return self.go(urljoin(url, r.headers["Location"]))
        r.final_url = url  # type: ignore[attr-defined]
        return r

    def sign_in(self, dev: Dev, user: str) -> None:
        page = self.go(dev.url + "/")
        assert "Development only." in page.text and f"Sign in as {user}" in page.text, page.text[:500]
        chat = self.submit(page, {"user": user})
        assert chat.status_code == 200 and "Latchkey agent" in chat.text, chat.text[:500]

    def invoke(self, dev: Dev, session_id: str, message: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """The agent's events as they stream."""
        r = self.s.post(
            dev.url + "/invocations",
            json={"sessionId": session_id, "message": message},
            headers={"Accept": "text/event-stream"},
            stream=True,
            timeout=120,
        )
        assert r.status_code == 200, r.text
        event = None
        for raw in r.iter_lines(decode_unicode=True):
            if raw.startswith("event:"):
                event = raw[6:].strip()
            elif raw.startswith("data:") and event:
                yield event, json.loads(raw[5:])


def consent(browser: Browser, authorization_url: str, account: str) -> requests.Response:
    """Open the Authorize link, approve at the sandbox as `account`: the page the browser
    ends on (the binding service's)."""
    page = browser.go(authorization_url)
    assert "Development only." in page.text, page.text[:500]
    assert "Latchkey dev agent (workload dev-agent)" in page.text
    assert "<code>read:user</code>" in page.text
    return browser.submit(page, {"user": account})


def ask(browser: Browser, dev: Dev, session: str, message: str, consent_as: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    for name, data in browser.invoke(dev, session, message):
        events.append((name, data))
        if name == "authorization_required":
            assert consent_as is not None, f"unexpected consent: {data}"
            done = consent(browser, data["authorizationUrl"], consent_as)
            assert done.status_code == 200 and "Authorization complete" in done.text, done.text[:800]
    return events


def text_of(events: list[tuple[str, dict[str, Any]]]) -> str:
    return "".join(d["text"] for n, d in events if n == "text_delta")


def test_dev_walks_the_whole_flow_and_keeps_the_grant_across_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "dev-data"
    dev = Dev(data, tmp_path / "dev.log")
    try:
        assert dev.ready_ms < 5000
        alice = Browser()
        alice.sign_in(dev, "alice")
        session = str(uuid.uuid4())
        events = ask(alice, dev, session, "Who am I on GitHub?", consent_as="alice")
        names = [n for n, _ in events]
        assert names[:2] == ["text_delta", "tool_call"] or "tool_call" in names, events
        assert "authorization_required" in names and "tool_result" in names, events
        result = next(d for n, d in events if n == "tool_result")
        assert result["ok"] and '"login":"alice"' in result["content"], result
        assert "You are alice on GitHub" in text_of(events)
        assert "[offline scripted planner" in text_of(events)
        assert events[-1] == ("done", {"stopReason": "end_turn"})

        # The vaulted token serves the next question: no consent.
        events = ask(alice, dev, session, "who am i on github, again?")
        assert "authorization_required" not in [n for n, _ in events]
        assert "You are alice on GitHub" in text_of(events)

        # Bob, signed in in his own browser, opens a link of a flow alice starts: the
        # binding page refuses him and nothing is stored for anyone.
        bob = Browser()
        bob.sign_in(dev, "bob")
        link: dict[str, Any] = {}
        for name, d in alice.invoke(dev, str(uuid.uuid4()), "list my repositories"):
            if name == "authorization_required":
                link = d
                break
        assert link, "the repositories tool asks for its own scope"
        page = bob.go(link["authorizationUrl"])
        refused = bob.submit(page, {"user": "bob"})
        assert refused.status_code == 403 and "Wrong account" in refused.text, refused.text[:800]
        # Nothing was bound to bob: his own question still needs his own consent.
        for name, d in bob.invoke(dev, str(uuid.uuid4()), "list my repositories"):
            assert name != "tool_result", f"bob got a token without consenting: {d}"
            if name == "authorization_required":
                break
        else:
            raise AssertionError("bob's question did not ask for consent")
    finally:
        dev.stop()

    # Restarted on the same data directory: alice's grant is still there.
    dev = Dev(data, tmp_path / "dev.log")
    try:
        alice = Browser()
        alice.sign_in(dev, "alice")
        events = ask(alice, dev, str(uuid.uuid4()), "Who am I on GitHub?")
        assert "authorization_required" not in [n for n, _ in events], events
        assert "You are alice on GitHub" in text_of(events)
    finally:
        dev.stop()


def test_dev_owner_is_told_the_link_was_cancelled(tmp_path: Path) -> None:
    """Bob opens the authorization link of a question alice asked: he gets "Wrong account",
    and the authorization is cancelled to protect alice. Alice is told so plainly: in her
    conversation (the agent reads the identity service's typed reason while it waits), on
    the binding link and on her authorization link."""
    dev = Dev(tmp_path / "dev-data", tmp_path / "dev.log")
    try:
        alice, bob = Browser(), Browser()
        alice.sign_in(dev, "alice")
        bob.sign_in(dev, "bob")
        events: list[tuple[str, dict[str, Any]]] = []
        link, binding_link = "", ""
        for name, d in alice.invoke(dev, str(uuid.uuid4()), "Who am I on GitHub?"):
            events.append((name, d))
            if name == "authorization_required":
                link = d["authorizationUrl"]
                refused = bob.submit(bob.go(link), {"user": "bob"})
                assert refused.status_code == 403 and "Wrong account" in refused.text, refused.text[:800]
                binding_link = refused.final_url  # type: ignore[attr-defined]
        assert link and binding_link, events
        result = next(d for n, d in events if n == "tool_result")
        assert not result["ok"], result
        assert "cancelled because another account opened the authorization link" in result["content"], result
        assert "nothing was granted" in result["content"], result
        for url in (binding_link, link):
            page = alice.go(url)
            assert page.status_code == 410, (url, page.status_code, page.text[:800])
            assert "Link cancelled" in page.text and "Another account opened this authorization link" in page.text, page.text[:800]
    finally:
        dev.stop()


def test_dev_refreshes_an_expired_sandbox_token_without_asking(tmp_path: Path) -> None:
    # Sandbox access tokens live 2 s; the vault refreshes with the (rotating) refresh token.
    dev = Dev(tmp_path / "dev-data", tmp_path / "dev.log", token_lifetime=2)
    try:
        alice = Browser()
        alice.sign_in(dev, "alice")
        session = str(uuid.uuid4())
        events = ask(alice, dev, session, "Who am I on GitHub?", consent_as="alice")
        assert "You are alice on GitHub" in text_of(events)
        time.sleep(3)
        events = ask(alice, dev, session, "who am I on GitHub now?")
        assert "authorization_required" not in [n for n, _ in events], events
        assert "You are alice on GitHub" in text_of(events), events
        tokens = json.loads((dev.data_dir / "dev-sandbox-tokens.json").read_text())
        assert len([e for e in tokens["refresh"].values() if e["used"]]) >= 1, "the refresh token was not used"
    finally:
        dev.stop()


def test_dev_reset_refuses_a_directory_it_did_not_make(tmp_path: Path) -> None:
    other = tmp_path / "precious"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    out = subprocess.run(
        [latchkey_bin(), "dev", "--data-dir", str(other), "--reset", "--listen", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert out.returncode != 0
    assert "not a latchkey dev data directory" in out.stderr, out.stderr
    assert (other / "notes.txt").read_text() == "keep me"


def test_dev_in_headless_chromium(tmp_path: Path) -> None:
    """The flow a person sees, in a real browser: the README's screenshots come from here
    (LATCHKEY_SCREENSHOTS=docs/images keeps them)."""
    import os
    import shutil

    root = Path(__file__).resolve().parents[2]
    browser_dir = root / "tests" / "browser"
    chromium = os.environ.get("LATCHKEY_TEST_CHROMIUM", "/usr/bin/chromium")
    assert shutil.which(chromium), f"{chromium} is missing: apt-get install -y chromium (scripts/test does)"
    assert (browser_dir / "node_modules" / "playwright-core").is_dir(), "npm ci --prefix tests/browser (scripts/test does)"
    shots = Path(os.environ.get("LATCHKEY_SCREENSHOTS") or (root / ".test-data" / "artifacts" / "dev"))
    if not shots.is_absolute():
        shots = root / shots
    dev = Dev(tmp_path / "dev-data", tmp_path / "dev.log")
    try:
        cp = subprocess.run(
            ["node", str(browser_dir / "dev_chat.mjs"), "--url", dev.url, "--user", "alice", "--dir", str(shots), "--chromium", chromium],
            cwd=browser_dir, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL,
        )
    finally:
        dev.stop()
    lines = [l for l in cp.stdout.splitlines() if l.startswith("{")]
    assert lines, f"no result from the browser (exit {cp.returncode}): {cp.stdout[-2000:]} {cp.stderr[-2000:]}"
    result = json.loads(lines[-1])
    assert cp.returncode == 0 and "error" not in result, result
    assert "You are alice on GitHub" in result["answer"], result
    assert "Latchkey dev agent (workload dev-agent)" in result["consentText"] and "read:user" in result["consentText"]
    assert "Authorization complete" in result["bindingText"]
    for name in ("login", "chat-authorize", "consent", "binding-complete", "chat-answer"):
        png = shots / f"{name}.png"
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
