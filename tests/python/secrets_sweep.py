"""The session-wide secrets sweep (issue 12): every secret a test run creates or receives is
searched for in every log, response body and error of that run.

What is registered (by the harness, not by individual tests):
- credential secrets (`admin credentials create`), every value a test passes to
  `Latchkey.remember_secret`, the binding/agent/gateway credentials and client secrets;
- what the AgentCore clients send in secret-bearing members (`apiKey`, `clientSecret`,
  `workloadIdentityToken`, `userToken`) and what Latchkey returns in them
  (`workloadAccessToken`, `accessToken`, `apiKey`, `secretAccessKey`);
- what the test IdP hands the harness: `access_token`, `refresh_token`, `id_token`, and every
  authorization `code` in a redirect; the client secrets the harness registers there;
- cookies Latchkey services set (gateway and binding sessions);
- key-file bytes: the key-encryption key file of every identity data directory, the gateway's
  cookie key and ALB signing key.

Workload access tokens are registered: a WAT is a bearer token (whoever holds one can read
the workload's vault for its user until it expires), so it must never be logged or echoed.

Where it is searched: every log file of a Latchkey process the harness starts (identity
server log and CLI stderr, binding, agent, gateway stdout/stderr) and every HTTP response
body a Latchkey service sends to the harness (`requests` and botocore are hooked). A
response may carry the secrets it returns by design (its own `workloadAccessToken`,
`accessToken`, `apiKey`, `secretAccessKey` members); nothing else. Secrets are also searched
URL-encoded. Findings name the kind, a short SHA-256 fingerprint and the place, never the
secret. A test whose stand-in echoes a secret back on purpose declares it with
`SWEEP.expect(value, place_prefix)`; register more with `SWEEP.register(kind, value)`.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import parse_qs, quote, quote_plus, urlparse

#: Shorter values are not searched (too likely to occur by chance, e.g. "pw").
MIN_LEN = 10
#: A response body is kept up to this many characters, and all of them up to MAX_TOTAL.
MAX_BODY = 256 * 1024
MAX_TOTAL = 256 * 1024 * 1024

#: Members of AgentCore requests that carry a secret, and their kind.
REQUEST_SECRET_MEMBERS = {
    "apiKey": "api-key",
    "clientSecret": "provider-client-secret",
    "workloadIdentityToken": "workload-access-token",
    "userToken": "user-id-token",
}
#: Members of Latchkey responses that return a secret by design (allowed in that body).
RESPONSE_SECRET_MEMBERS = {
    "workloadAccessToken": "workload-access-token",
    "accessToken": "resource-access-token",
    "apiKey": "api-key",
    "secretAccessKey": "credential-secret",
}
#: Token-endpoint members of the test IdP's answers.
IDP_TOKEN_MEMBERS = {"access_token": "idp-access-token", "refresh_token": "idp-refresh-token", "id_token": "idp-id-token"}


def fingerprint(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Finding:
    kind: str
    fingerprint: str
    where: str

    def __str__(self) -> str:
        return f"{self.kind} (sha256 {self.fingerprint}) in {self.where}"


class Sweep:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.secrets: dict[str, str] = {}  # value -> kind (first registration wins)
        self.logs: dict[Path, str] = {}  # path -> what wrote it
        self.key_files: dict[Path, str] = {}  # path -> kind, read at scan time
        self.services: dict[str, str] = {}  # origin -> label
        self.texts: list[tuple[str, str, frozenset[str]]] = []  # (where, text, allowed)
        self.text_chars = 0
        self.dropped = 0
        self.scan_seconds = 0.0
        self.expected: set[tuple[str, str]] = set()  # (value, place prefix)

    # ------------------------------------------------------------------ registry
    def register(self, kind: str, *values: Any) -> None:
        with self._lock:
            for v in values:
                if isinstance(v, str) and len(v) >= MIN_LEN:
                    self.secrets.setdefault(v, kind)

    def expect(self, value: str, place_prefix: str) -> None:
        """Declare that `value` may appear in places whose description starts with
        `place_prefix` (e.g. "gateway response to GET /app/echo"): for a test whose upstream
        echoes a secret back on purpose. Everything else about it is still swept."""
        with self._lock:
            self.expected.add((value, place_prefix))

    def watch_log(self, label: str, *paths: Path | str) -> None:
        with self._lock:
            for p in paths:
                self.logs.setdefault(Path(p), label)

    def watch_key_file(self, kind: str, path: Path | str) -> None:
        with self._lock:
            self.key_files.setdefault(Path(path), kind)

    def watch_service(self, label: str, url: str) -> None:
        u = urlparse(url)
        with self._lock:
            self.services[f"{u.scheme}://{u.netloc}"] = label

    def watch_peer(self, url: str) -> None:
        """`url` now belongs to a test peer (the IdP, a stub): a port the kernel handed to a
        Latchkey service earlier in the run may be reused, and the peer's answers (its own
        cookies, a redirect carrying a code) must not be read as that service's."""
        u = urlparse(url)
        with self._lock:
            self.services.pop(f"{u.scheme}://{u.netloc}", None)

    def service_for(self, url: str) -> str | None:
        u = urlparse(url)
        return self.services.get(f"{u.scheme}://{u.netloc}")

    def record(self, where: str, text: str, allowed: Iterable[str] = ()) -> None:
        text = text[:MAX_BODY]
        with self._lock:
            if self.text_chars + len(text) > MAX_TOTAL:
                self.dropped += 1
                return
            self.text_chars += len(text)
            self.texts.append((where, text, frozenset(allowed)))

    # ------------------------------------------------------------------ observing HTTP
    def observe(self, method: str, url: str, status: int, headers: Any, body: bytes | None) -> None:
        """One HTTP response the harness received (any origin)."""
        location = headers.get("location") if headers is not None else None
        if location and "code=" in location:
            for code in parse_qs(urlparse(location).query).get("code", []):
                self.register("authorization-code", code)
        service = self.service_for(url)
        content_type = (headers.get("content-type") or "") if headers is not None else ""
        parsed: Any = None
        if body and "json" in content_type:
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
        if service is None:
            # The test IdP: its tokens are secrets of this run; nothing else is searched.
            if isinstance(parsed, dict) and 200 <= status < 300:
                for member, kind in IDP_TOKEN_MEMBERS.items():
                    self.register(kind, parsed.get(member))
            return
        if headers is not None:
            for cookie in _set_cookie_values(headers):
                self.register(f"{service}-cookie", cookie)
        allowed: set[str] = set()
        if parsed is not None and 200 <= status < 300:
            for member, value in _members(parsed, RESPONSE_SECRET_MEMBERS):
                self.register(RESPONSE_SECRET_MEMBERS[member], value)
                allowed.add(value)
        if body:
            path = urlparse(url).path
            self.record(f"{service} response to {method} {path} ({status})", body.decode("utf-8", "replace"), allowed)

    def observe_request_params(self, params: Any) -> None:
        for member, value in _members(params, REQUEST_SECRET_MEMBERS):
            self.register(REQUEST_SECRET_MEMBERS[member], value)

    # ------------------------------------------------------------------ scanning
    def _key_file_secrets(self) -> None:
        for path, kind in list(self.key_files.items()):
            try:
                text = path.read_text("utf-8", "replace")
            except OSError:
                continue
            if path.suffix == ".json":
                try:
                    obj = json.loads(text)
                except ValueError:
                    continue
                keys = obj.get("keys") if isinstance(obj, dict) else None
                if isinstance(keys, dict):
                    self.register(kind, *keys.values())
            else:
                # Base64 lines of a key (a PEM body, a bare base64 key).
                for line in text.splitlines():
                    line = line.strip()
                    if line and not line.startswith("-----"):
                        self.register(kind, line)

    def scan(self) -> list[Finding]:
        started = time.monotonic()
        try:
            return self._scan()
        finally:
            self.scan_seconds = time.monotonic() - started

    def _scan(self) -> list[Finding]:
        self._key_file_secrets()
        with self._lock:
            secrets = dict(self.secrets)
            logs = dict(self.logs)
            texts = list(self.texts)
            expected = set(self.expected)
        # Each secret as sent and URL-encoded (query strings, form bodies).
        needles: list[tuple[str, str]] = []  # (form, original)
        for value in secrets:
            for form in {value, quote(value, safe=""), quote_plus(value)}:
                needles.append((form, value))
        found: dict[tuple[str, str], Finding] = {}

        def search(where: str, text: str, allowed: frozenset[str] = frozenset()) -> None:
            for form, value in needles:
                if value in allowed or (value, where) in found:
                    continue
                if form in text and not any(v == value and where.startswith(p) for v, p in expected):
                    found[(value, where)] = Finding(secrets[value], fingerprint(value), where)

        for path, label in sorted(logs.items()):
            try:
                text = path.read_text("utf-8", "replace")
            except OSError:
                continue
            search(f"{label} log {path}", text)
        for where, text, allowed in texts:
            search(where, text, allowed)
        return sorted(found.values(), key=lambda f: (f.where, f.kind, f.fingerprint))

    def summary(self) -> str:
        kinds = Counter(self.secrets.values())
        services = Counter(where.split(" ", 1)[0] for where, _, _ in self.texts)
        return (
            f"{len(self.secrets)} secrets ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))}); "
            f"{len(self.logs)} logs, {len(self.key_files)} key files; "
            f"{len(self.texts)} response bodies ({', '.join(f'{k} {n}' for k, n in sorted(services.items()))}; "
            f"{self.dropped} over the cap); last scan {self.scan_seconds:.1f} s"
        )


def _members(obj: Any, names: dict[str, str]) -> Iterable[tuple[str, str]]:
    """(member, string value) of every member named in `names`, at any depth."""
    stack = [obj]
    while stack:
        cur = stack.pop()
        if isinstance(cur, dict):
            for k, v in cur.items():
                if k in names and isinstance(v, str):
                    yield k, v
                elif isinstance(v, (dict, list)):
                    stack.append(v)
        elif isinstance(cur, list):
            stack.extend(cur)


def _set_cookie_values(headers: Any) -> list[str]:
    raw: list[str] = []
    get_all = getattr(headers, "get_all", None) or getattr(headers, "getlist", None)
    if get_all is not None:
        raw = list(get_all("set-cookie") or [])
    else:
        # requests folds repeated Set-Cookie into one comma-joined value.
        value = headers.get("set-cookie")
        if value:
            raw = [value]
    out = []
    for header in raw:
        for part in header.split(","):
            name_value = part.split(";", 1)[0].strip()
            if "=" in name_value:
                name, value = name_value.split("=", 1)
                if name and value:
                    out.append(value)
    return out


#: The one registry of the pytest session.
SWEEP = Sweep()
_installed = False


def install_http_hooks(sweep: Sweep = SWEEP) -> None:
    """Observe every response `requests` and botocore receive, and every AgentCore request's
    secret-bearing members. Idempotent."""
    global _installed
    if _installed:
        return
    _installed = True

    import botocore.client
    import botocore.httpsession
    import requests

    original_send = requests.Session.send

    def send(self: requests.Session, request: Any, **kwargs: Any) -> Any:
        response = original_send(self, request, **kwargs)
        try:
            body = None if kwargs.get("stream") else response.content
            sweep.observe(request.method or "", request.url or "", response.status_code, response.headers, body)
        except Exception:  # noqa: BLE001 - observing must never break a test
            pass
        return response

    requests.Session.send = send  # type: ignore[method-assign]

    original_urllib3_send = botocore.httpsession.URLLib3Session.send

    def botocore_send(self: Any, request: Any) -> Any:
        response = original_urllib3_send(self, request)
        try:
            if sweep.service_for(request.url) is not None:
                sweep.observe(request.method, request.url, response.status_code, response.headers, response.content)
        except Exception:  # noqa: BLE001
            pass
        return response

    botocore.httpsession.URLLib3Session.send = botocore_send  # type: ignore[method-assign]

    original_call = botocore.client.BaseClient._make_api_call

    def make_api_call(self: Any, operation_name: str, api_params: Any) -> Any:
        try:
            sweep.observe_request_params(api_params)
        except Exception:  # noqa: BLE001
            pass
        return original_call(self, operation_name, api_params)

    botocore.client.BaseClient._make_api_call = make_api_call  # type: ignore[method-assign]
