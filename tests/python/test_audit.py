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
