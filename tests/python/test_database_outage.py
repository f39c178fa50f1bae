"""A database that goes away: clear, retry-safe 5xx answers, and recovery without a restart.

The server talks to PostgreSQL through a TCP relay that the test can cut and restore on
the same port, so the outage is real (connections die, new ones are refused) without
touching the shared PostgreSQL server.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
import urllib.parse
import uuid
from typing import Iterator

import pytest
import requests

from lk_harness import Latchkey, eventually, uniq

CREATE = "/identities/CreateWorkloadIdentity"
GET = "/identities/GetWorkloadIdentity"


class Relay:
    """Forwards 127.0.0.1:<port> to the PostgreSQL server; `down()` cuts everything."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.listener: socket.socket | None = None
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()

    def up(self) -> None:
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", self.port))
        srv.listen(64)
        self.port = srv.getsockname()[1]
        self.listener = srv
        threading.Thread(target=self._accept, args=(srv,), daemon=True).start()

    def _accept(self, srv: socket.socket) -> None:
        while True:
            try:
                client, _ = srv.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def down(self) -> None:
        if self.listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone would not,
            # and the kernel would keep accepting on the old socket.
            try:
                self.listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.listener.close()
            self.listener = None
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                c.close()
            self.conns.clear()


def postgres_url() -> str:
    return os.environ.get("LATCHKEY_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="module")
def relay() -> Iterator[Relay]:
    url = urllib.parse.urlsplit(postgres_url())
    r = Relay((url.hostname or "127.0.0.1", url.port or 5432))
    r.up()
    yield r
    r.down()


@pytest.fixture(scope="module")
def outage_database() -> Iterator[str]:
    """A database of its own (SQLite cannot go away, so this module always uses PostgreSQL)."""
    name = "latchkey_outage_" + uuid.uuid4().hex[:12]
    admin_url = postgres_url()
    subprocess.run(["psql", admin_url, "-v", "ON_ERROR_STOP=1", "-qc", f'CREATE DATABASE "{name}"'], check=True, capture_output=True)
    yield name
    subprocess.run(["psql", admin_url, "-qc", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'], capture_output=True)


@pytest.fixture(scope="module")
def outage_server(relay: Relay, outage_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Latchkey]:
    url = urllib.parse.urlsplit(postgres_url())
    via_relay = url._replace(netloc=f"{url.username or 'postgres'}@127.0.0.1:{relay.port}", path=f"/{outage_database}").geturl()
    lk = Latchkey(tmp_path_factory.mktemp("outage-data"), tmp_path_factory.mktemp("outage"), db_url=via_relay)
    lk.start()
    yield lk
    lk.stop()


def test_database_outage_gives_retry_safe_503_and_recovers(outage_server: Latchkey, relay: Relay) -> None:
    lk = outage_server
    before = uniq("before-outage")
    assert lk.signed("POST", CREATE, {"name": before}).status_code == 201

    relay.down()
    during = uniq("during-outage")
    started = time.monotonic()
    r = lk.signed("POST", CREATE, {"name": during})
    assert time.monotonic() - started < 15, "a dead database must not hang requests"
    assert r.status_code == 503, (r.status_code, r.text)
    assert r.headers["x-amzn-ErrorType"] == "InternalServerException"
    assert r.headers.get("retry-after") == "1"
    body = r.json()
    assert body["__type"] == "InternalServerException"
    assert "retry" in body["message"].lower()
    assert "postgres" not in body["message"].lower(), "internal detail must not reach the client"
    ping = requests.get(lk.url + "/ping", timeout=15)
    assert ping.status_code == 503 and ping.json()["status"] == "Unhealthy"

    relay.up()  # same port

    def recovered() -> None:
        ok = lk.signed("POST", GET, {"name": before})
        assert ok.status_code == 200, (ok.status_code, ok.text)

    eventually(recovered, timeout=20, interval=0.5)
    # The write that failed during the outage left nothing behind: retrying it is safe.
    assert lk.signed("POST", GET, {"name": during}).status_code == 404
    assert lk.signed("POST", CREATE, {"name": during}).status_code == 201
    # /ping caches its database check for a second.
    def healthy() -> None:
        assert requests.get(lk.url + "/ping", timeout=5).status_code == 200

    eventually(healthy, timeout=5)
