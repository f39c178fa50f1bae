"""The agent workload end to end, in the seed architecture's order (PRODUCT.md, steps 1–17):
a signed-in user (ALB-signed `x-amzn-oidc-data`) asks the agent (`latchkey serve agent`)
for something a GitHub tool does; the agent gets a WAT for that user, asks the identity
service for a token with that tool's scopes, streams `authorization_required`; the user
consents at "GitHub" (`oidc-provider` as its authorization server, driven headlessly), lands
on the session binding service signed in as the same user, which completes the session; the
next message runs the tool against a loopback GitHub-shaped API that checks the token's
scopes, and the result streams back. A second conversation uses the vaulted token without
consent; the `repo` tool still needs its own consent; forged or missing claims headers get
401 with no model call.

Real parts: the `latchkey` binary (identity, binding, agent), boto3, `oidc-provider`, the
node resource API; the model is tests/llm/scripted_llm.py (OpenAI wire protocol), the only
scripted stand-in.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec

from binding_harness import ALB_ARN, BindingService, KeyServer, ScriptedLlm, alb_token, spawn_listening
from flows_harness import Browser, create_custom_provider, running_provider
from lk_harness import Latchkey, uniq
from moto_harness import Moto
from oidc import OidcProvider, ResourceApi

KID = "agent-e2e-kid"


@pytest.fixture(scope="module")
def authz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    """"GitHub"'s authorization server."""
    yield from running_provider(tmp_path_factory, "authz-agent", client_id="lk-agent-gh", client_secret="lk-agent-gh-" + "z" * 16)


@pytest.fixture(scope="module")
def github(authz: OidcProvider) -> Iterator[ResourceApi]:
    """"GitHub"'s REST API: /user needs read:user, /user/repos needs repo."""
    api = ResourceApi(authz).start()
    yield api
    api.stop()


@pytest.fixture(scope="module")
def key_server() -> Iterator[KeyServer]:
    ks = KeyServer()
    yield ks
    ks.httpd.shutdown()


@pytest.fixture(scope="module")
def llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScriptedLlm]:
    s = ScriptedLlm(tmp_path_factory.mktemp("llm"))
    yield s
    s.stop()


class Agent:
    def __init__(self, server: Latchkey, workdir: Path, workload: str, provider: str, return_url: str, llm: ScriptedLlm, github: ResourceApi, key_server: KeyServer, extra: list[str] | None = None, extra_env: dict[str, str] | None = None) -> None:
        cred = server.create_credential(f"workload:{workload}")
        self.secret = cred.secret_access_key
        self.store = workdir / "conversations"
        env = {k: v for k, v in server.env.items() if not k.startswith("LATCHKEY_")}
        env["LATCHKEY_AGENT_CREDENTIAL"] = f"{cred.access_key_id}:{cred.secret_access_key}"
        env["LATCHKEY_LOG_LEVEL"] = "debug"
        env.update(extra_env or {})
        self.log = workdir / "agent.log"
        self.proc, self.url = spawn_listening(
            [
                server.bin, "serve", "agent", "--listen", "127.0.0.1:0",
                "--identity-url", server.url, "--workload-name", workload, "--return-url", return_url,
                "--alb-signer", ALB_ARN, "--alb-key-url-template", key_server.url + "/{kid}",
                "--outbound-allow-private-addresses", "true",
                *([] if "--store-kind" in (extra or []) else ["--store-dir", str(self.store)]),
                "--llm-provider", "openai", "--llm-model", "scripted", "--llm-base-url", llm.url + "/v1",
                "--github-base-url", github.url, "--github-provider", provider,
                *(extra or []),
            ],
            env,
            self.log,
        )

    def invoke(self, header: str | None, session: str, message: str) -> tuple[int, list[tuple[str, dict[str, Any]]], str]:
        headers = {"content-type": "application/json"}
        if header is not None:
            headers["x-amzn-oidc-data"] = header
        r = requests.post(self.url + "/invocations", json={"sessionId": session, "message": message}, headers=headers, timeout=60)
        events = []
        if r.headers.get("content-type", "").startswith("text/event-stream"):
            for block in r.text.split("\n\n"):
                name, data = "", ""
                for line in block.splitlines():
                    if line.startswith("event:"):
                        name = line[6:].strip()
                    elif line.startswith("data:"):
                        data += line[5:].strip()
                if name:
                    events.append((name, json.loads(data) if data else {}))
        return r.status_code, events, r.text

    def stop(self) -> str:
        self.proc.terminate()
        self.proc.wait(10)
        return self.log.read_text()


def names(events: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [n for n, _ in events]


def first(events: list[tuple[str, dict[str, Any]]], name: str) -> dict[str, Any]:
    for n, d in events:
        if n == name:
            return d
    raise AssertionError(f"no {name} event in {names(events)}")


class Deployment:
    """Identity (fixture `server`) + binding + agent, one workload, "GitHub" as provider."""

    def __init__(self, server: Latchkey, authz: OidcProvider, cp: Any, llm: ScriptedLlm, github: ResourceApi, key_server: KeyServer, workdir: Path) -> None:
        self.server, self.authz, self.llm = server, authz, llm
        self.key = key_server.new_key(KID)
        self.binding = BindingService(server, workdir, ["--alb-signer", ALB_ARN, "--alb-key-url-template", key_server.url + "/{kid}"])
        self.workload = uniq("agent-wl")
        cp.create_workload_identity(
            name=self.workload,
            allowedResourceOauth2ReturnUrls=[self.binding.binding_url],
            tags={"latchkey:allow-user-id": "true"},
        )
        self.provider, callback = create_custom_provider(server, cp, authz, "github")
        authz.restart(redirect_uris=sorted({*authz.redirect_uris, callback} - {"http://127.0.0.1/callback"}))
        self.agent = Agent(server, workdir, self.workload, self.provider, self.binding.binding_url, llm, github, key_server)
        self.args = (server, workdir, self.workload, self.provider, self.binding.binding_url, llm, github, key_server)

    def header(self, user: str) -> str:
        return alb_token(self.key, KID, user)

    def consent(self, authorization_url: str, user: str) -> requests.Response:
        """The user's browser: consent at "GitHub", then the binding URL signed in as `user`."""
        browser = Browser(self.server.url, self.authz.issuer)
        result = browser.consent(authorization_url, user=user)
        assert result.final_url and result.final_url.startswith(self.binding.binding_url), result
        return browser.s.get(result.final_url, headers={"x-amzn-oidc-data": self.header(user)}, allow_redirects=False, timeout=15)

    def vaulted_token(self, user: str) -> str:
        """`user`'s vaulted access token, read back with an admin WAT (and so remembered as a secret)."""
        dp = self.server.dp()
        wat = dp.get_workload_access_token_for_user_id(workloadName=self.workload, userId=user)["workloadAccessToken"]
        token: str = dp.get_resource_oauth2_token(
            workloadIdentityToken=wat, resourceCredentialProviderName=self.provider, scopes=["read:user"], oauth2Flow="USER_FEDERATION"
        )["accessToken"]
        self.server.remember_secret(token)
        return token

    def stop(self) -> tuple[str, str]:
        return self.agent.stop(), self.binding.stop()


@pytest.fixture(scope="module")
def deployment(server: Latchkey, authz: OidcProvider, cp: Any, llm: ScriptedLlm, github: ResourceApi, key_server: KeyServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    d = Deployment(server, authz, cp, llm, github, key_server, tmp_path_factory.mktemp("agent-e2e"))
    yield d
    d.stop()


def test_consent_binding_and_tool_call_end_to_end(deployment: Deployment, github: ResourceApi) -> None:
    user = uniq("alice")
    session = f"conv-{uuid.uuid4()}"
    status, events, _ = deployment.agent.invoke(deployment.header(user), session, "Who am I on GitHub? use:github_profile")
    assert status == 200, events
    assert names(events)[-1] == "done"
    auth = first(events, "authorization_required")
    assert auth["tool"] == "github_profile" and auth["provider"] == deployment.provider
    assert auth["scopes"] == ["read:user"]
    assert "tool_result" not in names(events), "no tool may run before consent"

    page = deployment.consent(auth["authorizationUrl"], user)
    assert page.status_code == 200, page.text

    status, events, raw = deployment.agent.invoke(deployment.header(user), session, "Now? use:github_profile")
    assert status == 200
    call = first(events, "tool_call")
    result = first(events, "tool_result")
    assert call["name"] == "github_profile" and result["ok"] is True, events
    text = "".join(d.get("text", "") for n, d in events if n == "text_delta")
    assert "tool github_profile returned" in text and user in text
    calls = requests.get(github.url + "/__test/calls", timeout=5).json()
    assert {"path": "/user", "sub": user} in calls

    # A new conversation uses the vaulted token: no consent.
    status, events, _ = deployment.agent.invoke(deployment.header(user), f"conv-{uuid.uuid4()}", "again use:github_profile")
    assert first(events, "tool_result")["ok"] is True
    assert "authorization_required" not in names(events)

    # Least privilege: the repo tool needs its own consent, read:user does not cover it.
    status, events, _ = deployment.agent.invoke(deployment.header(user), session, "my repos use:github_repositories")
    repo_auth = first(events, "authorization_required")
    assert repo_auth["tool"] == "github_repositories" and "repo" in repo_auth["scopes"]
    assert "read:user" not in repo_auth["scopes"]
    assert not [c for c in requests.get(github.url + "/__test/calls", timeout=5).json() if c["path"] == "/user/repos"]

    # The vaulted token (read back with an admin WAT for this user) never reaches the
    # stream, the model, the stored conversation or the agent's log.
    token = deployment.vaulted_token(user)
    stored = "".join(p.read_text(errors="replace") for p in deployment.agent.store.rglob("*") if p.is_file())
    assert "github_profile" in stored, "the conversation was stored"
    model_saw = json.dumps(deployment.llm.requests())
    for where, text in [("stream", raw), ("stored conversation", stored), ("model requests", model_saw), ("agent log", deployment.agent.log.read_text())]:
        assert token not in text, f"the access token leaked into the {where}"

    # The chain is joinable: the agent's tool-call line names the vend it used by the same
    # id (a digest of the token) as the identity service's GetResourceOauth2Token event.
    vend = "vend-" + hashlib.sha256(token.encode()).hexdigest()[:32]
    tool_lines = [line for line in deployment.agent.log.read_text().splitlines() if "tool ran" in line]
    assert any(f"vend_id={vend}" in line for line in tool_lines), tool_lines
    vends = [
        e for e in (json.loads(x) for x in deployment.server.cli("admin", "audit", "list", "--limit", "100000").stdout.splitlines() if x.strip())
        if e["action"] == "GetResourceOauth2Token" and e.get("user_id") == user and e["detail"].get("vendId") == vend
    ]
    assert vends and vends[0]["workload"] == deployment.workload, vends


def test_another_user_cannot_finish_or_read_the_conversation(deployment: Deployment, github: ResourceApi) -> None:
    alice, mallory = uniq("alice"), uniq("mallory")
    session = f"conv-{uuid.uuid4()}"
    _, events, _ = deployment.agent.invoke(deployment.header(alice), session, "use:github_profile")
    auth = first(events, "authorization_required")
    # Mallory consents at GitHub as herself and lands on the binding URL as herself: refused.
    page = deployment.consent(auth["authorizationUrl"], mallory)
    assert page.status_code in (400, 403), page.text
    _, events, _ = deployment.agent.invoke(deployment.header(alice), session, "use:github_profile")
    assert "authorization_required" in names(events), "nothing was stored for alice"
    assert not [c for c in requests.get(github.url + "/__test/calls", timeout=5).json() if c["sub"] in (alice, mallory)]
    # Same sessionId, another user: a fresh conversation, not alice's.
    _, events, _ = deployment.agent.invoke(deployment.header(mallory), session, "hello")
    text = "".join(d.get("text", "") for n, d in events if n == "text_delta")
    assert text.startswith("echo:") and "github_profile" not in text


@pytest.mark.parametrize("how", ["none", "forged", "unsigned", "other-signer", "garbage"])
def test_bad_claims_header_is_refused_before_any_model_call(deployment: Deployment, llm: ScriptedLlm, how: str) -> None:
    before = len(llm.requests())
    user = uniq("eve")
    header = {
        "none": None,
        "forged": alb_token(ec.generate_private_key(ec.SECP256R1()), KID, user),
        "unsigned": deployment.header(user).rsplit(".", 1)[0] + ".",
        "other-signer": alb_token(deployment.key, KID, user, signer=ALB_ARN.replace("50dc", "60dc")),
        "garbage": "not-a-jwt",
    }[how]
    status, events, raw = deployment.agent.invoke(header, f"conv-{uuid.uuid4()}", "use:github_profile")
    assert status == 401, raw
    assert events == []
    assert len(llm.requests()) == before, "no model call for an unauthenticated request"


def test_agent_log_holds_no_secrets(deployment: Deployment) -> None:
    user = uniq("logcheck")
    deployment.agent.invoke(deployment.header(user), f"conv-{uuid.uuid4()}", "hello")
    log = deployment.agent.log.read_text()
    assert deployment.agent.secret not in log
    assert deployment.authz.client_secret not in log
    assert os.path.getsize(deployment.agent.log) > 0


# --------------------------------------------------------------------------- S3 store
def test_conversations_in_s3(deployment: Deployment, tmp_path: Path) -> None:
    """The same agent with `store kind = s3` (moto on loopback): each conversation is one
    object at `{prefix}/sessions/{base64url(sub)}/{sessionId}`; users stay apart; hostile
    subs stay one key segment."""
    moto = Moto(tmp_path)
    try:
        s3 = moto.s3()
        s3.create_bucket(Bucket="conversations")
        agent = Agent(
            *deployment.args[:1], tmp_path, *deployment.args[2:],
            extra=["--store-kind", "s3", "--store-bucket", "conversations", "--store-prefix", "agent-e2e", "--store-region", "us-east-1",
                   "--store-endpoint", moto.url, "--store-allow-http", "true", "--store-access-key-id", "testing"],
            extra_env={"LATCHKEY_AGENT_STORE_SECRET_ACCESS_KEY": "testing-secret"},
        )
        try:
            session = f"conv-{uuid.uuid4()}"
            alice = uniq("alice")
            status, events, raw = agent.invoke(deployment.header(alice), session, "remember the word porcupine")
            assert status == 200 and names(events)[-1] == "done", raw
            segment = base64.urlsafe_b64encode(alice.encode()).decode().rstrip("=")
            key = f"agent-e2e/sessions/{segment}/{session}"
            body = s3.get_object(Bucket="conversations", Key=key)["Body"].read().decode()
            assert "porcupine" in body
            # Bob with alice's sessionId: a fresh conversation, stored under bob's key.
            bob = uniq("bob")
            _, events, _ = agent.invoke(deployment.header(bob), session, "what word?")
            assert "porcupine" not in json.dumps(events)
            for hostile in ["../" + alice, alice + "/../x", "%2e%2e", "..", "é" * 64]:
                status, _, raw = agent.invoke(deployment.header(hostile), session, "hi")
                assert status == 200, raw
            # A 1,000-character sub cannot be a user id (AgentCore's UserIdType is 1..128):
            # refused as not signed in, nothing stored.
            status, events, raw = agent.invoke(deployment.header("x" * 1000), session, "hi")
            assert status == 401 and events == [], raw
            keys = [o["Key"] for o in s3.list_objects_v2(Bucket="conversations")["Contents"]]
            # A conversation, and the lease its turns took (replicas: see below), per user.
            sessions = [k for k in keys if k.startswith("agent-e2e/sessions/")]
            leases = [k for k in keys if k.startswith("agent-e2e/locks/")]
            assert len(sessions) + len(leases) == len(keys), keys
            assert all(k.count("/") == 3 and ".." not in k.split("/") for k in keys), keys
            assert len(sessions) == 7 and len(leases) == 7, keys
            assert agent.secret not in agent.log.read_text() and "testing-secret" not in agent.log.read_text()
        finally:
            agent.stop()
    finally:
        moto.stop()


def test_two_agents_never_interleave_one_conversation(deployment: Deployment, tmp_path: Path) -> None:
    """Two agent replicas on one S3 store (moto): a turn on the second waits for the first's
    turn of the same conversation (the conversation's lease, S3 conditional writes), so it
    sees the first exchange and neither overwrites the other. Without the lease the second
    turn would load the conversation before the first saved it, and one turn would be lost."""
    moto = Moto(tmp_path)
    slow = ScriptedLlm(tmp_path, chunk_delay_ms=1000)  # each answer takes over two seconds
    agents: list[Agent] = []
    try:
        s3 = moto.s3()
        s3.create_bucket(Bucket="replicas")
        store = ["--store-kind", "s3", "--store-bucket", "replicas", "--store-prefix", "two", "--store-region", "us-east-1",
                 "--store-endpoint", moto.url, "--store-allow-http", "true", "--store-access-key-id", "testing"]
        server, _, workload, provider, return_url, _, github, key_server = deployment.args
        for name in ("a", "b"):
            workdir = tmp_path / name
            workdir.mkdir()
            agents.append(Agent(server, workdir, workload, provider, return_url, slow, github, key_server, extra=store,
                                extra_env={"LATCHKEY_AGENT_STORE_SECRET_ACCESS_KEY": "testing-secret"}))
        a, b = agents
        session, user = f"conv-{uuid.uuid4()}", uniq("replicated")
        header = deployment.header(user)
        first: dict[str, Any] = {}
        t = threading.Thread(target=lambda: first.update(result=a.invoke(header, session, "first word alpaca")))
        t.start()
        segment = base64.urlsafe_b64encode(user.encode()).decode().rstrip("=")
        lease = f"two/locks/{segment}/{session}"
        # b starts once a's answer is streaming (a's model call has arrived).
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any("alpaca" in json.dumps(r.get("body")) for r in slow.requests()):
            time.sleep(0.05)
        assert s3.list_objects_v2(Bucket="replicas", Prefix=lease).get("KeyCount", 0) == 1, "a's turn took no lease"
        status, events, raw = b.invoke(header, session, "second word bison")
        t.join(60)
        assert status == 200 and names(events)[-1] == "done", raw
        assert first["result"][0] == 200 and names(first["result"][1])[-1] == "done", first
        # b's model call saw a's whole exchange; the stored conversation has both, in order.
        calls = [json.dumps(r["body"]) for r in slow.requests() if "bison" in json.dumps(r.get("body"))]
        assert calls and all("alpaca" in c and "echo: first word alpaca" in c for c in calls), calls
        body = s3.get_object(Bucket="replicas", Key=f"two/sessions/{segment}/{session}")["Body"].read().decode()
        assert 0 <= body.index("alpaca") < body.index("bison"), body
        # Released: the lease object says so (an expiry in the past), it is not deleted.
        held = json.loads(s3.get_object(Bucket="replicas", Key=lease)["Body"].read())
        assert held["expiresMs"] < time.time() * 1000, held
    finally:
        for agent in agents:
            agent.stop()
        slow.stop()
        moto.stop()


# --------------------------------------------------------------------------- configured tools
def test_tool_arguments_stay_in_the_template_and_a_reflected_token_is_redacted(deployment: Deployment, github: ResourceApi, tmp_path: Path) -> None:
    """Tools from `LATCHKEY_AGENT_TOOLS`: `repo_issues` (`/repos/{owner}/{repo}/issues`) and
    `echo` (a resource that reflects the request's Authorization header, raw and encoded).
    No argument moves a request outside its template (`..` is refused with a tool error,
    nothing sent); the token a resource reflects never reaches the stream, the model or the
    stored conversation."""
    tools = [
        {"name": "repo_issues", "description": "A repository's issues", "provider": deployment.provider, "scopes": ["read:user"],
         "url": github.url + "/repos/{owner}/{repo}/issues",
         "parameters": {"type": "object", "properties": {"owner": {"type": "string"}, "repo": {"type": "string"}}, "required": ["owner", "repo"]}},
        {"name": "echo", "description": "Reflects the request", "provider": deployment.provider, "scopes": ["read:user"],
         "url": github.url + "/echo/{id}", "parameters": {"type": "object", "properties": {"id": {"type": "string"}}}},
    ]
    agent = Agent(*deployment.args[:1], tmp_path, *deployment.args[2:], extra_env={"LATCHKEY_AGENT_TOOLS": json.dumps(tools)})
    token = None
    try:
        user = uniq("tina")
        session = f"conv-{uuid.uuid4()}"
        _, events, _ = agent.invoke(deployment.header(user), session, 'use:echo {"id": "1"}')
        auth = first(events, "authorization_required")
        assert deployment.consent(auth["authorizationUrl"], user).status_code == 200
        status, events, stream_echo = agent.invoke(deployment.header(user), session, "ok")
        assert status == 200, stream_echo
        result = first(events, "tool_result")
        assert result["ok"] is True, events
        assert "Bearer [REDACTED]" in result["content"], result

        before = len(requests.get(github.url + "/__test/requests", timeout=5).json())
        hostile = ["..", "%2e%2e", ".", "", "a/b", "a?x=1", "a#f", "../../user", "é😀"]
        message = "\n".join("use:repo_issues " + json.dumps({"owner": owner, "repo": "r"}) for owner in hostile)
        status, events, stream_hostile = agent.invoke(deployment.header(user), f"conv-{uuid.uuid4()}", message)
        assert status == 200, stream_hostile
        results = [d for n, d in events if n == "tool_result"]
        assert len(results) == len(hostile), events
        for owner, r in zip(hostile[:4], results[:4]):
            assert r["ok"] is False and "argument `owner` must not be empty, `.` or `..`" in r["content"], (owner, r)
        targets = [r["target"] for r in requests.get(github.url + "/__test/requests", timeout=5).json()[before:]]
        assert targets == [
            "/repos/a%2Fb/r/issues",
            "/repos/a%3Fx%3D1/r/issues",
            "/repos/a%23f/r/issues",
            "/repos/..%2F..%2Fuser/r/issues",
            "/repos/%C3%A9%F0%9F%98%80/r/issues",
        ], targets

        # The token the echo reflected, read back with an admin WAT for this user.
        token = deployment.vaulted_token(user)
        forms = [token, base64.b64encode(f"user:{token}".encode()).decode(), base64.b64encode(f"Bearer {token}".encode()).decode()]
        stored = "".join(p.read_text(errors="replace") for p in agent.store.rglob("*") if p.is_file())
        assert "[REDACTED]" in stored
        model_saw = json.dumps(deployment.llm.requests())
        assert "[REDACTED]" in model_saw
        for form in forms:
            for where, text in [("stream", stream_echo), ("stream", stream_hostile), ("stored conversation", stored), ("model requests", model_saw)]:
                assert form not in text, f"the access token (or its base64) leaked into the {where}"
    finally:
        log = agent.stop()
    assert token and token not in log
