"""Shared by the tests that need the session binding service or ALB-signed claims headers:
a PEM key server by kid (like the ALB's key endpoint), ALB-format `x-amzn-oidc-data`
tokens, a running `latchkey serve binding`, and the scripted model server
(tests/llm/scripted_llm.py) the agent talks to."""

from __future__ import annotations

import base64
import http.server
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from lk_harness import Latchkey
from secrets_sweep import SWEEP

ALB_ARN = "arn:aws:elasticloadbalancing:us-east-1:000000000000:loadbalancer/app/latchkey-test/50dc6c495c0c9188"

def spawn_listening(cmd: list[str], env: dict[str, str] | None, log: Path) -> tuple[subprocess.Popen[str], str]:
    """Start a service whose first stdout line names its loopback URL (`latchkey serve …`,
    tests/llm/scripted_llm.py); stderr goes to `log`. Returns the process and the URL."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=open(log, "wb"), stdin=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    m = re.search(r"(http://127\.0\.0\.1:\d+)", line)
    if not m:
        proc.kill()
        raise AssertionError(f"{cmd[0]} {' '.join(cmd[1:3])} did not start: {line!r} {log.read_text() if log.exists() else ''}")
    if len(cmd) > 2 and cmd[1] == "serve":
        # A Latchkey service: its log and its answers are swept for secrets.
        SWEEP.watch_log(cmd[2], log)
        SWEEP.watch_service(cmd[2], m.group(1))
    else:
        SWEEP.watch_peer(m.group(1))
    return proc, m.group(1)


class ScriptedLlm:
    """tests/llm/scripted_llm.py on a free port: a model speaking the providers' wire protocols."""

    def __init__(self, workdir: Path, chunk_delay_ms: int = 0) -> None:
        script = Path(__file__).resolve().parents[1] / "llm" / "scripted_llm.py"
        cmd = [sys.executable, str(script), "--port", "0", "--chunk-delay-ms", str(chunk_delay_ms)]
        self.proc, self.url = spawn_listening(cmd, None, workdir / "llm.log")

    def requests(self) -> list[dict[str, Any]]:
        return requests.get(self.url + "/__test/requests", timeout=5).json()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


# --------------------------------------------------------------------------- ALB keys
class KeyServer:
    """Serves PEM public keys by kid, like https://public-keys.auth.elb.<region>.amazonaws.com/<kid>."""

    def __init__(self) -> None:
        self.keys: dict[str, bytes] = {}
        keys = self.keys

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                pem = keys.get(self.path.lstrip("/"))
                self.send_response(200 if pem else 404)
                self.end_headers()
                if pem:
                    self.wfile.write(pem)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        SWEEP.watch_peer(self.url)

    def new_key(self, kid: str) -> ec.EllipticCurvePrivateKey:
        key = ec.generate_private_key(ec.SECP256R1())
        self.keys[kid] = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return key


def b64_padded(data: bytes) -> str:
    """ALBs send base64url *with* padding."""
    return base64.urlsafe_b64encode(data).decode()


def alb_token(key: ec.EllipticCurvePrivateKey, kid: str, sub: str, *, signer: str = ALB_ARN) -> str:
    header = {"alg": "ES256", "kid": kid, "signer": signer, "iss": "https://login.example.test", "client": "app", "exp": int(time.time()) + 60}
    payload = {"sub": sub, "email": f"{sub}@example.test", "exp": int(time.time()) + 60, "iss": "https://login.example.test"}
    signing_input = f"{b64_padded(json.dumps(header).encode())}.{b64_padded(json.dumps(payload).encode())}"
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{b64_padded(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


class BindingService:
    def __init__(self, server: Latchkey, workdir: Path, args: list[str]) -> None:
        cred = server.create_credential("binding")
        env = {k: v for k, v in server.env.items() if not k.startswith("LATCHKEY_")}
        env["LATCHKEY_BINDING_CREDENTIAL"] = f"{cred.access_key_id}:{cred.secret_access_key}"
        self.log = workdir / "binding.log"
        self.secret = cred.secret_access_key
        self.proc, self.url = spawn_listening(
            [server.bin, "serve", "binding", "--listen", "127.0.0.1:0", "--identity-url", server.url, "--outbound-allow-private-addresses", "true", *args],
            env,
            self.log,
        )
        self.binding_url = f"{self.url}/oauth2/session-binding"

    def stop(self) -> str:
        self.proc.terminate()
        self.proc.wait(10)
        text = self.log.read_text()
        assert self.secret not in text, "the binding credential appeared in the binding service's log"
        return text
