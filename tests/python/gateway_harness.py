"""Drive `latchkey serve gateway` (the OIDC-authenticating edge, an ALB replacement) for the
Python suite and bench/gateway.py: a free-port picker, the gateway process, an upstream that
echoes what it received (and streams SSE), a headless login through the gateway against
oidc-provider, raw HTTP requests (paths `requests` would normalise), and an ALB-format
`x-amzn-oidc-data` verifier written from AWS's description (ES256, base64url *with* padding,
`kid` / `signer` / `iss` / `client` / `exp` in the header, key PEM fetched by kid)."""

from __future__ import annotations

import base64
import http.client
import http.server
import json
import os
import re
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlparse

import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from lk_harness import latchkey_bin
from oidc import ConsentResult, OidcProvider, drive_consent, origin
from secrets_sweep import SWEEP

GATEWAY_ARN = "arn:aws:elasticloadbalancing:us-east-1:000000000000:loadbalancer/app/latchkey-gateway/0000000000000000"
SESSION_COOKIE = "latchkey-gw"
CALLBACK_PATH = "/oauth2/idpresponse"
LOGOUT_PATH = "/oauth2/logout"
AMZN_HEADERS = ("x-amzn-oidc-data", "x-amzn-oidc-identity", "x-amzn-oidc-accesstoken")
#: What a browser's navigation sends: the gateway starts a login only for requests that
#: accept HTML (others on a `login` route get 401 JSON, like `api` routes).
BROWSER_HEADERS = {
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) latchkey-tests",
}
LISTENING_RE = re.compile(r"latchkey gateway listening on (https?://[0-9.:\[\]]+)")


def free_port() -> int:
    """A port nothing listens on right now (bind to 0, read it, close it): the gateway's
    public URL, and so its redirect URI at the IdP, must be known before it starts."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- upstream
@dataclass
class Seen:
    """One request the upstream received."""

    method: str
    path: str
    headers: dict[str, list[str]]  # lower-case name -> values, in order
    body_length: int = 0  # bytes of request body read (Content-Length or chunked)
    client_port: int = 0  # the gateway's side of the connection it came on

    def one(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


class Upstream:
    """A ThreadingHTTPServer behind the gateway.

    - any path ending in `/events`: 3 SSE events 200 ms apart (chunked, flushed each time);
      `sent_at` keeps the monotonic time each one was written;
    - any path ending in `/page`: an HTML page naming `x-amzn-oidc-identity`;
    - any path ending in `/close-after`: the JSON echo, then the connection is closed
      without `Connection: close`;
    - any path ending in `/drop-if-reused`: on a connection that already carried a
      request, no answer at all: the request is read and the connection closed (an
      upstream whose keep-alive timeout struck just as the request came);
    - anything else: JSON `{"method", "path", "headers"}` of what it received.
    Every request is kept in `seen`."""

    def __init__(self, name: str = "upstream") -> None:
        self.name = name
        self.seen: list[Seen] = []
        self.sent_at: list[float] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _record(self) -> Seen:
                headers: dict[str, list[str]] = {}
                for k, v in self.headers.items():
                    headers.setdefault(k.lower(), []).append(v)
                seen = Seen(self.command, self.path, headers, client_port=self.client_address[1])
                outer.seen.append(seen)
                return seen

            def _answer(self) -> None:
                seen = self._record()
                # One handler instance per connection.
                self.requests_on_connection = getattr(self, "requests_on_connection", 0) + 1
                length = int(self.headers.get("content-length") or 0)
                if length:
                    seen.body_length = len(self.rfile.read(length))
                elif "chunked" in (self.headers.get("transfer-encoding") or "").lower():
                    total = 0
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            self.rfile.readline()
                            break
                        total += len(self.rfile.read(size))
                        self.rfile.readline()
                    seen.body_length = total
                path = self.path.split("?", 1)[0]
                if path.endswith("/drop-if-reused") and self.requests_on_connection > 1:
                    self.close_connection = True
                    return
                if path.endswith("/events"):
                    self.send_response(200)
                    self.send_header("content-type", "text/event-stream")
                    self.send_header("cache-control", "no-cache")
                    self.send_header("transfer-encoding", "chunked")
                    self.end_headers()
                    for i in range(3):
                        if i:
                            time.sleep(0.2)
                        event = f"event: tick\ndata: {i}\n\n".encode()
                        self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
                        self.wfile.flush()
                        outer.sent_at.append(time.monotonic())
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                    return
                if path.endswith("/page"):
                    who = seen.one("x-amzn-oidc-identity") or "nobody"
                    body = (
                        "<!doctype html><html><head><title>Upstream app</title></head><body>"
                        f"<h1>Hello {who} from the {outer.name}</h1><p id=path>{path}</p></body></html>"
                    ).encode()
                    ctype = "text/html; charset=utf-8"
                else:
                    body = json.dumps({"method": seen.method, "path": seen.path, "headers": seen.headers}).encode()
                    ctype = "application/json"
                self.send_response(200)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)
                if path.endswith("/close-after"):
                    # Close the connection without saying so (as an upstream's idle
                    # timeout does between requests).
                    self.close_connection = True

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _answer  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        SWEEP.watch_peer(self.url)

    def last(self) -> Seen:
        assert self.seen, f"the {self.name} received no request"
        return self.seen[-1]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# --------------------------------------------------------------------------- gateway
class Gateway:
    """One `latchkey serve gateway` process with its own OIDC client at `provider`.

    `routes` are `PREFIX=UPSTREAM_URL;MODE` strings. The client (id `client_id`, redirect URI
    `{public_url}/oauth2/idpresponse`) is registered at the provider before the gateway
    starts; its secret goes by the environment. Everything the process writes is kept in
    `out_path` (stdout: the listening line, then the access log) and `err_path` (stderr)."""

    def __init__(
        self,
        workdir: Path,
        provider: OidcProvider,
        routes: list[str],
        *,
        client_id: str,
        client_secret: str | None = None,
        extra_args: list[str] | None = None,
        bin_path: str | None = None,
        scopes: str = "openid email profile",
        extra_env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.provider = provider
        self.routes = list(routes)
        self.client_id = client_id
        self.client_secret = client_secret or ("gw-secret-" + os.urandom(12).hex())
        self.extra_args = list(extra_args or [])
        self.bin = bin_path or latchkey_bin()
        self.scopes = scopes
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.redirect_uri = self.url + CALLBACK_PATH
        self.out_path = self.workdir / "gateway.out"
        self.err_path = self.workdir / "gateway.err"
        self.data_dir = self.workdir / "gateway-data"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LATCHKEY_")}
        self.env["LATCHKEY_GATEWAY_OIDC_CLIENT_SECRET"] = self.client_secret
        self.env.setdefault("NO_COLOR", "1")
        self.env.update(extra_env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.listening_line = ""
        SWEEP.register("gateway-client-secret", self.client_secret)
        SWEEP.watch_log("gateway", self.out_path, self.err_path)
        SWEEP.watch_service("gateway", self.url)
        SWEEP.watch_key_file("gateway-cookie-key", self.data_dir / "gateway-cookie.key")
        SWEEP.watch_key_file("gateway-alb-signing-key", self.data_dir / "gateway-alb-key.pem")

    def command(self) -> list[str]:
        cmd = [
            self.bin, "serve", "gateway",
            "--listen", f"127.0.0.1:{self.port}",
            "--public-url", self.url,
            "--oidc-issuer", self.provider.issuer,
            "--oidc-client-id", self.client_id,
            "--oidc-scopes", self.scopes,
            "--outbound-allow-private-addresses", "true",
            "--data-dir", str(self.data_dir),
        ]
        for route in self.routes:
            cmd += ["--route", route]
        return cmd + self.extra_args

    def start(self, timeout: float = 30) -> "Gateway":
        self.provider.add_client(self.client_id, self.client_secret, [self.redirect_uri])
        cmd = self.command()
        out_start = self.out_path.stat().st_size if self.out_path.exists() else 0
        out = open(self.out_path, "ab")
        err = open(self.err_path, "ab")
        err.write(f"--- $ {' '.join(cmd)}\n".encode())
        err.flush()
        self.proc = subprocess.Popen(cmd, env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        out.close()
        err.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # Output accumulates across restarts: only what this process printed counts.
            text = self.out_path.read_bytes()[out_start:].decode("utf-8", "replace")
            m = LISTENING_RE.search(text)
            if m:
                self.listening_line = m.group(0)
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        code = self.proc.poll()
        self.stop()
        raise RuntimeError(f"the gateway did not start (exit {code}):\n{self.output()[-4000:]}")

    def output(self) -> str:
        """stdout then stderr, as written so far."""
        parts = []
        for p in (self.out_path, self.err_path):
            try:
                parts.append(p.read_text("utf-8", "replace"))
            except OSError:
                pass
        return "\n".join(parts)

    def access_log(self) -> list[dict[str, Any]]:
        """The JSON objects the gateway printed (stdout and stderr)."""
        found = []
        for line in self.output().splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                if isinstance(obj, dict):
                    found.append(obj)
        return found

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def __enter__(self) -> "Gateway":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def alb_key_pem(self, kid: str) -> bytes:
        r = requests.get(f"{self.url}/.well-known/alb-keys/{kid}", timeout=10)
        assert r.status_code == 200, f"key endpoint answered {r.status_code} for kid {kid!r}: {r.text[:200]}"
        return r.content


# --------------------------------------------------------------------------- browsing
def browser() -> requests.Session:
    """A cookie jar that sends what a browser's navigation sends."""
    s = requests.Session()
    s.headers.update(BROWSER_HEADERS)
    return s


@dataclass
class Login:
    """A browser session logged in through the gateway."""

    session: requests.Session
    result: ConsentResult
    authorization_url: str = ""  # the IdP URL the gateway sent the browser to (with state)
    callback_url: str = ""  # the IdP's redirect back to the gateway (with code and state)
    final: requests.Response | None = None
    hops: list[str] = field(default_factory=list)

    @property
    def cookie(self) -> str | None:
        return self.session.cookies.get(SESSION_COOKIE)


def login(gateway: Gateway, user: str, path: str = "/app/", session: requests.Session | None = None) -> Login:
    """Open `path` on the gateway, follow it to the IdP, log in and consent there, follow
    the IdP back through `/oauth2/idpresponse` and on to wherever the gateway sends the
    browser (same origin). `final` is the last response (the upstream's, normally)."""
    s = session or browser()
    result = drive_consent(gateway.url + path, user, session=s, provider=gateway.provider)
    lg = Login(s, result, final=result.response, hops=[h.url for h in result.hops])
    for hop in result.hops:
        if hop.url.startswith(gateway.provider.issuer) and urlparse(hop.url).path.endswith("/auth") and "state=" in hop.url:
            lg.authorization_url = lg.authorization_url or hop.url
        if hop.url.startswith(gateway.url + CALLBACK_PATH):
            lg.callback_url = hop.url
    return lg


def to_callback(gateway: Gateway, user: str, path: str = "/app/", session: requests.Session | None = None) -> tuple[requests.Session, str]:
    """Go through the IdP and stop right before the browser requests the gateway's
    callback; return (browser, callback URL with code and state)."""
    s = session or browser()
    result = drive_consent(gateway.url + path, user, session=s, provider=gateway.provider, stop_at_callback=True)
    assert result.callback_url and result.callback_url.startswith(gateway.url + CALLBACK_PATH), result
    return s, result.callback_url


def follow(s: requests.Session, url: str, *, allowed_origins: set[str], max_hops: int = 10) -> tuple[requests.Response, list[str]]:
    """GET `url` and follow redirects by hand while they stay on `allowed_origins`; returns
    the last response and every URL requested (the first one off those origins, if any, is
    not requested but is the last element)."""
    urls = [url]
    r = s.get(url, allow_redirects=False, timeout=15)
    for _ in range(max_hops):
        if r.status_code not in (301, 302, 303, 307, 308) or "Location" not in r.headers:
            return r, urls
        nxt = urljoin(r.url, r.headers["Location"])
        urls.append(nxt)
        if origin(nxt) not in allowed_origins:
            return r, urls
        r = s.get(nxt, allow_redirects=False, timeout=15)
    raise AssertionError(f"too many redirects: {urls}")


@dataclass
class RawResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def set_cookies(self) -> list[str]:
        return [v for k, v in self.headers if k.lower() == "set-cookie"]


def raw_request(url: str, target: str, headers: dict[str, str] | None = None, method: str = "GET") -> RawResponse:
    """Send `target` as the request target exactly as given, with BROWSER_HEADERS (http.client does not
    normalise `//evil`, `/\\evil`, `%2e%2e` or an absolute-form URL)."""
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=15)
    try:
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", u.netloc)
        for k, v in {**BROWSER_HEADERS, **(headers or {})}.items():
            conn.putheader(k, v)
        conn.endheaders()
        r = conn.getresponse()
        return RawResponse(r.status, r.getheaders(), r.read())
    finally:
        conn.close()


def copy_set_cookies(s: requests.Session, raw: RawResponse, host: str = "127.0.0.1") -> None:
    """Put the cookies of a raw response into a requests jar (name=value only)."""
    for sc in raw.set_cookies():
        pair = sc.split(";", 1)[0]
        if "=" in pair:
            name, value = pair.split("=", 1)
            s.cookies.set(name.strip(), value.strip(), domain=host, path="/")


# --------------------------------------------------------------------------- ALB tokens
def b64url_padded_decode(part: str) -> bytes:
    assert len(part) % 4 == 0, f"segment not padded to a multiple of 4 ({len(part)} chars)"
    assert re.fullmatch(r"[A-Za-z0-9_-]*={0,2}", part), "segment is not base64url"
    return base64.urlsafe_b64decode(part)


@dataclass
class AlbClaims:
    header: dict[str, Any]
    payload: dict[str, Any]


def verify_alb_token(token: str, pem_for_kid: Any, *, signer: str, issuer: str | None = None, client: str | None = None) -> AlbClaims:
    """Verify an ALB-format `x-amzn-oidc-data` as AWS documents it: three base64url
    segments *with* padding, ES256 over `header.payload` (signature r||s, 64 bytes), the key
    PEM fetched by `kid` (`pem_for_kid(kid) -> bytes`), `signer` the load balancer's ARN.
    Raises AssertionError / InvalidSignature."""
    parts = token.split(".")
    assert len(parts) == 3, f"{len(parts)} segments"
    header = json.loads(b64url_padded_decode(parts[0]))
    payload = json.loads(b64url_padded_decode(parts[1]))
    sig = b64url_padded_decode(parts[2])
    assert header.get("alg") == "ES256", header
    assert isinstance(header.get("kid"), str) and header["kid"], header
    assert header.get("signer") == signer, header
    if issuer is not None:
        assert header.get("iss") == issuer, header
    if client is not None:
        assert header.get("client") == client, header
    assert isinstance(header.get("exp"), int) and header["exp"] > time.time(), header
    assert len(sig) == 64, f"signature is {len(sig)} bytes, not r||s (64)"
    key = serialization.load_pem_public_key(pem_for_kid(header["kid"]))
    assert isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1), key
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    key.verify(der, f"{parts[0]}.{parts[1]}".encode(), ec.ECDSA(hashes.SHA256()))
    return AlbClaims(header, payload)


__all__ = [
    "AMZN_HEADERS",
    "BROWSER_HEADERS",
    "browser",
    "CALLBACK_PATH",
    "GATEWAY_ARN",
    "Gateway",
    "InvalidSignature",
    "LOGOUT_PATH",
    "Login",
    "SESSION_COOKIE",
    "Upstream",
    "copy_set_cookies",
    "follow",
    "free_port",
    "login",
    "origin",
    "raw_request",
    "to_callback",
    "verify_alb_token",
]


# --------------------------------------------------------------------------- WebSocket
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def ws_accept(key: str) -> str:
    """Sec-WebSocket-Accept for `key` (RFC 6455 §4.2.2)."""
    import hashlib

    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


def ws_frame(payload: bytes, *, mask: bool) -> bytes:
    """One final text frame (payload under 126 bytes), masked as a client must."""
    assert len(payload) < 126
    head = bytes([0x81, (0x80 if mask else 0) | len(payload)])
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def ws_read_frame(sock: socket.socket) -> bytes:
    """The payload of one small frame (masked or not)."""

    def exact(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed mid-frame")
            data += chunk
        return data

    b0, b1 = exact(2)
    length = b1 & 0x7F
    assert length < 126, "only small frames here"
    key = exact(4) if b1 & 0x80 else b""
    payload = exact(length)
    return bytes(b ^ key[i % 4] for i, b in enumerate(payload)) if key else payload


def read_head(sock: socket.socket) -> tuple[str, dict[str, str], bytes]:
    """Request or status line, headers (lower-case names, last value wins), and any bytes
    read past the head."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed before the end of the head: {data[:200]!r}")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return lines[0], headers, rest


class WebSocketEcho:
    """A minimal WebSocket upstream (RFC 6455 handshake, small text frames): it answers the
    handshake with 101 and sends back `echo:` + each frame's text; a path ending in
    `/refuse` is answered 403 instead. Each handshake's headers are kept in `seen`."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            try:
                line, headers, _ = read_head(conn)
                self.seen.append({"request-line": line, **headers})
                if line.split(" ")[1].endswith("/refuse"):
                    conn.sendall(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 3\r\nconnection: close\r\n\r\nno\n")
                    return
                accept = ws_accept(headers.get("sec-websocket-key", ""))
                conn.sendall(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
                )
                while True:
                    text = ws_read_frame(conn)
                    conn.sendall(ws_frame(b"echo:" + text, mask=False))
            except (ConnectionError, OSError, ValueError):
                return

    def stop(self) -> None:
        self.listener.close()
