"""`latchkey dev`: the whole secured agent from one command, driven over HTTP as a browser
would: sign in at the gateway through the development OpenID provider, ask the agent a
question, follow the Authorize link through the sandbox's consent page and the session
binding page, and watch the same stream continue with the user's sandbox login. Then: the
vaulted token serves the next question without consent, another user opening the link gets
"wrong account" and nothing is bound, and a restart on the same data directory keeps the
grant. Real processes and real crypto on loopback; nothing is mocked."""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from binding_harness import ScriptedLlm
from dev_harness import Browser, Dev, ask, text_of
from lk_harness import latchkey_bin
from secrets_sweep import SWEEP


def test_dev_walks_the_whole_flow_and_keeps_the_grant_across_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "dev-data"
    dev = Dev(data, tmp_path / "dev.log")
    try:
        assert dev.ready_ms < 5000
        assert "model:              the offline scripted planner" in "".join(dev.lines), dev.lines
        alice = Browser()
        alice.sign_in(dev, "alice")
        session = str(uuid.uuid4())
        events = ask(alice, dev, session, "Who am I on GitHub?", consent_as="alice")
        names = [n for n, _ in events]
        assert names[:2] == ["text_delta", "tool_call"] or "tool_call" in names, events
        assert "authorization_required" in names and "tool_result" in names, events
        result = next(d for n, d in events if n == "tool_result")
        assert result["ok"] and '"login":"alice"' in result["content"], result
        assert "You are alice on GitHub" in text_of(events)
        assert "[offline scripted planner" in text_of(events)
        assert events[-1] == ("done", {"stopReason": "end_turn"})

        # The vaulted token serves the next question: no consent.
        events = ask(alice, dev, session, "who am i on github, again?")
        assert "authorization_required" not in [n for n, _ in events]
        assert "You are alice on GitHub" in text_of(events)

        # Bob, signed in in his own browser, opens a link of a flow alice starts: the
        # binding page refuses him and nothing is stored for anyone.
        bob = Browser()
        bob.sign_in(dev, "bob")
        link: dict[str, Any] = {}
        for name, d in alice.invoke(dev, str(uuid.uuid4()), "list my repositories"):
            if name == "authorization_required":
                link = d
                break
        assert link, "the repositories tool asks for its own scope"
        page = bob.go(link["authorizationUrl"])
        refused = bob.submit(page, {"user": "bob"})
        assert refused.status_code == 403 and "Wrong account" in refused.text, refused.text[:800]
        # Nothing was bound to bob: his own question still needs his own consent.
        for name, d in bob.invoke(dev, str(uuid.uuid4()), "list my repositories"):
            assert name != "tool_result", f"bob got a token without consenting: {d}"
            if name == "authorization_required":
                break
        else:
            raise AssertionError("bob's question did not ask for consent")
    finally:
        dev.stop()

    # Restarted on the same data directory: alice's grant is still there.
    dev = Dev(data, tmp_path / "dev.log")
    try:
        alice = Browser()
        alice.sign_in(dev, "alice")
        events = ask(alice, dev, str(uuid.uuid4()), "Who am I on GitHub?")
        assert "authorization_required" not in [n for n, _ in events], events
        assert "You are alice on GitHub" in text_of(events)
    finally:
        dev.stop()


def model_line(dev: Dev) -> str:
    return next(l.strip() for l in dev.lines if l.strip().startswith("model:"))


def test_dev_answers_through_the_model_configured_as_for_serve_agent(tmp_path: Path) -> None:
    """`--llm-…` as `serve agent` takes them: the answer comes from the model (the scripted
    OpenAI-compatible server), not the planner. OPENAI_API_KEY belongs to OpenAI's endpoint:
    with another base URL it is not sent; the agent's own key is."""
    llm = ScriptedLlm(tmp_path)
    usual_key, agent_key = f"sk-usual-{uuid.uuid4().hex}", f"sk-agent-{uuid.uuid4().hex}"
    SWEEP.register("llm-api-key", usual_key, agent_key)
    args = ["--llm-provider", "openai", "--llm-model", "scripted", "--llm-base-url", llm.url + "/v1", "--llm-max-retries", "0"]
    data = tmp_path / "dev-data"
    try:
        dev = Dev(data, tmp_path / "dev.log", args=args, env={"OPENAI_API_KEY": usual_key})
        try:
            assert model_line(dev) == f"model:              openai model scripted at {llm.url}/v1"
            alice = Browser()
            alice.sign_in(dev, "alice")
            events = ask(alice, dev, str(uuid.uuid4()), "use:github_profile", consent_as="alice")
            text = text_of(events)
            assert "tool github_profile returned:" in text and "alice" in text, events
            assert "offline scripted planner" not in text
        finally:
            dev.stop()
        calls = [r for r in llm.requests() if r["path"] == "/v1/chat/completions"]
        assert len(calls) == 2, calls
        assert {r["headers"]["authorization"] for r in calls} == {"absent"}

        # The agent's key (LATCHKEY_AGENT_LLM_API_KEY, as for serve agent) is sent.
        dev = Dev(data, tmp_path / "dev.log", args=args, env={"LATCHKEY_AGENT_LLM_API_KEY": agent_key})
        try:
            alice = Browser()
            alice.sign_in(dev, "alice")
            events = ask(alice, dev, str(uuid.uuid4()), "use:github_profile")
            assert "tool github_profile returned:" in text_of(events), events
        finally:
            dev.stop()
        calls = [r for r in llm.requests() if r["path"] == "/v1/chat/completions"]
        assert [r["headers"]["authorization"] for r in calls[2:]] == ["present", "present"], calls
        for where in (dev.log.read_text(), "".join(dev.lines)):
            assert usual_key not in where and agent_key not in where
    finally:
        llm.stop()


def test_dev_refuses_model_keys_without_a_provider(tmp_path: Path) -> None:
    out = subprocess.run(
        [latchkey_bin(), "dev", "--data-dir", str(tmp_path / "d"), "--listen", "127.0.0.1:0", "--llm-model", "gpt-4.1"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert out.returncode != 0
    assert "`agent.llm.provider`" in out.stderr and "--llm-provider" in out.stderr, out.stderr


def github_grants(dev: Dev) -> list[str]:
    """The users holding a grant of the dev agent's `github` provider."""
    lines = dev.admin("grants", "list", "--workload", "dev-agent").splitlines()
    return sorted(g["user"] for g in map(json.loads, lines) if g["provider"] == "github")


def custom_provider_at(url: str) -> dict[str, Any]:
    """A CustomOauth2 provider whose discovery URL is `url`'s."""
    config = {"oauthDiscovery": {"discoveryUrl": f"{url}/.well-known/openid-configuration"}, "clientId": "probe", "clientSecret": "probe-secret"}
    return {"name": f"probe-{uuid.uuid4().hex[:8]}", "credentialProviderVendor": "CustomOauth2", "oauth2ProviderConfigInput": {"customOauth2ProviderConfig": config}}


def test_dev_with_real_github_credentials_and_back_to_the_sandbox(tmp_path: Path) -> None:
    """With a GitHub OAuth app's credentials (fake here: the test never reaches github.com)
    the `github` provider is the GithubOauth2 preset, the printed callback URL is the
    provider's, Authorize leads to github.com with the app's client id, the identity service
    refuses private addresses, and the secret is in no output or log. Switching on one data
    directory (sandbox, GitHub, sandbox) keeps the provider's callback and forgets the grants
    of the other side, audited."""
    data, log = tmp_path / "dev-data", tmp_path / "dev.log"
    dev = Dev(data, log)
    try:
        alice = Browser()
        alice.sign_in(dev, "alice")
        ask(alice, dev, str(uuid.uuid4()), "Who am I on GitHub?", consent_as="alice")
        assert github_grants(dev) == ["alice"]
        sandbox_callback = dev.control("GetOauth2CredentialProvider", {"name": "github"}).json()["callbackUrl"]
    finally:
        dev.stop()

    client_id, secret = "Iv1.latchkeytest", f"gh-secret-{uuid.uuid4().hex}"
    SWEEP.register("github-client-secret", secret)
    dev = Dev(data, log, env={"LATCHKEY_DEV_GITHUB_CLIENT_ID": client_id, "LATCHKEY_DEV_GITHUB_CLIENT_SECRET": secret})
    try:
        out = "".join(dev.lines)
        assert "`github` switched from the sandbox to GitHub: 1 grant(s) from the sandbox forgotten" in out, out
        assert f"GitHub:             github.com, OAuth app {client_id} (the sandbox at" in out and "is not used" in out, out
        m = re.search(r"callback URL:\s+(\S+) \(register it", out)
        assert m, out
        callback = m.group(1)
        provider = dev.control("GetOauth2CredentialProvider", {"name": "github"}).json()
        assert provider["credentialProviderVendor"] == "GithubOauth2", provider
        assert provider["callbackUrl"] == callback and callback.rsplit("/", 1)[1] == sandbox_callback.rsplit("/", 1)[1]
        assert github_grants(dev) == []
        assert "the provider now names GitHub instead of the sandbox" in dev.admin("audit", "list", "--limit", "30")

        # alice must consent again, at github.com with the app's client id (not followed).
        alice = Browser()
        alice.sign_in(dev, "alice")
        link = ""
        for name, d in alice.invoke(dev, str(uuid.uuid4()), "Who am I on GitHub?"):
            assert name != "tool_result", d
            if name == "authorization_required":
                link = d["authorizationUrl"]
                break
        r = alice.s.get(link, allow_redirects=False, timeout=30)
        assert r.status_code in (302, 303), r.text
        to = urlparse(r.headers["Location"])
        assert (to.scheme, to.netloc, to.path) == ("https", "github.com", "/login/oauth/authorize"), to
        assert parse_qs(to.query)["client_id"] == [client_id] and parse_qs(to.query)["redirect_uri"] == [callback]

        # GitHub is public: the identity service no longer reaches loopback.
        refused = dev.control("CreateOauth2CredentialProvider", custom_provider_at(dev.urls["dev OpenID provider"]))
        assert refused.status_code == 400 and "outbound policy" in refused.text, refused.text
        dev.admin("grants", "seed", "--workload", "dev-agent", "--provider", "github", "--count", "1", "--user-prefix", "octocat-")
        assert github_grants(dev) == ["octocat-0"]
    finally:
        dev.stop()
    for where in ("".join(dev.lines), log.read_text(), (data / "dev.json").read_text()):
        assert secret not in where

    dev = Dev(data, log)
    try:
        out = "".join(dev.lines)
        assert "`github` switched from GitHub to the sandbox: 1 grant(s) from GitHub forgotten" in out, out
        provider = dev.control("GetOauth2CredentialProvider", {"name": "github"}).json()
        assert provider["credentialProviderVendor"] == "CustomOauth2", provider
        assert provider["callbackUrl"].rsplit("/", 1)[1] == sandbox_callback.rsplit("/", 1)[1]
        assert github_grants(dev) == []
        accepted = dev.control("CreateOauth2CredentialProvider", custom_provider_at(dev.urls["dev OpenID provider"]))
        assert accepted.status_code in (200, 201), accepted.text
        alice = Browser()
        alice.sign_in(dev, "alice")
        events = ask(alice, dev, str(uuid.uuid4()), "Who am I on GitHub?", consent_as="alice")
        assert "You are alice on GitHub" in text_of(events)
    finally:
        dev.stop()


def test_dev_refreshes_an_expired_sandbox_token_without_asking(tmp_path: Path) -> None:
    # Sandbox access tokens live 2 s; the vault refreshes with the (rotating) refresh token.
    dev = Dev(tmp_path / "dev-data", tmp_path / "dev.log", token_lifetime=2)
    try:
        alice = Browser()
        alice.sign_in(dev, "alice")
        session = str(uuid.uuid4())
        events = ask(alice, dev, session, "Who am I on GitHub?", consent_as="alice")
        assert "You are alice on GitHub" in text_of(events)
        time.sleep(3)
        events = ask(alice, dev, session, "who am I on GitHub now?")
        assert "authorization_required" not in [n for n, _ in events], events
        assert "You are alice on GitHub" in text_of(events), events
        tokens = json.loads((dev.data_dir / "dev-sandbox-tokens.json").read_text())
        assert len([e for e in tokens["refresh"].values() if e["used"]]) >= 1, "the refresh token was not used"
    finally:
        dev.stop()


def test_dev_reset_refuses_a_directory_it_did_not_make(tmp_path: Path) -> None:
    other = tmp_path / "precious"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    out = subprocess.run(
        [latchkey_bin(), "dev", "--data-dir", str(other), "--reset", "--listen", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert out.returncode != 0
    assert "not a latchkey dev data directory" in out.stderr, out.stderr
    assert (other / "notes.txt").read_text() == "keep me"


def test_dev_in_headless_chromium(tmp_path: Path) -> None:
    """The flow a person sees, in a real browser: the README's screenshots come from here
    (LATCHKEY_SCREENSHOTS=docs/images keeps them)."""
    import os
    import shutil

    root = Path(__file__).resolve().parents[2]
    browser_dir = root / "tests" / "browser"
    chromium = os.environ.get("LATCHKEY_TEST_CHROMIUM", "/usr/bin/chromium")
    assert shutil.which(chromium), f"{chromium} is missing: apt-get install -y chromium (scripts/test does)"
    assert (browser_dir / "node_modules" / "playwright-core").is_dir(), "npm ci --prefix tests/browser (scripts/test does)"
    shots = Path(os.environ.get("LATCHKEY_SCREENSHOTS") or (root / ".test-data" / "artifacts" / "dev"))
    if not shots.is_absolute():
        shots = root / shots
    dev = Dev(tmp_path / "dev-data", tmp_path / "dev.log")
    try:
        cp = subprocess.run(
            ["node", str(browser_dir / "dev_chat.mjs"), "--url", dev.url, "--user", "alice", "--dir", str(shots), "--chromium", chromium],
            cwd=browser_dir, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL,
        )
    finally:
        dev.stop()
    lines = [l for l in cp.stdout.splitlines() if l.startswith("{")]
    assert lines, f"no result from the browser (exit {cp.returncode}): {cp.stdout[-2000:]} {cp.stderr[-2000:]}"
    result = json.loads(lines[-1])
    assert cp.returncode == 0 and "error" not in result, result
    assert "You are alice on GitHub" in result["answer"], result
    assert "Latchkey dev agent (workload dev-agent)" in result["consentText"] and "read:user" in result["consentText"]
    assert "Authorization complete" in result["bindingText"]
    for name in ("login", "chat-authorize", "consent", "binding-complete", "chat-answer"):
        png = shots / f"{name}.png"
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
