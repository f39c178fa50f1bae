"""The OAuth flow at debug log level: no code, state, token, verifier or client secret in
the log (the `server` fixture greps every remembered secret at teardown)."""

from __future__ import annotations

import uuid

import pytest

from lk_harness import Latchkey, uniq
from oidc import OidcProvider


@pytest.fixture(scope="module")
def server_log_level() -> str:
    return "debug"


@pytest.fixture(scope="module")
def authz(tmp_path_factory: pytest.TempPathFactory):
    """A third-party authorization server with 30 s access tokens (every read refreshes)."""
    provider = OidcProvider(
        tmp_path_factory.mktemp("authz-secrets"),
        client_id="lk-secrets",
        client_secret="lk-secrets-client-" + uuid.uuid4().hex,
        access_token_ttl=30,
    )
    provider.start()
    yield provider
    provider.stop()


def test_no_oauth_secret_in_debug_logs(server: Latchkey, cp, dp, authz: OidcProvider) -> None:
    """Codes, state, PKCE verifiers, access and refresh tokens and the client secret never
    reach the log, even at debug level, through the whole flow and a refresh."""
    from urllib.parse import parse_qs, urlparse

    from test_oauth_flows import RETURN_URL, Env

    env = Env(server, authz, cp, dp)
    user = uniq("logged")
    wat, started = env.start(user, customState="custom-" + uuid.uuid4().hex, customParameters={"login_hint": "secret-hint-" + uuid.uuid4().hex})
    browser = env.browser()
    result = browser.consent(started["authorizationUrl"], user, stop_at_callback=True)
    callback = result.final_url
    assert callback
    q = parse_qs(urlparse(callback).query)
    server.remember_secret(q["code"][0])
    server.remember_secret(q["state"][0])
    r = browser.get(callback)
    assert r.status_code in (302, 303) and r.headers["Location"].startswith(RETURN_URL)
    # The one-time completion URN is a bearer capability: the log must not show it either.
    completion = parse_qs(urlparse(r.headers["Location"]).query)["session_id"][0]
    server.remember_secret(completion)
    env.complete(completion, user)
    for _ in range(2):  # 30 s tokens: each read refreshes
        assert env.token(wat, sessionUri=started["sessionUri"])["accessToken"]
    server.stop()  # flush the log; the fixture's teardown greps it for every remembered secret
    assert "/identities/oauth2/callback/" in server.log_text(), "debug logging was not on"
