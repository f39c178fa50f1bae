"""Start and drive the real `latchkey` binary for the Python suite.

Everything here talks to the binary the way a user would: the admin CLI for
credentials, `latchkey serve identity` for the server, boto3 (and raw SigV4-signed
`requests`) for the API.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator
from unittest import mock

import boto3
import botocore.auth
import jwt
import pytest
import requests
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from secrets_sweep import SWEEP

REPO_ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
ACCOUNT = "000000000000"
SIGNING_NAME = "bedrock-agentcore"

# Every AgentCore error name and its HTTP status (agentcore-identity-wire.md §1).
AGENTCORE_ERRORS = {
    "UnauthorizedException": 401,
    "ValidationException": 400,
    "AccessDeniedException": 403,
    "ResourceNotFoundException": 404,
    "ConflictException": 409,
    "ThrottlingException": 429,
    "InternalServerException": 500,
    "ServiceQuotaExceededException": 402,
    "ResourceLimitExceededException": 400,
    "DecryptionFailure": 400,
    "EncryptionFailure": 400,
    "ConcurrentModificationException": 409,
}

LISTENING_RE = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")
ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


# --------------------------------------------------------------------------- config
def storage() -> str:
    value = os.environ.get("LATCHKEY_TEST_STORAGE", "sqlite").strip().lower() or "sqlite"
    if value not in ("sqlite", "postgres"):
        raise RuntimeError(f"LATCHKEY_TEST_STORAGE must be sqlite or postgres, not {value!r}")
    return value


def database_url() -> str | None:
    """The PostgreSQL URL when the postgres backend is selected, else None (SQLite)."""
    if storage() != "postgres":
        return None
    url = os.environ.get("LATCHKEY_TEST_DATABASE_URL")
    if not url:
        raise RuntimeError("LATCHKEY_TEST_STORAGE=postgres needs LATCHKEY_TEST_DATABASE_URL")
    return url


@contextlib.contextmanager
def fresh_database(prefix: str) -> Iterator[str | None]:
    """On PostgreSQL, a new empty database for one test's installation (dropped after);
    on SQLite, None (the installation's data directory holds its own database)."""
    if storage() != "postgres":
        yield None
        return
    base = database_url() or "postgres://postgres@127.0.0.1:5432/test"
    name = f"latchkey_{prefix}_" + uuid.uuid4().hex[:12]
    subprocess.run(["psql", base, "-v", "ON_ERROR_STOP=1", "-qc", f'CREATE DATABASE "{name}"'], check=True, capture_output=True)
    try:
        yield base.rsplit("/", 1)[0] + "/" + name
    finally:
        subprocess.run(["psql", base, "-qc", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'], capture_output=True)


def shared_key_file(db_url: str) -> Path:
    """The key-encryption key file for servers on this PostgreSQL database.

    The database holds records (the WAT signing key among them) encrypted under the
    key file of whichever server created them, so every server and CLI call against one
    database must use the same key file, whatever its data directory or the host:port it
    reaches the database by. Keyed by database name, under the ignored .test-data/.
    """
    name = urllib.parse.urlsplit(db_url).path.lstrip("/") or "postgres"
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:60]
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return REPO_ROOT / ".test-data" / "keys" / f"{safe}-{digest}.json"


def latchkey_bin() -> str:
    explicit = os.environ.get("LATCHKEY_BIN")
    if explicit:
        path = Path(explicit)
    else:
        target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO_ROOT / "target")
        if not target.is_absolute():
            target = REPO_ROOT / target
        path = target / "debug" / "latchkey"
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise RuntimeError(
            f"latchkey binary not found at {path}: run `cargo build --bin latchkey` "
            "or set LATCHKEY_BIN"
        )
    return str(path)


def uniq(prefix: str) -> str:
    """A name unique across tests and runs (tests share one database on PostgreSQL)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def new_workload(cp: Any, prefix: str) -> str:
    """A workload identity with a fresh name starting with `prefix`."""
    name = uniq(prefix)
    cp.create_workload_identity(name=name)
    return name


def new_api_key_provider(server: Latchkey, cp: Any, prefix: str, key_prefix: str) -> tuple[str, str]:
    """An API key provider with a fresh name and key (the key is remembered as a secret, for
    the leak sweep): `(name, key)`."""
    name = uniq(prefix)
    key = f"{key_prefix}-{uuid.uuid4().hex}"
    server.remember_secret(key)
    cp.create_api_key_credential_provider(name=name, apiKey=key)
    return name, key


def workload_arn(name: str) -> str:
    return f"arn:aws:bedrock-agentcore:{REGION}:{ACCOUNT}:workload-identity-directory/default/workload-identity/{name}"


def oauth2_provider_arn(name: str) -> str:
    return f"arn:aws:bedrock-agentcore:{REGION}:{ACCOUNT}:token-vault/default/oauth2credentialprovider/{name}"


def api_key_provider_arn(name: str) -> str:
    return f"arn:aws:bedrock-agentcore:{REGION}:{ACCOUNT}:token-vault/default/apikeycredentialprovider/{name}"


def inbound_issuers_toml(*issuers: str, audiences: tuple[str, ...] = ("latchkey-test",)) -> str:
    """The `--config` TOML that trusts these OIDC issuers for GetWorkloadAccessTokenForJWT."""
    out = []
    for issuer in issuers:
        auds = ", ".join(json.dumps(a) for a in audiences)
        # Key-rotation tests restart the IdP seconds after the first JWKS fetch.
        out.append(f"[[inbound_issuers]]\nissuer = {json.dumps(issuer)}\naudiences = [{auds}]\njwks_min_refetch_seconds = 1\n")
    return "\n".join(out)


# --------------------------------------------------------------------------- credentials
@dataclass(frozen=True)
class Cred:
    access_key_id: str
    secret_access_key: str
    role: str
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __repr__(self) -> str:  # never print the secret in pytest output
        return f"Cred({self.access_key_id!r}, role={self.role!r})"

    @property
    def bearer(self) -> str:
        return f"Bearer {self.access_key_id}:{self.secret_access_key}"


def _parse_json_output(stdout: str) -> Any:
    text = stdout.strip()
    try:
        return json.loads(text)
    except ValueError:
        pass
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith(("{", "[")):
            try:
                return json.loads(line)
            except ValueError:
                continue
    raise AssertionError(f"no JSON in CLI output: {stdout!r}")


# --------------------------------------------------------------------------- the server
def further_server(data_dir: Path, workdir: Path, db_url: str | None, env: dict[str, str]) -> Iterator["Latchkey"]:
    """A further server of the session's installation (same data directory and database)
    with `env` added to its environment: started, yielded, stopped (a fixture's body)."""
    lk = Latchkey(data_dir, workdir, db_url=db_url, extra_env=env)
    lk.start()
    yield lk
    lk.stop()


class Latchkey:
    """One `latchkey serve identity` process plus its admin CLI."""

    def __init__(
        self,
        data_dir: Path,
        workdir: Path,
        *,
        db_url: str | None = None,
        config_toml: str | None = None,
        rust_log: str | None = None,
        extra_env: dict[str, str] | None = None,
        key_file: Path | None = None,
    ) -> None:
        self.bin = latchkey_bin()
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.db_url = db_url
        # SQLite: the key file stays in the data directory (the default). PostgreSQL: one
        # key file per database, shared by every server of the run.
        self.key_file = key_file if key_file is not None else (shared_key_file(db_url) if db_url else None)
        self.config_path: Path | None = None
        if config_toml is not None:
            self.config_path = self.workdir / "latchkey.toml"
            self.config_path.write_text(config_toml)
        self.log_path = self.workdir / "server.log"
        self.cli_log_path = self.workdir / "cli-stderr.log"
        SWEEP.watch_log("identity", self.log_path, self.cli_log_path)
        SWEEP.watch_key_file("key-encryption-key", self.key_file or self.data_dir / "kek.json")
        # The binary reads LATCHKEY_* settings from the environment: start from none of
        # them (the harness's own LATCHKEY_TEST_* / LATCHKEY_BIN included) so that only
        # the flags below decide storage and configuration.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LATCHKEY_")}
        self.env["LATCHKEY_OUTBOUND_ALLOW_PRIVATE_ADDRESSES"] = "true"
        self.env.setdefault("NO_COLOR", "1")
        if rust_log is not None:
            self.env["RUST_LOG"] = rust_log
        self.env.update(extra_env or {})
        self.url = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.secrets: set[str] = set()
        self.admin: Cred | None = None
        self._reader: threading.Thread | None = None

    # ----------------------------------------------------------------- CLI
    def storage_args(self) -> list[str]:
        args = ["--data-dir", str(self.data_dir)]
        if self.db_url:
            args += ["--database-url", self.db_url]
        if self.key_file is not None:
            args += ["--key-file", str(self.key_file)]
        return args

    def cli(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = [self.bin, *args, *self.storage_args()]
        cp = subprocess.run(
            cmd, env=self.env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
        with open(self.cli_log_path, "a", encoding="utf-8") as f:
            f.write(f"$ latchkey {' '.join(args)}\n{cp.stderr}")
        if check and cp.returncode != 0:
            raise AssertionError(
                f"`latchkey {' '.join(args)}` exited {cp.returncode}\nstdout: {cp.stdout}\nstderr: {cp.stderr}"
            )
        return cp

    def init(self) -> None:
        """`latchkey admin init`: the data directory, key file and tables, where missing
        (every other admin command refuses a target without them)."""
        self.cli("admin", "init")

    def create_credential(self, role: str) -> Cred:
        cp = self.cli("admin", "credentials", "create", "--role", role, "--json")
        obj = _parse_json_output(cp.stdout)
        assert isinstance(obj, dict), obj
        akid, secret = obj.get("accessKeyId"), obj.get("secretAccessKey")
        assert isinstance(akid, str) and akid, obj
        assert isinstance(secret, str) and secret, "secretAccessKey missing"
        self.secrets.add(secret)
        SWEEP.register("credential-secret", secret)
        assert secret not in cp.stderr, "the CLI wrote the secret access key to stderr"
        return Cred(akid, secret, role, obj)

    def list_credentials(self) -> list[dict[str, Any]]:
        cp = self.cli("admin", "credentials", "list", "--json")
        obj = _parse_json_output(cp.stdout)
        assert isinstance(obj, list), obj
        return obj

    def revoke_credential(self, access_key_id: str) -> None:
        self.cli("admin", "credentials", "revoke", access_key_id)

    # ----------------------------------------------------------------- process
    def start(self, timeout: float = 60) -> "Latchkey":
        if self.admin is None:
            self.init()
            self.admin = self.create_credential("admin")
        cmd = [self.bin, "serve", "identity", "--listen", "127.0.0.1:0", *self.storage_args()]
        if self.config_path is not None:
            cmd += ["--config", str(self.config_path)]
        log = open(self.log_path, "ab")
        log.write(f"--- $ {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            cmd, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self.proc = proc
        found: dict[str, str] = {}
        ready = threading.Event()

        def pump() -> None:
            assert proc.stdout is not None
            for raw in proc.stdout:
                log.write(raw)
                log.flush()
                if not ready.is_set():
                    m = LISTENING_RE.search(ANSI_RE.sub("", raw.decode("utf-8", "replace")))
                    if m:
                        found["url"] = m.group(1)
                        ready.set()
            log.close()
            ready.set()

        self._reader = threading.Thread(target=pump, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.2):
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"latchkey did not report `listening on` in {timeout}s:\n{self.log_tail()}")
        if "url" not in found:
            self.stop()
            raise AssertionError(f"latchkey exited ({proc.poll()}) before listening:\n{self.log_tail()}")
        self.url = found["url"]
        SWEEP.watch_service("identity", self.url)
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if self._reader is not None:
            self._reader.join(5)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text("utf-8", "replace")
        except OSError:
            return ""

    def wait_for_log(self, matches: Callable[[str], bool], timeout: float = 5.0) -> str | None:
        """The first log line for which `matches` is true, waiting for it: the server's output
        reaches the log file through a reader thread, so a line written before a response may
        land in the file after the client has read that response."""
        deadline = time.monotonic() + timeout
        while True:
            line = next((l for l in self.log_text().splitlines() if matches(l)), None)
            if line is not None or time.monotonic() > deadline:
                return line
            time.sleep(0.02)

    def log_tail(self, n: int = 6000) -> str:
        return self.log_text()[-n:]

    def leaked_secrets(self) -> list[str]:
        """Registered secrets that appear in the server log or the CLI's stderr."""
        text = self.log_text()
        try:
            text += self.cli_log_path.read_text("utf-8", "replace")
        except OSError:
            pass
        return sorted(s for s in self.secrets if s and s in text)

    def remember_secret(self, *values: str) -> None:
        self.secrets.update(v for v in values if v)
        SWEEP.register("remembered", *values)

    # ----------------------------------------------------------------- clients
    def client(self, kind: str, cred: Cred | None = None) -> Any:
        cred = cred or self.admin
        assert cred is not None
        return boto3.client(
            kind,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=cred.access_key_id,
            aws_secret_access_key=cred.secret_access_key,
            config=Config(retries={"max_attempts": 1}, connect_timeout=10, read_timeout=60),
        )

    def cp(self, cred: Cred | None = None) -> Any:
        return self.client("bedrock-agentcore-control", cred)

    def dp(self, cred: Cred | None = None) -> Any:
        return self.client("bedrock-agentcore", cred)

    def signed(self, method: str, path: str, body: Any = None, cred: Cred | None = None, **kw: Any) -> requests.Response:
        cred = cred or self.admin
        assert cred is not None
        return signed_request(self.url, method, path, body, cred.access_key_id, cred.secret_access_key, **kw)

    def jwks(self) -> dict[str, Any]:
        r = requests.get(f"{self.url}/.well-known/jwks.json", timeout=10)
        assert r.status_code == 200, (r.status_code, r.text)
        return r.json()


# --------------------------------------------------------------------------- raw SigV4
def sign(
    url: str,
    method: str,
    body: bytes,
    access_key_id: str,
    secret: str,
    *,
    service: str = SIGNING_NAME,
    region: str = REGION,
    headers: dict[str, str] | None = None,
    when: dt.datetime | None = None,
) -> AWSRequest:
    hdrs = {"Content-Type": "application/json"}
    hdrs.update(headers or {})
    req = AWSRequest(method=method, url=url, data=body, headers=hdrs)
    signer = botocore.auth.SigV4Auth(Credentials(access_key_id, secret), service, region)
    if when is None:
        signer.add_auth(req)
    else:
        naive = when.astimezone(dt.timezone.utc).replace(tzinfo=None)
        with mock.patch("botocore.auth.get_current_datetime", return_value=naive):
            signer.add_auth(req)
    return req


def signed_request(
    base_url: str,
    method: str,
    path: str,
    body: Any,
    access_key_id: str,
    secret: str,
    *,
    service: str = SIGNING_NAME,
    region: str = REGION,
    headers: dict[str, str] | None = None,
    when: dt.datetime | None = None,
    body_after_signing: bytes | None = None,
    drop_headers: tuple[str, ...] = (),
    timeout: float = 30,
) -> requests.Response:
    """Send a SigV4-signed request as boto3 would; optional tampering after signing."""
    if body is None:
        raw = b"" if method in ("GET", "DELETE") else b"{}"
    elif isinstance(body, (bytes, bytearray)):
        raw = bytes(body)
    elif isinstance(body, str):
        raw = body.encode()
    else:
        raw = json.dumps(body).encode()
    req = sign(base_url + path, method, raw, access_key_id, secret, service=service, region=region, headers=headers, when=when)
    out_headers = {k: v for k, v in req.headers.items() if k.lower() not in {h.lower() for h in drop_headers}}
    data = raw if body_after_signing is None else body_after_signing
    return requests.request(method, req.url, headers=out_headers, data=data, timeout=timeout, allow_redirects=False)


def assert_error_response(resp: requests.Response, status: int, code: str) -> dict[str, Any]:
    """An AgentCore-shaped error: status, x-amzn-ErrorType and {"__type", "message"}."""
    assert resp.status_code == status, (resp.status_code, resp.headers, resp.text[:2000])
    etype = resp.headers.get("x-amzn-ErrorType", "")
    assert etype.split(":")[0] == code, (etype, resp.text[:2000])
    body = resp.json()
    assert isinstance(body, dict), body
    assert str(body.get("__type", "")).split("#")[-1] == code, body
    assert isinstance(body.get("message"), str) and body["message"], body
    return body


# --------------------------------------------------------------------------- boto3 helpers
def error_code(exc: ClientError) -> str:
    return exc.response["Error"]["Code"]


def http_status(exc: ClientError) -> int:
    return exc.response["ResponseMetadata"]["HTTPStatusCode"]


@contextlib.contextmanager
def raises_code(*codes: str) -> Iterator[pytest.ExceptionInfo[ClientError]]:
    """Expect a ClientError whose code is one of `codes`, with that code's HTTP status."""
    with pytest.raises(ClientError) as ei:
        yield ei
    code = error_code(ei.value)
    assert code in codes, f"expected {codes}, got {code}: {ei.value.response}"
    assert http_status(ei.value) == AGENTCORE_ERRORS[code], ei.value.response
    assert ei.value.response["Error"].get("Message"), ei.value.response


def assert_deleted(delete: Callable[[], Any], **then_missing: Callable[[], Any]) -> None:
    """`delete` answers 204; afterwards each named call fails with ResourceNotFoundException."""
    assert delete()["ResponseMetadata"]["HTTPStatusCode"] == 204
    for step, call in then_missing.items():
        try:
            with raises_code("ResourceNotFoundException"):
                call()
        except BaseException as e:
            raise AssertionError(f"after the delete, {step!r} did not fail as not found: {e}") from e


def capture_raw_bodies(client: Any) -> list[bytes]:
    """Collect every raw HTTP response body this boto3 client receives."""
    bodies: list[bytes] = []

    def hook(http_response: Any = None, **_: Any) -> None:
        if http_response is not None:
            bodies.append(http_response.content or b"")

    client.meta.events.register("after-call", hook)
    return bodies


def eventually(check: Callable[[], Any], timeout: float = 7.0, interval: float = 0.25) -> Any:
    """Retry `check` until it stops raising AssertionError/ClientError or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except (AssertionError, ClientError, pytest.fail.Exception):
            if time.monotonic() >= deadline:
                raise
            time.sleep(interval)


# --------------------------------------------------------------------------- WAT checks
def decode_wat(server: Latchkey, token: str) -> dict[str, Any]:
    """Verify a workload access token against the server's published JWKS."""
    assert isinstance(token, str) and token.count(".") == 2, token[:60]
    header = jwt.get_unverified_header(token)
    assert header.get("alg") == "ES256", header
    kid = header.get("kid")
    assert kid, header
    jwks = server.jwks()
    matches = [k for k in jwks.get("keys", []) if k.get("kid") == kid]
    assert len(matches) == 1, f"kid {kid} not in JWKS {jwks}"
    assert "d" not in matches[0], "JWKS publishes a private key"
    key = jwt.PyJWK(matches[0]).key
    return jwt.decode(
        token,
        key=key,
        algorithms=["ES256"],
        audience=server.url,
        issuer=server.url,
        options={"require": ["exp", "iat", "iss", "aud", "sub"]},
    )
