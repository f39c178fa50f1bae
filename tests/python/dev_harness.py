"""`latchkey dev` driven over HTTP as a browser would, for tests/python/test_dev.py and
bench/dev_flow.py: `Dev` runs one `latchkey dev` on free loopback ports; `Browser` is one
person's browser (a cookie jar, redirects followed by hand so every page is seen); `ask`
sends a question and, when the agent asks for consent, follows Authorize through the
sandbox's consent page to the binding page while the stream waits."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urljoin

import requests

from lk_harness import latchkey_bin
from secrets_sweep import SWEEP

READY = re.compile(r"latchkey dev ready in (\d+) ms: open (http://127\.0\.0\.1:\d+)")


class Dev:
    """One `latchkey dev` process on free loopback ports."""

    def __init__(self, data_dir: Path, log: Path, token_lifetime: int = 600, args: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        """`args` and `env` are added to the command line and the (otherwise minimal)
        environment; `self.lines` keeps the output (all of it once stopped)."""
        self.data_dir, self.log = data_dir, log
        lifetime = str(token_lifetime)
        cmd = [latchkey_bin(), "dev", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0", "--sandbox-token-lifetime", lifetime, *(args or [])]
        env = {"PATH": "/usr/bin:/bin", "HOME": str(data_dir.parent), "LATCHKEY_LOG_LEVEL": "info", **(env or {})}
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=open(log, "ab"), stdin=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        self.urls: dict[str, str] = {}
        self.lines: list[str] = []
        lines = self.lines
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
        self.reader = threading.Thread(target=lambda: lines.extend(self.proc.stdout or []), daemon=True)
        self.reader.start()
        SWEEP.watch_log("dev", log)
        for label, url in [("gateway", self.url), ("identity", self.urls["identity service"]), ("binding", self.urls["binding service"]), ("agent", self.urls["agent"])]:
            SWEEP.watch_service(label, url)
        state = json.loads((data_dir / "dev.json").read_text())
        SWEEP.register("gateway-client-secret", state["gateway_client_secret"])
        SWEEP.register("idp-client-secret", state["sandbox_client_secret"])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)
        self.reader.join(5)

    def admin(self, *args: str) -> str:
        """`latchkey admin ARGS` on this data directory: its stdout."""
        cp = subprocess.run(
            [latchkey_bin(), "--data-dir", str(self.data_dir), "admin", *args],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
            env={"PATH": "/usr/bin:/bin", "HOME": str(self.data_dir.parent), "LATCHKEY_LOG_LEVEL": "warn"},
        )
        assert cp.returncode == 0, cp.stderr
        return cp.stdout

    def control(self, operation: str, body: dict[str, Any]) -> requests.Response:
        """An AgentCore control-plane call at the identity service, with an admin credential
        of this data directory (made once)."""
        if not hasattr(self, "bearer"):
            cred = json.loads(self.admin("credentials", "create", "--role", "admin", "--json"))
            SWEEP.register("credential-secret", cred["secretAccessKey"])
            self.bearer = f"{cred['accessKeyId']}:{cred['secretAccessKey']}"
        url = f"{self.urls['identity service']}/identities/{operation}"
        return requests.post(url, json=body, headers={"Authorization": f"Bearer {self.bearer}"}, timeout=30)


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
        assert "Development only." in page.text, page.text[:500]
        # alice and bob have a button; any other name is typed.
        assert user not in ("alice", "bob") or f"Sign in as {user}" in page.text, page.text[:500]
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


def authorization_link(browser: Browser, dev: Dev, message: str) -> dict[str, Any]:
    """Ask in a new conversation and stop at the first `authorization_required` event: its
    data (`authorizationUrl`, …); `{}` when the answer came without one. A tool result
    before it fails: the user would have had a token without consenting."""
    for name, data in browser.invoke(dev, str(uuid.uuid4()), message):
        assert name != "tool_result", f"a token without consent: {data}"
        if name == "authorization_required":
            return data
    return {}
