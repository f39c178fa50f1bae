"""Contract 11: the `bedrock-agentcore` Python SDK against Latchkey, unchanged.

The SDK reads BEDROCK_AGENTCORE_DP_ENDPOINT / _CP_ENDPOINT once, at import, so it runs
in a subprocess whose environment is set before start.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from lk_harness import Latchkey, decode_wat, inbound_issuers_toml, uniq, workload_arn
from oidc import OidcProvider

PROBE = Path(__file__).with_name("sdk_probe.py")


@pytest.fixture(scope="module")
def server_config(oidc: OidcProvider) -> str:
    return inbound_issuers_toml(oidc.issuer)


def test_sdk_identity_client(server: Latchkey, cp, oidc: OidcProvider, tmp_path: Path) -> None:
    assert server.admin is not None
    provider = uniq("sdk-ak")
    key = f"sdk-key-{uuid.uuid4().hex}"
    server.remember_secret(key)
    cp.create_api_key_credential_provider(name=provider, apiKey=key)
    workload = uniq("sdk-wl")
    id_token = oidc.id_token_for("alice")

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BEDROCK_AGENTCORE_"))}
    env.update(
        {
            "BEDROCK_AGENTCORE_DP_ENDPOINT": server.url,
            "BEDROCK_AGENTCORE_CP_ENDPOINT": server.url,
            "AWS_ACCESS_KEY_ID": server.admin.access_key_id,
            "AWS_SECRET_ACCESS_KEY": server.admin.secret_access_key,
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
            "PROBE_WORKLOAD": workload,
            "PROBE_API_KEY_PROVIDER": provider,
            "PROBE_USER_TOKEN": id_token,
        }
    )
    env.pop("DOCKER_CONTAINER", None)
    proc = subprocess.run(
        [sys.executable, str(PROBE)],
        cwd=tmp_path,  # the SDK's local-dev path writes ./.agentcore.json
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, f"SDK probe failed:\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, proc.stdout
    result = json.loads(lines[-1][len("RESULT ") :])

    assert result["dp_endpoint"] == server.url
    assert result["cp_endpoint"] == server.url
    assert result["created_name"] == workload
    assert result["created_arn"] == workload_arn(workload)
    assert result["got_name"] == workload
    assert result["updated_urls"] == ["http://localhost:9090/cb"]

    user_claims = decode_wat(server, result["wat_user"])
    assert user_claims["sub"] == workload
    assert user_claims["latchkey:user"] == "alice"
    plain = decode_wat(server, result["wat_plain"])
    assert plain["sub"] == workload and "latchkey:user" not in plain
    jwt_claims = decode_wat(server, result["wat_jwt"])
    assert jwt_claims["latchkey:user"] == "alice"

    assert isinstance(result["listed_providers"], list)

    # requires_api_key: local dev created a workload identity and user id, then got the key.
    assert result["api_key"] == key
    local = result["agentcore_json"]
    assert local["workload_identity_name"].startswith("workload-")
    assert cp.get_workload_identity(name=local["workload_identity_name"])["name"] == local["workload_identity_name"]
    assert local["user_id"]
