"""Start `latchkey dev` RUNS times (the first on an empty data directory, then restarts on
the same one) and report the wall time from process start to the "ready" line (median,
min, max) and the idle RSS of the dev process a second after ready."""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any


def launch(binary: str, data: Path, log_level: str = "warn", stderr: Any = subprocess.DEVNULL) -> tuple[subprocess.Popen[str], str]:
    """`latchkey dev` on free loopback ports, once ready: the process and the URL to open."""
    proc = subprocess.Popen(
        [binary, "dev", "--data-dir", str(data), "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL, text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(data.parent), "LATCHKEY_LOG_LEVEL": log_level},
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        ready = re.search(r"latchkey dev ready in \d+ ms: open (\S+)", line)
        if ready:
            # Keep reading stdout, so the process never blocks on a full pipe.
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, ready.group(1)
    raise SystemExit("latchkey dev did not start")


def start(binary: str, data: Path) -> tuple[float, int]:
    began = time.perf_counter()
    proc, _ = launch(binary, data)
    ready = time.perf_counter() - began
    time.sleep(1)
    rss = 0
    for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    proc.terminate()
    proc.wait(20)
    return ready, rss


def main() -> None:
    binary, runs = sys.argv[1], int(sys.argv[2])
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "dev"
        first, first_rss = start(binary, data)
        again = [start(binary, data) for _ in range(runs)]
    times = [t for t, _ in again]
    rss = [r for _, r in again]
    print(f"first start (empty data dir): {first * 1000:.0f} ms to ready, idle RSS {first_rss / 1024:.1f} MiB")
    print(
        f"restart x{runs}: median {statistics.median(times) * 1000:.0f} ms to ready "
        f"(min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f}); "
        f"idle RSS median {statistics.median(rss) / 1024:.1f} MiB"
    )


if __name__ == "__main__":
    main()
