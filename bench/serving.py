"""Serving benchmark for /classify: startup time, then throughput and latency by concurrency,
with dynamic batching on and off, beside a bare FastAPI echo app under the same uvicorn.

    python bench/serving.py [--requests 400] [--concurrency 1 8 32]

Prints one table; every figure comes from this run on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.data import load_sentiment  # noqa: E402

ECHO_APP = """
from fastapi import FastAPI
from pydantic import BaseModel

class Body(BaseModel):
    inputs: list[str]

app = FastAPI()

@app.post("/classify")
async def classify(body: Body) -> dict:
    return {"model": "echo", "version": 1,
            "results": [{"label": t[:8], "score": 1.0, "scores": {}} for t in body.inputs]}

@app.get("/readyz")
async def ready() -> dict:
    return {"status": "ready"}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[subprocess.Popen, str, float]:
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


async def load(url: str, texts: list[str], concurrency: int, requests: int) -> dict[str, float]:
    latencies: list[float] = []
    failures = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def one_client(offset: int) -> None:
            nonlocal failures
            for i in range(offset, requests, concurrency):
                t0 = time.perf_counter()
                r = await client.post("/classify", json={"inputs": [texts[i % len(texts)]]})
                latencies.append(time.perf_counter() - t0)
                failures += r.status_code != 200

        await one_client(0)  # warm-up connection
        latencies.clear()
        t0 = time.perf_counter()
        await asyncio.gather(*(one_client(c) for c in range(concurrency)))
        elapsed = time.perf_counter() - t0
    ms = np.array(latencies) * 1000
    return {
        "rps": len(latencies) / elapsed,
        "p50": float(np.percentile(ms, 50)),
        "p95": float(np.percentile(ms, 95)),
        "p99": float(np.percentile(ms, 99)),
        "failures": failures,
    }


def mean_batch(url: str) -> float:
    text = httpx.get(url + "/metrics").text
    total = re.search(r'genserve_batch_size_sum\{model="sentiment"\} (\S+)', text)
    count = re.search(r'genserve_batch_size_count\{model="sentiment"\} (\S+)', text)
    if not total or not count or float(count.group(1)) == 0:
        return float("nan")
    return float(total.group(1)) / float(count.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    args = parser.parse_args()
    data_dir = Path(os.environ.get("GENSERVE_DATA_DIR", REPO.parent / "shared" / "data"))
    _, _, texts, _ = load_sentiment(data_dir)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}"
    )

    with tempfile.TemporaryDirectory() as tmp:
        echo_path = Path(tmp) / "echo_app.py"
        echo_path.write_text(ECHO_APP)
        uvicorn = [sys.executable, "-m", "uvicorn", "echo_app:app", "--no-access-log",
                   "--log-level", "warning"]  # fmt: skip
        servers = {"echo": (uvicorn, {}, Path(tmp))}
        for name, batch in (("genserve", "32"), ("genserve-nobatch", "1")):
            env = {"GENSERVE_STATE_DIR": str(Path(tmp) / name), "GENSERVE_MAX_BATCH_SIZE": batch}
            servers[name] = ([sys.executable, "-m", "app", "serve", "--no-access-log"], env, REPO)

        results: dict[str, dict[int, dict[str, float]]] = {}
        for name, (cmd, env, cwd) in servers.items():
            proc, url, startup = start(cmd, env, cwd)
            try:
                print(f"{name}: ready in {startup:.2f} s")
                results[name] = {}
                for c in args.concurrency:
                    results[name][c] = asyncio.run(load(url, texts, c, args.requests))
                    if name != "echo":
                        results[name][c]["batch"] = mean_batch(url)
            finally:
                proc.terminate()
                proc.wait(timeout=30)

    print(f"\n/classify, {args.requests} requests of one sentence per concurrency level")
    print(f"{'server':<18}{'clients':>8}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
          f"{'batch':>8}{'fail':>6}")  # fmt: skip
    for name, by_c in results.items():
        for c, r in by_c.items():
            batch = r.get("batch", float("nan"))
            print(f"{name:<18}{c:>8}{r['rps']:>9.0f}{r['p50']:>9.1f}{r['p95']:>9.1f}"
                  f"{r['p99']:>9.1f}{batch:>8.2f}{r['failures']:>6.0f}")  # fmt: skip
    top = max(args.concurrency)
    ratio = results["genserve"][top]["rps"] / results["echo"][top]["rps"]
    speedup = results["genserve"][top]["rps"] / results["genserve-nobatch"][top]["rps"]
    print(f"\ngenserve / echo at {top} clients: {ratio:.2f} (target >= 0.60)")
    print(f"batching speed-up at {top} clients: {speedup:.2f}x")


if __name__ == "__main__":
    main()
