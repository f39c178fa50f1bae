"""Run by test_sdk.py in a fresh interpreter: the `bedrock-agentcore` SDK reads its
endpoint overrides (BEDROCK_AGENTCORE_DP_ENDPOINT / _CP_ENDPOINT) at import time, so
they are set in the environment before this process starts.

Environment: PROBE_WORKLOAD, PROBE_API_KEY_PROVIDER, PROBE_USER_TOKEN (optional).
Prints one line `RESULT {json}` at the end.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> int:
    from bedrock_agentcore.identity.auth import requires_api_key
    from bedrock_agentcore.services.identity import IdentityClient

    region = os.environ["AWS_REGION"]
    workload = os.environ["PROBE_WORKLOAD"]
    provider = os.environ["PROBE_API_KEY_PROVIDER"]
    result: dict = {}

    client = IdentityClient(region)
    result["dp_endpoint"] = client.dp_client.meta.endpoint_url
    result["cp_endpoint"] = client.cp_client.meta.endpoint_url

    created = client.create_workload_identity(name=workload)
    result["created_name"] = created["name"]
    result["created_arn"] = created["workloadIdentityArn"]
    result["got_name"] = client.get_workload_identity(workload)["name"]
    updated = client.update_workload_identity(workload, ["http://localhost:9090/cb"])
    result["updated_urls"] = updated["allowedResourceOauth2ReturnUrls"]

    result["wat_user"] = client.get_workload_access_token(workload, user_id="alice")["workloadAccessToken"]
    result["wat_plain"] = client.get_workload_access_token(workload)["workloadAccessToken"]
    user_token = os.environ.get("PROBE_USER_TOKEN")
    if user_token:
        result["wat_jwt"] = client.get_workload_access_token(workload, user_token=user_token)["workloadAccessToken"]

    listed = client.list_api_key_credential_providers(max_results=100)
    result["listed_providers"] = [p["name"] for p in listed["credentialProviders"]]

    # The decorator's local-development path: creates its own workload identity
    # (recorded in ./.agentcore.json), mints a WAT for a generated user id, then
    # calls GetResourceApiKey.
    @requires_api_key(provider_name=provider)
    def use_key(*, api_key: str) -> str:
        return api_key

    result["api_key"] = use_key()
    with open(".agentcore.json", encoding="utf-8") as f:
        result["agentcore_json"] = json.load(f)

    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
