"""The token vault: refresh on read with rotating refresh tokens, provider quirks,
`invalid_grant`, revocation, and single-flight refresh across two replicas (including a
replica killed with SIGKILL in the middle of a refresh).

The authorization server issues access tokens that live 30 s — less than the vault's 60 s
safety margin — so every vault read of such a grant refreshes it.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

import pytest
import requests

from flows_harness import Browser, create_custom_provider, userinfo
from lk_harness import Latchkey, raises_code, uniq
from oidc import OidcProvider

RETURN_URL = "http://127.0.0.1:9/app/after-consent"
SCOPES = ["openid", "api:read"]


def make_authz(tmp: Path, *, rotate: bool, ttl: int = 30) -> OidcProvider:
    return OidcProvider(
        tmp,
        client_id="lk-vault",
        client_secret="lk-vault-secret-" + "z" * 12,
        access_token_ttl=ttl,
        rotate_refresh_tokens=rotate,
    ).start()


@pytest.fixture(scope="module")
def racing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    """Rotating refresh tokens, hour-long access tokens; the code exchange claims its token
    expires at once, so the first read after consent must refresh — exactly once."""
    p = make_authz(tmp_path_factory.mktemp("authz-racing"), rotate=True, ttl=3600)
    yield p
    p.stop()


@pytest.fixture(scope="module")
def rotating(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    p = make_authz(tmp_path_factory.mktemp("authz-rotating"), rotate=True)
    yield p
    p.stop()


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    p = make_authz(tmp_path_factory.mktemp("authz-plain"), rotate=False)
    yield p
    p.stop()


class Vault:
    """One workload + one provider at `authz`, flows driven through `server`."""

    def __init__(self, server: Latchkey, authz: OidcProvider, cp: Any, dp: Any, extra_servers: list[Latchkey] = ()) -> None:
        self.server, self.authz, self.cp, self.dp = server, authz, cp, dp
        self.workload = uniq("vault-wl")
        cp.create_workload_identity(name=self.workload, allowedResourceOauth2ReturnUrls=[RETURN_URL])
        self.provider, callback = create_custom_provider(server, cp, authz, "vault-prov")
        self.callback_path = urlparse(callback).path
        self.register(server, *extra_servers)
        self.binding = server.create_credential("binding")

    def register(self, *servers: Latchkey) -> None:
        uris = sorted(set(self.authz.redirect_uris) | {s.url + self.callback_path for s in servers})
        self.authz.restart(redirect_uris=[u for u in uris if "/callback/" in u])

    def wat(self, user: str) -> str:
        return self.dp.get_workload_access_token_for_user_id(workloadName=self.workload, userId=user)["workloadAccessToken"]

    def body(self, wat: str, **kw: Any) -> dict[str, Any]:
        b = {
            "workloadIdentityToken": wat,
            "resourceCredentialProviderName": self.provider,
            "scopes": SCOPES,
            "oauth2Flow": "USER_FEDERATION",
        }
        b.update(kw)
        return b

    def token(self, wat: str, **kw: Any) -> dict[str, Any]:
        out = self.dp.get_resource_oauth2_token(**self.body(wat, **kw))
        if out.get("accessToken"):
            self.server.remember_secret(out["accessToken"])
        return out

    def consent(self, user: str) -> str:
        """Run the whole flow for `user`; returns the WAT. The grant is stored, not yet read."""
        wat = self.wat(user)
        started = self.token(wat, resourceOauth2ReturnUrl=RETURN_URL)
        result = Browser(self.server.url, self.authz.issuer).consent(started["authorizationUrl"], user)
        # The browser brings back the one-time completion URN, not the polling sessionUri.
        completion = result.params.get("session_id")
        assert completion and completion != started["sessionUri"], result.hops
        self.server.dp(self.binding).complete_resource_token_auth(
            sessionUri=completion, userIdentifier={"userId": user}
        )
        return wat


def bearer_token_call(server: Latchkey, body: dict[str, Any]) -> requests.Response:
    admin = server.admin
    assert admin is not None
    return requests.post(
        f"{server.url}/identities/oauth2/token",
        json=body,
        headers={"Authorization": f"Bearer {admin.access_key_id}:{admin.secret_access_key}"},
        timeout=60,
    )


# --------------------------------------------------------------------------- refresh
def test_refresh_with_rotating_refresh_tokens(server: Latchkey, rotating: OidcProvider, cp: Any, dp: Any) -> None:
    v = Vault(server, rotating, cp, dp)
    user = uniq("rot")
    wat = v.consent(user)
    rotating.reset_stats()
    tokens = []
    for _ in range(3):
        t = v.token(wat)["accessToken"]
        assert userinfo(rotating.metadata, t).json()["sub"] == user
        tokens.append(t)
    assert len(set(tokens)) == 3, "each read of a nearly expired grant refreshes it"
    # Each refresh used the newest refresh token: reusing a consumed one would have failed
    # (and made the provider revoke the whole grant).
    assert rotating.grant_count("refresh_token") == 3
    assert rotating.grant_count("refresh_token", "error") == 0


def test_refresh_response_without_refresh_token_keeps_the_old_one(
    server: Latchkey, plain: OidcProvider, cp: Any, dp: Any
) -> None:
    v = Vault(server, plain, cp, dp)
    user = uniq("keep")
    wat = v.consent(user)
    plain.reset_stats()
    plain.set_quirks(omit_refresh_token=True)
    try:
        for _ in range(3):
            assert v.token(wat)["accessToken"]
    finally:
        plain.set_quirks(omit_refresh_token=False)
    assert plain.grant_count("refresh_token") == 3
    assert plain.grant_count("refresh_token", "error") == 0


def test_response_without_expires_in_uses_a_default_lifetime(
    server: Latchkey, plain: OidcProvider, cp: Any, dp: Any
) -> None:
    v = Vault(server, plain, cp, dp)
    user = uniq("noexp")
    plain.set_quirks(omit_expires_in=True)
    try:
        wat = v.consent(user)
    finally:
        plain.set_quirks(omit_expires_in=False)
    plain.reset_stats()
    first = v.token(wat)["accessToken"]
    assert v.token(wat)["accessToken"] == first
    assert plain.grant_count("refresh_token") == 0
    listed = [
        json.loads(line)
        for line in server.cli("admin", "grants", "list", "--workload", v.workload, "--user", user).stdout.splitlines()
    ]
    assert len(listed) == 1
    # Never "forever": the default lifetime (3600 s) from now.
    assert abs(listed[0]["expiresTime"] - (time.time() + 3600)) < 120
    assert listed[0]["hasRefreshToken"] is True
    assert first not in json.dumps(listed)


def test_invalid_grant_asks_the_user_again(server: Latchkey, rotating: OidcProvider, cp: Any, dp: Any) -> None:
    v = Vault(server, rotating, cp, dp)
    user = uniq("revoked")
    wat = v.consent(user)
    assert v.token(wat)["accessToken"]  # refreshed once: we hold the newest refresh token
    # The provider forgets the grant (as when the user revokes the app there): restarting
    # it drops every token it issued, so our refresh token is now unknown → invalid_grant.
    rotating.restart()
    out = v.token(wat)
    assert "accessToken" not in out
    assert out.get("authorizationUrl") and out["sessionStatus"] == "IN_PROGRESS"
    assert rotating.grant_count("refresh_token", "error") == 1
    listed = json.loads(server.cli("admin", "grants", "list", "--workload", v.workload, "--user", user).stdout)
    assert listed["state"] == "needs-consent"
    # Consent again → works again.
    wat = v.consent(user)
    assert v.token(wat)["accessToken"]


def test_admin_grants_revoke_calls_the_provider(server: Latchkey, plain: OidcProvider, cp: Any, dp: Any) -> None:
    v = Vault(server, plain, cp, dp)
    user = uniq("adminrevoke")
    wat = v.consent(user)
    token = v.token(wat)["accessToken"]
    assert userinfo(plain.metadata, token).status_code == 200
    plain.reset_stats()
    out = server.cli(
        "admin", "grants", "revoke", "--workload", v.workload, "--user", user, "--provider", v.provider,
        "--outbound-allow-private-addresses", "true",
    ).stdout
    report = json.loads(out)
    assert report["provider_endpoint"] is True
    assert report["revoked_at_provider"] == ["refresh_token", "access_token"], report
    assert plain.stats()["revocations"] == 2
    assert userinfo(plain.metadata, token).status_code == 401
    assert token not in out
    # Gone here too: the next call asks for consent (after the other replicas' cache TTL).
    time.sleep(5.5)
    assert "accessToken" not in v.token(wat)
    with pytest.raises(AssertionError):
        server.cli("admin", "grants", "revoke", "--workload", v.workload, "--user", user, "--provider", v.provider)


# --------------------------------------------------------------------------- replicas
@pytest.fixture(scope="module")
def replicas(
    server: Latchkey, latchkey_data_dir: Path, db_url: str | None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Latchkey]]:
    """Two more replicas of the module's server: same database, same public URL (behind one
    load balancer they are one service: WATs of one are valid at the other)."""
    servers = [
        Latchkey(
            latchkey_data_dir,
            tmp_path_factory.mktemp(f"replica-{i}"),
            db_url=db_url,
            extra_env={"LATCHKEY_REFRESH_LEASE_SECONDS": "3", "LATCHKEY_PUBLIC_URL": server.url},
        ).start()
        for i in range(2)
    ]
    yield servers
    for s in servers:
        s.stop()


def test_two_replicas_refresh_exactly_once(
    server: Latchkey, racing: OidcProvider, cp: Any, dp: Any, replicas: list[Latchkey]
) -> None:
    rotating = racing
    """200 concurrent requests on an expired grant, split over two replicas sharing the
    database, against a provider that rotates refresh tokens: one upstream refresh, every
    caller gets the same valid token, nobody is asked to consent again."""
    v = Vault(server, rotating, cp, dp)
    rotating.set_quirks(code_expires_in=1)  # after Vault(): registering restarts the provider
    user = uniq("race")
    wat = v.consent(user)
    rotating.reset_stats()
    body = v.body(wat)
    with ThreadPoolExecutor(max_workers=64) as pool:
        responses = list(pool.map(lambda i: bearer_token_call(replicas[i % 2], body), range(200)))
    statuses = [r.status_code for r in responses]
    assert statuses == [200] * 200, {s: statuses.count(s) for s in set(statuses)}
    tokens = {r.json().get("accessToken") for r in responses}
    assert None not in tokens, "somebody was sent to consent again"
    for t in tokens:
        server.remember_secret(t)
    assert len(tokens) == 1, "callers got different tokens: more than one refresh happened"
    assert rotating.grant_count("refresh_token") == 1
    assert rotating.grant_count("refresh_token", "error") == 0
    assert userinfo(rotating.metadata, tokens.pop()).json()["sub"] == user


def test_replica_killed_mid_refresh_loses_nothing(
    server: Latchkey,
    racing: OidcProvider,
    cp: Any,
    dp: Any,
    latchkey_data_dir: Path,
    db_url: str | None,
    tmp_path_factory: pytest.TempPathFactory,
    replicas: list[Latchkey],
) -> None:
    rotating = racing
    v = Vault(server, rotating, cp, dp)
    rotating.set_quirks(code_expires_in=1)
    user = uniq("kill9")
    wat = v.consent(user)
    victim = Latchkey(
        latchkey_data_dir,
        tmp_path_factory.mktemp("replica-victim"),
        db_url=db_url,
        extra_env={"LATCHKEY_REFRESH_LEASE_SECONDS": "3", "LATCHKEY_PUBLIC_URL": server.url},
    ).start()
    rotating.reset_stats()
    rotating.set_quirks(token_delay_ms=4000, code_expires_in=1)
    try:
        t = threading.Thread(target=lambda: _swallow(lambda: bearer_token_call(victim, v.body(wat))), daemon=True)
        t.start()
        time.sleep(1.0)  # the victim holds the lease and waits on the provider
        assert victim.proc is not None
        victim.proc.kill()  # SIGKILL: no cleanup, the lease stays until it expires
        victim.proc.wait(10)
        rotating.set_quirks(token_delay_ms=0, code_expires_in=1)
        started = time.monotonic()
        r = bearer_token_call(replicas[0], v.body(wat))
        waited = time.monotonic() - started
    finally:
        rotating.set_quirks(token_delay_ms=0)
        victim.stop()
    assert r.status_code == 200, r.text
    token = r.json()["accessToken"]
    server.remember_secret(token)
    assert userinfo(rotating.metadata, token).json()["sub"] == user
    # The dead replica's request never reached the provider; the survivor waited for the
    # lease to lapse and refreshed with the still-valid refresh token.
    assert rotating.grant_count("refresh_token") == 1
    assert rotating.grant_count("refresh_token", "error") == 0
    assert waited >= 1.0


def _swallow(f: Any) -> None:
    try:
        f()
    except Exception:
        pass


def test_resource_indicator_is_kept_on_refresh(server: Latchkey, rotating: OidcProvider, cp: Any, dp: Any) -> None:
    """RFC 8707: `resource` goes on the authorization request, the code exchange and every
    refresh, so the refreshed token is still for that resource (audience)."""
    import jwt as pyjwt

    v = Vault(server, rotating, cp, dp)
    user = uniq("resource")
    resource = "https://api.example.test/"
    wat = v.wat(user)
    started = v.token(wat, resourceOauth2ReturnUrl=RETURN_URL, resources=[resource], scopes=["api:read"])
    first_hop = Browser(server.url, rotating.issuer).get(started["authorizationUrl"])
    assert f"resource={requests.utils.quote(resource, safe='')}" in first_hop.headers["Location"]
    result = Browser(server.url, rotating.issuer).consent(started["authorizationUrl"], user)
    server.dp(v.binding).complete_resource_token_auth(sessionUri=result.params["session_id"], userIdentifier={"userId": user})
    rotating.reset_stats()
    for _ in range(2):  # 30 s tokens: each read refreshes
        token = v.token(wat, resources=[resource], scopes=["api:read"])["accessToken"]
        claims = pyjwt.decode(token, options={"verify_signature": False})
        assert claims["aud"] == resource and claims["sub"] == user
        assert "api:read" in claims["scope"].split()
    assert rotating.grant_count("refresh_token") == 2
    # Another resource is another consent, not this grant.
    other = v.token(wat, resources=["https://other.example.test/"], scopes=["api:read"], resourceOauth2ReturnUrl=RETURN_URL)
    assert "accessToken" not in other
