"""Serving benchmark for /classify: startup time, then throughput and latency by concurrency,
with dynamic batching on and off, beside a bare FastAPI echo app under the same uvicorn.

    python bench/serving.py [--requests 400] [--concurrency 1 8 32]

Prints one table; every figure comes from this run on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import DATA_DIR, GENSERVE, REPO, batch_totals, machine, mean_batch, start, stop
from models.data import load_sentiment

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    args = parser.parse_args()
    _, _, texts, _ = load_sentiment(DATA_DIR)
    print(f"machine: {machine()}")

    with tempfile.TemporaryDirectory() as tmp:
        echo_path = Path(tmp) / "echo_app.py"
        echo_path.write_text(ECHO_APP)
        uvicorn = [sys.executable, "-m", "uvicorn", "echo_app:app", "--no-access-log",
                   "--log-level", "warning"]  # fmt: skip
        servers = {"echo": (uvicorn, {}, Path(tmp))}
        for name, batch in (("genserve", "32"), ("genserve-nobatch", "1")):
            env = {"GENSERVE_STATE_DIR": str(Path(tmp) / name), "GENSERVE_MAX_BATCH_SIZE": batch}
            servers[name] = (GENSERVE, env, REPO)

        results: dict[str, dict[int, dict[str, float]]] = {}
        for name, (cmd, env, cwd) in servers.items():
            proc, url, startup = start(cmd, env, cwd)
            try:
                print(f"{name}: ready in {startup:.2f} s")
                results[name] = {}
                for c in args.concurrency:
                    before = batch_totals(url, "sentiment") if name != "echo" else (0, 0)
                    results[name][c] = asyncio.run(load(url, texts, c, args.requests))
                    if name != "echo":
                        after = batch_totals(url, "sentiment")
                        results[name][c]["batch"] = mean_batch(before, after)
            finally:
                stop(proc)

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
