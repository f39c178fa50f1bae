"""Run by test_sdk_flow.py in a subprocess (the SDK reads its endpoints at import):
`IdentityClient.get_token` with USER_FEDERATION against Latchkey, exactly as an agent would.
`on_auth_url` prints the URL for the test to act on; the SDK's own poller then waits."""

from __future__ import annotations

import asyncio
import json
import os
import sys

from bedrock_agentcore.services.identity import IdentityClient


def main() -> None:
    client = IdentityClient(region="us-east-1")
    seen: list[str] = []

    def on_auth_url(url: str) -> None:
        seen.append(url)
        print(f"AUTH_URL {url}", flush=True)

    token = asyncio.run(
        client.get_token(
            provider_name=os.environ["PROBE_PROVIDER"],
            scopes=["openid", "api:read"],
            agent_identity_token=os.environ["PROBE_WAT"],
            on_auth_url=on_auth_url,
            auth_flow="USER_FEDERATION",
            callback_url=os.environ["PROBE_RETURN_URL"],
            force_authentication=True,
            custom_state="sdk-state",
        )
    )
    print("RESULT " + json.dumps({"token": token, "auth_urls": len(seen)}), flush=True)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # surface the SDK's error to the test
        print(f"ERROR {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        raise
