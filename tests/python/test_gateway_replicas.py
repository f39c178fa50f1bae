"""Two gateway replicas sharing their sessions through the database (`session_store =
"database"`), with the `oidc-provider` npm package as the identity provider: any replica
serves any browser, a logout on one holds on the other within the cache time, sessions
outlive every replica, the tokens are refreshed once across replicas, and the database
holds no token in clear. On SQLite (one file both processes open) and on PostgreSQL."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from gateway_harness import BROWSER_HEADERS, LOGOUT_PATH, SESSION_COOKIE, Gateway, Upstream, login
from lk_harness import fresh_database
from oidc import OidcProvider, running_provider

CACHE_SECONDS = 1


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    yield from running_provider(tmp_path_factory, "replicas-idp")


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    up = Upstream()
    yield up
    up.stop()


class Replicas:
    """Gateways `a` and `b`: one OIDC client, one cookie key, one session database."""

    def __init__(self, workdir: Path, idp: OidcProvider, upstream: Upstream, db_url: str) -> None:
        self.db_url = db_url
        client = "gw-replicas-" + uuid.uuid4().hex[:8]
        env = {
            "LATCHKEY_GATEWAY_SESSION_STORE": "database",
            "LATCHKEY_DATABASE_URL": db_url,
            "LATCHKEY_GATEWAY_SESSION_CACHE_SECONDS": str(CACHE_SECONDS),
        }
        routes = [f"/app={upstream.url};login", f"/api={upstream.url};api"]
        self.a = ReplicaGateway(workdir / "a", idp, routes, client_id=client, extra_env=env)
        # The same client (and secret) at the provider, with both redirect URIs.
        self.b = ReplicaGateway(workdir / "b", idp, routes, client_id=client, client_secret=self.a.client_secret, extra_env=env)
        self.a.redirect_uris = self.b.redirect_uris = [self.a.redirect_uri, self.b.redirect_uri]
        self.a.start()
        # Replicas share the cookie key and the ALB signing key (as a Secret would give them).
        self.b.data_dir.mkdir(parents=True, exist_ok=True)
        for name in ("gateway-cookie.key", "gateway-alb-key.pem"):
            shutil.copy2(self.a.data_dir / name, self.b.data_dir / name)
        self.b.start()

    def stop(self) -> None:
        self.b.stop()
        self.a.stop()

    def rows(self) -> list[tuple[str, bytes, int]]:
        sql = "SELECT id_hash, sealed, version FROM gateway_sessions"
        if self.db_url.startswith("postgres"):
            out = subprocess.run(
                ["psql", self.db_url, "-At", "-F", "\t", "-c", "SELECT id_hash, encode(sealed, 'hex'), version FROM gateway_sessions"],
                check=True, capture_output=True, text=True,
            ).stdout
            return [(i, bytes.fromhex(s), int(v)) for i, s, v in (line.split("\t") for line in out.splitlines() if line)]
        path = self.db_url.removeprefix("sqlite://").split("?")[0]
        with sqlite3.connect(path) as db:
            return [(str(i), bytes(s), int(v)) for i, s, v in db.execute(sql)]


class ReplicaGateway(Gateway):
    """A gateway whose OIDC client is shared with the other replica: after its start (which
    registers its own redirect URI only) the client gets both replicas' URIs again."""

    redirect_uris: list[str] = []

    def start(self, timeout: float = 30) -> "ReplicaGateway":
        super().start(timeout)
        self.provider.add_client(self.client_id, self.client_secret, self.redirect_uris, grant_types=["authorization_code", "refresh_token"])
        return self


@pytest.fixture
def replicas(tmp_path: Path, idp: OidcProvider, upstream: Upstream) -> Iterator[Replicas]:
    with fresh_database("gwsessions") as url:
        url = url or f"sqlite://{tmp_path / 'sessions.db'}?mode=rwc"
        r = Replicas(tmp_path, idp, upstream, url)
        try:
            yield r
        finally:
            r.stop()


def whoami(gateway: Gateway, s: requests.Session) -> dict[str, Any] | None:
    """The upstream's echo through `gateway` (None: not signed in there)."""
    r = s.get(gateway.url + "/api/whoami", headers={"Accept": "application/json"}, allow_redirects=False, timeout=15)
    assert r.status_code in (200, 401), (r.status_code, r.text[:300])
    return r.json() if r.status_code == 200 else None


def test_any_replica_serves_any_browser_and_a_logout_holds_on_all(replicas: Replicas) -> None:
    a, b = replicas.a, replicas.b
    user = "replica-" + uuid.uuid4().hex[:6]
    lg = login(a, user, "/app/")
    cookie = lg.cookie
    assert cookie and whoami(a, lg.session)
    seen = whoami(b, lg.session)  # never signed in at b
    assert seen and seen["headers"]["x-amzn-oidc-identity"] == [user], seen
    # The row holds the tokens sealed: the access token the upstream received is not in it.
    access_token = seen["headers"]["x-amzn-oidc-accesstoken"][0]
    rows = replicas.rows()
    assert len(rows) == 1
    assert access_token.encode() not in rows[0][1] and user.encode() not in rows[0][1]
    assert cookie not in rows[0][0]

    # Sign out at b; a (which holds its own copy) follows within the cache time.
    r = lg.session.post(b.url + LOGOUT_PATH, headers={"Origin": b.url}, allow_redirects=False, timeout=10)
    assert r.status_code == 303, (r.status_code, r.text[:300])
    assert replicas.rows() == []
    time.sleep(CACHE_SECONDS + 0.5)
    for gw in (a, b):
        assert whoami(gw, lg.session) is None, gw.url
        replay = requests.get(gw.url + "/api/whoami", headers={**BROWSER_HEADERS, "Accept": "application/json"}, cookies={SESSION_COOKIE: cookie}, allow_redirects=False, timeout=10)
        assert replay.status_code == 401, gw.url


def test_sessions_outlive_every_replica(replicas: Replicas) -> None:
    a, b = replicas.a, replicas.b
    lg = login(a, "survivor-" + uuid.uuid4().hex[:6], "/app/")
    a.stop()
    b.stop()
    b.start()
    assert whoami(b, lg.session), "the session did not survive both replicas stopping"
    a.start()
    assert whoami(a, lg.session)


def test_tokens_are_refreshed_once_across_replicas(replicas: Replicas, idp: OidcProvider) -> None:
    a, b = replicas.a, replicas.b
    # The code exchange says the access token expires in 62 s: 2 s after the login every
    # request wants a refresh (60 s ahead of expiry); the provider takes a second to answer.
    with idp.quirks(code_expires_in=62, refresh_delay_ms=1000):
        lg = login(a, "refresher-" + uuid.uuid4().hex[:6], "/app/")
        cookies = lg.session.cookies.get_dict()
        assert idp.grant_count("refresh_token") == 0
        time.sleep(2.5)
        results: list[int] = []
        lock = threading.Lock()

        def hit(gw: Gateway) -> None:
            s = requests.Session()
            s.cookies.update(cookies)
            r = s.get(gw.url + "/api/whoami", headers={**BROWSER_HEADERS, "Accept": "application/json"}, allow_redirects=False, timeout=30)
            with lock:
                results.append(r.status_code)

        threads = [threading.Thread(target=hit, args=(gw,)) for gw in (a, b, a, b, a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(40)
    assert results == [200] * 6, results
    assert idp.grant_count("refresh_token") == 1, idp.stats()
    assert idp.grant_count("refresh_token", "error") == 0, idp.stats()
    assert [r[2] for r in replicas.rows()] == [2]
