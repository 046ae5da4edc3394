"""What every benchmark needs: start a server, wait for /readyz, read /metrics."""

from __future__ import annotations

import json
import os
import platform
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("GENSERVE_DATA_DIR", REPO.parent / "shared" / "data"))
GENSERVE = [sys.executable, "-m", "app", "serve", "--no-access-log"]


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(
    cmd: list[str], env: dict[str, str], cwd: Path = REPO
) -> tuple[subprocess.Popen, str, float]:
    """Starts a server and returns it with its URL and the seconds until /readyz was 200."""
    port = free_port()
    env = {**os.environ, **env, "GENSERVE_PORT": str(port)}
    started = time.perf_counter()
    proc = subprocess.Popen(
        [*cmd, "--port", str(port)] if "uvicorn" in cmd else cmd,
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    while True:
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return proc, url, time.perf_counter() - started
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.perf_counter() - started > 120:
            raise RuntimeError(f"{cmd} did not become ready")
        time.sleep(0.05)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(timeout=30)


def batch_totals(url: str, model: str) -> tuple[float, float]:
    """(rows, forward passes) so far for `model`, from the batch-size histogram."""
    text = httpx.get(url + "/metrics").text
    total = re.search(rf'genserve_batch_size_sum\{{model="{model}"\}} (\S+)', text)
    count = re.search(rf'genserve_batch_size_count\{{model="{model}"\}} (\S+)', text)
    return (float(total.group(1)) if total else 0.0, float(count.group(1)) if count else 0.0)


def mean_batch(before: tuple[float, float], after: tuple[float, float]) -> float:
    passes = after[1] - before[1]
    return (after[0] - before[0]) / passes if passes else float("nan")


def run_wrk(url: str, script: Path, connections: int, seconds: float) -> dict[str, float]:
    """`wrk -t1` with a Lua script whose done() prints `JSON {...}` (requests, us, errors and
    latency percentiles): those figures, plus requests per second."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "30s"]
    out = subprocess.run(
        [*command, "-s", str(script), url], capture_output=True, text=True, check=True
    ).stdout
    stats = json.loads(out.split("JSON ", 1)[1].splitlines()[0])
    return {**stats, "rps": stats["requests"] / (stats["us"] / 1e6)}
