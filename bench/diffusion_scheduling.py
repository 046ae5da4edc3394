"""A short diffusion request behind a long one: continuous denoising against a dynamic batch.

    python bench/diffusion_scheduling.py [--baseline REF] [--rounds 3] [--model mnist-diffusion]
        [--long-steps 50] [--long-n 8] [--short-steps 10] [--short-n 1]

Two servers, one worker and one thread each: this checkout, and the code at REF (default: the
last commit before continuous denoising, where a worker ran a diffusion request as one dynamic
batch, start to end) checked out into a temporary worktree. Each round sends, to A then to B,
a long request and, 0.3 s later, a short one, and records both latencies; then the short one
alone. Interleaved A B A B, so both see the same machine; the medians are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import DATA_DIR, GENSERVE, REPO, machine, start, stop

BASELINE = "ac110be"  # a dynamic batch per diffusion request (before app/worker/denoising.py)
ENV = {
    "GENSERVE_WORKERS": "1",
    "GENSERVE_THREADS_PER_WORKER": "1",
    "GENSERVE_RUNNER_SLOTS": "0",
    "GENSERVE_DATA_DIR": str(DATA_DIR),  # the baseline's worktree has no ../shared beside it
}


async def timed(client: httpx.AsyncClient, body: dict, delay: float = 0.0) -> float:
    await asyncio.sleep(delay)
    t0 = time.perf_counter()
    response = await client.post("/generate/image", json=body)
    response.raise_for_status()
    return time.perf_counter() - t0


async def round_(url: str, long: dict, short: dict) -> tuple[float, float, float]:
    """(long latency, short latency while the long one runs, short latency alone)."""
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        long_s, short_s = await asyncio.gather(timed(client, long), timed(client, short, 0.3))
        alone = await timed(client, short)
    return long_s, short_s, alone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=BASELINE)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="mnist-diffusion")
    parser.add_argument("--long-steps", type=int, default=50)
    parser.add_argument("--long-n", type=int, default=8)
    parser.add_argument("--short-steps", type=int, default=10)
    parser.add_argument("--short-n", type=int, default=1)
    args = parser.parse_args()
    long = {"model": args.model, "n": args.long_n, "seed": 1, "steps": args.long_steps}
    short = {"model": args.model, "n": args.short_n, "seed": 2, "steps": args.short_steps}
    print(f"machine: {machine()}")
    print(f"long: {long}\nshort: {short}")
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "baseline"
        subprocess.run(
            ["git", "worktree", "add", "--detach", "-q", str(tree), args.baseline],
            cwd=REPO,
            check=True,
        )
        servers = {}
        try:
            for name, cwd in (("A " + args.baseline, tree), ("B this checkout", REPO)):
                state = Path(tmp) / name.split()[0]
                servers[name] = start(GENSERVE, {**ENV, "GENSERVE_STATE_DIR": str(state)}, cwd)
            for _, url, _ in servers.values():  # warm up: first passes allocate
                asyncio.run(round_(url, {**long, "steps": 2}, {**short, "steps": 2}))
            results: dict[str, list[tuple[float, float, float]]] = {n: [] for n in servers}
            for _ in range(args.rounds):
                for name, (_, url, _) in servers.items():
                    results[name].append(asyncio.run(round_(url, long, short)))
        finally:
            for proc, _, _ in servers.values():
                stop(proc)
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO)
    print(f"\n{'server':<22}{'long s':>9}{'short behind long s':>22}{'short alone s':>16}")
    for name, rows in results.items():
        long_s, short_s, alone = np.median(np.array(rows), axis=0)
        print(f"{name:<22}{long_s:>9.2f}{short_s:>22.2f}{alone:>16.2f}")


if __name__ == "__main__":
    main()
