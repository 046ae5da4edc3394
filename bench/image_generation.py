"""Image-generation benchmark through the HTTP API: images/s by images per request (n) and by
concurrent clients, in one run.

    python bench/image_generation.py [--model mnist-cgan] [--requests 40] [--n 1 16 64]
        [--steps 20 50]   (image-diffusion: one set of rows per DDIM step count)
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

from bench.common import GENSERVE, batch_totals, machine, mean_batch, start, stop


async def run(
    url: str, model: str, n: int, clients: int, requests: int, steps: int | None = None
) -> dict[str, float]:
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def one_client(c: int) -> None:
            for i in range(c, requests, clients):
                body = {"model": model, "n": n, "seed": i, "label": i % 10}
                if steps is not None:
                    body["steps"] = steps
                t0 = time.perf_counter()
                response = await client.post("/generate/image", json=body)
                response.raise_for_status()
                latencies.append(time.perf_counter() - t0)

        await client.post("/generate/image", json={"model": model, "n": 1, "label": 0})
        t0 = time.perf_counter()
        await asyncio.gather(*(one_client(c) for c in range(clients)))
        elapsed = time.perf_counter() - t0
    ms = np.array(latencies) * 1000
    return {
        "images_s": requests * n / elapsed,
        "p50": float(np.percentile(ms, 50)),
        "p95": float(np.percentile(ms, 95)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mnist-cgan")
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--n", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--steps", type=int, nargs="+", default=[None], help="DDIM steps")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # 64 diffusion images at 50 steps take longer than the default 30 s on a small CPU
        env = {"GENSERVE_STATE_DIR": tmp, "GENSERVE_REQUEST_TIMEOUT_S": "300"}
        proc, url, startup = start(GENSERVE, env)
        try:
            print(f"genserve ready in {startup:.2f} s; model {args.model}")
            for steps in args.steps:
                for n in args.n:
                    for clients in args.clients:
                        before = batch_totals(url, args.model)
                        result = asyncio.run(run(url, args.model, n, clients, args.requests, steps))
                        result["batch"] = mean_batch(before, batch_totals(url, args.model))
                        rows.append((steps, n, clients, result))
        finally:
            stop(proc)
    print(f"\n{'steps':>6}{'n':>4}{'clients':>9}{'images/s':>10}{'p50 ms':>9}{'p95 ms':>9}"
          f"{'rows/pass':>11}")  # fmt: skip
    for steps, n, clients, r in rows:
        print(f"{steps or '-':>6}{n:>4}{clients:>9}{r['images_s']:>10.1f}{r['p50']:>9.1f}"
              f"{r['p95']:>9.1f}{r['batch']:>11.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
