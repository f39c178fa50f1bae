"""Time the machinery of one complete 3-legged flow on a release server, step by step, as
seen by the caller on loopback: start (GetResourceOauth2Token → authorization URL),
authorize redirect, callback, CompleteResourceTokenAuth (includes the code exchange with
the local oidc-provider), and the first poll that returns the token. The user's login and
consent pages at the provider are not counted. Run through bench/flow."""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))

from flows_harness import Browser, create_custom_provider  # noqa: E402
from lk_harness import Latchkey, uniq  # noqa: E402
from oidc import OidcProvider  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 30
RETURN_URL = "http://127.0.0.1:9/after"


def ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="lk-flow-bench-"))
    authz = OidcProvider(work / "authz", client_id="bench-flow", client_secret="bench-flow-secret-xxxxxxxx").start()
    lk = Latchkey(work / "data", work / "srv", rust_log="warn").start()
    try:
        cp, dp = lk.cp(), lk.dp()
        binding = lk.dp(lk.create_credential("binding"))
        workload = uniq("bench-flow")
        cp.create_workload_identity(name=workload, allowedResourceOauth2ReturnUrls=[RETURN_URL])
        provider, callback = create_custom_provider(lk, cp, authz, "bench-prov")
        authz.restart(redirect_uris=[callback])
        steps: dict[str, list[float]] = {k: [] for k in ("start", "authorize", "callback", "complete", "first poll")}
        for i in range(N + 3):  # 3 warm-up flows
            user = f"bench-user-{i}"
            wat = dp.get_workload_access_token_for_user_id(workloadName=workload, userId=user)["workloadAccessToken"]
            args = dict(workloadIdentityToken=wat, resourceCredentialProviderName=provider, scopes=["openid"],
                        oauth2Flow="USER_FEDERATION")
            t0 = time.perf_counter()
            started = dp.get_resource_oauth2_token(resourceOauth2ReturnUrl=RETURN_URL, **args)
            start_ms = ms(t0)
            browser = Browser(lk.url, authz.issuer)
            t0 = time.perf_counter()
            r = browser.get(started["authorizationUrl"])
            authorize_ms = ms(t0)
            assert r.status_code in (302, 303)
            cb = browser.consent(started["authorizationUrl"], user, stop_at_callback=True).final_url
            t0 = time.perf_counter()
            r = browser.get(cb)
            callback_ms = ms(t0)
            assert r.status_code in (302, 303), r.text
            t0 = time.perf_counter()
            binding.complete_resource_token_auth(sessionUri=started["sessionUri"], userIdentifier={"userId": user})
            complete_ms = ms(t0)
            t0 = time.perf_counter()
            assert dp.get_resource_oauth2_token(sessionUri=started["sessionUri"], **args)["accessToken"]
            poll_ms = ms(t0)
            if i >= 3:
                for k, v in zip(steps, (start_ms, authorize_ms, callback_ms, complete_ms, poll_ms)):
                    steps[k].append(v)
        print(f"{N} flows, release server, SQLite, oidc-provider on loopback (ms at the caller):")
        total = []
        for j in range(N):
            total.append(sum(v[j] for v in steps.values()))
        for k, v in {**steps, "total machinery": total}.items():
            q = statistics.quantiles(v, n=10)
            print(f"  {k:<16} median {statistics.median(v):6.2f}  p90 {q[8]:6.2f}")
    finally:
        lk.stop()
        authz.stop()


if __name__ == "__main__":
    main()
