"""The token vault's hit path with the KMS key provider (`key_provider = "aws-kms"`, moto's
KMS on loopback) against the key file, in one run: two identity servers from the same
binary, the same 1,000 seeded grants, the same vault-hit GetResourceOauth2Token (SigV4 +
WAT + grant lookup + decrypt + audit) driven by wrk in alternating rounds. Once started, the
KMS provider holds its keys in memory, so the target is no measurable difference.

    .venv/bin/python bench/kms.py BIN [SECONDS] [CONNECTIONS]
    BENCH_ROUNDS (default 3); SQLite in a temporary directory.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "python"))
from botocore.auth import SigV4Auth  # noqa: E402
from botocore.awsrequest import AWSRequest  # noqa: E402
from botocore.credentials import Credentials  # noqa: E402

from lk_harness import Latchkey  # noqa: E402
from moto_harness import Moto  # noqa: E402

PROVIDER = {
    "customOauth2ProviderConfig": {
        "oauthDiscovery": {"authorizationServerMetadata": {
            "issuer": "https://idp.example.test", "authorizationEndpoint": "https://idp.example.test/authorize",
            "tokenEndpoint": "https://idp.example.test/token"}},
        "clientId": "bench", "clientSecret": "bench-client-secret"}}


def prepare(lk: Latchkey, work: Path) -> tuple[str, Path, Path]:
    """Workload, provider, 1,000 grants; the signed vault-hit request as files for wrk."""
    cp, dp = lk.cp(), lk.dp()
    cp.create_workload_identity(name="bench-agent")
    cp.create_oauth2_credential_provider(name="bench-oauth", credentialProviderVendor="CustomOauth2", oauth2ProviderConfigInput=PROVIDER)
    lk.cli("admin", "grants", "seed", "--workload", "bench-agent", "--provider", "bench-oauth", "--count", "1000", "--scopes", "api:read")
    wat = dp.get_workload_access_token_for_user_id(workloadName="bench-agent", userId="seed-user-500")["workloadAccessToken"]
    body = json.dumps({"workloadIdentityToken": wat, "resourceCredentialProviderName": "bench-oauth", "scopes": ["api:read"], "oauth2Flow": "USER_FEDERATION"})
    hit = dp.get_resource_oauth2_token(workloadIdentityToken=wat, resourceCredentialProviderName="bench-oauth", scopes=["api:read"], oauth2Flow="USER_FEDERATION")
    if hit.get("accessToken") != "seeded-access-token-500":
        raise SystemExit(f"bench: the vault did not answer with the seeded token: {hit}")
    url = lk.url + "/identities/oauth2/token"
    request = AWSRequest(method="POST", url=url, data=body.encode(), headers={"Content-Type": "application/json"})
    assert lk.admin is not None
    SigV4Auth(Credentials(lk.admin.access_key_id, lk.admin.secret_access_key), "bedrock-agentcore", "us-east-1").add_auth(request)
    body_file, headers_file = work / "hit.body", work / "hit.headers"
    body_file.write_text(body)
    headers_file.write_text("".join(f"{k}: {v}\n" for k, v in request.headers.items()))
    return url, body_file, headers_file


def wrk(url: str, body: Path, headers: Path, seconds: int, connections: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(ROOT / "bench" / "post.lua"), url],
        env={**os.environ, "BODY_FILE": str(body), "HEADERS_FILE": str(headers)}, capture_output=True, text=True, check=True,
    ).stdout
    m = re.search(r"RESULT rps=(\d+) p50_ms=([0-9.]+) p99_ms=([0-9.]+) errors=(\d+) non2xx=(\d+)", out)
    if not m:
        raise SystemExit(f"bench: no wrk result:\n{out}")
    rps, p50, p99, errors, non2xx = m.groups()
    if int(non2xx) or int(errors):
        raise SystemExit(f"bench: {non2xx} non-2xx answers, {errors} socket errors")
    return {"rps": float(rps), "p50_ms": float(p50), "p99_ms": float(p99)}


def main() -> None:
    os.environ["LATCHKEY_BIN"] = sys.argv[1]
    seconds = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    connections = int(sys.argv[3]) if len(sys.argv) > 3 else 32
    rounds = int(os.environ.get("BENCH_ROUNDS", "3"))
    work = Path(tempfile.mkdtemp(prefix="lk-bench-kms-"))
    moto = Moto(work)
    servers: list[Latchkey] = []
    try:
        key = moto.kms().create_key(Description="bench")["KeyMetadata"]["Arn"]
        quiet = {"LATCHKEY_LOG_LEVEL": "warn"}
        kms_env = {**moto.aws_env(), **quiet, "LATCHKEY_KEY_PROVIDER": "aws-kms", "LATCHKEY_KMS_KEY_ID": key,
                   "LATCHKEY_KMS_ENDPOINT_URL": moto.url, "LATCHKEY_DEPLOYMENT_NAME": "bench"}
        targets = []
        for label, env in (("key file", quiet), ("aws-kms", kms_env)):
            d = work / label.replace(" ", "-")
            lk = Latchkey(d / "data", d / "run", extra_env=env)
            if label == "aws-kms":
                lk.key_file = None
            servers.append(lk)
            lk.start()
            targets.append((label, *prepare(lk, d)))
        print(f"bench: {seconds}s x {connections} connections x {rounds} rounds, wrk -t2; vault hit, 1,000 grants, SQLite", flush=True)
        results: dict[str, list[dict[str, float]]] = {t[0]: [] for t in targets}
        ratios = []
        for rnd in range(rounds):
            for label, url, body, headers in targets:
                res = wrk(url, body, headers, seconds, connections)
                results[label].append(res)
                print(f"  round {rnd + 1} {label:9} {res['rps']:>8.0f} req/s  p50 {res['p50_ms']:.2f} ms  p99 {res['p99_ms']:.2f} ms", flush=True)
            ratios.append(results["aws-kms"][-1]["rps"] / results["key file"][-1]["rps"])
        for label, rs in results.items():
            print(f"{label:9} median {statistics.median(r['rps'] for r in rs):>8.0f} req/s  p99 {statistics.median(r['p99_ms'] for r in rs):.2f} ms")
        print(f"aws-kms / key file: median {statistics.median(ratios):.3f} over rounds ({', '.join(f'{r:.3f}' for r in ratios)})")
    finally:
        for lk in servers:
            lk.stop()
        moto.stop()


if __name__ == "__main__":
    main()
