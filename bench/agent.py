"""Benchmark of the agent workload (`latchkey serve agent`), driven by bench/agent.

Everything real except the model: the identity service, the agent, a zero-latency scripted
LLM on loopback (tests/llm/scripted_llm.py, OpenAI wire protocol), ALB-signed claims
headers (ES256, key served by kid like the ALB key endpoint). Each invocation is a new
session (`echo` answer, no tool), so the conversation does not grow during the run.

Reports:
  1. time to first SSE event p50/p99 and invocations/s and events/s at CONNECTIONS
     concurrent clients for SECONDS;
  2. the agent's RSS with STREAMS concurrent open streams (the scripted model then waits
     60 s before its first chunk, so every stream stays open), and idle before.

Usage: bench/agent.py BIN [SECONDS] [CONNECTIONS] [STREAMS]
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "python"))
from binding_harness import ALB_ARN, KeyServer, alb_token, spawn_listening  # noqa: E402


def call(url: str, path: str, bearer: str, body: dict) -> dict:
    req = urllib.request.Request(
        url + path,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {bearer}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"{}")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def start_invocation(reader, writer, header: str, session_id: str, message: str) -> None:
    """Send one POST /invocations (ALB user header `header`) and read its 200 status line."""
    body = json.dumps({"sessionId": session_id, "message": message}).encode()
    writer.write(
        b"POST /invocations HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        + f"x-amzn-oidc-data: {header}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    status = await reader.readline()
    if b" 200 " not in status:
        raise RuntimeError(f"agent answered {status!r}")


async def invoke(host: str, port: int, header: str, reader_writer=None, *, count_events: bool = True):
    """One POST /invocations over a (kept-alive) connection; returns (ttfe_s, events, rw)."""
    if reader_writer is None:
        reader_writer = await asyncio.open_connection(host, port)
    reader, writer = reader_writer
    started = time.perf_counter()
    await start_invocation(reader, writer, header, f"bench-{uuid.uuid4()}", "hello from the benchmark")
    chunked = False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        if line.lower().startswith(b"transfer-encoding:") and b"chunked" in line.lower():
            chunked = True
    if not chunked:
        raise RuntimeError("expected a chunked event stream")
    ttfe = None
    events = 0
    buf = b""
    while True:
        size = int((await reader.readline()).strip() or b"0", 16)
        if size == 0:
            await reader.readline()
            break
        buf += await reader.readexactly(size)
        await reader.readexactly(2)
        while b"\n\n" in buf:
            _, buf = buf.split(b"\n\n", 1)
            events += 1
            if ttfe is None:
                ttfe = time.perf_counter() - started
    return ttfe, events, reader_writer


async def load(host: str, port: int, header: str, seconds: float, connections: int):
    ttfes: list[float] = []
    events = 0
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal events, done
        rw = None
        while time.perf_counter() < deadline:
            ttfe, n, rw = await invoke(host, port, header, rw)
            ttfes.append(ttfe or 0.0)
            events += n
            done += 1
        if rw:
            rw[1].close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    return ttfes, events, done, elapsed


async def hold_open(host: str, port: int, header: str, streams: int, agent_pid: int) -> tuple[int, int]:
    """Open STREAMS invocations whose model never answers in time; the RSS once all are open."""
    opened = 0
    writers = []

    async def one() -> None:
        nonlocal opened
        reader, writer = await asyncio.open_connection(host, port)
        writers.append(writer)
        await start_invocation(reader, writer, header, f"hold-{uuid.uuid4()}", "hold")
        opened += 1
        await reader.read()  # held until the model answers or we close

    tasks = [asyncio.create_task(one()) for _ in range(streams)]
    for _ in range(600):
        if opened >= streams:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)
    rss = rss_kib(agent_pid)
    count = opened
    for w in writers:
        w.close()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return count, rss


def main() -> None:
    binary = sys.argv[1]
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 10
    connections = int(sys.argv[3]) if len(sys.argv) > 3 else 32
    streams = int(sys.argv[4]) if len(sys.argv) > 4 else 1000
    work = Path(tempfile.mkdtemp(prefix="lk-bench-agent-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LATCHKEY_")}
    env["LATCHKEY_LOG_LEVEL"] = "warn"
    procs: list[subprocess.Popen[str]] = []
    try:
        subprocess.check_output([binary, "admin", "init", "--data-dir", str(work / "id")], env=env)
        cred = json.loads(subprocess.check_output([binary, "admin", "credentials", "create", "--role", "admin", "--json", "--data-dir", str(work / "id")], env=env))
        admin = f"{cred['accessKeyId']}:{cred['secretAccessKey']}"
        identity, id_url = spawn_listening([binary, "serve", "identity", "--listen", "127.0.0.1:0", "--data-dir", str(work / "id")], env, work / "identity.log")
        procs.append(identity)
        return_url = "http://127.0.0.1:9/oauth2/session-binding"
        call(id_url, "/identities/CreateWorkloadIdentity", admin, {"name": "bench-agent", "allowedResourceOauth2ReturnUrls": [return_url], "tags": {"latchkey:allow-user-id": "true"}})
        wl = json.loads(subprocess.check_output([binary, "admin", "credentials", "create", "--role", "workload:bench-agent", "--json", "--data-dir", str(work / "id")], env=env))

        def start_llm(delay_ms: int) -> tuple[subprocess.Popen[str], str]:
            p, url = spawn_listening([sys.executable, str(ROOT / "tests/llm/scripted_llm.py"), "--port", "0", "--chunk-delay-ms", str(delay_ms)], env, work / f"llm-{delay_ms}.log")
            procs.append(p)
            return p, url

        keys = KeyServer()
        key = keys.new_key("bench-kid")
        header = alb_token(key, "bench-kid", "bench-user")

        def start_agent(llm_url: str, name: str) -> subprocess.Popen[str]:
            agent_env = dict(env, LATCHKEY_AGENT_CREDENTIAL=f"{wl['accessKeyId']}:{wl['secretAccessKey']}")
            p, url = spawn_listening(
                [binary, "serve", "agent", "--listen", "127.0.0.1:0", "--identity-url", id_url, "--workload-name", "bench-agent",
                 "--return-url", return_url, "--alb-signer", ALB_ARN, "--alb-key-url-template", keys.url + "/{kid}",
                 "--outbound-allow-private-addresses", "true", "--store-dir", str(work / name), "--llm-provider", "openai",
                 "--llm-model", "scripted", "--llm-base-url", llm_url + "/v1", "--llm-timeout-seconds", "120"],
                agent_env, work / f"{name}.log")
            procs.append(p)
            return p, url

        _, fast_llm = start_llm(0)
        agent, agent_url = start_agent(fast_llm, "agent-fast")
        host, port = agent_url.removeprefix("http://").split(":")
        asyncio.run(load(host, int(port), header, 1.0, 4))  # warm-up (keys, pools)
        idle = rss_kib(agent.pid)
        ttfes, events, done, elapsed = asyncio.run(load(host, int(port), header, seconds, connections))
        ttfes.sort()
        p = lambda q: ttfes[min(len(ttfes) - 1, int(q * len(ttfes)))] * 1000  # noqa: E731
        print(f"invocations      {done / elapsed:8.0f}/s  ({done} in {elapsed:.1f} s, {connections} connections)")
        print(f"events           {events / elapsed:8.0f}/s  ({events / max(done, 1):.1f} per invocation)")
        print(f"time to first event  p50 {p(0.50):.2f} ms  p99 {p(0.99):.2f} ms  (mean {statistics.fmean(ttfes) * 1000:.2f} ms)")
        print(f"agent RSS        idle {idle / 1024:.1f} MiB, after load {rss_kib(agent.pid) / 1024:.1f} MiB")
        agent.terminate()
        agent.wait(10)

        _, slow_llm = start_llm(60_000)
        agent, agent_url = start_agent(slow_llm, "agent-slow")
        host, port = agent_url.removeprefix("http://").split(":")
        before = rss_kib(agent.pid)
        opened, rss = asyncio.run(hold_open(host, int(port), header, streams, agent.pid))
        print(f"open streams     {opened} of {streams}: agent RSS {rss / 1024:.1f} MiB (started at {before / 1024:.1f} MiB)")
        if opened < streams:
            raise SystemExit("bench: not every stream opened")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
