"""Soak test (issue 12), driven by bench/soak: every Latchkey service under mixed, bounded
load for MINUTES, on loopback only. Not part of CI.

Started here, and stopped by PID at the end or on Ctrl-C / SIGTERM:
  identity (`latchkey serve identity`, SQLite), binding (`serve binding`, ALB claims
  source), agent (`serve agent` with tests/llm/scripted_llm.py as the model), gateway
  (`serve gateway` in front of an echo upstream), oidc-provider (the third-party
  authorization server for the token vault and the gateway's IdP; 120 s access tokens, so
  vaulted tokens are refreshed during the run).

Load, each kind at its own fixed rate (scaled by SOAK_RATE_SCALE, default 1):
  token    GetResourceOauth2Token with a vaulted grant (USER_FEDERATION), 6/s
  wat      GetWorkloadAccessTokenForUserId, 6/s
  apikey   GetResourceApiKey, 6/s
  gateway  GET through the gateway with a signed-in session (cookie), 10/s
  agent    POST /invocations to the agent (ALB-signed claims header, new session), 3/s
  flow     a complete 3-legged flow: start, consent at the provider, callback, the
           binding URL signed in (binding service completes the session), poll, 1 per 20 s

Every minute: requests and errors by kind (in the minute and in total), p50/p99 latency,
and the RSS of every service process (VmRSS from /proc/PID/status).

Usage: bench/soak.py MINUTES   (LATCHKEY_BIN names the binary)
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))

from binding_harness import ALB_ARN, BindingService, KeyServer, alb_token, spawn_listening  # noqa: E402
from flows_harness import Browser, create_custom_provider  # noqa: E402
from gateway_harness import Gateway, Upstream, login  # noqa: E402
from lk_harness import Latchkey, uniq  # noqa: E402
from oidc import OidcProvider  # noqa: E402

SCOPES = ["openid", "api:read"]
USERS = [f"soak-user-{i}" for i in range(4)]
KID = "soak-kid"
SCALE = float(os.environ.get("SOAK_RATE_SCALE", "1"))
RATES = {"token": 6.0, "wat": 6.0, "apikey": 6.0, "gateway": 10.0, "agent": 3.0, "flow": 1 / 20}


def rss_mib(pid: int | None) -> str:
    if pid is None:
        return "-"
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return f"{int(line.split()[1]) / 1024:.1f}"
    except OSError:
        return "gone"
    return "?"


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.total: Counter[str] = Counter()
        self.total_errors: Counter[str] = Counter()
        self.minute: Counter[str] = Counter()
        self.minute_errors: Counter[str] = Counter()
        self.latency: dict[str, list[float]] = defaultdict(list)

    def ok(self, kind: str, seconds: float) -> None:
        with self.lock:
            self.total[kind] += 1
            self.minute[kind] += 1
            self.latency[kind].append(seconds)

    def error(self, kind: str, what: str) -> None:
        with self.lock:
            self.total[kind] += 1
            self.minute[kind] += 1
            self.total_errors[f"{kind}:{what}"] += 1
            self.minute_errors[f"{kind}:{what}"] += 1

    def take_minute(self) -> tuple[Counter[str], Counter[str], dict[str, list[float]]]:
        with self.lock:
            out = (self.minute, self.minute_errors, self.latency)
            self.minute, self.minute_errors, self.latency = Counter(), Counter(), defaultdict(list)
            return out


def describe(e: BaseException) -> str:
    """An error's kind, short and free of secrets: class and status or AgentCore code."""
    response = getattr(e, "response", None)
    if isinstance(response, dict) and "Error" in response:
        return f"{response['Error'].get('Code')}"
    text = str(e)
    return f"{type(e).__name__}" + (f"({text[:60]})" if isinstance(e, AssertionError) and text else "")


class Soak:
    def __init__(self, minutes: float) -> None:
        self.minutes = minutes
        self.work = Path(tempfile.mkdtemp(prefix="lk-soak-"))
        self.stats = Stats()
        self.stop_event = threading.Event()
        self.cleanups: list[Callable[[], None]] = []
        self.pids: dict[str, int | None] = {}

    # ------------------------------------------------------------------ set-up
    def start(self) -> None:
        w = self.work
        self.authz = OidcProvider(w / "authz", client_id="soak-authz", client_secret="soak-authz-" + uuid.uuid4().hex, access_token_ttl=120)
        self.authz.start()
        self.cleanups.append(self.authz.stop)
        self.lk = Latchkey(w / "data", w / "identity", rust_log="warn").start()
        self.cleanups.append(self.lk.stop)
        cp, dp = self.lk.cp(), self.lk.dp()

        self.keys = KeyServer()
        self.cleanups.append(self.keys.httpd.shutdown)
        self.key = self.keys.new_key(KID)
        self.binding = BindingService(self.lk, w, ["--alb-signer", ALB_ARN, "--alb-key-url-template", self.keys.url + "/{kid}"])
        self.cleanups.append(self.binding.stop)

        self.workload = uniq("soak-wl")
        cp.create_workload_identity(
            name=self.workload, allowedResourceOauth2ReturnUrls=[self.binding.binding_url], tags={"latchkey:allow-user-id": "true"}
        )
        self.provider, callback = create_custom_provider(self.lk, cp, self.authz, "soak-prov")
        self.authz.restart(redirect_uris=[callback])
        self.api_key_provider = uniq("soak-ak")
        cp.create_api_key_credential_provider(name=self.api_key_provider, apiKey="soak-api-key-" + uuid.uuid4().hex)

        # Agent with the scripted model.
        env = {k: v for k, v in os.environ.items() if not k.startswith("LATCHKEY_")}
        env["LATCHKEY_LOG_LEVEL"] = "warn"
        llm, llm_url = spawn_listening([sys.executable, str(ROOT / "tests/llm/scripted_llm.py"), "--port", "0"], env, w / "llm.log")
        self.cleanups.append(lambda: _terminate(llm))
        cred = self.lk.create_credential(f"workload:{self.workload}")
        agent_env = dict(env, LATCHKEY_AGENT_CREDENTIAL=f"{cred.access_key_id}:{cred.secret_access_key}")
        agent, self.agent_url = spawn_listening(
            [
                self.lk.bin, "serve", "agent", "--listen", "127.0.0.1:0", "--identity-url", self.lk.url,
                "--workload-name", self.workload, "--return-url", self.binding.binding_url,
                "--alb-signer", ALB_ARN, "--alb-key-url-template", self.keys.url + "/{kid}",
                "--outbound-allow-private-addresses", "true", "--store-dir", str(w / "conversations"),
                "--llm-provider", "openai", "--llm-model", "scripted", "--llm-base-url", llm_url + "/v1",
            ],
            agent_env,
            w / "agent.log",
        )
        self.cleanups.append(lambda: _terminate(agent))

        # Gateway in front of an echo upstream, one signed-in browser per user.
        self.upstream = Upstream()
        self.cleanups.append(self.upstream.stop)
        self.gateway = Gateway(w / "gateway", self.authz, [f"/app={self.upstream.url};login"], client_id="soak-gw").start()
        self.cleanups.append(self.gateway.stop)
        self.gateway_sessions = []
        for user in USERS:
            lg = login(self.gateway, user)
            assert lg.cookie, f"gateway login for {user} failed"
            self.gateway_sessions.append(lg.session)

        # A vaulted grant per user: one complete flow through the binding service.
        for user in USERS:
            self.flow(dp, user)

        self.pids = {
            "identity": self.lk.proc.pid if self.lk.proc else None,
            "binding": self.binding.proc.pid,
            "agent": agent.pid,
            "gateway": self.gateway.proc.pid if self.gateway.proc else None,
            "oidc-provider": self.authz._proc.pid if self.authz._proc else None,
            "scripted-llm": llm.pid,
        }

    # ------------------------------------------------------------------ operations
    def wat(self, dp: Any, user: str) -> str:
        return dp.get_workload_access_token_for_user_id(workloadName=self.workload, userId=user)["workloadAccessToken"]

    def flow(self, dp: Any, user: str) -> None:
        wat = self.wat(dp, user)
        args = dict(workloadIdentityToken=wat, resourceCredentialProviderName=self.provider, scopes=SCOPES, oauth2Flow="USER_FEDERATION")
        started = dp.get_resource_oauth2_token(resourceOauth2ReturnUrl=self.binding.binding_url, **args)
        assert started.get("authorizationUrl"), "no authorization URL"
        browser = Browser(self.lk.url, self.authz.issuer)
        result = browser.consent(started["authorizationUrl"], user)
        assert result.final_url and result.final_url.startswith(self.binding.binding_url), "consent did not reach the binding URL"
        page = browser.s.get(result.final_url, headers={"x-amzn-oidc-data": alb_token(self.key, KID, user)}, allow_redirects=False, timeout=15)
        assert page.status_code == 200, f"binding answered {page.status_code}"
        assert dp.get_resource_oauth2_token(sessionUri=started["sessionUri"], **args).get("accessToken"), "no token after the flow"

    def worker(self, kind: str, rate: float) -> None:
        dp = self.lk.dp()  # one client per thread
        wats: dict[str, tuple[float, str]] = {}

        def user_wat(user: str) -> str:
            at, token = wats.get(user, (0.0, ""))
            if time.monotonic() - at > 120:
                token = self.wat(dp, user)
                wats[user] = (time.monotonic(), token)
            return token

        def op() -> None:
            user = random.choice(USERS)
            if kind == "wat":
                assert self.wat(dp, user)
            elif kind == "token":
                out = dp.get_resource_oauth2_token(
                    workloadIdentityToken=user_wat(user), resourceCredentialProviderName=self.provider, scopes=SCOPES, oauth2Flow="USER_FEDERATION"
                )
                assert out.get("accessToken"), "no vaulted token"
            elif kind == "apikey":
                assert dp.get_resource_api_key(workloadIdentityToken=user_wat(user), resourceCredentialProviderName=self.api_key_provider)["apiKey"]
            elif kind == "gateway":
                s = random.choice(self.gateway_sessions)
                r = s.get(self.gateway.url + "/app/soak", allow_redirects=False, timeout=15)
                assert r.status_code == 200, f"status {r.status_code}"
            elif kind == "agent":
                r = requests.post(
                    self.agent_url + "/invocations",
                    json={"sessionId": f"soak-{uuid.uuid4()}", "message": "hello from the soak"},
                    headers={"x-amzn-oidc-data": alb_token(self.key, KID, user)},
                    timeout=30,
                )
                assert r.status_code == 200, f"status {r.status_code}"
                assert "event:" in r.text, "no events"
            elif kind == "flow":
                self.flow(dp, f"soak-flow-{uuid.uuid4().hex[:8]}")

        interval = 1 / rate
        next_at = time.monotonic() + random.random() * interval
        while not self.stop_event.is_set():
            delay = next_at - time.monotonic()
            if delay > 0 and self.stop_event.wait(delay):
                break
            next_at = max(next_at + interval, time.monotonic())
            t0 = time.perf_counter()
            try:
                op()
            except Exception as e:  # noqa: BLE001 - every failure is counted by kind
                self.stats.error(kind, describe(e))
            else:
                self.stats.ok(kind, time.perf_counter() - t0)

    # ------------------------------------------------------------------ run
    def report(self, elapsed: float) -> None:
        counts, errors, latency = self.stats.take_minute()
        parts = []
        for kind in RATES:
            lat = sorted(latency.get(kind, []))
            if lat:
                p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1000
                parts.append(f"{kind} {counts[kind]} (p50 {statistics.median(lat) * 1000:.0f} p99 {p99:.0f} ms)")
            else:
                parts.append(f"{kind} {counts[kind]}")
        print(f"[{int(elapsed // 60):3d}:{int(elapsed % 60):02d}] requests: {sum(counts.values())}  " + ", ".join(parts), flush=True)
        err = ", ".join(f"{k} {v}" for k, v in sorted(errors.items())) or "none"
        print(f"        errors: {sum(errors.values())} ({err}); total errors {sum(self.stats.total_errors.values())}", flush=True)
        print("        RSS MiB: " + ", ".join(f"{name} {rss_mib(pid)}" for name, pid in self.pids.items()), flush=True)

    def run(self) -> int:
        print(f"soak: {self.minutes:g} min, work dir {self.work}", flush=True)
        t_setup = time.monotonic()
        self.start()
        print(f"soak: set-up in {time.monotonic() - t_setup:.0f} s; rates per second: "
              + ", ".join(f"{k} {v * SCALE:g}" for k, v in RATES.items()), flush=True)
        print("        RSS MiB at start: " + ", ".join(f"{name} {rss_mib(pid)}" for name, pid in self.pids.items()), flush=True)
        threads = [threading.Thread(target=self.worker, args=(k, r * SCALE), daemon=True, name=k) for k, r in RATES.items()]
        started = time.monotonic()
        for t in threads:
            t.start()
        end = started + self.minutes * 60
        next_report = started + 60
        while time.monotonic() < end:
            self.stop_event.wait(max(0.0, min(next_report, end) - time.monotonic()))
            if time.monotonic() >= next_report:
                self.report(time.monotonic() - started)
                next_report += 60
        self.stop_event.set()
        for t in threads:
            t.join(60)
        if time.monotonic() - (next_report - 60) > 5:
            self.report(time.monotonic() - started)
        try:
            grants = self.authz.stats().get("grants", {})
            print("soak: oidc-provider grants: " + "; ".join(
                f"{g} {c.get('success', 0)} ok, {c.get('error', 0)} failed" for g, c in sorted(grants.items())
            ), flush=True)
        except Exception as e:  # noqa: BLE001 - informative only
            print(f"soak: oidc-provider stats unavailable ({type(e).__name__})", flush=True)
        total = sum(self.stats.total.values())
        errors = sum(self.stats.total_errors.values())
        print(f"soak: done: {total} requests in {self.minutes:g} min, {errors} errors"
              + (f" ({', '.join(f'{k} {v}' for k, v in sorted(self.stats.total_errors.items()))})" if errors else ""), flush=True)
        return 1 if errors else 0

    def stop(self) -> None:
        # A second Ctrl-C must not leave processes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        self.stop_event.set()
        for cleanup in reversed(self.cleanups):
            try:
                cleanup()
            except Exception as e:  # noqa: BLE001 - stop everything we can
                print(f"soak: clean-up: {type(e).__name__}: {e}", file=sys.stderr)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _terminate(proc: Any) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except Exception:  # noqa: BLE001
            proc.kill()
            proc.wait(10)


def main() -> int:
    minutes = float(sys.argv[1]) if len(sys.argv) > 1 else 30
    soak = Soak(minutes)
    # Ctrl-C and SIGTERM stop the run; everything started is then stopped by PID. (SIGINT
    # is installed explicitly: a shell starting us in the background would ignore it.)
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return soak.run()
    except KeyboardInterrupt:
        print("soak: interrupted; stopping every process started", flush=True)
        return 130
    finally:
        soak.stop()


if __name__ == "__main__":
    sys.exit(main())
