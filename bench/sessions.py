"""The gateway with its sessions in PostgreSQL (`session_store = "database"`) against the
same gateway with sessions in memory, in one run: the same binary, identity provider
(oidc-provider), backend (nginx `return 200`) and signed-in browser, measured with wrk in
alternating rounds. Target: database / memory >= 0.9.

    .venv/bin/python bench/sessions.py BIN [SECONDS] [CONNECTIONS]
    BENCH_ROUNDS (default 3), BENCH_DATABASE_URL (default
    postgres://postgres@127.0.0.1:5432/postgres; a database latchkey_bench_sessions is
    created there afresh).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway import CONF, check_target, render, service_user, wait_port, wrk  # noqa: E402
from gateway_harness import SESSION_COOKIE, Gateway, free_port, login  # noqa: E402
from oidc import OidcProvider  # noqa: E402


def main() -> None:
    bin_path = sys.argv[1]
    seconds = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    connections = int(sys.argv[3]) if len(sys.argv) > 3 else 32
    rounds = int(os.environ.get("BENCH_ROUNDS", "3"))
    maintenance = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    name = "latchkey_bench_sessions"
    subprocess.run(["psql", maintenance, "-qc", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'], check=True, capture_output=True)
    subprocess.run(["psql", maintenance, "-qc", f'CREATE DATABASE "{name}"'], check=True, capture_output=True)
    database = maintenance.rsplit("/", 1)[0] + "/" + name

    work = Path(tempfile.mkdtemp(prefix="lk-bench-sessions-"))
    os.chmod(work, 0o755)
    user, group = service_user()
    backend_port = free_port()
    backend = f"http://127.0.0.1:{backend_port}"
    idp = OidcProvider(work / "oidc")
    procs: list[subprocess.Popen[bytes]] = []
    gateways: list[Gateway] = []
    try:
        idp.start()
        conf = render(CONF / "nginx-backend.conf.tmpl", work / "nginx-backend.conf", {
            "WORK": str(work), "BACKEND_PORT": str(backend_port), "PROXY_PORT": str(free_port()),
            "WORKERS": "1", "USER": user, "GROUP": group,
        })
        procs.append(subprocess.Popen(["nginx", "-c", str(conf), "-p", str(work)], stdin=subprocess.DEVNULL,
                                      stdout=open(work / "nginx.out", "wb"), stderr=subprocess.STDOUT))
        wait_port(backend_port, "nginx (backend)")
        shared = {"LATCHKEY_GATEWAY_SESSION_STORE": "database", "LATCHKEY_DATABASE_URL": database}
        targets = []
        for label, env in (("memory", {}), ("postgresql", shared)):
            gw = Gateway(work / label, idp, [f"/={backend};login"], client_id=f"bench-{label}", bin_path=bin_path,
                         extra_env={"LATCHKEY_GATEWAY_ACCESS_LOG": "off", **env})
            gateways.append(gw)
            gw.start()
            lg = login(gw, "bench-user", "/")
            if lg.final is None or lg.final.status_code != 200 or not lg.cookie:
                raise SystemExit(f"bench: login through the {label} gateway failed: {lg.hops}")
            cookie = f"{SESSION_COOKIE}={lg.cookie}"
            check_target(label, gw.url + "/", cookie)
            targets.append((label, gw.url + "/", cookie))
        print(f"bench: {seconds}s x {connections} connections x {rounds} rounds, wrk -t2; backend: nginx return 200", flush=True)
        results: dict[str, list[dict]] = {label: [] for label, _, _ in targets}
        ratios = []
        for rnd in range(rounds):
            for label, url, cookie in targets:
                res = wrk(url, cookie, seconds, connections)
                results[label].append(res)
                print(f"  round {rnd + 1} {label:11} {res['rps']:>9.0f} req/s  p50 {res['p50_ms']:.2f} ms  p99 {res['p99_ms']:.2f} ms"
                      + (f"  non-2xx {res['non_2xx']}" if res["non_2xx"] else ""), flush=True)
            ratios.append(results["postgresql"][-1]["rps"] / results["memory"][-1]["rps"])
        for label in results:
            rps = statistics.median(r["rps"] for r in results[label])
            p99 = statistics.median(r["p99_ms"] for r in results[label])
            print(f"{label:11} median {rps:>9.0f} req/s  p99 {p99:.2f} ms")
        ratio = statistics.median(ratios)
        print(f"postgresql / memory: median {ratio:.3f} over rounds ({', '.join(f'{r:.3f}' for r in ratios)})   "
              f"(target >= 0.9) {'ok' if ratio >= 0.9 else 'BELOW TARGET'}")
    finally:
        for gw in gateways:
            gw.stop()
        for p in procs:
            p.terminate()
            p.wait(10)
        idp.stop()
        subprocess.run(["psql", maintenance, "-qc", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'], capture_output=True)


if __name__ == "__main__":
    main()
