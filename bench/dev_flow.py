"""Server time of the complete flow (the seed's 17 steps, docs/whole-chain.md) through one
`latchkey dev` with its built-in providers, as a browser drives it over HTTP on loopback:
sign in at the gateway through the development OpenID provider, ask the agent, follow
Authorize to the sandbox's consent page, approve, land on the binding page, and read the
stream to the answer. FLOWS times, each with a new user (alice-1, alice-2… typed at the dev
provider's login page, and the same name at the sandbox) and a new browser (cookie jar and
connections). Reports, per step and in total, the median and p90 over the flows of the sum of
the step's HTTP exchanges and how many there are. Run through `bench/dev flow [FLOWS]`."""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))

from dev import launch  # noqa: E402
from dev_harness import Browser  # noqa: E402

WARMUP = 3
# The agent's first poll for the token comes this long after it streams
# authorization_required (crates/agent/src/turn.rs, PollOptions::initial_delay). The stream
# is idle until then: that wait is neither server work nor the person, so it is left out.
AGENT_FIRST_POLL_MS = 500.0

STEPS = [
    ("sign in", "1", "GET / → dev IdP login page; type the name; code + PKCE back at the gateway; the chat page"),
    ("ask", "2-4", "POST /invocations until authorization_required: ALB header, WAT, model, GetResourceOauth2Token"),
    ("authorize", "5", "the authorization URL at the identity service → the sandbox's consent page"),
    ("consent", "6-7", "approve → identity callback → binding page: CompleteResourceTokenAuth, code exchange, vault"),
    ("answer", "8", "the stream from the agent's poll to the end: token, tool call at the sandbox, answer"),
]


class TimedSession(requests.Session):
    """A session that records each exchange it completes: (step, milliseconds), from sending
    the request (connecting first when needed) to the last byte of the response body."""

    def __init__(self) -> None:
        super().__init__()
        self.step = ""
        self.exchanges: list[tuple[str, float]] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        began = time.perf_counter()
        response = super().send(request, **kwargs)
        if not kwargs.get("stream"):  # a streamed body is timed by its reader
            self.exchanges.append((self.step, (time.perf_counter() - began) * 1000))
        return response


def ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000


def signed_in(url: str, user: str) -> tuple[Browser, TimedSession]:
    """A new browser whose exchanges are timed, signed in as `user` (a name typed at the dev
    provider's login page): the step "sign in"."""
    browser = Browser()
    timed = TimedSession()
    timed.headers.update(browser.s.headers)
    browser.s = timed
    timed.step = "sign in"
    login = browser.go(url + "/")
    assert "Development only." in login.text, login.text[:300]
    chat = browser.submit(login, {"user": "", "user_name": user})
    assert chat.status_code == 200 and "Latchkey agent" in chat.text, chat.text[:300]
    return browser, timed


def one_flow(url: str, user: str) -> dict[str, tuple[float, int]]:
    """One person's complete flow: per step, (milliseconds, exchanges)."""
    browser, timed = signed_in(url, user)
    typed = {"user": "", "user_name": user}

    began = time.perf_counter()
    stream = browser.invoke(SimpleNamespace(url=url), str(uuid.uuid4()), "Who am I on GitHub?")
    link = next(d for name, d in stream if name == "authorization_required")["authorizationUrl"]
    asked = time.perf_counter()

    timed.step = "authorize"
    page = browser.go(link)
    assert "Latchkey dev agent (workload dev-agent)" in page.text, page.text[:300]
    timed.step = "consent"
    done = browser.submit(page, typed)
    assert done.status_code == 200 and "Authorization complete" in done.text, done.text[:300]
    consented = time.perf_counter()

    answer = "".join(d.get("text", "") for name, d in stream if name == "text_delta")
    ended = time.perf_counter()
    assert f"You are {user} on GitHub" in answer, answer
    first_poll = asked + AGENT_FIRST_POLL_MS / 1000
    if consented > first_poll:
        raise SystemExit(f"consent took {(consented - asked) * 1000:.0f} ms, past the agent's first poll: the machine is too loaded to measure")
    resumed = (ended - first_poll) * 1000
    if resumed <= 0:
        raise SystemExit("the answer came before the agent's first poll: AGENT_FIRST_POLL_MS no longer matches crates/agent/src/turn.rs")

    steps: dict[str, tuple[float, int]] = {"ask": ((asked - began) * 1000, 1), "answer": (resumed, 0)}
    for step, took in timed.exchanges:
        total, count = steps.get(step, (0.0, 0))
        steps[step] = (total + took, count + 1)
    return steps


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]


def main() -> None:
    binary, flows = sys.argv[1], int(sys.argv[2])
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "dev"
        with open(Path(tmp) / "dev.log", "w") as log:
            proc, url = launch(binary, data, log_level="info", stderr=log)
            try:
                runs = [one_flow(url, f"alice-{i}") for i in range(1, WARMUP + flows + 1)][WARMUP:]
                _, timed = signed_in(url, "ping")
                timed.step, timed.exchanges = "ping", []
                for _ in range(100):
                    timed.get(url + "/ping", timeout=30).raise_for_status()
                ping = statistics.median(took for _, took in timed.exchanges)
                # The floor of one exchange: the client and loopback with almost no server
                # work (a fixed JSON document of the dev OpenID provider, kept alive).
                login = requests.get(url + "/", headers={"Accept": "text/html"}, allow_redirects=False, timeout=30)
                idp = urlsplit(login.headers["Location"])
                timed.exchanges = []
                for _ in range(100):
                    timed.get(f"{idp.scheme}://{idp.netloc}/.well-known/openid-configuration", timeout=30).raise_for_status()
                floor = statistics.median(took for _, took in timed.exchanges)
            finally:
                proc.terminate()
                proc.wait(20)
    print(f"latchkey dev ({binary}): {flows} complete flows after {WARMUP} warm-up flows, each a new user and a new browser")
    print("Included: every HTTP exchange a browser makes in the flow, each from sending the request (with the")
    print("  TCP connect on loopback when the browser opens a connection) to the last byte of the answer, so all")
    print("  the server work behind it (gateway, dev OpenID provider, identity service, binding service, agent with")
    print("  the offline planner, sandbox, SQLite, the calls between them), and the Python client's own overhead.")
    print("Excluded: rendering and the person (each request follows the previous answer at once), and the stream's")
    print(f"  idle wait for the agent's first consent poll ({AGENT_FIRST_POLL_MS:.0f} ms after authorization_required):")
    print("  'answer' is the time from that poll to the end of the stream. 'chain': the step of the flow in")
    print("  docs/whole-chain.md.")
    print(f"{'step':<11} {'chain':>5} {'requests':>8} {'median ms':>10} {'p90 ms':>8}  what")
    totals = [sum(t for t, _ in run.values()) for run in runs]
    requests_per_flow = sum(n for _, n in runs[0].values())
    for step, seed, what in STEPS:
        times = [run[step][0] for run in runs]
        count = runs[0][step][1]
        shown = "stream" if step == "answer" else str(count)
        print(f"{step:<11} {seed:>5} {shown:>8} {statistics.median(times):>10.1f} {pct(times, 0.9):>8.1f}  {what}")
    print(f"{'total':<11} {'1-8':>5} {requests_per_flow:>8} {statistics.median(totals):>10.1f} {pct(totals, 0.9):>8.1f}  per flow (the sum of its steps)")
    print("For scale: one GET /ping through the gateway to the agent by the same client, signed in, on a kept-alive")
    print(f"  connection: median {ping:.2f} ms (included above, not subtracted).")
    exchanges = requests_per_flow + 1  # and the stream
    share = [t - exchanges * floor for t in totals]
    print(f"Estimate of the servers' share: the total minus {exchanges} x {floor:.2f} ms, the median of one kept-alive")
    print("  GET of the dev OpenID provider's discovery document by the same client (the client and loopback cost")
    print(f"  of an exchange with almost no server work): median {statistics.median(share):.1f} ms, p90 {pct(share, 0.9):.1f} ms.")


if __name__ == "__main__":
    main()
