"""The gateway (`latchkey serve gateway`, the ALB replacement) end to end with real parts:
`oidc-provider` as the identity provider (its own client per gateway, redirect URI
`{public_url}/oauth2/idpresponse`), the real binary, an upstream on loopback that echoes
what it received (and streams SSE), `latchkey serve binding` behind the gateway verifying
the gateway's ALB-format claims with the gateway's own key endpoint, and once, real
headless Chromium (tests/browser, playwright-core driving Debian's /usr/bin/chromium).

Then the named attacks, one test each: forged `x-amzn-oidc-*` headers, a tampered session
cookie, a replayed / wrong / foreign `state` at the callback, open redirects through the
return path, an idle and an absolute session timeout, an oversized header, a rate-limit
burst, path traversal, and secrets in the access log.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import parse_qs, urlencode, urlparse, urlunparse

import pytest
import requests
from cryptography.exceptions import InvalidSignature

from binding_harness import BindingService, KeyServer, alb_token
from flows_harness import running_provider, userinfo
from gateway_harness import (
    AMZN_HEADERS,
    BROWSER_HEADERS,
    CALLBACK_PATH,
    GATEWAY_ARN,
    LOGOUT_PATH,
    SESSION_COOKIE,
    Gateway,
    Upstream,
    WebSocketEcho,
    read_head,
    ws_accept,
    ws_frame,
    ws_read_frame,
    browser,
    copy_set_cookies,
    follow,
    free_port,
    login,
    origin,
    raw_request,
    to_callback,
    verify_alb_token,
)
from lk_harness import Latchkey
from oidc import OidcProvider, drive_consent

ROOT = Path(__file__).resolve().parents[2]
BROWSER_DIR = ROOT / "tests" / "browser"
ARTIFACTS = ROOT / ".test-data" / "artifacts"


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    yield from running_provider(tmp_path_factory, "gw-idp")


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    up = Upstream()
    yield up
    up.stop()


@pytest.fixture(scope="module")
def gateways(tmp_path_factory: pytest.TempPathFactory, idp: OidcProvider) -> Iterator[Callable[..., Gateway]]:
    """Start gateways (each with its own client at `idp`); all stopped after the module."""
    started: list[Gateway] = []

    def make(routes: list[str], extra: list[str] | None = None, name: str = "gw") -> Gateway:
        gw = Gateway(tmp_path_factory.mktemp(name), idp, routes, client_id=uid(name), extra_args=extra)
        started.append(gw)
        return gw.start()

    yield make
    for gw in started:
        gw.stop()


@pytest.fixture(scope="module")
def gateway(gateways: Callable[..., Gateway], upstream: Upstream) -> Gateway:
    return gateways([f"/app={upstream.url};login", f"/api={upstream.url};api", f"/public={upstream.url};public"], name="gw-main")


def echo(r: requests.Response) -> dict[str, Any]:
    assert r.status_code == 200, (r.status_code, r.headers, r.text[:500])
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    return r.json()


def header(seen: dict[str, Any], name: str) -> list[str]:
    return seen["headers"].get(name.lower(), [])


def assert_redirects_to_idp(r: requests.Response, idp: OidcProvider) -> None:
    assert r.status_code in (302, 303), (r.status_code, r.text[:300])
    assert r.headers["Location"].startswith(idp.issuer + "/"), r.headers["Location"]


# --------------------------------------------------------------------------- login
def test_login_forwards_alb_signed_claims_verified_against_the_key_endpoint(gateway: Gateway, idp: OidcProvider, upstream: Upstream) -> None:
    user = uid("alice")
    first = requests.get(gateway.url + "/app/hello?x=1", headers=BROWSER_HEADERS, allow_redirects=False, timeout=10)
    assert_redirects_to_idp(first, idp)
    q = parse_qs(urlparse(first.headers["Location"]).query)
    assert q["client_id"] == [gateway.client_id] and q["redirect_uri"] == [gateway.redirect_uri]
    assert q["code_challenge_method"] == ["S256"] and q["state"][0] and q["nonce"][0]

    jar, callback = to_callback(gateway, user, "/app/hello?x=1")
    cb = jar.get(callback, allow_redirects=False, timeout=10)
    assert cb.status_code in (302, 303), (cb.status_code, cb.text[:300])
    back = cb.headers["Location"]
    assert back in ("/app/hello?x=1", gateway.url + "/app/hello?x=1"), back
    # The session cookie: HttpOnly, SameSite=Lax, host-wide, not readable by scripts.
    [set_cookie] = [c for c in cb.raw.headers.getlist("Set-Cookie") if c.startswith(SESSION_COOKIE + "=")]
    attrs = [a.strip().lower() for a in set_cookie.split(";")[1:]]
    assert "httponly" in attrs and "samesite=lax" in attrs and "path=/" in attrs, attrs
    final = jar.get(gateway.url + "/app/hello?x=1", allow_redirects=False, timeout=10)
    seen = echo(final)
    assert seen["path"] == "/app/hello?x=1", "the full original path and query reach the upstream"

    [data] = header(seen, "x-amzn-oidc-data")
    claims = verify_alb_token(data, gateway.alb_key_pem, signer=GATEWAY_ARN, issuer=idp.issuer, client=gateway.client_id)
    assert claims.payload["sub"] == user
    assert claims.payload["email"] == f"{user}@example.test"
    assert claims.payload.get("exp", 0) > time.time()
    assert header(seen, "x-amzn-oidc-identity") == [user]
    [access_token] = header(seen, "x-amzn-oidc-accesstoken")
    who = userinfo(idp.metadata, access_token)
    assert who.status_code == 200 and who.json()["sub"] == user, "the access token is the IdP's, for this user"

    assert header(seen, "x-forwarded-for") == ["127.0.0.1"]
    assert header(seen, "x-forwarded-proto") == ["http"]
    assert header(seen, "x-forwarded-host") == [f"127.0.0.1:{gateway.port}"]
    assert SESSION_COOKIE not in " ".join(header(seen, "cookie")), "the session cookie reached the upstream"

    # The key endpoint: PEM by kid, 404 for a kid it never issued.
    assert b"BEGIN PUBLIC KEY" in gateway.alb_key_pem(claims.header["kid"])
    assert requests.get(f"{gateway.url}/.well-known/alb-keys/{uuid.uuid4()}", timeout=10).status_code == 404

    # The same signature over other claims fails: the verifier is not a rubber stamp.
    head, _, sig = data.split(".")
    other = base64.urlsafe_b64encode(json.dumps({**claims.payload, "sub": "mallory"}).encode()).decode()
    with pytest.raises(InvalidSignature):
        verify_alb_token(f"{head}.{other}.{sig}", gateway.alb_key_pem, signer=GATEWAY_ARN)


def test_api_route_without_session_is_401_and_public_route_needs_none(gateway: Gateway, upstream: Upstream) -> None:
    r = requests.get(gateway.url + "/api/things", allow_redirects=False, timeout=10)
    assert r.status_code == 401, (r.status_code, r.headers)
    assert "Location" not in r.headers
    assert r.headers.get("content-type", "").startswith("application/json")
    # A login route answers 401 JSON, not a redirect, to a request that does not take HTML.
    r = requests.get(gateway.url + "/app/data.json", headers={"Accept": "application/json"}, allow_redirects=False, timeout=10)
    assert r.status_code == 401 and "Location" not in r.headers, (r.status_code, r.headers)
    seen = echo(requests.get(gateway.url + "/public/ping", allow_redirects=False, timeout=10))
    assert not [h for h in AMZN_HEADERS if h in seen["headers"]], "a public route carries no user headers"
    # Nothing configured at / : not found, no redirect to the IdP.
    r = requests.get(gateway.url + "/elsewhere", allow_redirects=False, timeout=10)
    assert r.status_code == 404, r.status_code

    # The api route with a session: the user headers, no redirect.
    lg = login(gateway, uid("api-user"), "/app/")
    seen = echo(lg.session.get(gateway.url + "/api/things", allow_redirects=False, timeout=10))
    assert header(seen, "x-amzn-oidc-identity") and header(seen, "x-amzn-oidc-data")


def test_sse_streams_through_the_gateway(gateway: Gateway, upstream: Upstream) -> None:
    lg = login(gateway, uid("streamer"), "/app/")
    upstream.sent_at.clear()
    received: list[tuple[float, bytes]] = []
    with lg.session.get(gateway.url + "/app/events", stream=True, timeout=15) as r:
        assert r.status_code == 200, r.status_code
        assert r.headers["content-type"].startswith("text/event-stream")
        buf = b""
        for chunk in r.iter_content(chunk_size=None):
            buf += chunk
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                received.append((time.monotonic(), event))
    assert [e for _, e in received] == [f"event: tick\ndata: {i}".encode() for i in range(3)]
    assert len(upstream.sent_at) == 3
    assert received[0][0] < upstream.sent_at[2], (
        "the first event reached the client only after the upstream had sent the last one: the gateway buffers"
    )
    assert received[0][0] < upstream.sent_at[0] + 0.15, "the first event was held back"


def signed_in(gateway: Gateway, s: requests.Session) -> bool:
    """Whether the browser's session opens an `api` route (200) rather than 401."""
    r = s.get(gateway.url + "/api/whoami", headers={"Accept": "application/json"}, allow_redirects=False, timeout=10)
    assert r.status_code in (200, 401), r.status_code
    return r.status_code == 200


def test_logout_ends_the_session(gateway: Gateway, idp: OidcProvider) -> None:
    lg = login(gateway, uid("leaver"), "/app/")
    cookie = lg.cookie
    assert cookie
    # GET shows a page with a sign-out button; nothing happens yet.
    r = lg.session.get(gateway.url + LOGOUT_PATH, allow_redirects=False, timeout=10)
    assert r.status_code == 200 and '<form method="post" action="/oauth2/logout">' in r.text, (r.status_code, r.text[:300])
    assert signed_in(gateway, lg.session)
    # The page's form, as a browser submits it (with the page's Origin).
    r = lg.session.post(gateway.url + LOGOUT_PATH, headers={"Origin": gateway.url}, allow_redirects=False, timeout=10)
    assert r.status_code == 303, r.status_code
    assert r.headers["Location"].startswith(idp.metadata["end_session_endpoint"]), r.headers["Location"]
    assert not signed_in(gateway, lg.session)
    assert_redirects_to_idp(lg.session.get(gateway.url + "/app/", allow_redirects=False, timeout=10), idp)
    # The old cookie value, replayed by someone who copied it, is dead too.
    r = requests.get(gateway.url + "/app/", headers=BROWSER_HEADERS, cookies={SESSION_COOKIE: cookie}, allow_redirects=False, timeout=10)
    assert_redirects_to_idp(r, idp)


def test_logout_from_another_site_is_refused(gateway: Gateway, idp: OidcProvider) -> None:
    """Logout CSRF (issue 12, item 11): another site's link, image or form must not end the
    session. A cross-site top-level GET used to sign the user out."""
    lg = login(gateway, uid("csrf-target"), "/app/")
    assert signed_in(gateway, lg.session)
    # A link or redirect on another site: a top-level cross-site navigation.
    r = lg.session.get(gateway.url + LOGOUT_PATH, headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate",
                                                          "Referer": "https://evil.example/"}, allow_redirects=False, timeout=10)
    assert r.status_code == 200, r.status_code
    assert SESSION_COOKIE not in r.headers.get("Set-Cookie", ""), r.headers
    assert signed_in(gateway, lg.session), "a cross-site GET ended the session"
    # Forms elsewhere (another site, or a same-site page on another port, which does get
    # the SameSite=Lax cookie), and POSTs that prove nothing.
    for headers in ({"Origin": "https://evil.example"}, {"Origin": "http://127.0.0.1:1"}, {"Origin": "null"},
                    {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}, {},
                    {"Origin": "https://evil.example", "Sec-Fetch-Site": "same-origin"}):
        r = lg.session.post(gateway.url + LOGOUT_PATH, headers=headers, data={"x": "1"}, allow_redirects=False, timeout=10)
        assert r.status_code == 403 and "Sign-out not confirmed" in r.text, (headers, r.status_code, r.text[:300])
        assert "Set-Cookie" not in r.headers, (headers, r.headers)
        assert signed_in(gateway, lg.session), f"{headers} ended the session"


def test_a_subject_with_a_newline_is_refused_and_forges_no_log_line(gateway: Gateway, idp: OidcProvider) -> None:
    """Log forging (issue 12, item 8, the gateway's part): the provider's `sub` is the
    login name here; one with a newline used to be signed in and logged as is."""
    forged_line = f"INFO latchkey: signed in sub=admin-{uuid.uuid4().hex[:6]}"
    s = browser()
    result = drive_consent(gateway.url + "/app/", "eve\n" + forged_line, session=s, provider=idp, stop_at_callback=True)
    assert result.callback_url and result.callback_url.startswith(gateway.url + CALLBACK_PATH), result
    r = s.get(result.callback_url, allow_redirects=False, timeout=10)
    assert r.status_code == 403 and "Sign-in refused" in r.text and "control characters" in r.text, (r.status_code, r.text[:300])
    assert SESSION_COOKIE not in r.cookies
    assert not signed_in(gateway, s)
    time.sleep(0.3)
    out = gateway.output()
    assert "subject contains control characters" in out, out[-2000:]
    assert not any(line.lstrip().startswith(forged_line) or line.startswith(forged_line) for line in out.splitlines()), out[-2000:]
    assert forged_line not in out, "the forged text reached the gateway's output"


# --------------------------------------------------------------------------- binding behind the gateway
@pytest.fixture(scope="module")
def binding_behind_gateway(
    server: Latchkey, idp: OidcProvider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[BindingService, Gateway]]:
    """`latchkey serve binding` trusting the gateway's key endpoint and signer, routed at
    /oauth2/session-binding (the gateway forwards the full path). The gateway's port is
    picked first, so the binding service knows the key URL before the gateway starts."""
    port = free_port()
    key_url = f"http://127.0.0.1:{port}/.well-known/alb-keys/{{kid}}"
    binding = BindingService(server, tmp_path_factory.mktemp("gw-binding"), ["--alb-signer", GATEWAY_ARN, "--alb-key-url-template", key_url])
    gw = Gateway(
        tmp_path_factory.mktemp("gw-b"), idp, [f"/oauth2/session-binding={binding.url};login"], client_id=uid("gw-binding"), port=port
    )
    try:
        gw.start()
        yield binding, gw
    finally:
        gw.stop()
        binding.stop()


def test_binding_service_accepts_the_user_the_gateway_signed_in(binding_behind_gateway: tuple[BindingService, Gateway]) -> None:
    binding, gw = binding_behind_gateway
    session_id = "urn:ietf:params:oauth:request_uri:" + uuid.uuid4().hex
    path = "/oauth2/session-binding?" + urlencode({"session_id": session_id})
    user = uid("bound")
    lg = login(gw, user, path)
    page = lg.final
    assert page is not None and lg.final.url.startswith(gw.url + "/oauth2/session-binding"), lg.hops
    # Verified user + a link the identity service does not know: "Unknown link" (404),
    # where an unverified one would get "Not signed in" (401).
    assert page.status_code == 404 and "Unknown link" in page.text, (page.status_code, page.text[:300])
    assert "Not signed in" not in page.text

    # Control: the same request straight to the binding service with claims signed by
    # another key (same kid and signer) is not a signed-in user.
    other = KeyServer()
    try:
        key = other.new_key("gw-forged-kid")
        forged = alb_token(key, "gw-forged-kid", user, signer=GATEWAY_ARN)
        r = requests.get(binding.url + path, headers={"x-amzn-oidc-data": forged}, timeout=10)
        assert r.status_code == 401 and "Not signed in" in r.text, (r.status_code, r.text[:300])
    finally:
        other.httpd.shutdown()
    log = binding.log.read_text()
    assert "unknown-link" in log and "source=alb" in log.replace('"', "").replace("source: ", "source="), log[-2000:]


# --------------------------------------------------------------------------- real browser
def test_login_in_headless_chromium(gateway: Gateway) -> None:
    chromium = os.environ.get("LATCHKEY_TEST_CHROMIUM", "/usr/bin/chromium")
    assert shutil.which(chromium), f"{chromium} is missing: apt-get install -y chromium (scripts/test does)"
    assert (BROWSER_DIR / "node_modules" / "playwright-core").is_dir(), (
        "tests/browser/node_modules is missing: npm ci --prefix tests/browser (scripts/test does)"
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "gateway-login.png"
    shot.unlink(missing_ok=True)
    user = uid("chromium")
    cp = subprocess.run(
        [
            "node", str(BROWSER_DIR / "gateway_login.mjs"),
            "--url", gateway.url + "/app/page",
            "--user", user,
            "--screenshot", str(shot),
            "--expect-text", f"Hello {user}",
            "--chromium", chromium,
            "--logout-check", gateway.url + "/api/whoami",
        ],
        cwd=BROWSER_DIR, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )
    lines = [l for l in cp.stdout.splitlines() if l.startswith("{")]
    assert lines, f"no result from the browser (exit {cp.returncode}): {cp.stdout[-2000:]} {cp.stderr[-2000:]}"
    result = json.loads(lines[-1])
    assert cp.returncode == 0 and "error" not in result, result
    assert result["finalUrl"] == gateway.url + "/app/page", result
    assert f"Hello {user} from the upstream" in result["text"], result["text"]
    assert any(h.startswith(gateway.provider.issuer + "/interaction/") for h in result["hops"]), result["hops"]
    assert shot.is_file() and shot.stat().st_size > 1000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Sign-out in a real browser (issue 12, item 11): a cross-site link shows the
    # confirmation page and a same-site form on another origin is refused, both leaving
    # the session; the gateway's own button signs out and goes on to the provider.
    out = result["logout"]
    assert out["before"] is True, out
    assert out["crossSiteGet"]["status"] == 200 and out["crossSiteGet"]["hasSignOutButton"], out
    assert out["crossSiteGet"]["stillSignedIn"] is True, f"a cross-site link signed the user out: {out}"
    assert out["sameSitePost"]["status"] == 403 and "Sign-out not confirmed" in out["sameSitePost"]["text"], out
    assert out["sameSitePost"]["origin"] not in (None, gateway.url), out
    assert out["sameSitePost"]["stillSignedIn"] is True, f"another origin's form signed the user out: {out}"
    assert out["ownPost"]["status"] == 303, out
    assert out["ownPost"]["origin"] == gateway.url, f"the sign-out page's form did not send its origin: {out}"
    assert out["ownPost"]["location"].startswith(gateway.provider.issuer), out
    assert out["ownPost"]["url"].startswith(gateway.provider.issuer), out
    assert out["ownPost"]["stillSignedIn"] is False, out


# --------------------------------------------------------------------------- attacks
def test_forged_amzn_headers_from_the_client_are_stripped(gateway: Gateway, upstream: Upstream) -> None:
    lg = login(gateway, uid("honest"), "/app/")
    forged = {
        "x-amzn-oidc-data": "eyJmb3JnZWQiOnRydWV9.eyJzdWIiOiJtYWxsb3J5In0=.AAAA",
        "X-Amzn-Oidc-Identity": "mallory",
        "X-AMZN-OIDC-ACCESSTOKEN": "forged-access-token",
    }
    seen = echo(lg.session.get(gateway.url + "/app/whoami", headers=forged, timeout=10))
    for name in AMZN_HEADERS:
        values = header(seen, name)
        assert len(values) == 1, f"{name}: {values}"
    assert header(seen, "x-amzn-oidc-identity") != ["mallory"]
    assert header(seen, "x-amzn-oidc-data")[0] != forged["x-amzn-oidc-data"]
    assert header(seen, "x-amzn-oidc-accesstoken")[0] != forged["X-AMZN-OIDC-ACCESSTOKEN"]
    # Without a session, on a public route: no x-amzn-oidc-* at all.
    seen = echo(requests.get(gateway.url + "/public/whoami", headers=forged, timeout=10))
    assert not [h for h in AMZN_HEADERS if h in seen["headers"]], seen["headers"]


def test_tampered_session_cookie_is_sent_to_login(gateway: Gateway, idp: OidcProvider, upstream: Upstream) -> None:
    lg = login(gateway, uid("victim"), "/app/")
    cookie = lg.cookie
    assert cookie and len(cookie) > 16
    before = len(upstream.seen)
    mid = len(cookie) // 2
    flipped = cookie[:mid] + ("A" if cookie[mid] != "A" else "B") + cookie[mid + 1 :]
    for bad in (flipped, cookie[:-2], cookie + "AA", "x" * len(cookie), ""):
        r = requests.get(gateway.url + "/app/", headers=BROWSER_HEADERS, cookies={SESSION_COOKIE: bad}, allow_redirects=False, timeout=10)
        assert_redirects_to_idp(r, idp)
        r = requests.get(gateway.url + "/api/", cookies={SESSION_COOKIE: bad}, allow_redirects=False, timeout=10)
        assert r.status_code == 401, r.status_code
    assert len(upstream.seen) == before, "a request with a tampered cookie reached the upstream"
    # The genuine cookie still works.
    assert echo(requests.get(gateway.url + "/app/", cookies={SESSION_COOKIE: cookie}, timeout=10))


def test_replayed_state_at_the_callback_is_refused(gateway: Gateway, idp: OidcProvider) -> None:
    victim, callback = to_callback(gateway, uid("replay"))
    stolen_jar = browser()
    stolen_jar.cookies.update(victim.cookies)  # an attacker with the callback URL and the cookies
    ok = victim.get(callback, allow_redirects=False, timeout=10)
    assert ok.status_code in (302, 303) and SESSION_COOKIE in ok.cookies, (ok.status_code, ok.text[:200])

    again = victim.get(callback, allow_redirects=False, timeout=10)
    assert 400 <= again.status_code < 500, again.status_code
    assert SESSION_COOKIE not in again.cookies, "a replayed callback set a session"
    replay = stolen_jar.get(callback, allow_redirects=False, timeout=10)
    assert 400 <= replay.status_code < 500, replay.status_code
    assert SESSION_COOKIE not in replay.cookies
    stolen_jar.cookies.pop(SESSION_COOKIE, None)
    assert_redirects_to_idp(stolen_jar.get(gateway.url + "/app/", allow_redirects=False, timeout=10), idp)


def _with_query(url: str, **changes: str) -> str:
    u = urlparse(url)
    q = {k: v[0] for k, v in parse_qs(u.query).items()}
    q.update(changes)
    return urlunparse(u._replace(query=urlencode(q)))


def test_wrong_state_at_the_callback_is_refused(gateway: Gateway, idp: OidcProvider) -> None:
    jar, callback = to_callback(gateway, uid("wrongstate"))
    for state in ("not-the-state", "", "A" * 2000):
        r = jar.get(_with_query(callback, state=state), allow_redirects=False, timeout=10)
        assert 400 <= r.status_code < 500, (state[:10], r.status_code)
        assert SESSION_COOKIE not in r.cookies
    no_state = urlparse(callback)
    q = {k: v[0] for k, v in parse_qs(no_state.query).items() if k != "state"}
    r = jar.get(urlunparse(no_state._replace(query=urlencode(q))), allow_redirects=False, timeout=10)
    assert 400 <= r.status_code < 500 and SESSION_COOKIE not in r.cookies, r.status_code
    assert_redirects_to_idp(jar.get(gateway.url + "/app/", allow_redirects=False, timeout=10), idp)


def test_callback_opened_in_another_browser_is_refused(gateway: Gateway, idp: OidcProvider) -> None:
    """Login CSRF / session fixation: the attacker logs in as themself, stops before the
    callback and gets the victim's browser to open it. The state must be bound to the
    browser that started the login (as an ALB's AWSELBAuthSessionCookie nonce is)."""
    _, callback = to_callback(gateway, uid("attacker"))
    victim = browser()
    r = victim.get(callback, allow_redirects=False, timeout=10)
    assert 400 <= r.status_code < 500, f"the victim's browser was signed in as the attacker ({r.status_code})"
    assert SESSION_COOKIE not in r.cookies


OPEN_REDIRECT_TARGETS = ["//evil.example", "https://evil.example", "/\\evil.example", "/%2F%2Fevil.example", "//evil.example/app/"]


@pytest.fixture(scope="module")
def catch_all_gateway(gateways: Callable[..., Gateway], upstream: Upstream) -> Gateway:
    return gateways([f"/={upstream.url};login"], name="gw-catchall")


@pytest.mark.parametrize("target", OPEN_REDIRECT_TARGETS)
def test_no_open_redirect_through_the_return_path(catch_all_gateway: Gateway, idp: OidcProvider, target: str) -> None:
    gw = catch_all_gateway
    first = raw_request(gw.url, target)
    if 400 <= first.status < 500:
        return  # refused outright: nothing to redirect to
    assert first.status in (302, 303), first.status
    location = first.header("Location") or ""
    assert location.startswith(idp.issuer + "/"), f"{target!r} sent the browser to {location!r}"
    s = browser()
    copy_set_cookies(s, first)
    result = drive_consent(location, uid("redirected"), session=s, provider=idp, stop_at_callback=True)
    assert result.callback_url and result.callback_url.startswith(gw.url + CALLBACK_PATH), result
    r = s.get(result.callback_url, allow_redirects=False, timeout=10)
    assert r.status_code in (302, 303), r.status_code
    back = r.headers["Location"]
    assert back.startswith("/") and not back.startswith("//") and not back.startswith("/\\") or back.startswith(gw.url + "/"), (
        f"after login {target!r} sent the browser to {back!r}"
    )
    assert "evil.example" not in urlparse(back if "://" in back else gw.url + back).netloc
    final, urls = follow(s, gw.url + back if back.startswith("/") else back, allowed_origins={gw.url})
    assert all(origin(u) == gw.url for u in urls), urls


@pytest.fixture(scope="module")
def short_session_gateway(gateways: Callable[..., Gateway], upstream: Upstream) -> Gateway:
    return gateways(
        [f"/app={upstream.url};login"],
        ["--session-idle-seconds", "2", "--session-absolute-seconds", "5"],
        name="gw-short",
    )


def test_idle_session_expires(short_session_gateway: Gateway, idp: OidcProvider) -> None:
    gw = short_session_gateway
    lg = login(gw, uid("idle"), "/app/")
    assert echo(lg.session.get(gw.url + "/app/", allow_redirects=False, timeout=10))
    time.sleep(3.2)
    assert_redirects_to_idp(lg.session.get(gw.url + "/app/", allow_redirects=False, timeout=10), idp)


def test_absolute_session_lifetime_ends_an_active_session(short_session_gateway: Gateway, idp: OidcProvider) -> None:
    gw = short_session_gateway
    lg = login(gw, uid("busy"), "/app/")
    started = time.monotonic()
    statuses = []
    while time.monotonic() - started < 7:
        r = lg.session.get(gw.url + "/app/", allow_redirects=False, timeout=10)
        statuses.append((round(time.monotonic() - started, 1), r.status_code))
        if r.status_code != 200:
            assert_redirects_to_idp(r, idp)
            break
        time.sleep(1)
    assert statuses[0][1] == 200 and statuses[-1][1] in (302, 303), statuses
    assert statuses[-1][0] >= 4, f"ended before the absolute lifetime: {statuses}"


def test_oversized_header_is_refused(gateway: Gateway, upstream: Upstream) -> None:
    before = len(upstream.seen)
    big = "a" * (64 * 1024)
    try:
        r = raw_request(gateway.url, "/public/big", headers={"Cookie": f"junk={big}"})
        status = r.status
    except (ConnectionError, OSError) as e:  # pragma: no cover - reported below
        pytest.fail(f"the gateway dropped the connection instead of answering 431/400: {e!r}")
    assert status in (431, 400), status
    assert len(upstream.seen) == before


def test_upstream_connections_are_reused_and_a_closed_one_is_replaced(gateway: Gateway, upstream: Upstream) -> None:
    s = requests.Session()
    before = len(upstream.seen)
    for i in range(20):
        assert s.get(f"{gateway.url}/public/reuse/{i}", timeout=10).status_code == 200
    ports = {seen.client_port for seen in upstream.seen[before:]}
    # One client connection is served by one worker, which keeps one warm connection.
    assert len(ports) == 1, f"20 sequential requests used {len(ports)} upstream connections"
    # An upstream that drops each connection after answering: every request still works.
    before = len(upstream.seen)
    for i in range(10):
        r = s.get(f"{gateway.url}/public/{i}/close-after", timeout=10)
        assert r.status_code == 200, (i, r.status_code, r.text[:200])
    assert len(upstream.seen) - before == 10


def test_a_safe_request_dropped_by_a_reused_connection_goes_again_and_a_post_does_not(
    gateway: Gateway, upstream: Upstream
) -> None:
    s = requests.Session()
    before = len(upstream.seen)
    # Each GET after the first finds the previous one's connection idle; the upstream
    # drops it unanswered, and the gateway sends the GET once more on a new connection.
    for i in range(3):
        r = s.get(f"{gateway.url}/public/get-{i}/drop-if-reused", timeout=10)
        assert r.status_code == 200, (i, r.status_code, r.text[:200])
    seen = [x.path for x in upstream.seen[before:]]
    assert seen.count("/public/get-1/drop-if-reused") == 2, seen
    assert seen.count("/public/get-2/drop-if-reused") == 2, seen
    # A POST is never repeated behind the client's back: 502, and the upstream saw it once.
    r = s.post(f"{gateway.url}/public/post/drop-if-reused", data=b"pay once", timeout=10)
    assert r.status_code == 502, (r.status_code, r.text[:200])
    posts = [x for x in upstream.seen[before:] if x.path == "/public/post/drop-if-reused"]
    assert len(posts) == 1 and posts[0].method == "POST", posts


def test_sessions_survive_a_restart_sealed_and_a_logout_is_never_undone(
    tmp_path: Path, idp: OidcProvider, upstream: Upstream
) -> None:
    gw = Gateway(tmp_path / "gw-restart", idp, [f"/app={upstream.url};login", f"/api={upstream.url};api"],
                 client_id=uid("gw-restart"))
    snapshot = gw.data_dir / "gateway-sessions.sealed"

    def whoami(lg: Any) -> str | None:
        """The user the upstream is told about, or None when the gateway answered 401."""
        r = requests.get(gw.url + "/api/whoami", headers={"Cookie": f"{SESSION_COOKIE}={lg.cookie}"},
                         allow_redirects=False, timeout=10)
        if r.status_code == 401:
            return None
        seen = echo(r)
        return header(seen, "x-amzn-oidc-identity")[0]

    try:
        gw.start()
        alice, bob = login(gw, uid("alice"), "/app/"), login(gw, uid("bob"), "/app/")
        alice_sub, bob_sub = whoami(alice), whoami(bob)
        assert alice_sub and bob_sub and alice_sub != bob_sub
        access_token = header(echo(requests.get(gw.url + "/api/token", headers={
            "Cookie": f"{SESSION_COOKIE}={alice.cookie}"}, timeout=10)), "x-amzn-oidc-accesstoken")[0]

        # A graceful stop writes the sessions, sealed: nothing in the file reads in clear.
        gw.stop()
        sealed = snapshot.read_bytes()
        assert oct(snapshot.stat().st_mode & 0o777) == "0o600"
        for clear in (access_token, alice_sub, bob_sub, "refresh_token", "access_token", "claims"):
            assert clear.encode() not in sealed, clear
        gw.start()
        assert "sessions restored" in gw.output(), gw.output()[-3000:]
        assert whoami(alice) == alice_sub and whoami(bob) == bob_sub

        # A logout is answered only once the snapshot lacks the session: a crash right
        # after it (SIGKILL, no shutdown) does not bring bob back.
        out = requests.post(gw.url + LOGOUT_PATH, headers={"Cookie": f"{SESSION_COOKIE}={bob.cookie}", "Origin": gw.url},
                            allow_redirects=False, timeout=10)
        assert out.status_code in (302, 303), out.status_code
        assert gw.proc is not None
        gw.proc.kill()
        gw.proc.wait(10)
        gw.proc = None
        gw.start()
        assert whoami(bob) is None, "a logged-out session came back after a crash"
        assert whoami(alice) == alice_sub

        # A snapshot altered on disk is ignored (warning), never half-trusted.
        gw.stop()
        altered = bytearray(snapshot.read_bytes())
        altered[len(altered) // 2] ^= 0x01
        snapshot.write_bytes(bytes(altered))
        gw.start()
        assert "session snapshot ignored" in gw.output()
        assert whoami(alice) is None
    finally:
        gw.stop()


@pytest.fixture(scope="module")
def small_body_gateway(gateways: Callable[..., Gateway], upstream: Upstream) -> Gateway:
    return gateways([f"/public={upstream.url};public"], ["--max-body-bytes", "1024"], name="gw-body")


def test_body_over_the_limit_is_413_declared_or_streamed(small_body_gateway: Gateway, upstream: Upstream) -> None:
    url = small_body_gateway.url + "/public/upload"
    # Within the limit: forwarded whole.
    r = requests.post(url, data=b"a" * 1024, timeout=10)
    assert r.status_code == 200, (r.status_code, r.text[:200])
    assert upstream.last().path == "/public/upload" and upstream.last().body_length == 1024
    # Declared too large: refused before anything reaches the upstream.
    before = len(upstream.seen)
    r = requests.post(url, data=b"a" * 1025, timeout=10)
    assert r.status_code == 413, r.status_code
    assert r.json()["error"] == "payload_too_large"
    assert len(upstream.seen) == before, "an oversized declared body reached the upstream"
    # Streamed (chunked, no length) past the limit: cut off, 413, and the upstream never
    # gets a complete body.
    def chunks() -> Iterator[bytes]:
        for _ in range(64):
            yield b"b" * 512

    r = requests.post(url, data=chunks(), timeout=10)
    assert r.status_code == 413, (r.status_code, r.text[:200])
    assert all(s.body_length <= 1024 for s in upstream.seen[before:]), "the upstream got more than the limit"


@pytest.fixture(scope="module")
def rate_limited_gateway(gateways: Callable[..., Gateway], upstream: Upstream) -> Gateway:
    return gateways([f"/public={upstream.url};public"], ["--rate-limit-per-ip", "5"], name="gw-rate")


def test_rate_limit_burst_gets_429_with_retry_after(rate_limited_gateway: Gateway) -> None:
    s = requests.Session()
    statuses, limited = [], None
    for _ in range(40):
        r = s.get(rate_limited_gateway.url + "/public/x", timeout=10)
        statuses.append(r.status_code)
        if r.status_code == 429 and limited is None:
            limited = r
    assert limited is not None, f"no 429 in a burst of 40: {statuses}"
    assert statuses[:5] == [200] * 5, statuses
    retry = limited.headers.get("Retry-After")
    assert retry is not None and retry.isdigit() and int(retry) >= 1, limited.headers
    time.sleep(int(retry) + 0.2)
    assert s.get(rate_limited_gateway.url + "/public/x", timeout=10).status_code == 200, "the limit never lifts"


@pytest.mark.parametrize("target", ["/app/%2e%2e/secret", "/app/%2E%2E/secret", "/app/.%2e/secret", "/app/../secret", "/public/%2e%2e/app/secret"])
def test_path_traversal_is_refused(gateway: Gateway, upstream: Upstream, target: str) -> None:
    before = len(upstream.seen)
    r = raw_request(gateway.url, target)
    assert r.status == 400, r.status
    assert len(upstream.seen) == before, "a traversal path reached the upstream"


def test_access_log_never_holds_cookies_codes_state_or_tokens(gateway: Gateway, idp: OidcProvider, upstream: Upstream) -> None:
    user = uid("logged")
    jar, callback = to_callback(gateway, user, "/app/secret-free?q=1")
    # Whatever the gateway set before the callback (the cookie binding the login to this
    # browser) is as secret as the session cookie.
    pre_login = {c.name: c.value for c in jar.cookies if c.name.startswith(SESSION_COOKIE)}
    r, _ = follow(jar, callback, allowed_origins={gateway.url})
    seen = echo(r)
    cookie = jar.cookies.get(SESSION_COOKIE)
    assert cookie
    state = parse_qs(urlparse(callback).query)["state"][0]
    code = parse_qs(urlparse(callback).query)["code"][0]
    # More requests that carry secrets: a replayed callback, a bearer, a tampered cookie.
    jar.get(callback, allow_redirects=False, timeout=10)
    jar.get(gateway.url + "/app/again", headers={"Authorization": "Bearer gw-bearer-" + "q" * 20}, timeout=10)
    requests.get(gateway.url + "/app/", headers=BROWSER_HEADERS, cookies={SESSION_COOKIE: cookie + "x"}, allow_redirects=False, timeout=10)
    time.sleep(0.5)  # the access log is written by its own thread
    secrets = {
        "session cookie": cookie,
        "state": state,
        "authorization code": code,
        "access token": header(seen, "x-amzn-oidc-accesstoken")[0],
        "claims header": header(seen, "x-amzn-oidc-data")[0],
        "claims signature": header(seen, "x-amzn-oidc-data")[0].split(".")[2],
        "client secret": gateway.client_secret,
        "bearer": "gw-bearer-" + "q" * 20,
        **{f"cookie {name}": value for name, value in pre_login.items() if value},
    }
    # The access log is written in batches (within about 10 ms): wait for the lines.
    deadline = time.monotonic() + 5
    while not any(e.get("path") == "/app/secret-free" for e in gateway.access_log()) and time.monotonic() < deadline:
        time.sleep(0.05)
    out = gateway.output()
    entries = gateway.access_log()
    assert any(e.get("path") == "/app/secret-free" for e in entries), "no access log line for the request"
    assert any(e.get("path") == CALLBACK_PATH for e in entries), "no access log line for the callback"
    assert any(e.get("user") == user for e in entries), "the access log does not name the user"
    for what, value in secrets.items():
        assert value and value not in out, f"the {what} appeared in the gateway's output"


# --------------------------------------------------------------------------- WebSocket
@pytest.fixture(scope="module")
def ws_gateway(gateways: Callable[..., Gateway]) -> Iterator[tuple[Gateway, WebSocketEcho]]:
    echo_server = WebSocketEcho()
    yield gateways([f"/ws={echo_server.url};api", f"/app={echo_server.url};login"], name="gw-ws"), echo_server
    echo_server.stop()


def ws_handshake(gateway: Gateway, path: str, extra: dict[str, str]) -> tuple[socket.socket, str, dict[str, str], bytes]:
    key = base64.b64encode(os.urandom(16)).decode()
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{gateway.port}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13", *(f"{k}: {v}" for k, v in extra.items())]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    status, headers, rest = read_head(sock)
    headers["expected-accept"] = ws_accept(key)
    return sock, status, headers, rest


def test_websocket_goes_through_for_a_signed_in_user_only(ws_gateway: tuple[Gateway, WebSocketEcho], idp: OidcProvider) -> None:
    gateway, echo_server = ws_gateway
    # Without a session: 401, and the upstream never sees the handshake.
    before = len(echo_server.seen)
    sock, status, _, _ = ws_handshake(gateway, "/ws/chat", {})
    sock.close()
    assert " 401 " in status, status
    assert len(echo_server.seen) == before
    # Signed in: 101 from the upstream, the user's ALB headers on the handshake, forged ones
    # gone, and frames flow both ways.
    lg = login(gateway, "ws-user", "/app/")
    assert lg.cookie, lg.hops
    sock, status, headers, rest = ws_handshake(
        gateway, "/ws/chat", {"Cookie": f"{SESSION_COOKIE}={lg.cookie}", "x-amzn-oidc-identity": "mallory"})
    try:
        assert " 101 " in status, (status, headers)
        assert headers.get("upgrade", "").lower() == "websocket" and headers.get("sec-websocket-accept") == headers["expected-accept"], headers
        assert rest == b""
        seen = echo_server.seen[-1]
        assert seen["x-amzn-oidc-identity"] == "ws-user", seen
        assert seen.get("x-amzn-oidc-data"), seen
        assert SESSION_COOKIE not in seen.get("cookie", ""), seen
        for text in (b"hello", b"second frame"):
            sock.sendall(ws_frame(text, mask=True))
            assert ws_read_frame(sock) == b"echo:" + text
    finally:
        sock.close()
    # An upstream that refuses the handshake: its answer, not a broken connection.
    sock, status, _, _ = ws_handshake(gateway, "/ws/refuse", {"Cookie": f"{SESSION_COOKIE}={lg.cookie}"})
    sock.close()
    assert " 403 " in status, status
    # Only WebSocket handshakes (GET) pass: `Upgrade: h2c`, or `websocket` on a POST, is
    # dropped like any hop-by-hop header.
    for method, upgrade in (("GET", "h2c"), ("POST", "websocket")):
        before = len(echo_server.seen)
        requests.request(method, gateway.url + "/ws/plain", timeout=10, headers={
            "Upgrade": upgrade, "Connection": "Upgrade", "Cookie": f"{SESSION_COOKIE}={lg.cookie}"})
        assert len(echo_server.seen) == before + 1
        seen = echo_server.seen[-1]
        assert "upgrade" not in seen and "upgrade" not in seen.get("connection", "").lower(), (method, seen)
