"""The session binding service (`latchkey serve binding`) against the real identity
service, in the flow's own order: the agent asks for a token, the user consents at the
provider, the browser lands on the binding URL signed in (an OIDC ID token cookie, or an
ALB-signed `x-amzn-oidc-data` header), the binding service completes the session, the
agent's poll gets the token. A wrong user gets the wrong-account page and nothing is
stored. The initiator of a flow, reloading the binding URL with his polling sessionUri
while someone else consents on his link, never completes it (issue 12, item 1)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from binding_harness import ALB_ARN, BindingService, KeyServer, alb_token
from flows_harness import Browser, create_custom_provider, running_provider, userinfo
from lk_harness import Latchkey, inbound_issuers_toml, uniq
from oidc import OidcProvider

SCOPES = ["openid", "api:read"]


@pytest.fixture(scope="module")
def authz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    yield from running_provider(tmp_path_factory, "authz-binding", client_id="lk-binding", client_secret="lk-binding-" + "q" * 20)


@pytest.fixture(scope="module")
def user_idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    yield from running_provider(tmp_path_factory, "user-idp-binding")


@pytest.fixture(scope="module")
def server_config(user_idp: OidcProvider) -> str:
    return inbound_issuers_toml(user_idp.issuer)


@pytest.fixture(scope="module")
def key_server() -> Iterator[KeyServer]:
    ks = KeyServer()
    yield ks
    ks.httpd.shutdown()


@pytest.fixture(scope="module")
def oidc_binding(server: Latchkey, user_idp: OidcProvider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BindingService]:
    b = BindingService(
        server,
        tmp_path_factory.mktemp("binding-oidc"),
        ["--oidc-issuer", user_idp.issuer, "--oidc-audience", user_idp.client_id, "--id-token-cookie", "id_token"],
    )
    yield b
    b.stop()


@pytest.fixture(scope="module")
def alb_binding(server: Latchkey, key_server: KeyServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BindingService]:
    b = BindingService(
        server,
        tmp_path_factory.mktemp("binding-alb"),
        ["--alb-signer", ALB_ARN, "--alb-key-url-template", key_server.url + "/{kid}"],
    )
    yield b
    b.stop()


class Flow:
    def __init__(self, server: Latchkey, authz: OidcProvider, cp: Any, dp: Any, return_urls: list[str]) -> None:
        self.server, self.authz, self.cp, self.dp = server, authz, cp, dp
        self.workload = uniq("bind-wl")
        cp.create_workload_identity(name=self.workload, allowedResourceOauth2ReturnUrls=return_urls)
        self.provider, callback = create_custom_provider(server, cp, authz, "bind-prov")
        authz.restart(redirect_uris=sorted({*authz.redirect_uris, callback} - {"http://127.0.0.1/callback"}))

    def token(self, wat: str, **kw: Any) -> dict[str, Any]:
        out = self.dp.get_resource_oauth2_token(
            workloadIdentityToken=wat, resourceCredentialProviderName=self.provider, scopes=SCOPES, oauth2Flow="USER_FEDERATION", **kw
        )
        if out.get("accessToken"):
            self.server.remember_secret(out["accessToken"])
        return out

    def consent_with_id_token(self, user_idp: OidcProvider, return_url: str, user: str) -> tuple[str, str, dict[str, Any], Browser, Any]:
        """`user` starts a flow with their ID token and consents; their browser then holds
        that token as the `id_token` cookie. Returns (id token, WAT, the start, the browser,
        the consent's result)."""
        id_token = user_idp.id_token_for(user)
        wat = self.dp.get_workload_access_token_for_jwt(workloadName=self.workload, userToken=id_token)["workloadAccessToken"]
        started = self.token(wat, resourceOauth2ReturnUrl=return_url)
        browser = Browser(self.server.url, self.authz.issuer)
        result = browser.consent(started["authorizationUrl"], user)
        browser.s.cookies.set("id_token", id_token, domain="127.0.0.1", path="/")
        return id_token, wat, started, browser, result


def test_oidc_cookie_binding_end_to_end(server: Latchkey, authz: OidcProvider, user_idp: OidcProvider, cp: Any, dp: Any, oidc_binding: BindingService) -> None:
    flow = Flow(server, authz, cp, dp, [oidc_binding.binding_url])
    # The browser arrives at the binding service signed in as alice.
    _, wat, started, browser, result = flow.consent_with_id_token(user_idp, oidc_binding.binding_url, "alice")
    assert result.final_url and result.final_url.startswith(oidc_binding.binding_url + "?session_id=")
    page = browser.get(result.final_url)
    assert page.status_code == 200, page.text
    assert "Authorization complete" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    token = flow.token(wat, sessionUri=started["sessionUri"])["accessToken"]
    assert userinfo(authz.metadata, token).json()["sub"] == "alice"


def test_oidc_binding_wrong_user_stores_nothing(server: Latchkey, authz: OidcProvider, user_idp: OidcProvider, cp: Any, dp: Any, oidc_binding: BindingService) -> None:
    flow = Flow(server, authz, cp, dp, [oidc_binding.binding_url])
    wat = dp.get_workload_access_token_for_jwt(workloadName=flow.workload, userToken=user_idp.id_token_for("alice"))["workloadAccessToken"]
    started = flow.token(wat, resourceOauth2ReturnUrl=oidc_binding.binding_url)
    # Browser swapping: mallory's browser consents on alice's flow and reaches the binding.
    browser = Browser(server.url, authz.issuer)
    result = browser.consent(started["authorizationUrl"], "mallory")
    browser.s.cookies.set("id_token", user_idp.id_token_for("mallory"), domain="127.0.0.1", path="/")
    page = browser.get(result.final_url)
    assert page.status_code == 403, page.text
    polled = flow.token(wat, sessionUri=started["sessionUri"])
    assert polled["sessionStatus"] == "FAILED" and "accessToken" not in polled
    # The session was cancelled to protect alice, and every answer says so: the poll (a
    # typed reason beside AgentCore's body) and alice's own visit to the binding link.
    assert polled["ResponseMetadata"]["HTTPHeaders"].get("x-latchkey-reason") == "session-cancelled", polled["ResponseMetadata"]
    owner = Browser(server.url, authz.issuer)
    owner.s.cookies.set("id_token", user_idp.id_token_for("alice"), domain="127.0.0.1", path="/")
    page = owner.get(result.final_url)
    assert page.status_code == 410 and "Link cancelled" in page.text, page.text
    # Not signed in at all: the not-signed-in page, and the identity service is not called.
    anon = Browser(server.url, authz.issuer)
    assert anon.get(result.final_url).status_code == 401


def test_oidc_binding_cannot_complete_a_user_id_session(server: Latchkey, authz: OidcProvider, user_idp: OidcProvider, cp: Any, dp: Any, oidc_binding: BindingService) -> None:
    """A mixed deployment fails closed: the agent asked for the token with a user id
    (`…ForUserId`, e.g. behind an ALB) but the binding service signs users in with OIDC
    and sends `userToken`. The token's user (issuer + sub) is not the user id of the same
    `sub`, so the wrong-account page is shown and nothing is stored."""
    flow = Flow(server, authz, cp, dp, [oidc_binding.binding_url])
    user = uniq("mixed")
    wat = dp.get_workload_access_token_for_user_id(workloadName=flow.workload, userId=user)["workloadAccessToken"]
    started = flow.token(wat, resourceOauth2ReturnUrl=oidc_binding.binding_url)
    browser = Browser(server.url, authz.issuer)
    result = browser.consent(started["authorizationUrl"], user)
    assert result.final_url
    browser.s.cookies.set("id_token", user_idp.id_token_for(user), domain="127.0.0.1", path="/")
    page = browser.get(result.final_url)
    assert page.status_code == 403, page.text
    polled = flow.token(wat, sessionUri=started["sessionUri"])
    assert polled["sessionStatus"] == "FAILED" and "accessToken" not in polled


def test_alb_header_binding_end_to_end(server: Latchkey, authz: OidcProvider, cp: Any, dp: Any, alb_binding: BindingService, key_server: KeyServer) -> None:
    flow = Flow(server, authz, cp, dp, [alb_binding.binding_url])
    user = uniq("carol")
    kid = uniq("kid")
    key = key_server.new_key(kid)
    wat = dp.get_workload_access_token_for_user_id(workloadName=flow.workload, userId=user)["workloadAccessToken"]
    started = flow.token(wat, resourceOauth2ReturnUrl=alb_binding.binding_url)
    browser = Browser(server.url, authz.issuer)
    result = browser.consent(started["authorizationUrl"], user)
    assert result.final_url
    # An attacker's header signed with another key (same kid) is refused; nothing stored.
    forged = alb_token(ec.generate_private_key(ec.SECP256R1()), kid, user)
    r = browser.s.get(result.final_url, headers={"x-amzn-oidc-data": forged}, allow_redirects=False, timeout=10)
    assert r.status_code == 401
    assert "accessToken" not in flow.token(wat, sessionUri=started["sessionUri"])
    # A HEAD (link checkers, prefetch) never completes a session, even with a valid header.
    r = browser.s.head(result.final_url, headers={"x-amzn-oidc-data": alb_token(key, kid, user)}, allow_redirects=False, timeout=10)
    assert r.status_code == 405
    assert "accessToken" not in flow.token(wat, sessionUri=started["sessionUri"])
    # The load balancer's real header completes the session.
    r = browser.s.get(result.final_url, headers={"x-amzn-oidc-data": alb_token(key, kid, user)}, allow_redirects=False, timeout=10)
    assert r.status_code == 200, r.text
    token = flow.token(wat, sessionUri=started["sessionUri"])["accessToken"]
    assert userinfo(authz.metadata, token).json()["sub"] == user
    # Replaying the binding link after completion shows an error page, not success.
    r = browser.s.get(result.final_url, headers={"x-amzn-oidc-data": alb_token(key, kid, user)}, allow_redirects=False, timeout=10)
    assert r.status_code == 400


def test_initiator_polling_the_binding_url_never_gets_the_victims_consent(
    server: Latchkey, authz: OidcProvider, user_idp: OidcProvider, cp: Any, dp: Any, oidc_binding: BindingService
) -> None:
    """Session swap (issue 12, item 1). Mallory starts a flow for himself, sends the
    authorization link to Alice and keeps loading the binding URL with his polling
    sessionUri, signed in as himself, while Alice consents. Only the browser that came back
    from the provider holds the one-time completion URN: Mallory's loads never complete
    anything (before or after Alice's consent reaches the callback), Alice's own browser
    reaches the binding as Alice, who did not start the flow, so the session fails and
    nothing is stored for anyone."""
    flow = Flow(server, authz, cp, dp, [oidc_binding.binding_url])
    mallory, alice = uniq("mallory"), uniq("alice")
    mallory_token = user_idp.id_token_for(mallory)
    wat = dp.get_workload_access_token_for_jwt(workloadName=flow.workload, userToken=mallory_token)["workloadAccessToken"]
    started = flow.token(wat, resourceOauth2ReturnUrl=oidc_binding.binding_url)
    polling_link = f"{oidc_binding.binding_url}?session_id={started['sessionUri']}"

    mallory_browser = Browser(server.url, authz.issuer)
    mallory_browser.s.cookies.set("id_token", mallory_token, domain="127.0.0.1", path="/")
    stop = threading.Event()
    seen: list[int] = []
    pages: list[str] = []

    def mallory_reloads() -> None:
        while not stop.is_set():
            r = mallory_browser.get(polling_link)
            seen.append(r.status_code)
            if r.status_code == 200:
                pages.append(r.text)
            time.sleep(0.005)

    loop = threading.Thread(target=mallory_reloads, daemon=True)
    loop.start()
    try:
        # Alice consents on Mallory's link (as herself, at the provider)…
        alice_browser = Browser(server.url, authz.issuer)
        result = alice_browser.consent(started["authorizationUrl"], alice)
        assert result.final_url and result.final_url.startswith(oidc_binding.binding_url + "?session_id=")
        # …and her browser reaches the binding URL a moment later (her round trip), signed in.
        time.sleep(0.5)
        alice_browser.s.cookies.set("id_token", user_idp.id_token_for(alice), domain="127.0.0.1", path="/")
        page = alice_browser.get(result.final_url)
        time.sleep(0.3)
    finally:
        stop.set()
        loop.join(10)
    assert seen, "Mallory's loop never ran"
    assert 200 not in seen and not pages, f"Mallory completed the session ({seen.count(200)} of {len(seen)} loads)"
    # Nothing bound to Mallory: his poll says FAILED, and his vault still asks for consent.
    polled = flow.token(wat, sessionUri=started["sessionUri"])
    assert polled["sessionStatus"] == "FAILED" and "accessToken" not in polled
    assert "accessToken" not in flow.token(wat)
    # Alice's browser brought a completion URN of its own; as Alice (not the user who
    # started the flow) it fails the session.
    assert result.session_id != started["sessionUri"]
    assert page.status_code == 403, page.text
    # Mallory's link never completes: always the unknown-link page, which says why.
    assert set(seen) == {404}, seen
    assert "does not complete any authorization" in mallory_browser.get(polling_link).text


def test_connections_with_an_id_token_cookie_list_and_revoke_only_that_users_grants(
    server: Latchkey, authz: OidcProvider, user_idp: OidcProvider, cp: Any, dp: Any, oidc_binding: BindingService
) -> None:
    """The connections page behind a user's ID token (the `userToken` path): alice's grant is
    listed for alice only, mallory's session neither sees nor revokes it, and the identity
    operations under it refuse other roles, malformed users and forged tokens."""
    import re

    import requests

    flow = Flow(server, authz, cp, dp, [oidc_binding.binding_url])
    alice_id_token, wat, started, browser, result = flow.consent_with_id_token(user_idp, oidc_binding.binding_url, "alice")
    assert browser.get(result.final_url).status_code == 200
    assert flow.token(wat, sessionUri=started["sessionUri"]).get("accessToken")

    connections_url = oidc_binding.binding_url.replace("/oauth2/session-binding", "/connections")
    page = browser.get(connections_url)
    assert page.status_code == 200 and f">{flow.workload}</td>" in page.text, page.text[:1500]
    # This flow's row only (alice may hold grants of other tests' workloads too).
    row = page.text[page.text.index(f">{flow.workload}</td>") :]
    row = row[: row.index("</tr>")]
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', row))
    assert fields["workload"] == flow.workload and fields["provider"] == flow.provider, fields

    mallory = Browser(server.url, authz.issuer)
    mallory.s.cookies.set("id_token", user_idp.id_token_for("mallory"), domain="127.0.0.1", path="/")
    assert flow.workload not in mallory.get(connections_url).text
    refused = mallory.s.post(connections_url, data=fields, allow_redirects=False, timeout=30)
    assert refused.status_code == 403, refused.text[:300]
    assert "accessToken" in flow.token(wat), "mallory's post revoked alice's grant"

    # The identity operations: binding (or admin) only; a user is verified as at completion.
    binding_cred = server.create_credential("binding")
    workload_cred = server.create_credential(f"workload:{flow.workload}")

    def call(op: str, cred: Any, body: dict[str, Any]) -> requests.Response:
        return requests.post(f"{server.url}/latchkey/{op}", json=body, headers={"Authorization": cred.bearer}, timeout=30)

    alice = {"userIdentifier": {"userToken": alice_id_token}}
    listed = call("ListUserGrants", binding_cred, alice)
    assert listed.status_code == 200, listed.text
    mine = [g for g in listed.json()["grants"] if g["workloadIdentityName"] == flow.workload]
    assert len(mine) == 1 and mine[0]["credentialProviderName"] == flow.provider and mine[0]["grantedTime"] > 0
    assert "token" not in json.dumps(listed.json()).lower().replace("needsconsent", "")
    denied = call("ListUserGrants", workload_cred, alice)
    assert denied.status_code == 403 and denied.headers["x-amzn-ErrorType"].startswith("AccessDeniedException"), denied.text
    both = call("ListUserGrants", binding_cred, {"userIdentifier": {"userToken": alice_id_token, "userId": "alice"}})
    assert both.status_code == 400 and both.headers["x-amzn-ErrorType"].startswith("ValidationException")
    head, payload, _sig = alice_id_token.split(".")
    forged = call("ListUserGrants", binding_cred, {"userIdentifier": {"userToken": f"{head}.{payload}.AAAA"}})
    assert forged.status_code == 403, forged.text
    # A user id is another user than the token's subject: it holds none of alice's grants.
    by_id = call("ListUserGrants", binding_cred, {"userIdentifier": {"userId": "alice"}})
    assert all(g["workloadIdentityName"] != flow.workload for g in by_id.json()["grants"])
    gone = call("RevokeUserGrant", binding_cred, {"userIdentifier": {"userId": "alice"}, "workloadIdentityName": flow.workload, "credentialProviderName": flow.provider})
    assert gone.status_code == 404 and gone.headers["x-amzn-ErrorType"].startswith("ResourceNotFoundException"), gone.text
    assert "accessToken" in flow.token(wat)

    # Alice revokes on her page: the next request asks for consent again.
    done = browser.s.post(connections_url, data=fields, headers={"Sec-Fetch-Site": "same-origin"}, allow_redirects=False, timeout=30)
    assert done.status_code == 303, done.text[:300]
    again = flow.token(wat, resourceOauth2ReturnUrl=oidc_binding.binding_url)
    assert "authorizationUrl" in again and "accessToken" not in again
