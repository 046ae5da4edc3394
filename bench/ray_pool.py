"""The Ray pool against the local pool on this machine: /classify req/s and text tokens/s.

    python bench/ray_pool.py [--seconds 5] [--rounds 3] [--clients 32] [--streams 16]

Two genserve servers with the committed defaults and one worker each: GENSERVE_POOL=local
(a worker process) and GENSERVE_POOL=ray (one actor on a private two-CPU Ray instance the
service starts). Rounds alternate local, ray, local, ray: /classify (sentiment) under wrk
at `--clients` connections, then /generate/text (shakespeare-gpt, 128 tokens) at
`--streams` streams. Medians, with min-max. What the Ray backend costs is the hop through
Ray's actor calls (requests and generation events polled from the actor) instead of a pipe.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import DATA_DIR, GENSERVE, machine, start, stop
from bench.serving import classify_load, classify_script
from bench.text_generation import level
from models.data.builtin import load_sentiment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--streams", type=int, default=16)
    args = parser.parse_args()
    _, _, texts, _ = load_sentiment(DATA_DIR)
    figures: dict[str, dict[str, list[float]]] = {"local": {}, "ray": {}}
    with tempfile.TemporaryDirectory() as tmp:
        script = classify_script(tmp, texts)
        servers = {}
        try:
            for pool in ("local", "ray"):
                env = {
                    "GENSERVE_STATE_DIR": str(Path(tmp) / pool),
                    "GENSERVE_RUNNER_SLOTS": "0",
                    "GENSERVE_WORKERS": "1",
                    "GENSERVE_DEVICE": "cpu",
                    "GENSERVE_POOL": pool,
                    "GENSERVE_RAY_NUM_CPUS": "2",
                }
                proc, url, seconds = start(GENSERVE, env)
                servers[pool] = (proc, url)
                print(f"{pool}: ready in {seconds:.1f} s", flush=True)
            for r in range(args.rounds):
                for pool, (_, url) in servers.items():
                    rps = classify_load(url, texts, script, args.clients, args.seconds)["rps"]
                    text = asyncio.run(level(url, "shakespeare-gpt", args.streams, 128, 1))
                    figures[pool].setdefault("classify", []).append(rps)
                    figures[pool].setdefault("tokens", []).append(text["tok_s"])
                    print(
                        f"round {r + 1} {pool}: /classify {rps:,.0f} req/s, "
                        f"text {text['tok_s']:,.0f} tok/s",
                        flush=True,
                    )
        finally:
            for proc, _ in servers.values():
                stop(proc)
    print(f"\n{machine()}; {args.clients} connections, {args.streams} streams x 128 tokens")
    for what, unit in (("classify", "req/s"), ("tokens", "tok/s")):
        local, ray = (statistics.median(figures[p][what]) for p in ("local", "ray"))
        spread = f"{min(figures['ray'][what]):,.0f}-{max(figures['ray'][what]):,.0f}"
        print(
            f"{what}: local {local:,.0f} {unit}, ray {ray:,.0f} ({spread}) {unit}: "
            f"ray / local {ray / local:.2f}"
        )


if __name__ == "__main__":
    main()
