"""`moto_server` (PyPI `moto[server]`) on a free loopback port: the real AWS wire protocols
of S3 and KMS, for the agent's conversation store and the KMS key provider."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

# moto accepts any credentials; these never reach AWS.
ACCESS_KEY_ID = "testing"
SECRET_ACCESS_KEY = "testing-secret"
REGION = "us-east-1"


class Moto:
    """One `moto_server` process, stopped by `stop()` (by its PID)."""

    def __init__(self, workdir: Path) -> None:
        exe = Path(sys.executable).parent / "moto_server"
        assert exe.exists(), f"{exe} missing: scripts/test installs moto[server] from tests/python/requirements.txt"
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.proc = subprocess.Popen(
            [str(exe), "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=open(Path(workdir) / "moto.log", "wb"),
        )
        self.url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                requests.get(self.url, timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        else:
            raise AssertionError("moto_server did not start")

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
        )

    def s3(self) -> Any:
        return self.client("s3")

    def kms(self) -> Any:
        return self.client("kms")

    def aws_env(self) -> dict[str, str]:
        """The environment a Latchkey process needs to reach this server's KMS."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "AWS_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
