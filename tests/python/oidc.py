"""Drive the real `oidc-provider` (tests/oidc/server.mjs) from Python.

`OidcProvider` starts the node server on 127.0.0.1 (free port), learns its issuer from
the first stdout line, and obtains real ID tokens headlessly: authorization code flow
with PKCE (S256), the provider's devInteractions login and consent forms, then the
token endpoint. `rotate_keys()` restarts it on the same port with a new key set.

The same server is the third-party OAuth authorization server of Latchkey's 3LO / M2M
tests: `add_client()` registers a client at runtime (Latchkey's callback URL is known
only once its provider exists), `stats()` / `set_quirks()` drive the test controls
(counters, responses without refresh_token / expires_in, delays before the provider sees
a token request), `ResourceApi` is a scope-checking API in front of it
(tests/oidc/resource_api.mjs), and `drive_consent()` is a headless browser that walks
Latchkey's authorization URL through login and consent to the app's return URL.

Nothing here prints a secret: token responses are `Tokens` (a dict whose repr hides the
token values) and URLs in reprs have their `code` (and any token) redacted.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html
import json
import os
import re
import secrets
import shutil
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, parse_qsl, quote, urlencode, urljoin, urlparse, urlunparse

import requests
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from secrets_sweep import SWEEP

REPO_ROOT = Path(__file__).resolve().parents[2]
OIDC_DIR = REPO_ROOT / "tests" / "oidc"

DEFAULT_CLIENT_ID = "latchkey-test"
DEFAULT_CLIENT_SECRET = "oidc-client-secret-" + "x" * 8
DEFAULT_REDIRECT_URI = "http://127.0.0.1/callback"


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _int_b64u(n: int) -> str:
    return _b64u(n.to_bytes((n.bit_length() + 7) // 8 or 1, "big"))


def generate_jwks() -> dict[str, Any]:
    """A fresh private JWK Set: one RS256 RSA key and one ES256 P-256 key, unique kids."""
    stamp = uuid.uuid4().hex[:12]
    rk = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rn = rk.private_numbers()
    rsa_jwk = {
        "kty": "RSA",
        "kid": f"rsa-{stamp}",
        "alg": "RS256",
        "use": "sig",
        "n": _int_b64u(rn.public_numbers.n),
        "e": _int_b64u(rn.public_numbers.e),
        "d": _int_b64u(rn.d),
        "p": _int_b64u(rn.p),
        "q": _int_b64u(rn.q),
        "dp": _int_b64u(rn.dmp1),
        "dq": _int_b64u(rn.dmq1),
        "qi": _int_b64u(rn.iqmp),
    }
    ek = ec.generate_private_key(ec.SECP256R1())
    en = ek.private_numbers()
    ec_jwk = {
        "kty": "EC",
        "kid": f"ec-{stamp}",
        "alg": "ES256",
        "use": "sig",
        "crv": "P-256",
        "x": _b64u(en.public_numbers.x.to_bytes(32, "big")),
        "y": _b64u(en.public_numbers.y.to_bytes(32, "big")),
        "d": _b64u(en.private_value.to_bytes(32, "big")),
    }
    return {"keys": [rsa_jwk, ec_jwk]}


def pkce_pair() -> tuple[str, str]:
    verifier = _b64u(secrets.token_bytes(32))
    challenge = _b64u(hashlib.sha256(verifier.encode("ascii")).digest())
    return verifier, challenge


def node_binary() -> str:
    node = os.environ.get("LATCHKEY_TEST_NODE") or shutil.which("node")
    if not node:
        raise RuntimeError("node is not installed (needed for tests/oidc/server.mjs)")
    return node


def _require_node_modules() -> None:
    if not (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
        raise RuntimeError(
            f"{OIDC_DIR}/node_modules is missing: run `npm ci --prefix tests/oidc` (scripts/test does)"
        )


def _spawn(
    cmd: list[str], log_file: Path, key: str, *, env: dict[str, str] | None = None, what: str
) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """Start a node server whose first stdout line is a JSON object with `key`; everything
    else it prints goes to `log_file`. Returns the process and that first object."""
    log = open(log_file, "ab")
    proc = subprocess.Popen(
        cmd,
        cwd=str(OIDC_DIR),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=log,
        env={**os.environ, **env} if env else None,
    )
    log.close()
    first: dict[str, Any] = {}
    done = threading.Event()

    def read_stdout() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").strip()
            if not done.is_set():
                try:
                    obj = json.loads(line)
                except ValueError:
                    obj = None
                if isinstance(obj, dict) and key in obj:
                    first.update(obj)
                    done.set()
                    continue
            with open(log_file, "a", encoding="utf-8") as f:
                f.write(line + "\n")
        done.set()

    threading.Thread(target=read_stdout, daemon=True).start()
    if not done.wait(30) or key not in first:
        _terminate(proc)
        try:
            tail = log_file.read_text("utf-8", "replace")[-4000:]
        except OSError:
            tail = ""
        raise RuntimeError(f"{what} did not start (exit {proc.poll()}); log:\n{tail}")
    SWEEP.watch_peer(first[key])
    return proc, first


def _terminate(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None:
        return
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    if proc.stdout:
        proc.stdout.close()


# --------------------------------------------------------------------------- secrets
_SECRET_PARAMS = {"code", "access_token", "refresh_token", "id_token", "client_secret", "code_verifier", "token"}
_TOKEN_KEYS = {"access_token", "refresh_token", "id_token"}


def redact_url(url: str | None) -> str | None:
    """`url` with the values of `code`, tokens and secrets in its query replaced by `…`."""
    if not url:
        return url
    u = urlparse(url)
    if not u.query:
        return url
    q = "&".join(
        f"{quote(k)}={'…' if k in _SECRET_PARAMS else quote(v, safe=':/')}"
        for k, v in parse_qsl(u.query, keep_blank_values=True)
    )
    return urlunparse(u._replace(query=q))


class Tokens(dict):  # type: ignore[type-arg]
    """A token endpoint's JSON answer: a plain dict whose repr never shows token values."""

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={'…' if k in _TOKEN_KEYS else v!r}" for k, v in self.items())
        return f"Tokens({shown})"


def fingerprint(secret: str | None) -> str:
    """A short, non-reversible name for a token (safe in assertion messages)."""
    if secret is None:
        return "None"
    return hashlib.sha256(secret.encode()).hexdigest()[:12]


# --------------------------------------------------------------------------- browser
_REDIRECTS = (301, 302, 303, 307, 308)


def origin(url: str) -> str:
    """`scheme://host[:port]` of `url`."""
    u = urlparse(url)
    return f"{u.scheme}://{u.netloc}"


@dataclass
class Hop:
    method: str
    url: str
    status: int

    def __repr__(self) -> str:
        return f"Hop({self.method} {redact_url(self.url)} -> {self.status})"


def _final_url_param(name: str) -> property:
    """A read-only property: the parameter `name` of `final_url`'s query, or None."""
    return property(lambda self: self.params.get(name), doc=f"`{name}` in the query of `final_url`.")


@dataclass
class ConsentResult:
    """What a browser went through: every request (`hops`), where it stopped."""

    hops: list[Hop] = field(default_factory=list)
    #: The redirect target that was not followed: the app's return URL (or, with
    #: stop_at_callback, the client's callback URL with `code` and `state`). None when the
    #: browser ended on a page (`response`).
    final_url: str | None = None
    #: The provider's redirect back to the client (the OAuth callback with code/state or
    #: error), whether or not it was followed.
    callback_url: str | None = None
    #: The last response received.
    response: requests.Response | None = None

    @property
    def params(self) -> dict[str, str]:
        """The query of `final_url` (first value of each parameter)."""
        if not self.final_url:
            return {}
        return {k: v[0] for k, v in parse_qs(urlparse(self.final_url).query).items()}

    session_id = _final_url_param("session_id")
    state = _final_url_param("state")
    error = _final_url_param("error")
    code = _final_url_param("code")

    def __repr__(self) -> str:
        status = self.response.status_code if self.response is not None else None
        return (
            f"ConsentResult(final_url={redact_url(self.final_url)!r}, "
            f"callback_url={redact_url(self.callback_url)!r}, status={status}, hops={self.hops!r})"
        )


_FORM_ACTION = re.compile(r'<form[^>]*\baction="([^"]*)"', re.I)
_ABORT_LINK = re.compile(r'<a[^>]*\bhref="([^"]*/abort)"', re.I)


def _interaction_path(path: str) -> bool:
    return "/interaction/" in path and not path.rstrip("/").endswith("/abort")


def drive_consent(
    authorization_url: str,
    user: str = "alice",
    approve: bool = True,
    session: requests.Session | None = None,
    *,
    provider: "OidcProvider | str | None" = None,
    stop_at_callback: bool = False,
    password: str = "any",
    max_hops: int = 25,
) -> ConsentResult:
    """A headless browser: open `authorization_url` and follow it step by step (no
    automatic redirects) through the provider's login and consent forms.

    `authorization_url` is Latchkey's (`…/identities/oauth2/authorize?request_uri=…`) or the
    provider's own authorization endpoint. `provider` (an OidcProvider or its issuer) names
    the provider's origin; without it, it is the origin of `authorization_url` when that is
    an oidc-provider `/auth` URL, else the origin of the first redirect. The origins the
    browser follows are the provider's and that of `authorization_url` (Latchkey's).

    Login posts `prompt=login, login=<user>, password=<password>`; consent posts
    `prompt=consent`; with `approve=False` the browser takes the interaction's Cancel link
    (`/interaction/<uid>/abort`: the provider redirects with error=access_denied).

    Stops at the first redirect to another origin (the app's return URL: `final_url`, its
    query in `params`), at a page that is not a redirect (`response`), or — with
    `stop_at_callback` — at the provider's redirect to the client's callback, which is then
    not requested (`final_url` = `callback_url`, with code and state). `session` is the
    browser (its cookie jar); give two sessions to play two browsers. A session already
    logged in at the provider is not asked to log in again (`user` is then ignored), and
    consent once given to a client for the same scopes is not asked again.
    """
    s = session if session is not None else requests.Session()
    result = ConsentResult()
    if isinstance(provider, OidcProvider):
        provider_origin: str | None = origin(provider.issuer)
    elif provider:
        provider_origin = origin(provider)
    elif urlparse(authorization_url).path.rstrip("/").endswith("/auth"):
        provider_origin = origin(authorization_url)
    else:
        provider_origin = None
    known = {origin(authorization_url)}

    def step(method: str, url: str, data: dict[str, str] | None = None) -> requests.Response:
        r = s.request(method, url, data=data, allow_redirects=False, timeout=15)
        result.hops.append(Hop(method, url, r.status_code))
        result.response = r
        return r

    r = step("GET", authorization_url)
    method, data = "GET", None
    for _ in range(max_hops):
        if r.status_code not in _REDIRECTS or "Location" not in r.headers:
            return result
        location = urljoin(r.url, r.headers["Location"])
        here, there = origin(r.url), origin(location)
        if provider_origin is None:
            provider_origin = there  # Latchkey's authorize endpoint sends us to the provider
        known.add(provider_origin)
        if here == provider_origin and there != provider_origin:
            # The provider sends the browser back to the client: the OAuth callback.
            result.callback_url = location
            if stop_at_callback or there not in known:
                result.final_url = location
                return result
        elif there not in known:
            result.final_url = location
            return result
        # 307/308 repeat the request as it was; the others turn into a GET.
        if r.status_code not in (307, 308):
            method, data = "GET", None
        path = urlparse(location).path
        if there == provider_origin and _interaction_path(path) and method == "GET":
            page = step("GET", location)
            if page.status_code != 200:
                return result
            if not approve:
                m = _ABORT_LINK.search(page.text)
                abort = urljoin(location, html.unescape(m.group(1))) if m else location.rstrip("/") + "/abort"
                r = step("GET", abort)
                continue
            m = _FORM_ACTION.search(page.text)
            action = urljoin(location, html.unescape(m.group(1))) if m else location
            if 'name="prompt" value="login"' in page.text:
                form = {"prompt": "login", "login": user, "password": password}
            elif 'name="prompt" value="consent"' in page.text:
                form = {"prompt": "consent"}
            else:
                return result  # a page we do not know how to answer
            r = step("POST", action, data=form)
        else:
            r = step(method, location, data=data)
    raise RuntimeError(f"too many redirects: {result.hops!r}")


def browser_step_to_callback(
    authorization_url: str,
    user: str = "alice",
    session: requests.Session | None = None,
    *,
    provider: "OidcProvider | str | None" = None,
    approve: bool = True,
) -> str:
    """Go through login and consent and stop right before the browser would request the
    client's (Latchkey's) callback; return that callback URL (with `code` and `state`, or
    `error`). Attack tests replay or tamper with it, in this or another `session`."""
    result = drive_consent(
        authorization_url, user, approve, session, provider=provider, stop_at_callback=True
    )
    if not result.callback_url:
        raise RuntimeError(f"the provider never redirected to the callback: {result!r}")
    return result.callback_url


@dataclass
class AuthorizationRequest:
    """An authorization request built by `OidcProvider.authorization_request()`."""

    url: str
    client_id: str
    redirect_uri: str
    state: str
    code_verifier: str = field(repr=False)
    scope: str = ""
    resource: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        return (
            f"AuthorizationRequest(client_id={self.client_id!r}, redirect_uri={self.redirect_uri!r}, "
            f"scope={self.scope!r}, resource={self.resource!r})"
        )


# --------------------------------------------------------------------------- provider
class OidcProvider:
    """One oidc-provider process on loopback; restartable on the same port.

    Clients added with `add_client()` are registered again after every (re)start; grants,
    tokens, sessions, counters and quirks are not kept across a restart."""

    def __init__(
        self,
        workdir: Path | str,
        *,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        redirect_uris: list[str] | None = None,
        id_token_alg: str = "RS256",
        id_token_ttl: int = 3600,
        access_token_ttl: int = 3600,
        rotate_refresh_tokens: bool = False,
    ) -> None:
        _require_node_modules()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.client_id = client_id
        self.client_secret = client_secret
        SWEEP.register("idp-client-secret", client_secret)
        self.redirect_uris = list(redirect_uris or [DEFAULT_REDIRECT_URI])
        self.id_token_alg = id_token_alg
        self.id_token_ttl = id_token_ttl
        self.access_token_ttl = access_token_ttl
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.port = 0
        self.issuer = ""
        self.jwks_file = self.workdir / "oidc-jwks.json"
        self.log_file = self.workdir / "oidc-provider.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._generation = 0
        self._metadata: dict[str, Any] | None = None
        #: Clients registered at runtime (client_id → the JSON posted), replayed on start.
        self._clients: dict[str, dict[str, Any]] = {}

    def __repr__(self) -> str:
        return f"OidcProvider({self.issuer or 'not started'}, rotate_refresh_tokens={self.rotate_refresh_tokens})"

    # ----------------------------------------------------------------- process
    def start(self, *, new_keys: bool = True) -> "OidcProvider":
        if self._proc is not None:
            raise RuntimeError("already running")
        if new_keys or not self.jwks_file.exists():
            self.jwks_file.write_text(json.dumps(generate_jwks()))
            os.chmod(self.jwks_file, 0o600)
        self._generation += 1
        with open(self.log_file, "ab") as log:
            log.write(f"--- start #{self._generation} (port {self.port or 'auto'})\n".encode())
        cmd = [
            node_binary(),
            str(OIDC_DIR / "server.mjs"),
            "--port", str(self.port),
            "--jwks", str(self.jwks_file),
            "--client-id", self.client_id,
            "--redirect-uris", ",".join(self.redirect_uris),
            "--id-token-alg", self.id_token_alg,
            "--id-token-ttl", str(self.id_token_ttl),
            "--access-token-ttl", str(self.access_token_ttl),
        ]
        if self.rotate_refresh_tokens:
            cmd.append("--rotate-refresh-tokens")
        # The secret goes by the environment: never on a command line (`ps`).
        proc, first = _spawn(
            cmd, self.log_file, "issuer", env={"OIDC_CLIENT_SECRET": self.client_secret}, what="oidc-provider"
        )
        self._proc = proc
        self.issuer = first["issuer"]
        self.port = int(urlparse(self.issuer).port or 0)
        self._metadata = None
        self._wait_ready()
        for body in self._clients.values():
            self._post("/__test/clients", body)
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 15
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                r = requests.get(self.discovery_url, timeout=2)
                if r.status_code == 200:
                    self._metadata = r.json()
                    return
            except requests.RequestException as e:  # pragma: no cover - timing
                last = e
            time.sleep(0.1)
        raise RuntimeError(f"oidc-provider not answering at {self.discovery_url}: {last}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        _terminate(proc)

    def restart(self, *, new_keys: bool = False, redirect_uris: list[str] | None = None) -> None:
        """Stop and start again on the same port (same issuer)."""
        if redirect_uris is not None:
            self.redirect_uris = list(redirect_uris)
            if self.client_id in self._clients:
                self._clients[self.client_id]["redirect_uris"] = list(redirect_uris)
        port = self.port
        self.stop()
        self.port = port
        deadline = time.monotonic() + 10
        while True:
            try:
                self.start(new_keys=new_keys)
                return
            except RuntimeError:
                # The port may linger briefly; retry the same port.
                if time.monotonic() > deadline:
                    raise
                self.port = port
                time.sleep(0.3)

    def rotate_keys(self) -> None:
        """Restart on the same port with a brand-new key set (old kids disappear)."""
        self.restart(new_keys=True)

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_file.read_text("utf-8", "replace")[-n:]
        except OSError:
            return ""

    def __enter__(self) -> "OidcProvider":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- metadata
    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    @property
    def metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            r = requests.get(self.discovery_url, timeout=5)
            r.raise_for_status()
            self._metadata = r.json()
        return self._metadata

    def jwks(self) -> dict[str, Any]:
        r = requests.get(self.metadata["jwks_uri"], timeout=5)
        r.raise_for_status()
        return r.json()

    def private_jwks(self) -> dict[str, Any]:
        return json.loads(self.jwks_file.read_text())

    # ----------------------------------------------------------------- clients
    def add_client(
        self,
        client_id: str,
        client_secret: str,
        redirect_uris: list[str],
        token_endpoint_auth_method: str = "client_secret_basic",
        *,
        grant_types: list[str] | None = None,
        scope: str | None = None,
        **metadata: Any,
    ) -> dict[str, Any]:
        """Add or replace a client (any further oidc-provider client metadata in `metadata`).

        Defaults: grant_types authorization_code + refresh_token + client_credentials,
        response_types ["code"] when authorization_code is allowed (else none), scope
        "openid email profile offline_access api:read api:write". Returns the stored
        metadata (without the secret). Kept across restarts of this provider."""
        SWEEP.register("idp-client-secret", client_secret)
        body: dict[str, Any] = {
            "client_id": client_id,
            "client_secret": client_secret,
            "redirect_uris": list(redirect_uris),
            "token_endpoint_auth_method": token_endpoint_auth_method,
            **metadata,
        }
        if grant_types is not None:
            body["grant_types"] = list(grant_types)
        if scope is not None:
            body["scope"] = scope
        stored = self._post("/__test/clients", body)
        self._clients[client_id] = body
        if client_id == self.client_id:
            self.client_secret = client_secret
            self.redirect_uris = list(redirect_uris) or self.redirect_uris
        return stored

    def _client_auth(self, client_id: str | None, client_secret: str | None) -> tuple[str, str, str]:
        """(client_id, client_secret, token_endpoint_auth_method) of a known client."""
        cid = client_id or self.client_id
        if cid in self._clients:
            body = self._clients[cid]
            return cid, client_secret or body["client_secret"], body.get("token_endpoint_auth_method", "client_secret_basic")
        if cid == self.client_id:
            return cid, client_secret or self.client_secret, "client_secret_basic"
        if client_secret is None:
            raise KeyError(f"unknown client {cid!r}: pass client_secret")
        return cid, client_secret, "client_secret_basic"

    # ----------------------------------------------------------------- flows
    def authorization_request(
        self,
        *,
        client_id: str | None = None,
        redirect_uri: str | None = None,
        scope: str = "openid",
        resource: str | list[str] | None = None,
        state: str | None = None,
        extra: dict[str, str] | None = None,
    ) -> AuthorizationRequest:
        """An authorization code request with PKCE (S256) at this provider's authorization
        endpoint, for `client_id` (default: the --client-id client). `nonce` is added when
        `scope` has openid (oidc-provider refuses it otherwise)."""
        cid = client_id or self.client_id
        if redirect_uri is None:
            uris = self._clients[cid]["redirect_uris"] if cid in self._clients else self.redirect_uris
            redirect_uri = uris[0]
        verifier, challenge = pkce_pair()
        state = state or secrets.token_urlsafe(16)
        resources = [resource] if isinstance(resource, str) else list(resource or [])
        params: list[tuple[str, str]] = [
            ("client_id", cid),
            ("response_type", "code"),
            ("redirect_uri", redirect_uri),
            ("scope", scope),
            ("state", state),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
        ]
        if "openid" in scope.split():
            params.append(("nonce", secrets.token_urlsafe(16)))
        params += [("resource", r) for r in resources]
        params += list((extra or {}).items())
        return AuthorizationRequest(
            url=f"{self.metadata['authorization_endpoint']}?{urlencode(params)}",
            client_id=cid,
            redirect_uri=redirect_uri,
            state=state,
            code_verifier=verifier,
            scope=scope,
            resource=resources,
        )

    def authorize(
        self,
        user: str,
        *,
        scope: str = "openid email profile",
        redirect_uri: str | None = None,
        extra: dict[str, str] | None = None,
    ) -> tuple[str, str, str]:
        """Log `user` in and consent headlessly. Returns (code, code_verifier, redirect_uri)."""
        req = self.authorization_request(redirect_uri=redirect_uri, scope=scope, extra=extra)
        result = drive_consent(req.url, user, provider=self, stop_at_callback=True)
        location = result.callback_url
        if not location or not location.startswith(req.redirect_uri):
            status = result.response.status_code if result.response is not None else None
            text = result.response.text[:500] if result.response is not None else ""
            raise RuntimeError(f"unexpected {status} at {result.hops[-1] if result.hops else None}: {text}")
        q = parse_qs(urlparse(location).query)
        if "error" in q:
            raise RuntimeError(f"authorization failed: {q}")
        if q.get("state") != [req.state]:
            raise RuntimeError(f"state mismatch in {redact_url(location)}")
        return q["code"][0], req.code_verifier, req.redirect_uri

    def token_request(
        self,
        form: dict[str, str],
        *,
        client_id: str | None = None,
        client_secret: str | None = None,
        auth_method: str | None = None,
    ) -> requests.Response:
        """POST `form` to the token endpoint as a client (default: the --client-id client;
        a client from add_client() authenticates with its registered method)."""
        cid, secret, registered = self._client_auth(client_id, client_secret)
        return self._client_post(self.metadata["token_endpoint"], form, cid, secret, auth_method or registered)

    def _client_post(
        self, url: str, form: dict[str, Any], cid: str, secret: str, method: str
    ) -> requests.Response:
        if method == "client_secret_post":
            return requests.post(url, data={**form, "client_id": cid, "client_secret": secret}, timeout=10)
        if method == "client_secret_basic":
            return requests.post(url, data=form, auth=(cid, secret), timeout=10)
        raise ValueError(f"unsupported token_endpoint_auth_method {method}")

    def _tokens(self, r: requests.Response) -> Tokens:
        if r.status_code != 200:
            raise RuntimeError(f"token endpoint answered {r.status_code}: {r.text}")
        return Tokens(r.json())

    def exchange_code(
        self, req: AuthorizationRequest, callback_url_or_code: str, *, resource: str | None = None
    ) -> Tokens:
        """Redeem the code of `req` (a callback URL or the bare code) with its PKCE verifier."""
        code = callback_url_or_code
        if "code=" in callback_url_or_code:
            code = parse_qs(urlparse(callback_url_or_code).query)["code"][0]
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": req.redirect_uri,
            "code_verifier": req.code_verifier,
        }
        if resource:
            form["resource"] = resource
        return self._tokens(self.token_request(form, client_id=req.client_id))

    def refresh(
        self,
        refresh_token: str,
        *,
        client_id: str | None = None,
        scope: str | None = None,
        resource: str | None = None,
    ) -> requests.Response:
        """A refresh_token grant; the raw response (tests look at errors too)."""
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        if scope:
            form["scope"] = scope
        if resource:
            form["resource"] = resource
        return self.token_request(form, client_id=client_id)

    def client_credentials(
        self, *, client_id: str | None = None, scope: str | None = None, resource: str | None = None
    ) -> requests.Response:
        form = {"grant_type": "client_credentials"}
        if scope:
            form["scope"] = scope
        if resource:
            form["resource"] = resource
        return self.token_request(form, client_id=client_id)

    def revoke(
        self, token: str, token_type_hint: str | None = None, *, client_id: str | None = None
    ) -> requests.Response:
        """RFC 7009 revocation as a client (200 even for unknown tokens, per the RFC)."""
        cid, secret, method = self._client_auth(client_id, None)
        form = {"token": token}
        if token_type_hint:
            form["token_type_hint"] = token_type_hint
        return self._client_post(self.metadata["revocation_endpoint"], form, cid, secret, method)

    def introspect(self, token: str, *, client_id: str | None = None) -> dict[str, Any]:
        """RFC 7662 introspection as a client (opaque tokens only: oidc-provider answers
        400 unsupported_token_type for JWT access tokens)."""
        cid, secret, method = self._client_auth(client_id, None)
        r = self._client_post(self.metadata["introspection_endpoint"], {"token": token}, cid, secret, method)
        if r.status_code != 200:
            raise RuntimeError(f"introspection answered {r.status_code}: {r.text}")
        return r.json()

    def tokens_for(self, user: str, *, scope: str = "openid email profile") -> dict[str, Any]:
        """The full token response of the authorization code flow for `user`."""
        code, verifier, redirect_uri = self.authorize(user, scope=scope)
        r = self.token_request(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "code_verifier": verifier,
            }
        )
        return self._tokens(r)

    def id_token_for(self, user: str, *, scope: str = "openid email profile") -> str:
        """A real ID token for `user` (iss = issuer, aud = client id, sub = user)."""
        return self.tokens_for(user, scope=scope)["id_token"]

    # ----------------------------------------------------------------- test controls
    def _post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        r = requests.post(f"{self.issuer}{path}", json=body or {}, timeout=5)
        if r.status_code != 200:
            raise RuntimeError(f"{path} answered {r.status_code}: {r.text}")
        return r.json()

    def stats(self) -> dict[str, Any]:
        """{"grants": {grant_type: {"success": n, "error": n}}, "revocations": n,
        "revocation": {"success": n, "error": n}, "dropped": {grant_type: n}}."""
        r = requests.get(f"{self.issuer}/__test/stats", timeout=5)
        r.raise_for_status()
        return r.json()

    def grant_count(self, grant_type: str, outcome: str = "success") -> int:
        return int(self.stats()["grants"].get(grant_type, {}).get(outcome, 0))

    def reset_stats(self) -> None:
        self._post("/__test/stats/reset")

    def set_quirks(self, **quirks: Any) -> dict[str, Any]:
        """Change some quirks, return all of them: omit_refresh_token_on_refresh (alias
        omit_refresh_token), omit_expires_in (bool); token_delay_ms, refresh_delay_ms,
        code_expires_in (int ≥ 0). Unknown names raise."""
        return self._post("/__test/quirks", quirks)

    def reset_quirks(self) -> dict[str, Any]:
        return self._post("/__test/quirks/reset")

    @contextlib.contextmanager
    def quirks(self, **quirks: Any) -> Iterator[dict[str, Any]]:
        """`with provider.quirks(omit_expires_in=True): …` — all quirks reset afterwards."""
        current = self.set_quirks(**quirks)
        try:
            yield current
        finally:
            if self._proc is not None:
                self.reset_quirks()


# --------------------------------------------------------------------------- resource API
class ResourceApi:
    """tests/oidc/resource_api.mjs in front of `provider`: `GET /api/read` needs scope
    api:read, `GET /api/write` api:write. Opaque tokens are checked by RFC 7662
    introspection (as its own client, registered at `provider` on start), JWT access tokens
    (RFC 8707 resource) against the provider's JWKS; `audience` restricts the JWT `aud`s
    accepted (default: any). 401 invalid_token / 403 insufficient_scope / 200 {sub, scope,
    client_id, aud, format}."""

    def __init__(
        self,
        provider: OidcProvider,
        *,
        audience: str | list[str] | None = None,
        client_id: str | None = None,
    ) -> None:
        _require_node_modules()
        self.provider = provider
        self.audience = [audience] if isinstance(audience, str) else list(audience or [])
        self.client_id = client_id or f"resource-api-{uuid.uuid4().hex[:8]}"
        self._client_secret = secrets.token_urlsafe(24)
        SWEEP.register("idp-client-secret", self._client_secret)
        self.url = ""
        self.log_file = provider.workdir / f"{self.client_id}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"ResourceApi({self.url or 'not started'}, client_id={self.client_id!r})"

    def start(self) -> "ResourceApi":
        if self._proc is not None:
            raise RuntimeError("already running")
        self.provider.add_client(self.client_id, self._client_secret, [], grant_types=[])
        cmd = [
            node_binary(),
            str(OIDC_DIR / "resource_api.mjs"),
            "--issuer", self.provider.issuer,
            "--client-id", self.client_id,
            "--port", "0",
        ]
        if self.audience:
            cmd += ["--audience", ",".join(self.audience)]
        self._proc, first = _spawn(
            cmd,
            self.log_file,
            "url",
            env={"RESOURCE_API_CLIENT_SECRET": self._client_secret},
            what="resource API",
        )
        self.url = first["url"]
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        _terminate(proc)

    def __enter__(self) -> "ResourceApi":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def get(self, path: str, token: str | None) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return requests.get(self.url + path, headers=headers, timeout=10)


def running_provider(tmp_path_factory: Any, name: str, **kw: Any) -> Iterator[OidcProvider]:
    """Generator body for a fixture: an `OidcProvider` started in a fresh directory,
    stopped at the fixture's teardown (`yield from running_provider(...)`)."""
    with OidcProvider(tmp_path_factory.mktemp(name), **kw) as provider:
        yield provider
