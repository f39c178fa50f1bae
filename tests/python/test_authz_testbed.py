"""The OAuth testbed itself (needs no Latchkey): runtime clients at oidc-provider, the
scope-checking resource API, the headless consent driver, refresh-token rotation, the
token-endpoint quirks, counters, and delays with a client that hangs up.

Token values never appear in assertion messages: compare `fingerprint()`s and describe
responses with `_why()`.
"""

from __future__ import annotations

import base64
import http.server
import socket
import threading
import time
import uuid
from typing import Any, Iterator
from urllib.parse import parse_qs, urlencode, urlparse

import jwt
import pytest
import requests

from oidc import OidcProvider, Tokens, browser_step_to_callback, drive_consent, fingerprint
from secrets_sweep import SWEEP

API = "https://api.example.test/"


def _why(r: requests.Response) -> str:
    """A response for an assertion message, without tokens."""
    if r.status_code == 200 and "json" in r.headers.get("content-type", ""):
        return f"200 with {sorted(r.json())}"
    return f"{r.status_code} {r.text[:300]}"


def _client(provider: OidcProvider, *, method: str = "client_secret_basic", **kw: Any) -> tuple[str, str]:
    """A runtime client with a Latchkey-like callback URL (nothing listens there)."""
    cid = f"app-{uuid.uuid4().hex[:8]}"
    callback = f"http://127.0.0.1:9/identities/oauth2/callback/{uuid.uuid4()}"
    provider.add_client(cid, f"secret-{uuid.uuid4().hex}", [callback], method, **kw)
    return cid, callback


def _consent(provider: OidcProvider, cid: str, *, user: str = "alice", scope: str, resource: str | None = None) -> Tokens:
    req = provider.authorization_request(client_id=cid, scope=scope, resource=resource)
    callback = browser_step_to_callback(req.url, user, provider=provider)
    q = parse_qs(urlparse(callback).query)
    assert q["state"] == [req.state] and "code" in q, q.keys()
    return provider.exchange_code(req, callback, resource=resource)


# --------------------------------------------------------------------------- clients
def test_runtime_client_is_validated_like_any_client(authz_server: OidcProvider) -> None:
    p = authz_server
    cid, callback = _client(p)
    # Exact redirect_uri: a longer one is refused on the provider's own error page.
    bad = p.authorization_request(client_id=cid, redirect_uri=callback + "x", scope="openid")
    r = drive_consent(bad.url, provider=p)
    assert r.final_url is None and r.response is not None and r.response.status_code == 400, r
    # PKCE is required.
    no_pkce = {"client_id": cid, "response_type": "code", "redirect_uri": callback, "scope": "openid", "state": "s"}
    r = drive_consent(f"{p.metadata['authorization_endpoint']}?{urlencode(no_pkce)}", provider=p)
    assert r.error == "invalid_request" and r.final_url and r.final_url.startswith(callback), r
    # The secret is checked.
    req = p.authorization_request(client_id=cid, scope="openid api:read")
    code = drive_consent(req.url, provider=p, stop_at_callback=True).code
    assert code
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": callback, "code_verifier": req.code_verifier}
    wrong = p.token_request(form, client_id=cid, client_secret="not-the-secret")
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client", _why(wrong)
    # So is the PKCE verifier (the code stays usable after a failed client authentication).
    other = p.token_request({**form, "code_verifier": "x" * 43}, client_id=cid)
    assert other.status_code == 400 and other.json()["error"] == "invalid_grant", _why(other)


def test_replacing_a_client_changes_its_redirect_uri_and_auth_method(authz_server: OidcProvider) -> None:
    p = authz_server
    cid, old = _client(p)
    new = old.replace("/callback/", "/callback/v2-")
    stored = p.add_client(cid, "secret-" + "n" * 32, [new], "client_secret_post")
    assert stored["redirect_uris"] == [new] and "client_secret" not in stored
    r = drive_consent(p.authorization_request(client_id=cid, redirect_uri=old).url, provider=p)
    assert r.response is not None and r.response.status_code == 400, r
    tokens = _consent(p, cid, scope="openid api:read")  # client_secret_post now
    assert tokens["access_token"] and tokens["token_type"] == "Bearer", tokens
    basic = p.client_credentials(client_id=cid, scope="api:read")
    assert basic.status_code == 200, _why(basic)
    forced = p.token_request({"grant_type": "client_credentials"}, client_id=cid, auth_method="client_secret_basic")
    assert forced.status_code == 401 and forced.json()["error"] == "invalid_client", _why(forced)


# --------------------------------------------------------------------------- resource API
def test_resource_api_checks_scopes_by_introspection(authz_server: OidcProvider, resource_api: Any) -> None:
    p = authz_server
    api = resource_api(p)
    cid, _ = _client(p)
    tokens = _consent(p, cid, scope="openid offline_access api:read")
    assert set(tokens) >= {"access_token", "refresh_token", "expires_in", "id_token"}, tokens
    r = api.get("/api/read", tokens["access_token"])
    assert r.status_code == 200, _why(r)
    assert r.json()["sub"] == "alice" and r.json()["client_id"] == cid and r.json()["format"] == "opaque"
    assert "api:read" in r.json()["scope"].split()
    r = api.get("/api/write", tokens["access_token"])
    assert r.status_code == 403 and 'error="insufficient_scope"' in r.headers["WWW-Authenticate"], _why(r)
    for bad in ("not-a-token", tokens["refresh_token"]):  # a refresh token is no access token
        r = api.get("/api/read", bad)
        assert r.status_code == 401 and 'error="invalid_token"' in r.headers["WWW-Authenticate"], _why(r)
    r = api.get("/api/read", None)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer"), _why(r)
    both = _consent(p, cid, user="bob", scope="openid api:read api:write")
    r = api.get("/api/write", both["access_token"])
    assert r.status_code == 200 and r.json()["sub"] == "bob", _why(r)


def test_resource_indicator_gives_jwt_access_tokens(authz_server: OidcProvider, resource_api: Any) -> None:
    p = authz_server
    cid, _ = _client(p)
    api = resource_api(p, audience=API)
    elsewhere = resource_api(p, audience="https://other.example.test/")
    # Client credentials for a resource: a JWT (RFC 9068) whose audience is the resource.
    r = p.client_credentials(client_id=cid, scope="api:read", resource=API)
    assert r.status_code == 200, _why(r)
    at = r.json()["access_token"]
    assert jwt.get_unverified_header(at)["typ"] == "at+jwt"
    claims = jwt.decode(at, options={"verify_signature": False})
    assert claims["aud"] == API and claims["sub"] == cid and claims["scope"] == "api:read"
    ok = api.get("/api/read", at)
    assert ok.status_code == 200 and ok.json()["format"] == "jwt" and ok.json()["client_id"] == cid, _why(ok)
    assert api.get("/api/write", at).status_code == 403
    assert elsewhere.get("/api/read", at).status_code == 401
    forged = at[:-4] + ("AAAA" if not at.endswith("AAAA") else "BBBB")
    assert api.get("/api/read", forged).status_code == 401
    # ... which oidc-provider can neither introspect nor revoke.
    with pytest.raises(RuntimeError, match="unsupported_token_type"):
        p.introspect(at, client_id=cid)
    rv = p.revoke(at, client_id=cid)
    assert rv.status_code == 400 and rv.json()["error"] == "unsupported_token_type", _why(rv)
    assert api.get("/api/read", at).status_code == 200
    # Without a resource: an opaque token, checked by introspection.
    r = p.client_credentials(client_id=cid, scope="api:read")
    assert r.status_code == 200, _why(r)
    assert api.get("/api/read", r.json()["access_token"]).json()["format"] == "opaque"
    # 3LO with a resource: a JWT for the user, again after a refresh with the same resource.
    tokens = _consent(p, cid, scope="openid api:read", resource=API)
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert claims["aud"] == API and claims["sub"] == "alice"
    assert api.get("/api/read", tokens["access_token"]).json()["sub"] == "alice"
    again = p.refresh(tokens["refresh_token"], client_id=cid, resource=API)
    assert again.status_code == 200, _why(again)
    assert jwt.decode(again.json()["access_token"], options={"verify_signature": False})["aud"] == API


def test_revocation_makes_the_token_inactive(authz_server: OidcProvider, resource_api: Any) -> None:
    p = authz_server
    api = resource_api()  # the test's authz_server by default
    cid, _ = _client(p)
    tokens = _consent(p, cid, scope="openid api:read")
    assert api.get("/api/read", tokens["access_token"]).status_code == 200
    p.reset_stats()
    assert p.revoke(tokens["access_token"], "access_token", client_id=cid).status_code == 200
    r = api.get("/api/read", tokens["access_token"])
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["WWW-Authenticate"], _why(r)
    # oidc-provider revokes the whole grant with any of its tokens: the refresh token too.
    r = p.refresh(tokens["refresh_token"], client_id=cid)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant", _why(r)
    assert p.revoke(tokens["refresh_token"], "refresh_token", client_id=cid).status_code == 200  # gone: still 200
    # Revoking the refresh token kills the grant's (opaque) access tokens.
    fresh = _consent(p, cid, scope="openid api:read")
    assert p.revoke(fresh["refresh_token"], client_id=cid).status_code == 200
    assert api.get("/api/read", fresh["access_token"]).status_code == 401
    # Another client may not revoke this client's tokens.
    other, _ = _client(p)
    third = _consent(p, cid, scope="openid api:read")
    assert p.revoke(third["access_token"], client_id=other).status_code == 400
    assert api.get("/api/read", third["access_token"]).status_code == 200
    stats = p.stats()
    assert stats["revocations"] == 3 and stats["revocation"] == {"success": 3, "error": 1}, stats
    assert stats["grants"]["refresh_token"] == {"success": 0, "error": 1}, stats


# --------------------------------------------------------------------------- refresh
def test_rotation_on_new_refresh_token_and_reuse_is_invalid_grant(authz_server_rotating: OidcProvider) -> None:
    p = authz_server_rotating
    cid, _ = _client(p)
    first = _consent(p, cid, scope="openid api:read")
    p.reset_stats()
    r = p.refresh(first["refresh_token"], client_id=cid)
    assert r.status_code == 200, _why(r)
    second = r.json()["refresh_token"]
    assert fingerprint(second) != fingerprint(first["refresh_token"])
    reuse = p.refresh(first["refresh_token"], client_id=cid)
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant", _why(reuse)
    # Reuse of a consumed refresh token revokes the whole grant, the new one too.
    after = p.refresh(second, client_id=cid)
    assert after.status_code == 400 and after.json()["error"] == "invalid_grant", _why(after)
    assert p.stats()["grants"]["refresh_token"] == {"success": 1, "error": 2}


def test_rotation_off_keeps_the_refresh_token(authz_server: OidcProvider) -> None:
    p = authz_server
    cid, _ = _client(p)
    first = _consent(p, cid, scope="api:read")  # plain OAuth: no openid, no id_token
    assert "id_token" not in first and first["refresh_token"], first
    for _ in range(2):
        r = p.refresh(first["refresh_token"], client_id=cid)
        assert r.status_code == 200, _why(r)
        assert fingerprint(r.json()["refresh_token"]) == fingerprint(first["refresh_token"])
        assert fingerprint(r.json()["access_token"]) != fingerprint(first["access_token"])


# --------------------------------------------------------------------------- quirks, stats
def test_quirks_strip_members_of_token_responses(authz_server: OidcProvider) -> None:
    p = authz_server
    cid, _ = _client(p)
    tokens = _consent(p, cid, scope="openid api:read")
    with p.quirks(omit_refresh_token_on_refresh=True, omit_expires_in=True) as q:
        assert q["omit_refresh_token"] is True and q["token_delay_ms"] == 0, q
        r = p.refresh(tokens["refresh_token"], client_id=cid)
        assert r.status_code == 200 and set(r.json()) == {"access_token", "id_token", "scope", "token_type"}, _why(r)
        cc = p.client_credentials(client_id=cid, scope="api:read")
        assert cc.status_code == 200 and "expires_in" not in cc.json(), _why(cc)
    # Rotation is off: the refresh token kept by the client is still good; quirks are reset.
    r = p.refresh(tokens["refresh_token"], client_id=cid)
    assert r.status_code == 200 and {"refresh_token", "expires_in"} <= set(r.json()), _why(r)
    assert p.set_quirks(code_expires_in=2)["code_expires_in"] == 2
    assert _consent(p, cid, scope="openid")["expires_in"] == 2
    with pytest.raises(RuntimeError, match="unknown quirk"):
        p.set_quirks(omit_everything=True)
    with pytest.raises(RuntimeError, match="non-negative integer"):
        p.set_quirks(token_delay_ms=-1)


def test_stats_count_token_requests_by_grant_type(authz_server: OidcProvider) -> None:
    p = authz_server
    cid, callback = _client(p)
    p.reset_stats()
    req = p.authorization_request(client_id=cid, scope="openid api:read")
    code = drive_consent(req.url, provider=p, stop_at_callback=True).code
    assert code
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": callback, "code_verifier": req.code_verifier}
    first = p.token_request(form, client_id=cid)
    assert first.status_code == 200, _why(first)
    assert p.token_request(form, client_id=cid).status_code == 400  # a code is good once...
    # ... and replaying it revokes what it gave (RFC 6749 §4.1.2).
    assert p.introspect(first.json()["access_token"], client_id=cid)["active"] is False
    assert p.client_credentials(client_id=cid, scope="api:read").status_code == 200
    assert p.refresh("no-such-token", client_id=cid).status_code == 400
    stats = p.stats()
    assert stats["grants"] == {
        "authorization_code": {"success": 1, "error": 1},
        "client_credentials": {"success": 1, "error": 0},
        "refresh_token": {"success": 0, "error": 1},
    }, stats
    assert p.grant_count("authorization_code", "error") == 1
    p.reset_stats()
    assert p.stats() == {"grants": {}, "revocations": 0, "revocation": {"success": 0, "error": 0}, "dropped": {}}


def _raw_refresh(p: OidcProvider, cid: str, refresh_token: str) -> socket.socket:
    """Send a refresh request on a raw socket and return the socket (not waiting)."""
    secret = p._clients[cid]["client_secret"]
    body = urlencode({"grant_type": "refresh_token", "refresh_token": refresh_token}).encode()
    auth = base64.b64encode(f"{cid}:{secret}".encode()).decode()
    head = (
        f"POST /token HTTP/1.1\r\nHost: 127.0.0.1:{p.port}\r\nAuthorization: Basic {auth}\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    s = socket.create_connection(("127.0.0.1", p.port), timeout=5)
    s.sendall(head + body)
    return s


def test_delay_then_hang_up_never_reaches_the_provider(authz_server_rotating: OidcProvider) -> None:
    p = authz_server_rotating
    cid, _ = _client(p)
    tokens = _consent(p, cid, scope="openid api:read")
    p.reset_stats()
    p.set_quirks(refresh_delay_ms=800)
    s = _raw_refresh(p, cid, tokens["refresh_token"])
    time.sleep(0.2)
    s.close()  # the client dies while the provider "thinks"
    time.sleep(0.9)
    stats = p.stats()
    assert stats["grants"] == {} and stats["dropped"] == {"refresh_token": 1}, stats
    # refresh_delay_ms leaves other grants alone; a patient client gets its answer.
    started = time.monotonic()
    assert p.client_credentials(client_id=cid, scope="api:read").status_code == 200
    assert time.monotonic() - started < 0.5
    started = time.monotonic()
    r = p.refresh(tokens["refresh_token"], client_id=cid)  # not consumed: it never arrived
    assert r.status_code == 200, _why(r)
    assert time.monotonic() - started >= 0.8
    p.set_quirks(refresh_delay_ms=0, token_delay_ms=300)
    started = time.monotonic()
    assert p.client_credentials(client_id=cid, scope="api:read").status_code == 200
    assert time.monotonic() - started >= 0.3
    assert p.stats()["grants"] == {
        "client_credentials": {"success": 2, "error": 0},
        "refresh_token": {"success": 1, "error": 0},
    }


# --------------------------------------------------------------------------- the browser
class _FakeLatchkey:
    """Latchkey's two browser endpoints, enough for the driver: /authorize redirects to the
    provider, /callback/<id> to the app's return URL with session_id and state."""

    RETURN_URL = "http://127.0.0.1:9/app/after-consent"

    def __init__(self) -> None:
        self.provider_url = ""
        self.calls: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer.calls.append(urlparse(self.path).path)
                q = {k: v[0] for k, v in parse_qs(urlparse(self.path).query).items()}
                if self.path.startswith("/identities/oauth2/authorize"):
                    target = outer.provider_url
                elif self.path.startswith("/identities/oauth2/callback/"):
                    out = {"session_id": "urn:ietf:params:oauth:request_uri:s1", "state": "app-state"}
                    out.update({"error": q["error"]} if "error" in q else {})
                    target = f"{outer.RETURN_URL}?{urlencode(out)}"
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(302)
                self.send_header("Location", target)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        SWEEP.watch_peer(self.url)
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()


@pytest.fixture
def fake_latchkey() -> Iterator[_FakeLatchkey]:
    lk = _FakeLatchkey()
    yield lk
    lk.httpd.shutdown()


def test_driver_walks_a_latchkey_url_to_the_return_url(authz_server: OidcProvider, fake_latchkey: _FakeLatchkey) -> None:
    p, lk = authz_server, fake_latchkey
    cid = f"lk-{uuid.uuid4().hex[:8]}"
    callback = f"{lk.url}/identities/oauth2/callback/{uuid.uuid4()}"
    p.add_client(cid, "secret-" + "l" * 32, [callback])
    authorize = f"{lk.url}/identities/oauth2/authorize?request_uri=urn:x"
    lk.provider_url = p.authorization_request(client_id=cid, scope="openid api:read").url
    r = drive_consent(authorize, "alice")  # provider origin inferred from the first redirect
    assert r.final_url and r.final_url.startswith(lk.RETURN_URL), r
    assert r.session_id == "urn:ietf:params:oauth:request_uri:s1" and r.state == "app-state" and r.error is None
    assert r.callback_url and r.callback_url.startswith(callback + "?code="), r
    methods = [(h.method, urlparse(h.url).path.split("/")[1]) for h in r.hops]
    assert methods[0] == ("GET", "identities") and ("POST", "interaction") in methods, r
    assert lk.calls.count(urlparse(callback).path) == 1
    assert "code=…" in repr(r) and (r.code is None)
    # Up to the callback only: Latchkey's callback is not requested.
    lk.provider_url = p.authorization_request(client_id=cid, scope="openid").url
    cb = browser_step_to_callback(authorize, "alice")
    assert cb.startswith(callback + "?code=") and lk.calls.count(urlparse(callback).path) == 1
    # Denied: the provider sends access_denied to the callback, Latchkey on to the app.
    lk.provider_url = p.authorization_request(client_id=cid, scope="openid").url
    denied = drive_consent(authorize, "alice", approve=False)
    assert denied.error == "access_denied" and "error=access_denied" in (denied.callback_url or ""), denied


def test_two_browsers_have_their_own_sessions(authz_server: OidcProvider) -> None:
    p = authz_server
    cid, _ = _client(p)
    victim, attacker = requests.Session(), requests.Session()

    def logins(r: Any) -> int:
        return sum(1 for h in r.hops if h.method == "POST")

    first = drive_consent(p.authorization_request(client_id=cid, scope="openid").url, "alice", session=victim, provider=p)
    assert first.code and logins(first) == 2, first  # login + consent
    again = drive_consent(p.authorization_request(client_id=cid, scope="openid").url, "alice", session=victim, provider=p)
    assert again.code and logins(again) == 0, again  # logged in, consent remembered
    other = drive_consent(p.authorization_request(client_id=cid, scope="openid").url, "bob", session=attacker, provider=p)
    assert other.code and logins(other) == 2, other
