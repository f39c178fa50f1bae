"""Drive the real `oidc-provider` (tests/oidc/server.mjs) from Python.

`OidcProvider` starts the node server on 127.0.0.1 (free port), learns its issuer from
the first stdout line, and obtains real ID tokens headlessly: authorization code flow
with PKCE (S256), the provider's devInteractions login and consent forms, then the
token endpoint. `rotate_keys()` restarts it on the same port with a new key set.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlparse

import requests
from cryptography.hazmat.primitives.asymmetric import ec, rsa

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


class OidcProvider:
    """One oidc-provider process on loopback; restartable on the same port."""

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
        if not (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
            raise RuntimeError(
                f"{OIDC_DIR}/node_modules is missing: run `npm ci --prefix tests/oidc` (scripts/test does)"
            )
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.client_id = client_id
        self.client_secret = client_secret
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

    # ----------------------------------------------------------------- process
    def start(self, *, new_keys: bool = True) -> "OidcProvider":
        if self._proc is not None:
            raise RuntimeError("already running")
        if new_keys or not self.jwks_file.exists():
            self.jwks_file.write_text(json.dumps(generate_jwks()))
            os.chmod(self.jwks_file, 0o600)
        self._generation += 1
        log = open(self.log_file, "ab")
        log.write(f"--- start #{self._generation} (port {self.port or 'auto'})\n".encode())
        log.flush()
        cmd = [
            node_binary(),
            str(OIDC_DIR / "server.mjs"),
            "--port", str(self.port),
            "--jwks", str(self.jwks_file),
            "--client-id", self.client_id,
            "--client-secret", self.client_secret,
            "--redirect-uris", ",".join(self.redirect_uris),
            "--id-token-alg", self.id_token_alg,
            "--id-token-ttl", str(self.id_token_ttl),
            "--access-token-ttl", str(self.access_token_ttl),
        ]
        if self.rotate_refresh_tokens:
            cmd.append("--rotate-refresh-tokens")
        proc = subprocess.Popen(
            cmd, cwd=str(OIDC_DIR), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log
        )
        log.close()
        self._proc = proc
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
                    if isinstance(obj, dict) and "issuer" in obj:
                        first.update(obj)
                        done.set()
                        continue
                with open(self.log_file, "a", encoding="utf-8") as f:
                    f.write(line + "\n")
            done.set()

        threading.Thread(target=read_stdout, daemon=True).start()
        if not done.wait(30) or "issuer" not in first:
            self.stop()
            raise RuntimeError(
                f"oidc-provider did not start (exit {proc.poll()}); log:\n{self.log_tail()}"
            )
        self.issuer = first["issuer"]
        self.port = int(urlparse(self.issuer).port or 0)
        self._metadata = None
        self._wait_ready()
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

    def restart(self, *, new_keys: bool = False, redirect_uris: list[str] | None = None) -> None:
        """Stop and start again on the same port (same issuer)."""
        if redirect_uris is not None:
            self.redirect_uris = list(redirect_uris)
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

    # ----------------------------------------------------------------- flows
    def authorize(
        self,
        user: str,
        *,
        scope: str = "openid email profile",
        redirect_uri: str | None = None,
        extra: dict[str, str] | None = None,
    ) -> tuple[str, str, str]:
        """Log `user` in and consent headlessly. Returns (code, code_verifier, redirect_uri)."""
        redirect_uri = redirect_uri or self.redirect_uris[0]
        verifier, challenge = pkce_pair()
        state = secrets.token_urlsafe(16)
        params = {
            "client_id": self.client_id,
            "response_type": "code",
            "redirect_uri": redirect_uri,
            "scope": scope,
            "state": state,
            "nonce": secrets.token_urlsafe(16),
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        params.update(extra or {})
        s = requests.Session()
        url = f"{self.metadata['authorization_endpoint']}?{urlencode(params)}"
        r = s.get(url, allow_redirects=False, timeout=10)
        for _ in range(12):
            if r.status_code not in (302, 303):
                raise RuntimeError(f"unexpected {r.status_code} at {r.url}: {r.text[:500]}")
            location = urljoin(r.url, r.headers["Location"])
            if location.startswith(redirect_uri):
                q = parse_qs(urlparse(location).query)
                if "error" in q:
                    raise RuntimeError(f"authorization failed: {q}")
                if q.get("state") != [state]:
                    raise RuntimeError(f"state mismatch in {location}")
                return q["code"][0], verifier, redirect_uri
            if "/interaction/" in urlparse(location).path:
                page = s.get(location, allow_redirects=False, timeout=10)
                if page.status_code != 200:
                    raise RuntimeError(f"interaction page {page.status_code}: {page.text[:500]}")
                if 'name="prompt" value="login"' in page.text:
                    form = {"prompt": "login", "login": user, "password": "x"}
                else:
                    form = {"prompt": "consent"}
                r = s.post(location, data=form, allow_redirects=False, timeout=10)
            else:
                r = s.get(location, allow_redirects=False, timeout=10)
        raise RuntimeError("too many redirects in the authorization flow")

    # ----------------------------------------------------------------- test controls
    def stats(self) -> dict[str, Any]:
        """Token-endpoint calls by grant type ({"success": n, "error": n}) and revocations."""
        r = requests.get(f"{self.issuer}/__test/stats", timeout=5)
        r.raise_for_status()
        return r.json()

    def grant_count(self, grant_type: str, outcome: str = "success") -> int:
        return int(self.stats()["grants"].get(grant_type, {}).get(outcome, 0))

    def reset_stats(self) -> None:
        requests.post(f"{self.issuer}/__test/stats/reset", timeout=5).raise_for_status()

    def set_quirks(self, **quirks: Any) -> None:
        """omit_refresh_token, omit_expires_in (bool), token_delay_ms, code_expires_in (int)."""
        requests.post(f"{self.issuer}/__test/quirks", json=quirks, timeout=5).raise_for_status()

    def token_request(self, form: dict[str, str]) -> requests.Response:
        return requests.post(
            self.metadata["token_endpoint"],
            data=form,
            auth=(self.client_id, self.client_secret),
            timeout=10,
        )

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
        if r.status_code != 200:
            raise RuntimeError(f"token endpoint answered {r.status_code}: {r.text}")
        return r.json()

    def id_token_for(self, user: str, *, scope: str = "openid email profile") -> str:
        """A real ID token for `user` (iss = issuer, aud = client id, sub = user)."""
        return self.tokens_for(user, scope=scope)["id_token"]
