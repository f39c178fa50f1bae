"""Benchmark of the gateway (`latchkey serve gateway`), driven by bench/gateway.

One run, one identity provider (oidc-provider, tests/oidc), one backend (nginx `return 200`
with a small body, in an nginx instance of its own so that no proxy under test shares a
process with it), four ways in, measured with wrk at the same connections and duration:

  1. gateway        authenticated requests with a valid `latchkey-gw` session cookie
                    (cookie opened, session looked up, ES256 claims header signed or reused,
                    user headers injected, access log line written)
  2. mod_auth_openidc  Apache 2.4 + mod_auth_openidc (server-cache sessions in shm) with
                    its own session after a scripted login against the same provider
  3. nginx          nginx as a plain reverse proxy, no authentication (a second nginx
                    instance, with keep-alive connections to the backend)
  4. direct         straight to the backend
  and, to split the gateway's cost, the gateway on a `public` route (proxying only: no
  cookie, no session, no claims header).

Reports req/s and p99 per way (median over BENCH_ROUNDS alternating rounds), the ratios
gateway / mod_auth_openidc (target >= 5) and gateway / nginx (target >= 0.8), and the
gateway's RSS idle and with SESSIONS active sessions, each created by a real scripted login
(the browser is already signed in at the provider, as a returning user is: gateway
redirect -> provider /auth -> code -> gateway callback with token exchange and ID-token
check).

Usage: bench/gateway.py BIN [SECONDS=10] [CONNECTIONS=32] [SESSIONS=10000]
  BENCH_ROUNDS=N (default 2), BENCH_SESSION_BUDGET=seconds for the session logins
  (default 600; the count reached is reported), BENCH_LOGIN_WORKERS (default 8).
Results: printed, and as JSON in bench/results/gateway-<time>.json (git-ignored).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import pwd
import grp
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "python"))
from gateway_harness import SESSION_COOKIE, Gateway, browser, free_port, login  # noqa: E402
from oidc import OidcProvider, drive_consent  # noqa: E402

CONF = ROOT / "bench" / "gateway-conf"
BACKEND_BODY = "hello from the benchmark backend\n"


def render(template: Path, out: Path, values: dict[str, str]) -> Path:
    text = template.read_text()
    for k, v in values.items():
        text = text.replace("{{" + k + "}}", v)
    left = re.findall(r"\{\{[A-Z_]+\}\}", text)
    if left:
        raise SystemExit(f"bench: {template.name}: unfilled placeholders {left}")
    out.write_text(text)
    return out


def wait_port(port: int, what: str, timeout: float = 20) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"bench: {what} is not listening on {port}")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def tree_rss_kib(pid: int) -> int:
    """RSS of a process and its children (Apache's and nginx's workers)."""
    total = rss_kib(pid)
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return total + sum(tree_rss_kib(int(c)) for c in children)


def to_ms(text: str) -> float:
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text)
    if not m:
        return float("nan")
    value, unit = float(m.group(1)), m.group(2)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def wrk(url: str, cookie: str | None, seconds: int, connections: int) -> dict[str, Any]:
    cmd = ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--latency", url]
    if cookie:
        cmd[1:1] = ["-H", f"Cookie: {cookie}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:(.*)", out)
    return {
        "rps": rps,
        "p50_ms": to_ms(p50.group(1)) if p50 else float("nan"),
        "p99_ms": to_ms(p99.group(1)) if p99 else float("nan"),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1).strip() if errors else "",
    }


def check_target(name: str, url: str, cookie: str | None) -> None:
    r = requests.get(url, headers={"Cookie": cookie} if cookie else {}, allow_redirects=False, timeout=10)
    if r.status_code != 200 or r.text != BACKEND_BODY:
        raise SystemExit(f"bench: {name} at {url} answered {r.status_code} {r.text[:200]!r} (not the backend)")


def service_user() -> tuple[str, str]:
    if os.geteuid() != 0:
        return pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    return "www-data", "www-data"


# --------------------------------------------------------------------------- sessions
def create_sessions(gw: Gateway, idp: OidcProvider, target: int, budget: float, workers: int) -> list[str]:
    """`target` sessions by scripted logins (or as many as `budget` seconds allow), each a
    fresh gateway cookie jar sharing one provider sign-in per worker."""
    cookies: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + budget
    per_worker = (target + workers - 1) // workers

    def worker(n: int) -> None:
        s = browser()
        lg = login(gw, f"bench-user-{n}", "/", session=s)
        if lg.final is None or lg.final.status_code != 200 or not lg.cookie:
            raise RuntimeError(f"login failed: {lg.hops}")
        with lock:
            cookies.append(lg.cookie)
        for i in range(1, per_worker):
            if time.monotonic() > deadline or len(cookies) >= target:
                return
            for c in list(s.cookies):
                if c.name.startswith("latchkey"):
                    s.cookies.clear(c.domain, c.path, c.name)
            result = drive_consent(gw.url + "/", f"bench-user-{n}", session=s, provider=idp)
            cookie = s.cookies.get(SESSION_COOKIE)
            if result.response is None or result.response.status_code != 200 or not cookie:
                raise RuntimeError(f"login {i} of worker {n} failed: {result.hops[-3:]}")
            with lock:
                cookies.append(cookie)
                if len(cookies) % 1000 == 0:
                    print(f"  {len(cookies)} sessions ...", flush=True)

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for f in [pool.submit(worker, n) for n in range(workers)]:
            f.result()
    return cookies


# --------------------------------------------------------------------------- main
def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    bin_path = sys.argv[1]
    seconds = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    connections = int(sys.argv[3]) if len(sys.argv) > 3 else 32
    sessions = int(sys.argv[4]) if len(sys.argv) > 4 else 10_000
    rounds = int(os.environ.get("BENCH_ROUNDS", "2"))
    budget = float(os.environ.get("BENCH_SESSION_BUDGET", "600"))
    login_workers = int(os.environ.get("BENCH_LOGIN_WORKERS", "8"))

    work = Path(tempfile.mkdtemp(prefix="lk-bench-gw-"))
    os.chmod(work, 0o755)
    user, group = service_user()
    backend_port, proxy_port, apache_port = free_port(), free_port(), free_port()
    backend = f"http://127.0.0.1:{backend_port}"
    procs: list[subprocess.Popen[bytes]] = []
    idp = OidcProvider(work / "oidc")
    gw: Gateway | None = None
    apache_conf: Path | None = None
    try:
        idp.start()
        # nginx: the backend, and (another instance) the plain proxy
        for role in ("backend", "proxy"):
            conf = render(CONF / f"nginx-{role}.conf.tmpl", work / f"nginx-{role}.conf", {
                "WORK": str(work), "BACKEND_PORT": str(backend_port), "PROXY_PORT": str(proxy_port),
                "WORKERS": os.environ.get("BENCH_NGINX_WORKERS", "auto"), "USER": user, "GROUP": group,
            })
            procs.append(subprocess.Popen(["nginx", "-c", str(conf), "-p", str(work)], stdin=subprocess.DEVNULL,
                                          stdout=open(work / f"nginx-{role}.out", "wb"), stderr=subprocess.STDOUT))
        wait_port(backend_port, "nginx (backend)")
        wait_port(proxy_port, "nginx (proxy)")

        # the gateway
        gw = Gateway(work / "gateway", idp, [f"/={backend};login", f"/public-route={backend};public"], client_id="bench-gateway", bin_path=bin_path,
                     extra_args=os.environ.get("BENCH_GATEWAY_ARGS", "").split())
        gw.start()
        lg = login(gw, "bench-user", "/")
        if lg.final is None or lg.final.status_code != 200 or not lg.cookie:
            raise SystemExit(f"bench: login through the gateway failed: {lg.hops}")
        gw_cookie = f"{SESSION_COOKIE}={lg.cookie}"

        # Apache + mod_auth_openidc
        apache_secret = secrets.token_urlsafe(24)
        idp.add_client("bench-apache", apache_secret, [f"http://127.0.0.1:{apache_port}/oauth2/callback"])
        apache_conf = render(CONF / "apache-openidc.conf.tmpl", work / "apache.conf", {
            "WORK": str(work), "PORT": str(apache_port), "BACKEND_PORT": str(backend_port),
            "ISSUER": idp.issuer, "CLIENT_ID": "bench-apache", "CLIENT_SECRET": apache_secret,
            "PASSPHRASE": secrets.token_urlsafe(24), "USER": user, "GROUP": group,
        })
        subprocess.run(["apache2", "-f", str(apache_conf), "-k", "start"], check=True,
                       env={**os.environ, "APACHE_RUN_DIR": str(work), "APACHE_LOCK_DIR": str(work), "APACHE_LOG_DIR": str(work)})
        wait_port(apache_port, "apache2")
        s = browser()
        result = drive_consent(f"http://127.0.0.1:{apache_port}/", "bench-user", session=s, provider=idp)
        if result.response is None or result.response.status_code != 200:
            raise SystemExit(f"bench: login through mod_auth_openidc failed: {result!r}\n{(work / 'apache-error.log').read_text()[-3000:]}")
        apache_cookie = "; ".join(f"{c.name}={c.value}" for c in s.cookies if c.name.startswith("mod_auth_openidc_session"))
        if not apache_cookie:
            raise SystemExit("bench: mod_auth_openidc set no session cookie")

        targets = [
            ("gateway", gw.url + "/", gw_cookie),
            ("gateway (public)", gw.url + "/public-route/", None),
            ("mod_auth_openidc", f"http://127.0.0.1:{apache_port}/", apache_cookie),
            ("nginx", f"http://127.0.0.1:{proxy_port}/", None),
            ("direct", backend + "/", None),
        ]
        for name, url, cookie in targets:
            check_target(name, url, cookie)
        print(f"bench: {seconds}s x {connections} connections x {rounds} rounds, wrk -t2; backend: nginx return 200", flush=True)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in targets}
        for rnd in range(rounds):
            order = targets if rnd % 2 == 0 else list(reversed(targets))
            for name, url, cookie in order:
                res = wrk(url, cookie, seconds, connections)
                runs[name].append(res)
                print(f"  round {rnd + 1} {name:17} {res['rps']:>10.0f} req/s  p50 {res['p50_ms']:.2f} ms  p99 {res['p99_ms']:.2f} ms"
                      + (f"  NON-2xx {res['non_2xx']}" if res["non_2xx"] else "")
                      + (f"  socket errors: {res['socket_errors']}" if res["socket_errors"] else ""), flush=True)
        summary = {
            name: {
                "rps": statistics.median(r["rps"] for r in rs),
                "p99_ms": statistics.median(r["p99_ms"] for r in rs),
                "p50_ms": statistics.median(r["p50_ms"] for r in rs),
                "non_2xx": sum(r["non_2xx"] for r in rs),
            }
            for name, rs in runs.items()
        }
        ratio_apache = summary["gateway"]["rps"] / summary["mod_auth_openidc"]["rps"]
        ratio_nginx = summary["gateway"]["rps"] / summary["nginx"]["rps"]
        # nginx with no authentication is the ceiling for one proxy hop: a gateway at that
        # ceiling would reach this multiple of mod_auth_openidc, and no more.
        ceiling_apache = summary["nginx"]["rps"] / summary["mod_auth_openidc"]["rps"]

        # memory with many sessions
        gw_pid = gw.proc.pid if gw.proc else 0
        rss_idle = rss_kib(gw_pid)
        started = time.monotonic()
        cookies = create_sessions(gw, idp, sessions, budget, login_workers)
        took = time.monotonic() - started
        time.sleep(1)
        rss_sessions = rss_kib(gw_pid)
        alive = sum(
            requests.get(gw.url + "/", cookies={SESSION_COOKIE: c}, allow_redirects=False, timeout=10).status_code == 200
            for c in cookies[:: max(1, len(cookies) // 50)]
        )
        sampled = len(cookies[:: max(1, len(cookies) // 50)])
        apache_rss = 0
        pid_file = work / "apache.pid"
        if pid_file.exists():
            apache_rss = tree_rss_kib(int(pid_file.read_text().strip()))

        print()
        print(f"{'':18}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
        for name, v in summary.items():
            print(f"{name:18}{v['rps']:>10.0f}{v['p50_ms']:>10.2f}{v['p99_ms']:>10.2f}" + (f"   non-2xx: {v['non_2xx']}" if v["non_2xx"] else ""))
        print(f"gateway / mod_auth_openidc  {ratio_apache:6.2f}x   (target >= 5)   {'ok' if ratio_apache >= 5 else 'BELOW TARGET'}")
        print(f"gateway / nginx             {ratio_nginx:6.2f}    (target >= 0.8) {'ok' if ratio_nginx >= 0.8 else 'BELOW TARGET'}")
        print(f"nginx / mod_auth_openidc    {ceiling_apache:6.2f}x   (the most any proxy hop reached over mod_auth_openidc in this run)")
        print(f"gateway RSS idle {rss_idle / 1024:.1f} MiB; with {len(cookies) + 1} sessions {rss_sessions / 1024:.1f} MiB "
              f"({(rss_sessions - rss_idle) * 1024 / max(1, len(cookies)):.0f} bytes/session); "
              f"{len(cookies)} logins in {took:.0f}s ({len(cookies) / max(took, 0.001):.0f}/s); {alive}/{sampled} sampled sessions still valid")
        if len(cookies) < sessions:
            print(f"NOTE: only {len(cookies)} of {sessions} sessions within the {budget:.0f}s budget (BENCH_SESSION_BUDGET)")
        print(f"apache2 (all processes) RSS after the run {apache_rss / 1024:.1f} MiB")

        results = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": seconds, "connections": connections, "rounds": rounds,
            "summary": summary, "runs": runs,
            "ratio_gateway_over_mod_auth_openidc": ratio_apache,
            "ratio_gateway_over_nginx": ratio_nginx,
            "ratio_nginx_over_mod_auth_openidc": ceiling_apache,
            "gateway_rss_idle_kib": rss_idle, "gateway_rss_sessions_kib": rss_sessions,
            "sessions_created": len(cookies), "sessions_requested": sessions, "session_login_seconds": took,
            "sessions_sampled_valid": [alive, sampled], "apache_rss_kib": apache_rss,
            "gateway_args": gw.command()[2:],
        }
        out_dir = ROOT / "bench" / "results"
        out_dir.mkdir(exist_ok=True)
        out = out_dir / f"gateway-{time.strftime('%Y%m%dT%H%M%S')}.json"
        # The command line holds no secret (the client secret goes by the environment).
        out.write_text(json.dumps(results, indent=2))
        print(f"results: {out}")
    finally:
        if apache_conf is not None:
            subprocess.run(["apache2", "-f", str(apache_conf), "-k", "stop"], capture_output=True,
                           env={**os.environ, "APACHE_RUN_DIR": str(work), "APACHE_LOCK_DIR": str(work), "APACHE_LOG_DIR": str(work)})
        if gw is not None:
            gw.stop()
        for p in procs:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        idp.stop()
        for _ in range(50):  # apache's -k stop returns before its children exit
            if not (work / "apache.pid").exists():
                break
            time.sleep(0.1)
        if os.environ.get("BENCH_KEEP"):
            print(f"bench: kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
