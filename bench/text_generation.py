"""Text-generation benchmark through the HTTP API: tokens/s and time to first token by number
of concurrent streams, with continuous batching, in one run.

    python bench/text_generation.py [--model shakespeare-gpt] [--tokens 128] [--streams 1 4 16 64]
    python bench/text_generation.py --model shakespeare-gpt shakespeare-bpe-gpt --streams 1 16 \
        --repeat 3

At each level, `streams` clients each run --rounds streamed `/generate/text` requests back
to back with different seeds and prompts; tokens/s counts SSE token events received. With
several models, the levels run interleaved (A B A B, --repeat times) on one server, and
characters/s is reported too (tokens/s times the characters a generated token carries: a
BPE token carries several).
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

PROMPTS = ["ROMEO:", "JULIET:\nO ", "KING HENRY:\n", "First Citizen:\nWe ", "HAMLET:\nTo be"]


TOKEN_EVENT = b"event: token"


async def one_stream(client: httpx.AsyncClient, body: dict) -> tuple[float, int, float]:
    """-> (seconds to first token, tokens, total seconds)

    Counts token events in the raw bytes instead of parsing every event: on a 2-core machine
    the load generator shares the CPU with the server, and a Python SSE parser per token
    would measure the client more than genserve.
    """
    t0 = time.perf_counter()
    first, tokens, tail = 0.0, 0, b""
    async with client.stream("POST", "/generate/text", json=body) as response:
        response.raise_for_status()
        async for chunk in response.aiter_raw():
            data = tail + chunk
            tokens += data.count(TOKEN_EVENT)
            tail = data[-(len(TOKEN_EVENT) - 1) :]  # a marker split across two chunks
            if tokens and not first:
                first = time.perf_counter() - t0
    return first, tokens, time.perf_counter() - t0


async def level(url: str, model: str, streams: int, tokens: int, rounds: int) -> dict:
    limits = httpx.Limits(max_connections=streams + 4, max_keepalive_connections=streams + 4)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:

        async def client_loop(c: int) -> list[tuple[float, int, float]]:
            out = []
            for r in range(rounds):
                body = {"model": model, "prompt": PROMPTS[(c + r) % len(PROMPTS)],
                        "max_new_tokens": tokens, "seed": c * 1000 + r, "stream": True}  # fmt: skip
                out.append(await one_stream(client, body))
            return out

        await one_stream(client, {"model": model, "prompt": "A", "max_new_tokens": 4,
                                  "stream": True})  # fmt: skip
        t0 = time.perf_counter()
        results = [x for xs in await asyncio.gather(*(client_loop(c) for c in range(streams)))
                   for x in xs]  # fmt: skip
        elapsed = time.perf_counter() - t0
    ttft = np.array([r[0] for r in results]) * 1000
    total = sum(r[1] for r in results)
    return {
        "tok_s": total / elapsed,
        "per_stream": float(np.mean([r[1] / r[2] for r in results])),
        "ttft_p50": float(np.percentile(ttft, 50)),
        "ttft_p95": float(np.percentile(ttft, 95)),
    }


def chars_per_token(url: str, model: str, tokens: int) -> float:
    """Characters per generated token, over a few sampled completions."""
    body = {"model": model, "prompt": "ROMEO:", "max_new_tokens": tokens, "n": 8, "seed": 0}
    choices = httpx.post(f"{url}/generate/text", json=body, timeout=300).json()["choices"]
    return sum(len(c["text"]) for c in choices) / sum(c["completion_tokens"] for c in choices)


def compare(url: str, args: argparse.Namespace) -> None:
    """Several models, interleaved: medians and ranges of tokens/s and characters/s."""
    runs: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.repeat):
        for s in args.streams:
            for model in args.model:
                r = asyncio.run(level(url, model, s, args.tokens, args.rounds))
                runs.setdefault((model, s), []).append(r["tok_s"])
    ratio = {m: chars_per_token(url, m, args.tokens) for m in args.model}
    print(f"\n{'model':>22}{'streams':>8}{'tokens/s (min-max)':>24}{'chars/s':>9}{'chars/tok':>10}")
    for (model, s), values in runs.items():
        med = float(np.median(values))
        spread = f"{med:.0f} ({min(values):.0f}-{max(values):.0f})"
        print(f"{model:>22}{s:>8}{spread:>24}{med * ratio[model]:>9.0f}{ratio[model]:>10.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", default=["shakespeare-gpt"])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds (several models)")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        env = {"GENSERVE_STATE_DIR": tmp, "GENSERVE_MAX_RUNNING_SEQUENCES": "64"}
        proc, url, startup = start(GENSERVE, env)
        try:
            print(f"genserve ready in {startup:.2f} s; model {' '.join(args.model)}, "
                  f"{args.tokens} tokens per stream")  # fmt: skip
            if len(args.model) > 1:
                compare(url, args)
                return
            model, results = args.model[0], {}
            for s in args.streams:
                before = batch_totals(url, model)
                results[s] = asyncio.run(level(url, model, s, args.tokens, args.rounds))
                results[s]["batch"] = mean_batch(before, batch_totals(url, model))
        finally:
            stop(proc)
    print(f"\n{'streams':>8}{'tokens/s':>11}{'per stream':>12}{'TTFT p50 ms':>13}"
          f"{'TTFT p95 ms':>13}{'mean batch':>12}")  # fmt: skip
    for s, r in results.items():
        print(f"{s:>8}{r['tok_s']:>11.0f}{r['per_stream']:>12.0f}{r['ttft_p50']:>13.1f}"
              f"{r['ttft_p95']:>13.1f}{r['batch']:>12.1f}")  # fmt: skip
    if 1 in results and 16 in results:
        ratio = results[16]["tok_s"] / results[1]["tok_s"]
        print(f"\n16 streams / 1 stream: {ratio:.1f}x (target >= 8x)")


if __name__ == "__main__":
    main()
