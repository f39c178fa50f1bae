"""Audit events: every control-plane change and every token issued or refused is recorded
with who (caller, role, workload, user), what, outcome and time — and never a secret."""

from __future__ import annotations

import json
from typing import Any

from lk_harness import Latchkey, eventually, raises_code, uniq, workload_arn


def audit_events(server: Latchkey) -> list[dict[str, Any]]:
    out = server.cli("admin", "audit", "list", "--limit", "100000").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_changes_and_tokens_are_audited_without_secrets(server: Latchkey, cp: Any, dp: Any) -> None:
    admin = server.admin
    assert admin is not None
    name = uniq("audited")
    key_name = uniq("audited-key")
    api_key = "sk-audit-" + uniq("value")
    server.remember_secret(api_key)
    cp.create_workload_identity(name=name)
    cp.create_api_key_credential_provider(name=key_name, apiKey=api_key)
    wat = dp.get_workload_access_token_for_user_id(workloadName=name, userId="carol")["workloadAccessToken"]
    assert dp.get_resource_api_key(workloadIdentityToken=wat, resourceCredentialProviderName=key_name)["apiKey"] == api_key
    other = server.create_credential(f"workload:{uniq('other')}")
    with raises_code("AccessDeniedException"):
        server.dp(other).get_workload_access_token(workloadName=name)

    def recorded() -> list[dict[str, Any]]:
        events = audit_events(server)
        actions = {(e["action"], e["outcome"]) for e in events if e.get("workload") == name or e.get("target") == workload_arn(name)}
        assert ("CreateWorkloadIdentity", "success") in actions, actions
        assert ("GetWorkloadAccessTokenForUserId", "success") in actions, actions
        assert ("GetResourceApiKey", "success") in actions, actions
        assert ("GetWorkloadAccessToken", "denied") in actions, actions
        return events

    events = eventually(recorded, timeout=10)
    issued = next(e for e in events if e["action"] == "GetWorkloadAccessTokenForUserId" and e.get("workload") == name)
    assert issued["caller"] == admin.access_key_id
    assert issued["role"] == "admin"
    assert issued["user_id"] == "carol"
    assert issued["time_ms"] > 1_700_000_000_000
    denied = next(e for e in events if e["action"] == "GetWorkloadAccessToken" and e.get("workload") == name)
    assert denied["caller"] == other.access_key_id and denied["role"].startswith("workload:")
    vended = next(e for e in events if e["action"] == "GetResourceApiKey" and e.get("workload") == name)
    assert vended["detail"]["provider"] == key_name and vended["user_id"] == "carol"

    raw = json.dumps(events)
    for secret in (api_key, wat, admin.secret_access_key, other.secret_access_key):
        assert secret not in raw, "an audit event contains a secret"


# --------------------------------------------------------------------------- the chain
# A server of its own (its own SQLite file, or its own PostgreSQL database): these tests
# edit audit rows, which would break the chain of the shared database.
import sqlite3  # noqa: E402
import subprocess  # noqa: E402
from datetime import datetime, timedelta, timezone  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Iterator  # noqa: E402

import pytest  # noqa: E402
import requests  # noqa: E402

from lk_harness import fresh_database  # noqa: E402


@pytest.fixture(scope="module")
def chain_db() -> Iterator[str | None]:
    with fresh_database("audit") as url:
        yield url


@pytest.fixture(scope="module")
def chained(chain_db: str | None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Latchkey]:
    lk = Latchkey(tmp_path_factory.mktemp("audit-chain-data"), tmp_path_factory.mktemp("audit-chain"), db_url=chain_db)
    lk.start()
    yield lk
    lk.stop()


def run_sql(lk: Latchkey, sql: str) -> None:
    """Edit the server's database directly, as an attacker with database access would."""
    if lk.db_url:
        subprocess.run(["psql", lk.db_url, "-v", "ON_ERROR_STOP=1", "-qc", sql], check=True, capture_output=True)
    else:
        with sqlite3.connect(Path(lk.data_dir) / "latchkey.db") as db:
            db.execute(sql)


def rfc3339(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_audit_chain_verify_and_export(chained: Latchkey) -> None:
    lk = chained
    before = datetime.now(timezone.utc) - timedelta(seconds=1)
    names = [uniq("chained") for _ in range(3)]
    for name in names:
        lk.cp().create_workload_identity(name=name)
        lk.create_credential(f"workload:{name}")

    def exported() -> list[dict[str, Any]]:
        out = lk.cli("admin", "audit", "export", "--since", rfc3339(before)).stdout
        events = [json.loads(line) for line in out.splitlines() if line.strip()]
        created = {e["target"] for e in events if e["action"] == "CreateWorkloadIdentity"}
        assert {workload_arn(n) for n in names} <= created, created
        return events

    events = eventually(exported, timeout=10)
    assert all(isinstance(e["block"], int) and e["time_ms"] >= before.timestamp() * 1000 for e in events)
    assert [e["block"] for e in events] == sorted(e["block"] for e in events)
    assert any(e["action"] == "CreateCredential" for e in events)
    # --until bounds the range; a window in the future is empty; a bad time is refused.
    assert lk.cli("admin", "audit", "export", "--since", rfc3339(before), "--until", rfc3339(before + timedelta(milliseconds=1))).stdout.strip() == ""
    assert lk.cli("admin", "audit", "export", "--since", rfc3339(datetime.now(timezone.utc) + timedelta(hours=1))).stdout.strip() == ""
    bad = lk.cli("admin", "audit", "export", "--since", "yesterday", check=False)
    assert bad.returncode != 0 and "RFC 3339" in bad.stderr

    ok = lk.cli("admin", "audit", "verify")
    assert "audit chain intact" in ok.stdout, ok.stdout
    report = json.loads(lk.cli("admin", "audit", "verify", "--json").stdout)
    assert report["fault"] is None and report["checked"] >= 3 and report["complete"] is True
    assert requests.get(lk.url + "/ping", timeout=10).json()["auditChain"] == "intact"

    # An attacker with database access changes an event: verify names the block, exits 1.
    victim = next(e["block"] for e in events if e["action"] == "CreateWorkloadIdentity")
    lk.stop()
    run_sql(lk, f"UPDATE audit_blocks SET events = replace(events, 'CreateWorkloadIdentity', 'DeleteWorkloadIdentity') WHERE seq = {victim}")
    broken = lk.cli("admin", "audit", "verify", check=False)
    assert broken.returncode == 1, broken
    assert f"block {victim}: altered" in broken.stderr, broken.stderr
    report = json.loads(lk.cli("admin", "audit", "verify", "--json", check=False).stdout)
    assert report["fault"]["seq"] == victim and report["fault"]["kind"] == "altered"

    # The server still starts (and keeps recording), logs the break loudly and shows it.
    lk.start()
    assert "AUDIT CHAIN BROKEN" in lk.log_tail(20000)
    assert requests.get(lk.url + "/ping", timeout=10).json()["auditChain"] == "broken"

    # A removed block is named as removed.
    lk.stop()
    run_sql(lk, f"DELETE FROM audit_blocks WHERE seq = {victim}")
    removed = lk.cli("admin", "audit", "verify", check=False)
    assert removed.returncode == 1 and f"block {victim}: removed" in removed.stderr, removed.stderr
    lk.start()

