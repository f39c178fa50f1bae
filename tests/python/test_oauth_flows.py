"""The 3-legged OAuth flow end to end, and the attacks it must refuse.

Real parts only: the `latchkey` binary, boto3, and `oidc-provider` on loopback as the
third-party authorization server (login and consent driven headlessly over HTTP by
`flows_harness.Browser`). Every attack test checks that nothing was stored: the next
`GetResourceOauth2Token` still asks for consent.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, urlencode, urlparse, urlunparse

import pytest
import requests

from flows_harness import Browser, create_custom_provider, running_provider, userinfo
from lk_harness import Cred, Latchkey, eventually, further_server, inbound_issuers_toml, raises_code, uniq
from oidc import OidcProvider, ResourceApi
from secrets_sweep import SWEEP

RETURN_URL = "http://127.0.0.1:9/app/after-consent"
SCOPES = ["openid", "api:read"]


@pytest.fixture(scope="module")
def authz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    """The third-party authorization server (its redirect URIs are set once providers exist)."""
    yield from running_provider(tmp_path_factory, "authz-flows", client_id="lk-flows", client_secret="lk-flows-secret-" + "y" * 12)


@pytest.fixture(scope="module")
def user_idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    """The users' identity provider (for userToken); a second one plays another issuer."""
    yield from running_provider(tmp_path_factory, "user-idp")


@pytest.fixture(scope="module")
def other_idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    yield from running_provider(tmp_path_factory, "other-idp")


@pytest.fixture(scope="module")
def server_config(user_idp: OidcProvider, other_idp: OidcProvider) -> str:
    return inbound_issuers_toml(user_idp.issuer, other_idp.issuer)


@pytest.fixture(scope="module")
def api(authz: OidcProvider) -> Iterator[ResourceApi]:
    """The protected resource: accepts only tokens with the right scope."""
    r = ResourceApi(authz).start()
    yield r
    r.stop()


class Env:
    def __init__(self, server: Latchkey, authz: OidcProvider, cp: Any, dp: Any) -> None:
        self.server, self.authz, self.cp, self.dp = server, authz, cp, dp
        self.workload = uniq("flows-wl")
        cp.create_workload_identity(name=self.workload, allowedResourceOauth2ReturnUrls=[RETURN_URL])
        self.provider = self.make_provider()
        self.other_provider = self.make_provider()
        authz.restart(redirect_uris=[self.callback(self.provider), self.callback(self.other_provider)])
        self.binding = server.create_credential("binding")
        self.bdp = server.dp(self.binding)

    def make_provider(self) -> str:
        return create_custom_provider(self.server, self.cp, self.authz, "flows-prov")[0]

    def callback(self, provider: str) -> str:
        return self.cp.get_oauth2_credential_provider(name=provider)["callbackUrl"]

    def wat(self, user: str, workload: str | None = None) -> str:
        return self.dp.get_workload_access_token_for_user_id(workloadName=workload or self.workload, userId=user)[
            "workloadAccessToken"
        ]

    def token(self, wat: str, provider: str | None = None, scopes: list[str] | None = None, **kw: Any) -> dict[str, Any]:
        args: dict[str, Any] = {
            "workloadIdentityToken": wat,
            "resourceCredentialProviderName": provider or self.provider,
            "scopes": SCOPES if scopes is None else scopes,
            "oauth2Flow": "USER_FEDERATION",
        }
        args.update(kw)
        out = self.dp.get_resource_oauth2_token(**args)
        for key in ("accessToken",):
            if out.get(key):
                self.server.remember_secret(out[key])
        return out

    def start(self, user: str, **kw: Any) -> tuple[str, dict[str, Any]]:
        wat = self.wat(user)
        kw.setdefault("resourceOauth2ReturnUrl", RETURN_URL)
        out = self.token(wat, **kw)
        assert out.get("authorizationUrl") and out.get("sessionUri"), out
        assert out["sessionStatus"] == "IN_PROGRESS"
        return wat, out

    def browser(self) -> Browser:
        return Browser(self.server.url, self.authz.issuer)

    def complete(self, session_uri: str, user: str) -> dict[str, Any]:
        return self.bdp.complete_resource_token_auth(sessionUri=session_uri, userIdentifier={"userId": user})

    def consent(self, started: dict[str, Any], user: str) -> str:
        """`user` consents in a fresh browser; returns the one-time completion URN the
        browser brings back to the return URL (`session_id`, never the polling sessionUri)."""
        result = self.browser().consent(started["authorizationUrl"], user)
        completion = result.params["session_id"]
        assert completion.startswith("urn:ietf:params:oauth:request_uri:")
        assert completion != started["sessionUri"]
        return completion

    def assert_nothing_stored(self, user: str) -> None:
        out = self.token(self.wat(user))
        assert "accessToken" not in out, "a grant was stored"
        assert out.get("authorizationUrl")


@pytest.fixture(scope="module")
def env(server: Latchkey, authz: OidcProvider, cp: Any, dp: Any) -> Env:
    return Env(server, authz, cp, dp)


def remember_code(env: Env, callback_url: str) -> None:
    """Authorization codes are secrets too: the server log must never show them."""
    env.server.remember_secret(parse_qs(urlparse(callback_url).query)["code"][0])


def audit(server: Latchkey) -> list[dict[str, Any]]:
    out = server.cli("admin", "audit", "list", "--limit", "100000").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


# --------------------------------------------------------------------------- the flow
def test_full_three_legged_flow(env: Env, api: ResourceApi) -> None:
    user = uniq("alice")
    wat, started = env.start(user, customState="app-csrf-123")
    uri = started["sessionUri"]
    assert uri.startswith("urn:ietf:params:oauth:request_uri:")
    assert started["authorizationUrl"].startswith(f"{env.server.url}/identities/oauth2/authorize?request_uri=")
    # Polling before the user did anything: still in progress.
    polled = env.token(wat, sessionUri=uri)
    assert polled["sessionStatus"] == "IN_PROGRESS" and "accessToken" not in polled

    result = env.browser().consent(started["authorizationUrl"], user)
    # The provider saw state, PKCE S256 and our per-provider redirect_uri.
    to_provider = urlparse(result.hops[0].url)
    assert result.hops[0].status in (302, 303)
    first_redirect = next(h for h in result.hops if h.url.startswith(env.authz.metadata["authorization_endpoint"]))
    q = parse_qs(urlparse(first_redirect.url).query)
    assert q["code_challenge_method"] == ["S256"] and len(q["code_challenge"][0]) == 43
    assert q["redirect_uri"] == [env.callback(env.provider)]
    assert q["state"][0] and q["state"][0] not in started["authorizationUrl"]
    assert to_provider.path == "/identities/oauth2/authorize"
    # Back at the app's return URL with the session and the app's own state.
    assert result.final_url and result.final_url.startswith(RETURN_URL)
    assert result.params["state"] == "app-csrf-123"
    # The browser brings back a one-time completion URN, not the polling sessionUri.
    completion = result.params["session_id"]
    assert completion.startswith("urn:ietf:params:oauth:request_uri:") and completion != uri
    assert len(completion.rsplit(":", 1)[1]) == 43
    # Consent alone stores nothing: the binding has not happened yet.
    assert env.token(wat, sessionUri=uri)["sessionStatus"] == "IN_PROGRESS"
    # The polling sessionUri (known to whoever saw the link) completes nothing.
    with raises_code("ResourceNotFoundException"):
        env.complete(uri, user)
    assert env.token(wat, sessionUri=uri)["sessionStatus"] == "IN_PROGRESS"

    assert env.complete(completion, user)["ResponseMetadata"]["HTTPStatusCode"] == 200
    got = env.token(wat, sessionUri=uri)
    token = got["accessToken"]
    who = userinfo(env.authz.metadata, token)
    assert who.status_code == 200 and who.json()["sub"] == user
    # The resource API takes it for what the user approved, and nothing more.
    read = api.get("/api/read", token)
    assert read.status_code == 200 and read.json()["sub"] == user
    assert api.get("/api/write", token).status_code == 403
    assert api.get("/api/read", "not-a-token").status_code == 401
    # Later calls come from the vault.
    assert env.token(env.wat(user))["accessToken"] == token

    def recorded() -> None:
        actions = {(e["action"], e["outcome"]) for e in audit(env.server) if e.get("user_id") == user}
        for a in ("GetResourceOauth2Token", "OAuth2Authorize", "OAuth2Callback", "CompleteResourceTokenAuth"):
            assert (a, "success") in actions, actions

    eventually(recorded, timeout=10)
    assert token not in json.dumps(audit(env.server))
    # Each vend names its token by digest (what the agent's tool-call line carries), and
    # every event of the flow names the session by digest, never by its bearer id.
    vend = "vend-" + hashlib.sha256(token.encode()).hexdigest()[:32]
    vends = [e for e in audit(env.server) if e["action"] == "GetResourceOauth2Token" and e.get("user_id") == user and "accessToken" not in json.dumps(e)]
    assert vend in {e["detail"].get("vendId") for e in vends}, vends
    session_id = started["sessionUri"].rsplit(":", 1)[-1]
    refs = {e["detail"].get("session") for e in audit(env.server) if e.get("user_id") == user and e["action"] in ("OAuth2Callback", "CompleteResourceTokenAuth")}
    assert refs and all(r and r.startswith("sess-") for r in refs), refs
    assert session_id not in json.dumps(audit(env.server))


def test_browser_pages_are_hardened_and_reflect_nothing(env: Env) -> None:
    r = requests.get(f"{env.server.url}/identities/oauth2/authorize?request_uri=<script>alert(1)</script>", timeout=10)
    assert r.status_code == 400
    assert "<script>" not in r.text
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["x-frame-options"] == "DENY"
    r = requests.get(f"{env.server.url}/identities/oauth2/authorize?request_uri=urn:ietf:params:oauth:request_uri:nope", timeout=10)
    assert r.status_code == 404


def test_provider_error_fails_the_session(env: Env) -> None:
    user = uniq("denier")
    wat, started = env.start(user)
    result = env.browser().consent(started["authorizationUrl"], user, approve=False)
    assert result.params.get("error") == "access_denied", result.hops
    assert result.params["session_id"] == started["sessionUri"]
    assert env.token(wat, sessionUri=started["sessionUri"])["sessionStatus"] == "FAILED"
    # No completion URN was issued: the sessionUri on the error redirect completes nothing.
    with raises_code("ResourceNotFoundException"):
        env.complete(started["sessionUri"], user)
    env.assert_nothing_stored(user)


def test_incremental_scopes_ask_for_the_union(env: Env) -> None:
    user = uniq("incr")
    wat, started = env.start(user, scopes=["openid"])
    env.complete(env.consent(started, user), user)
    assert env.token(wat, scopes=["openid"])["accessToken"]
    more = env.token(wat, scopes=["api:read"], resourceOauth2ReturnUrl=RETURN_URL)
    assert "accessToken" not in more
    r = env.browser().get(more["authorizationUrl"])
    scope = parse_qs(urlparse(r.headers["Location"]).query)["scope"][0].split()
    assert set(scope) == {"openid", "api:read"}


def test_force_authentication_starts_a_new_consent(env: Env) -> None:
    user = uniq("force")
    wat, started = env.start(user)
    env.complete(env.consent(started, user), user)
    assert env.token(wat)["accessToken"]
    forced = env.token(wat, forceAuthentication=True)
    assert forced.get("authorizationUrl") and forced["sessionUri"] != started["sessionUri"]


# --------------------------------------------------------------------------- attacks
def test_attack_csrf_binding_attacker_consent_into_victim_session(env: Env) -> None:
    """The attacker consents with their own provider account in a flow started for the
    victim and lures the victim's browser to complete it: the binding is the victim's
    user, the session's user is the victim… but the consent at the provider was the
    attacker's. The defence: binding happens only for the user who started the session,
    and a session the attacker starts is bound to the attacker."""
    victim, attacker = uniq("victim"), uniq("attacker")
    # The attacker starts a flow as themself and consents with their account…
    _, started = env.start(attacker)
    result = env.browser().consent(started["authorizationUrl"], attacker)
    # …then sends the victim the return-URL link: the victim's binding service completes
    # with the victim's identity.
    with raises_code("AccessDeniedException"):
        env.complete(result.params["session_id"], victim)
    env.assert_nothing_stored(victim)
    env.assert_nothing_stored(attacker)
    # The failed session stays failed: the attacker cannot complete it afterwards either.
    with raises_code("ValidationException"):
        env.complete(result.params["session_id"], attacker)


def test_attack_browser_swapping(env: Env) -> None:
    """The victim is tricked into consenting on the attacker's authorization URL: the
    victim's browser ends at the binding with the victim signed in, which is not the user
    who started the session."""
    victim, attacker = uniq("victim"), uniq("attacker")
    _, started = env.start(attacker)
    result = env.browser().consent(started["authorizationUrl"], victim)
    with raises_code("AccessDeniedException"):
        env.complete(result.params["session_id"], victim)
    env.assert_nothing_stored(attacker)
    env.assert_nothing_stored(victim)
    def denial_recorded() -> dict[str, Any]:
        denied = [
            e for e in audit(env.server)
            if e["action"] == "CompleteResourceTokenAuth" and e.get("user_id") == attacker and e["outcome"] == "denied"
        ]
        assert denied
        return denied[0]

    denial = eventually(denial_recorded, timeout=10)
    # A refused binding records both users: the session's and the one completing it.
    assert denial["detail"]["sessionUser"]["subject"] == attacker, denial
    assert denial["detail"]["sessionUser"]["kind"] == "user-id", denial
    assert denial["detail"]["completingUser"] == {
        "kind": "user-id",
        "issuer": None,
        "subject": victim,
    }, denial


def test_attack_session_uri_replay_after_completion(env: Env) -> None:
    user = uniq("replay")
    wat, started = env.start(user)
    completion = env.consent(started, user)
    env.complete(completion, user)
    token = env.token(wat)["accessToken"]
    # The completion URN works once.
    with raises_code("ValidationException") as e:
        env.complete(completion, user)
    assert "already used" in str(e.value)
    with raises_code("ResourceNotFoundException"):
        env.complete(started["sessionUri"], user)
    assert env.token(wat)["accessToken"] == token


def test_attack_authorization_code_replay(env: Env) -> None:
    user = uniq("codereplay")
    wat, started = env.start(user)
    browser = env.browser()
    cb = browser.consent(started["authorizationUrl"], user, stop_at_callback=True).final_url
    assert cb and "code=" in cb
    remember_code(env, cb)
    first = browser.get(cb)
    assert first.status_code in (302, 303)
    again = env.browser().get(cb)
    assert again.status_code == 409
    assert "location" not in again.headers, "a replayed callback got a completion URN"
    env.complete(parse_qs(urlparse(first.headers["Location"]).query)["session_id"][0], user)
    assert env.token(wat)["accessToken"]


def test_attack_tampered_state(env: Env) -> None:
    user = uniq("tamper")
    _, started = env.start(user)
    cb = env.browser().consent(started["authorizationUrl"], user, stop_at_callback=True).final_url
    assert cb
    remember_code(env, cb)
    u = urlparse(cb)
    q = {k: v[0] for k, v in parse_qs(u.query).items()}
    q["state"] = q["state"][:-2] + ("AA" if not q["state"].endswith("AA") else "BB")
    r = env.browser().get(urlunparse(u._replace(query=urlencode(q))))
    assert r.status_code == 404
    with raises_code("ResourceNotFoundException"):
        env.complete(started["sessionUri"], user)
    env.assert_nothing_stored(user)


def test_attack_state_from_another_providers_session(env: Env) -> None:
    """Mix-up: a code+state obtained for provider A delivered to provider B's callback."""
    user = uniq("mixup")
    _, started = env.start(user)
    cb = env.browser().consent(started["authorizationUrl"], user, stop_at_callback=True).final_url
    assert cb
    remember_code(env, cb)
    other_cb = env.callback(env.other_provider)
    r = env.browser().get(other_cb + "?" + urlparse(cb).query)
    assert r.status_code == 400
    # The session is burnt: the genuine callback no longer works either.
    assert env.browser().get(cb).status_code == 409
    with raises_code("ResourceNotFoundException"):
        env.complete(started["sessionUri"], user)
    env.assert_nothing_stored(user)


def test_attack_issuer_mismatch_rfc9207(env: Env) -> None:
    user = uniq("iss")
    _, started = env.start(user)
    cb = env.browser().consent(started["authorizationUrl"], user, stop_at_callback=True).final_url
    assert cb
    remember_code(env, cb)
    u = urlparse(cb)
    q = {k: v[0] for k, v in parse_qs(u.query).items()}
    assert q.get("iss") == env.authz.issuer  # oidc-provider sends RFC 9207 iss
    q["iss"] = "https://evil.example"
    assert env.browser().get(urlunparse(u._replace(query=urlencode(q)))).status_code == 400
    env.assert_nothing_stored(user)


def test_attack_missing_iss_when_the_provider_promises_it(env: Env) -> None:
    """RFC 9207: a provider that advertises `iss` on its responses must send it; a response
    without it is not from that provider's authorization endpoint."""
    assert env.authz.metadata.get("authorization_response_iss_parameter_supported") is True
    user = uniq("noiss")
    _, started = env.start(user)
    cb = env.browser().consent(started["authorizationUrl"], user, stop_at_callback=True).final_url
    assert cb
    remember_code(env, cb)
    u = urlparse(cb)
    q = {k: v[0] for k, v in parse_qs(u.query).items() if k != "iss"}
    assert env.browser().get(urlunparse(u._replace(query=urlencode(q)))).status_code == 400
    with raises_code("ResourceNotFoundException"):
        env.complete(started["sessionUri"], user)
    env.assert_nothing_stored(user)


@pytest.mark.parametrize(
    "url",
    [
        "https://good.example.evil/app/after-consent",
        "//evil.example/app/after-consent",
        "http://127.0.0.1:9@evil.example/app/after-consent",
        "http://127.0.0.1:9/app/after-consent/../../evil",
        RETURN_URL + "?extra=1",
        "http://evil.example/",
    ],
)
def test_attack_return_url_not_allow_listed(env: Env, url: str) -> None:
    user = uniq("returl")
    with raises_code("ValidationException"):
        env.token(env.wat(user), resourceOauth2ReturnUrl=url)


def test_return_url_is_checked_on_a_vault_hit_too(env: Env) -> None:
    user = uniq("returl-hit")
    wat, started = env.start(user)
    env.complete(env.consent(started, user), user)
    assert env.token(wat, resourceOauth2ReturnUrl=RETURN_URL)["accessToken"]
    with raises_code("ValidationException"):
        env.token(wat, resourceOauth2ReturnUrl="https://evil.example/after-consent")


@pytest.mark.parametrize("param", ["redirect_uri", "scope", "state", "code_challenge", "client_id", "response_type", "Redirect_URI"])
def test_attack_custom_parameters_cannot_override_standard_ones(env: Env, param: str) -> None:
    user = uniq("custom")
    with raises_code("ValidationException"):
        env.token(env.wat(user), resourceOauth2ReturnUrl=RETURN_URL, customParameters={param: "https://evil.example/cb"})


def test_custom_parameters_reach_the_provider(env: Env) -> None:
    user = uniq("customok")
    _, started = env.start(user, customParameters={"login_hint": user, "ui_locales": "en"})
    r = env.browser().get(started["authorizationUrl"])
    q = parse_qs(urlparse(r.headers["Location"]).query)
    assert q["login_hint"] == [user] and q["ui_locales"] == ["en"]
    assert q["response_type"] == ["code"]


def test_attack_user_token_from_another_issuer(env: Env, user_idp: OidcProvider, other_idp: OidcProvider) -> None:
    user = "alice"
    wat = env.dp.get_workload_access_token_for_jwt(workloadName=env.workload, userToken=user_idp.id_token_for(user))[
        "workloadAccessToken"
    ]
    started = env.token(wat, resourceOauth2ReturnUrl=RETURN_URL, forceAuthentication=True)
    completion = env.consent(started, user)
    # Same `sub`, other issuer: another user.
    with raises_code("AccessDeniedException"):
        env.bdp.complete_resource_token_auth(
            sessionUri=completion, userIdentifier={"userToken": other_idp.id_token_for(user)}
        )
    assert "accessToken" not in env.token(wat, sessionUri=started["sessionUri"])


def test_user_token_from_the_same_issuer_completes(env: Env, user_idp: OidcProvider) -> None:
    user = uniq("tok")
    wat = env.dp.get_workload_access_token_for_jwt(workloadName=env.workload, userToken=user_idp.id_token_for(user))[
        "workloadAccessToken"
    ]
    started = env.token(wat, resourceOauth2ReturnUrl=RETURN_URL)
    completion = env.consent(started, user)
    env.bdp.complete_resource_token_auth(sessionUri=completion, userIdentifier={"userToken": user_idp.id_token_for(user)})
    assert env.token(wat, sessionUri=started["sessionUri"])["accessToken"]


def jwt_wat(env: Env, idp: OidcProvider, user: str) -> str:
    return env.dp.get_workload_access_token_for_jwt(workloadName=env.workload, userToken=idp.id_token_for(user))[
        "workloadAccessToken"
    ]


def test_attack_same_subject_at_another_issuer_gets_no_grant(env: Env, user_idp: OidcProvider, other_idp: OidcProvider) -> None:
    """Issue 12 item 2: grants are keyed by (kind, issuer, subject). alice at issuer A
    consents and is vaulted; alice at issuer B (a tenant's IdP can mint any `sub`) and the
    user id alice are other users: each is asked for its own consent, never given A's
    token."""
    user = uniq("alice")
    wat_a = jwt_wat(env, user_idp, user)
    started = env.token(wat_a, resourceOauth2ReturnUrl=RETURN_URL)
    completion = env.consent(started, user)
    env.bdp.complete_resource_token_auth(sessionUri=completion, userIdentifier={"userToken": user_idp.id_token_for(user)})
    token_a = env.token(wat_a)["accessToken"]
    for wat in (jwt_wat(env, other_idp, user), env.wat(user)):
        out = env.token(wat, resourceOauth2ReturnUrl=RETURN_URL)
        assert "accessToken" not in out, "another namespace's user received alice@A's token"
        assert out.get("authorizationUrl") and out["sessionStatus"] == "IN_PROGRESS"
        # Nor by presenting A's session.
        with raises_code("AccessDeniedException"):
            env.token(wat, sessionUri=started["sessionUri"])
    # The other way round: a user id's grant is not a token user's.
    other = uniq("carol")
    _, started = env.start(other)
    env.complete(env.consent(started, other), other)
    assert env.token(env.wat(other))["accessToken"]
    assert "accessToken" not in env.token(jwt_wat(env, user_idp, other), resourceOauth2ReturnUrl=RETURN_URL)
    # A's grant is untouched.
    assert env.token(wat_a)["accessToken"] == token_a


def test_attack_jwt_session_completed_with_a_bare_user_id(env: Env, user_idp: OidcProvider) -> None:
    """Issue 12 item 4: a session started from issuer A's token is not completed by a
    `userId` of the same subject (the user-id namespace is another user)."""
    user = uniq("pin")
    wat = jwt_wat(env, user_idp, user)
    started = env.token(wat, resourceOauth2ReturnUrl=RETURN_URL)
    completion = env.consent(started, user)
    with raises_code("AccessDeniedException") as e:
        env.complete(completion, user)
    assert "userToken" in str(e.value)
    polled = env.token(wat, sessionUri=started["sessionUri"])
    assert polled["sessionStatus"] == "FAILED" and "accessToken" not in polled
    assert "accessToken" not in env.token(wat)

    def denial_names_the_token_user() -> None:
        assert any(
            e["action"] == "CompleteResourceTokenAuth"
            and e["outcome"] == "denied"
            and e.get("user_id") == user
            and e.get("user_issuer") == user_idp.issuer
            for e in audit(env.server)
        )

    eventually(denial_names_the_token_user, timeout=10)


def test_attack_user_id_session_completed_with_a_token(env: Env, other_idp: OidcProvider) -> None:
    """Issue 12 item 4, the other direction: a session started for the user id alice is
    not completed by issuer B's token for `sub=alice`."""
    user = uniq("pin")
    wat, started = env.start(user)
    completion = env.consent(started, user)
    with raises_code("AccessDeniedException") as e:
        env.bdp.complete_resource_token_auth(
            sessionUri=completion, userIdentifier={"userToken": other_idp.id_token_for(user)}
        )
    assert "userId" in str(e.value)
    polled = env.token(wat, sessionUri=started["sessionUri"])
    assert polled["sessionStatus"] == "FAILED" and "accessToken" not in polled
    env.assert_nothing_stored(user)


def test_attack_user_a_wat_cannot_read_user_b_grant(env: Env) -> None:
    a, b = uniq("usera"), uniq("userb")
    _, started = env.start(b)
    env.complete(env.consent(started, b), b)
    assert env.token(env.wat(b))["accessToken"]
    # A's WAT gets A's consent flow, never B's token — also not by presenting B's session.
    env.assert_nothing_stored(a)
    with raises_code("AccessDeniedException"):
        env.token(env.wat(a), sessionUri=started["sessionUri"])


def test_attack_workload_x_wat_cannot_read_workload_y_grant(env: Env) -> None:
    user = uniq("wxy")
    _, started = env.start(user)
    env.complete(env.consent(started, user), user)
    other = uniq("flows-other-wl")
    env.cp.create_workload_identity(name=other, allowedResourceOauth2ReturnUrls=[RETURN_URL])
    out = env.token(env.wat(user, workload=other))
    assert "accessToken" not in out
    with raises_code("AccessDeniedException"):
        env.token(env.wat(user, workload=other), sessionUri=started["sessionUri"])
    # And a workload credential cannot even present another workload's WAT.
    cred = env.server.create_credential(f"workload:{other}")
    with raises_code("AccessDeniedException"):
        env.server.dp(cred).get_resource_oauth2_token(
            workloadIdentityToken=env.wat(user),
            resourceCredentialProviderName=env.provider,
            scopes=SCOPES,
            oauth2Flow="USER_FEDERATION",
        )


def test_workload_credentials_cannot_complete_sessions(env: Env) -> None:
    user = uniq("wlcomplete")
    _, started = env.start(user)
    completion = env.consent(started, user)
    cred = env.server.create_credential(f"workload:{env.workload}")
    with raises_code("AccessDeniedException"):
        env.server.dp(cred).complete_resource_token_auth(sessionUri=completion, userIdentifier={"userId": user})
    env.assert_nothing_stored(user)


def test_completion_before_consent_is_refused_and_keeps_the_session(env: Env) -> None:
    """Before the callback no completion URN exists: the sessionUri is an unknown session to
    CompleteResourceTokenAuth (it reveals nothing and changes nothing), before the consent
    and after it."""
    user = uniq("early")
    wat, started = env.start(user)
    with raises_code("ResourceNotFoundException"):
        env.complete(started["sessionUri"], user)
    completion = env.consent(started, user)
    with raises_code("ResourceNotFoundException"):
        env.complete(started["sessionUri"], user)
    assert env.token(wat, sessionUri=started["sessionUri"])["sessionStatus"] == "IN_PROGRESS"
    env.complete(completion, user)
    assert env.token(wat, sessionUri=started["sessionUri"])["accessToken"]


def test_user_federation_needs_a_user_wat(env: Env) -> None:
    plain = env.dp.get_workload_access_token(workloadName=env.workload)["workloadAccessToken"]
    with raises_code("ValidationException"):
        env.token(plain)


def test_on_behalf_of_is_a_clear_validation_error(env: Env) -> None:
    with raises_code("ValidationException") as e:
        env.token(env.wat("obo"), oauth2Flow="ON_BEHALF_OF_TOKEN_EXCHANGE")
    assert "not yet supported" in str(e.value)


def test_unknown_provider_is_not_found(env: Env) -> None:
    with raises_code("ResourceNotFoundException"):
        env.token(env.wat("nobody"), provider=uniq("missing"))


# --------------------------------------------------------------------------- M2M
def test_client_credentials_token_is_cached(env: Env, api: ResourceApi) -> None:
    wat = env.dp.get_workload_access_token(workloadName=env.workload)["workloadAccessToken"]
    first = env.token(wat, scopes=["api:read"], oauth2Flow="M2M")["accessToken"]
    second = env.token(wat, scopes=["api:read"], oauth2Flow="M2M")["accessToken"]
    assert first == second
    assert api.get("/api/read", first).status_code == 200
    assert api.get("/api/write", first).status_code == 403
    other = env.token(wat, scopes=["api:write"], oauth2Flow="M2M")["accessToken"]
    assert other != first
    assert api.get("/api/write", other).status_code == 200


# --------------------------------------------------------------------------- expiry
@pytest.fixture(scope="module")
def short_server(
    latchkey_data_dir: Path, db_url: str | None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Latchkey]:
    yield from further_server(latchkey_data_dir, tmp_path_factory.mktemp("short-sessions"), db_url, {"LATCHKEY_SESSION_TTL_SECONDS": "5"})


def test_attack_expired_session(env: Env, short_server: Latchkey) -> None:
    user = uniq("expired")
    # The callback URL is per server (its public URL): register this server's too.
    path = urlparse(env.callback(env.provider)).path
    env.authz.restart(
        redirect_uris=[env.callback(env.provider), env.callback(env.other_provider), short_server.url + path]
    )
    dp = short_server.dp()
    wat = dp.get_workload_access_token_for_user_id(workloadName=env.workload, userId=user)["workloadAccessToken"]
    started = dp.get_resource_oauth2_token(
        workloadIdentityToken=wat,
        resourceCredentialProviderName=env.provider,
        scopes=SCOPES,
        oauth2Flow="USER_FEDERATION",
        resourceOauth2ReturnUrl=RETURN_URL,
    )
    result = Browser(short_server.url, env.authz.issuer).consent(started["authorizationUrl"], user)
    completion = result.params["session_id"]
    assert completion != started["sessionUri"]
    time.sleep(5.5)
    binding = short_server.create_credential("binding")
    with raises_code("ValidationException") as e:
        short_server.dp(binding).complete_resource_token_auth(sessionUri=completion, userIdentifier={"userId": user})
    assert "expired" in str(e.value)
    polled = dp.get_resource_oauth2_token(
        workloadIdentityToken=wat,
        resourceCredentialProviderName=env.provider,
        scopes=SCOPES,
        oauth2Flow="USER_FEDERATION",
        sessionUri=started["sessionUri"],
    )
    assert polled["sessionStatus"] == "FAILED" and "accessToken" not in polled


# --------------------------------------------------------------------------- the SDK
def test_bedrock_agentcore_sdk_get_token_end_to_end(env: Env, tmp_path: Path) -> None:
    """`IdentityClient.get_token` receives our authorization URL through `on_auth_url`;
    the test consents and binds like the user and the binding service would; the SDK's
    own poll (5 s after the URL) returns the token."""
    import os
    import subprocess
    import sys

    user = uniq("sdkuser")
    admin = env.server.admin
    assert admin is not None
    proc_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BEDROCK_AGENTCORE_"))}
    proc_env.update(
        {
            "BEDROCK_AGENTCORE_DP_ENDPOINT": env.server.url,
            "BEDROCK_AGENTCORE_CP_ENDPOINT": env.server.url,
            "AWS_ACCESS_KEY_ID": admin.access_key_id,
            "AWS_SECRET_ACCESS_KEY": admin.secret_access_key,
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
            "PROBE_PROVIDER": env.provider,
            "PROBE_WAT": env.wat(user),
            "PROBE_RETURN_URL": RETURN_URL,
        }
    )
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("sdk_flow_probe.py"))],
        cwd=tmp_path,
        env=proc_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("AUTH_URL "), (line, proc.stderr.read() if proc.stderr else "")
        url = line.split(" ", 1)[1].strip()
        assert url.startswith(f"{env.server.url}/identities/oauth2/authorize?request_uri=")
        result = env.browser().consent(url, user)
        assert result.params["state"] == "sdk-state"
        env.complete(result.params["session_id"], user)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    got = json.loads(next(ln for ln in out.splitlines() if ln.startswith("RESULT "))[len("RESULT ") :])
    env.server.remember_secret(got["token"])
    assert got["auth_urls"] == 1
    assert userinfo(env.authz.metadata, got["token"]).json()["sub"] == user


def test_head_requests_do_not_consume_a_callback(env: Env) -> None:
    """Link checkers and prefetchers send HEAD: it must not burn the single-use state."""
    user = uniq("head")
    wat, started = env.start(user)
    cb = env.browser().consent(started["authorizationUrl"], user, stop_at_callback=True).final_url
    assert cb
    remember_code(env, cb)
    assert requests.head(cb, timeout=10, allow_redirects=False).status_code == 405
    assert requests.head(started["authorizationUrl"], timeout=10, allow_redirects=False).status_code == 405
    back = env.browser().get(cb)
    assert back.status_code in (302, 303)
    env.complete(parse_qs(urlparse(back.headers["Location"]).query)["session_id"][0], user)
    assert env.token(wat)["accessToken"]


# --------------------------------------------------------------------------- issue 12
class HeldTokenEndpoint:
    """A slow provider: a token endpoint on loopback that holds each request until
    `release` is set, then forwards it unchanged to the real provider's token endpoint."""

    def __init__(self, upstream: str) -> None:
        import http.server
        import threading

        self.arrived = threading.Event()
        self.release = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.arrived.set()
                outer.release.wait(30)
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "authorization", "accept")}
                r = requests.post(upstream, data=body, headers=headers, timeout=15)
                self.send_response(r.status_code)
                self.send_header("Content-Type", r.headers.get("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(r.content)))
                self.end_headers()
                self.wfile.write(r.content)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        SWEEP.watch_peer(self.url)

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()


def test_wrong_user_completion_during_the_exchange_changes_nothing(env: Env) -> None:
    """Issue 12, item 7: while the right user's completion is exchanging the code (a slow
    provider), a wrong user's completion of the same session is refused without touching
    it. The right user's completion then stores the grant and answers success; the wrong
    user is not told that the session failed. On the storage under test (SQLite, or
    PostgreSQL with LATCHKEY_TEST_STORAGE=postgres)."""
    from concurrent.futures import ThreadPoolExecutor

    held = HeldTokenEndpoint(env.authz.metadata["token_endpoint"])
    try:
        name = uniq("held-prov")
        env.cp.create_oauth2_credential_provider(
            name=name,
            credentialProviderVendor="CustomOauth2",
            oauth2ProviderConfigInput={
                "customOauth2ProviderConfig": {
                    "oauthDiscovery": {
                        "authorizationServerMetadata": {
                            "issuer": env.authz.issuer,
                            "authorizationEndpoint": env.authz.metadata["authorization_endpoint"],
                            "tokenEndpoint": held.url,
                            "responseTypes": ["code"],
                            "tokenEndpointAuthMethods": ["client_secret_basic"],
                        }
                    },
                    "clientId": env.authz.client_id,
                    "clientSecret": env.authz.client_secret,
                }
            },
        )
        env.authz.restart(redirect_uris=[env.callback(env.provider), env.callback(env.other_provider), env.callback(name)])
        user, other = uniq("right"), uniq("wrong")
        wat = env.wat(user)
        started = env.token(wat, provider=name, resourceOauth2ReturnUrl=RETURN_URL)
        completion = env.browser().consent(started["authorizationUrl"], user).params["session_id"]
        with ThreadPoolExecutor(1) as pool:
            right = pool.submit(env.complete, completion, user)
            assert held.arrived.wait(20), "the exchange never reached the provider"
            with raises_code("AccessDeniedException") as e:
                env.complete(completion, other)
            assert "has failed" not in str(e.value), f"the wrong user was told the session failed: {e.value}"
            held.release.set()
            assert right.result(30)["ResponseMetadata"]["HTTPStatusCode"] == 200
        token = env.token(wat, provider=name, sessionUri=started["sessionUri"])["accessToken"]
        assert userinfo(env.authz.metadata, token).json()["sub"] == user
        assert "accessToken" not in env.token(env.wat(other), provider=name)
    finally:
        held.stop()


def test_flow_without_return_url_shows_a_one_time_completion_code(env: Env) -> None:
    """No return URL: Latchkey's own page shows the completion URN to the browser that came
    back from the provider (and to nobody else); it completes once, for the session's user
    only. The polling sessionUri completes nothing."""
    import re

    user = uniq("noreturn")
    wat = env.wat(user)
    started = env.token(wat)
    result = env.browser().consent(started["authorizationUrl"], user)
    page = result.response
    assert page is not None and page.status_code == 200, result.hops
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"
    m = re.search(r'<code id="completion-code">(urn:ietf:params:oauth:request_uri:[A-Za-z0-9_-]{43})</code>', page.text)
    assert m, page.text
    completion = m.group(1)
    assert completion != started["sessionUri"] and started["sessionUri"] not in page.text
    with raises_code("ResourceNotFoundException"):
        env.complete(started["sessionUri"], user)
    assert env.token(wat, sessionUri=started["sessionUri"])["sessionStatus"] == "IN_PROGRESS"
    env.complete(completion, user)
    assert env.token(wat, sessionUri=started["sessionUri"])["accessToken"]
    with raises_code("ValidationException"):
        env.complete(completion, user)


def test_the_github_preset_with_endpoint_overrides_runs_the_flow_at_another_host(env: Env) -> None:
    """GitHub Enterprise Server, or a test provider: `GithubOauth2` with
    `includedOauth2ProviderConfig` endpoints keeps GitHub's behaviour (client_secret_post,
    `Accept: application/json` on the token request) at another host, here the oidc-provider
    authorization server, end to end with a real consent, completion and token."""
    import uuid

    name = f"ghes-{uuid.uuid4().hex[:10]}"
    client_id, secret = f"ghes-{uuid.uuid4().hex[:8]}", "ghes-secret-" + uuid.uuid4().hex
    env.server.remember_secret(secret)
    md = env.authz.metadata
    created = env.cp.create_oauth2_credential_provider(
        name=name,
        credentialProviderVendor="GithubOauth2",
        oauth2ProviderConfigInput={"includedOauth2ProviderConfig": {
            "clientId": client_id, "clientSecret": secret, "issuer": md["issuer"],
            "authorizationEndpoint": md["authorization_endpoint"], "tokenEndpoint": md["token_endpoint"],
        }},
    )
    out = created["oauth2ProviderConfigOutput"]["includedOauth2ProviderConfig"]["oauthDiscovery"]["authorizationServerMetadata"]
    assert out["tokenEndpoint"] == md["token_endpoint"] and out["tokenEndpointAuthMethods"] == ["client_secret_post"], out
    assert env.cp.get_oauth2_credential_provider(name=name)["credentialProviderVendor"] == "GithubOauth2"
    # GitHub's preset authenticates with client_secret_post: the provider insists on it.
    env.authz.add_client(client_id, secret, [created["callbackUrl"]], "client_secret_post")
    user = uniq("octocat")
    wat, started = env.start(user, resourceCredentialProviderName=name)
    completion = env.consent(started, user)
    env.complete(completion, user)
    token = env.token(wat, provider=name, sessionUri=started["sessionUri"])["accessToken"]
    assert userinfo(md, token).json()["sub"] == user
    # Without overrides the included member is refused for GitHub, naming the field.
    with raises_code("ValidationException") as e:
        env.cp.create_oauth2_credential_provider(
            name=f"{name}-x", credentialProviderVendor="GithubOauth2",
            oauth2ProviderConfigInput={"includedOauth2ProviderConfig": {"clientId": client_id}},
        )
    assert "GitHub Enterprise Server" in str(e.value)
