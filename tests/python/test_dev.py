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
from urllib.parse import parse_qs, urljoin, urlparse

import requests

from binding_harness import ScriptedLlm
from dev_harness import Browser, Dev, ask, authorization_link, text_of
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
        link = authorization_link(alice, dev, "list my repositories")
        assert link, "the repositories tool asks for its own scope"
        page = bob.go(link["authorizationUrl"])
        refused = bob.submit(page, {"user": "bob"})
        assert refused.status_code == 403 and "Wrong account" in refused.text, refused.text[:800]
        # Nothing was bound to bob: his own question still needs his own consent.
        assert authorization_link(bob, dev, "list my repositories"), "bob's question did not ask for consent"
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


def test_dev_owner_is_told_the_link_was_cancelled(tmp_path: Path) -> None:
    """Bob opens the authorization link of a question alice asked: he gets "Wrong account",
    and the authorization is cancelled to protect alice. Alice is told so plainly: in her
    conversation (the agent reads the identity service's typed reason while it waits), on
    the binding link and on her authorization link."""
    dev = Dev(tmp_path / "dev-data", tmp_path / "dev.log")
    try:
        alice, bob = Browser(), Browser()
        alice.sign_in(dev, "alice")
        bob.sign_in(dev, "bob")
        events: list[tuple[str, dict[str, Any]]] = []
        link, binding_link = "", ""
        for name, d in alice.invoke(dev, str(uuid.uuid4()), "Who am I on GitHub?"):
            events.append((name, d))
            if name == "authorization_required":
                link = d["authorizationUrl"]
                refused = bob.submit(bob.go(link), {"user": "bob"})
                assert refused.status_code == 403 and "Wrong account" in refused.text, refused.text[:800]
                binding_link = refused.final_url  # type: ignore[attr-defined]
        assert link and binding_link, events
        result = next(d for n, d in events if n == "tool_result")
        assert not result["ok"], result
        assert "cancelled because another account opened the authorization link" in result["content"], result
        assert "nothing was granted" in result["content"], result
        for url in (binding_link, link):
            page = alice.go(url)
            assert page.status_code == 410, (url, page.status_code, page.text[:800])
            assert "Link cancelled" in page.text and "Another account opened this authorization link" in page.text, page.text[:800]
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
    assert "dev-agent" in result["connectionsText"] and "read:user" in result["connectionsText"], result
    assert "You have no connections" in result["revokedText"], result
    assert "You are alice on GitHub" in result["reconsented"], result
    for name in ("login", "chat-authorize", "consent", "binding-complete", "chat-answer", "connections", "connections-revoked"):
        png = shots / f"{name}.png"
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png


def connections(browser: Browser, dev: Dev) -> requests.Response:
    page = browser.go(dev.url + "/connections")
    assert page.status_code == 200 and "Your connections" in page.text, page.text[:800]
    assert "form-action 'self'" in page.headers["Content-Security-Policy"]
    return page


def revoke_form(page: requests.Response) -> dict[str, str]:
    """The fields of the page's (first) Revoke form."""
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.text))
    assert {"csrf", "workload", "provider"} <= fields.keys(), page.text[:1500]
    return fields


def post_revoke(browser: Browser, dev: Dev, fields: dict[str, str], site: str = "same-origin") -> requests.Response:
    return browser.s.post(
        dev.url + "/connections", data=fields, headers={"Sec-Fetch-Site": site}, allow_redirects=False, timeout=30
    )


def sandbox_tokens_of(dev: Dev, user: str) -> int:
    book = json.loads((dev.data_dir / "dev-sandbox-tokens.json").read_text())
    return sum(1 for part in ("access", "refresh") for e in book[part].values() if e["grant"]["user"] == user)


def test_dev_connections_page_lists_and_revokes_only_the_users_own_grants(tmp_path: Path) -> None:
    dev = Dev(tmp_path / "dev-data", tmp_path / "dev.log")
    try:
        alice = Browser()
        alice.sign_in(dev, "alice")
        events = ask(alice, dev, str(uuid.uuid4()), "Who am I on GitHub?", consent_as="alice")
        assert "You are alice on GitHub" in text_of(events)
        ask(alice, dev, str(uuid.uuid4()), "who am I on GitHub?")  # a vault hit: "last used"

        page = connections(alice, dev)
        assert "Signed in as <b>alice</b>" in page.text
        row = re.search(r"<tr><td data-label=\"Agent\">dev-agent</td><td data-label=\"Provider\">github</td>.*?</tr>", page.text)
        assert row, page.text[:2000]
        assert "<code>read:user</code>" in row.group(0)
        used = re.search(r'data-label="Last used">([^<]+)<', row.group(0))
        assert used and used.group(1) != "never", row.group(0)
        alice_form = revoke_form(page)
        assert alice_form["workload"] == "dev-agent" and alice_form["provider"] == "github"

        # Bob sees none of alice's grants, and nothing he posts revokes them.
        bob = Browser()
        bob.sign_in(dev, "bob")
        bob_page = connections(bob, dev)
        assert "You have no connections" in bob_page.text and "dev-agent" not in bob_page.text
        # Alice's form token in bob's session is refused: tokens are bound to their user.
        stolen = post_revoke(bob, dev, alice_form)
        assert stolen.status_code == 403 and "Nothing was changed" in stolen.text, stolen.text[:500]
        # Bob's own grant for the same workload and provider: his page lists one row, and
        # revoking it (his own valid form) leaves alice's grant alone.
        ask(bob, dev, str(uuid.uuid4()), "Who am I on GitHub?", consent_as="bob")
        bob_page = connections(bob, dev)
        assert "Signed in as <b>bob</b>" in bob_page.text and bob_page.text.count("<tr><td") == 1
        bob_done = post_revoke(bob, dev, revoke_form(bob_page))
        assert bob_done.status_code == 303 and bob_done.headers["Location"] == "connections?done=revoked"
        assert sandbox_tokens_of(dev, "bob") == 0 and sandbox_tokens_of(dev, "alice") >= 1
        assert "dev-agent" in connections(alice, dev).text

        # Cross-site posts, missing or forged tokens: refused, nothing changes.
        assert post_revoke(alice, dev, alice_form, site="cross-site").status_code == 403
        assert post_revoke(alice, dev, {**alice_form, "csrf": ""}).status_code == 403
        forged = alice_form["csrf"].split(".")[0] + ".AAAA"
        assert post_revoke(alice, dev, {**alice_form, "csrf": forged}).status_code == 403
        no_token = {k: v for k, v in alice_form.items() if k != "csrf"}
        assert post_revoke(alice, dev, no_token).status_code == 403
        events = ask(alice, dev, str(uuid.uuid4()), "who am I on GitHub?")
        assert "authorization_required" not in [n for n, _ in events], "a refused revocation revoked"
        assert sandbox_tokens_of(dev, "alice") >= 1

        # Alice revokes: RFC 7009 at the sandbox, then gone from the vault, audited.
        done = post_revoke(alice, dev, alice_form)
        assert done.status_code == 303 and done.headers["Location"] == "connections?done=revoked", done.text
        after = alice.go(urljoin(dev.url + "/connections", done.headers["Location"]))
        assert "The provider confirmed it" in after.text and "You have no connections" in after.text
        assert sandbox_tokens_of(dev, "alice") == 0, "the sandbox still holds alice's tokens"
        again = post_revoke(alice, dev, alice_form)
        assert again.status_code == 303 and again.headers["Location"] == "connections?done=already-gone"
        audit = subprocess.run(
            [latchkey_bin(), "admin", "audit", "list", "--limit", "200", "--data-dir", str(dev.data_dir)],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        )
        assert audit.returncode == 0, audit.stderr
        revokes = [json.loads(l) for l in audit.stdout.splitlines() if '"RevokeUserGrant"' in l]
        by_alice = [e for e in revokes if e.get("user_id") == "alice"]
        assert [e["outcome"] for e in by_alice] == ["success", "failed"], revokes
        assert by_alice[0]["target"] == "github" and by_alice[0]["workload"] == "dev-agent", by_alice
        assert by_alice[0]["detail"]["revokedAtProvider"] == ["refresh_token", "access_token"], by_alice
        assert [e["outcome"] for e in revokes if e.get("user_id") == "bob"] == ["success"], revokes

        # The next question asks for consent again.
        events = ask(alice, dev, str(uuid.uuid4()), "Who am I on GitHub?", consent_as="alice")
        assert "authorization_required" in [n for n, _ in events]
        assert "You are alice on GitHub" in text_of(events)
    finally:
        dev.stop()


def test_dev_an_attackers_authorization_link_opened_in_alices_browser_binds_nothing(tmp_path: Path) -> None:
    """Login CSRF on the consent flow: mallory starts a flow and gets alice, signed in, to
    open its link and approve with her sandbox account. The binding page sees alice, not
    the session's user: "Wrong account", and neither mallory nor alice holds a grant."""
    dev = Dev(tmp_path / "dev-data", tmp_path / "dev.log")
    try:
        mallory = Browser()
        mallory.sign_in(dev, "mallory")
        link = authorization_link(mallory, dev, "Who am I on GitHub?")
        assert link, "mallory's question asks for consent"
        alice = Browser()
        alice.sign_in(dev, "alice")
        page = alice.go(link["authorizationUrl"])
        refused = alice.submit(page, {"user": "alice"})
        assert refused.status_code == 403 and "Wrong account" in refused.text, refused.text[:800]
        # Nothing bound for anyone: each still has to consent, and the sandbox's tokens for
        # alice's approval were never stored by Latchkey.
        for who, name in ((mallory, "mallory"), (alice, "alice")):
            assert authorization_link(who, dev, "Who am I on GitHub?"), f"{name}'s question did not ask for consent"
        assert "You have no connections" in connections(alice, dev).text
        assert "You have no connections" in connections(mallory, dev).text
    finally:
        dev.stop()
