"""Serving benchmark, one command, one run: genserve beside a bare FastAPI echo app.

    python bench/serving.py [--quick]

1. startup: seconds from process start to /readyz 200 with every default model, the load
   time of each model (genserve_model_load_seconds), resident memory of the API and workers;
2. /classify at 1, 8, 32 and 128 clients: genserve (dynamic batching), genserve with
   batching off (GENSERVE_MAX_BATCH_SIZE=1) and a bare FastAPI echo app under the same
   uvicorn with the same JSON body: req/s, p50/p95/p99 latency, mean batch from /metrics,
   genserve/echo at 32 clients (target >= 0.60). wrk drives the load when it is installed
   (apt install wrk), else an async httpx load generator;
3. /generate/text (shakespeare-gpt, 128 tokens per stream) at 1, 4, 16 and 64 streams with
   continuous batching, and at 16 streams with it off (GENSERVE_MAX_RUNNING_SEQUENCES=1):
   tokens/s, TTFT p50/p95, 16 streams / 1 stream (target >= 8x);
4. /generate/image (mnist-cgan): images/s for n = 1 (8 clients) and n = 64 (one client);
5. soak: 10,000 /classify requests; RSS of the API process and the worker before and after.

Everything runs on this machine, load generator included: on 2 cores the generator takes a
share of the CPU from the servers, the same share for genserve and echo.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    DATA_DIR,
    GENSERVE,
    batch_totals,
    machine,
    mean_batch,
    run_wrk,
    start,
    stop,
)
from bench.image_generation import run as image_run
from bench.text_generation import level as text_level
from models.data.builtin import load_sentiment

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

WRK_SCRIPT = """
local bodies = %s
local i = 0
request = function()
  i = i %% #bodies + 1
  return wrk.format("POST", "/classify", {["Content-Type"] = "application/json"}, bodies[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "JSON {\\"requests\\": %%d, \\"us\\": %%d, \\"errors\\": %%d, "
    .. "\\"p50\\": %%f, \\"p95\\": %%f, \\"p99\\": %%f}\\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout + e.status,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000))
end
"""


def classify_script(directory: str | Path, texts: list[str]) -> Path:
    """wrk's Lua script posting the first 200 texts to /classify in turn, one per request."""
    bodies = [json.dumps({"inputs": [t]}) for t in texts[:200]]
    script = Path(directory) / "classify.lua"
    script.write_text(WRK_SCRIPT % ("{" + ",".join(json.dumps(b) for b in bodies) + "}"))
    return script


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker_pids(url: str) -> list[int]:
    workers = httpx.get(url + "/readyz", timeout=10).json().get("workers", [])
    return [w["pid"] for w in workers if w.get("pid")]


def load_seconds(url: str) -> dict[str, float]:
    out = {}
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("genserve_model_load_seconds{"):
            name = line.split('model="', 1)[1].split('"', 1)[0]
            out[name] = float(line.rsplit(" ", 1)[1])
    return out


# -- /classify load ---------------------------------------------------------------------------


def wrk_load(url: str, script: Path, clients: int, seconds: float) -> dict[str, float]:
    stats = run_wrk(url, script, clients, seconds)
    return {
        "rps": stats["rps"],
        "p50": stats["p50"],
        "p95": stats["p95"],
        "p99": stats["p99"],
        "failures": stats["errors"],
        "requests": stats["requests"],
    }


async def httpx_load(url: str, texts: list[str], clients: int, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    failures = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        deadline = time.perf_counter() + seconds

        async def one_client(offset: int) -> None:
            nonlocal failures
            i = offset
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                r = await client.post("/classify", json={"inputs": [texts[i % len(texts)]]})
                latencies.append(time.perf_counter() - t0)
                failures += r.status_code != 200
                i += clients

        t0 = time.perf_counter()
        await asyncio.gather(*(one_client(c) for c in range(clients)))
        elapsed = time.perf_counter() - t0
    ms = np.array(latencies) * 1000
    return {
        "rps": len(latencies) / elapsed,
        "p50": float(np.percentile(ms, 50)),
        "p95": float(np.percentile(ms, 95)),
        "p99": float(np.percentile(ms, 99)),
        "failures": failures,
        "requests": len(latencies),
    }


def classify_load(
    url: str, texts: list[str], script: Path | None, clients: int, seconds: float
) -> dict[str, float]:
    if script is not None:
        return wrk_load(url, script, clients, seconds)
    return asyncio.run(httpx_load(url, texts, clients, seconds))


# -- the run ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter levels (a smoke run)")
    parser.add_argument("--seconds", type=float, default=5.0, help="per /classify level")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--soak", type=int, default=10_000, help="requests in the soak")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.streams, args.soak = 2.0, [1, 16], 2000
    _, _, texts, _ = load_sentiment(DATA_DIR)
    use_wrk = shutil.which("wrk") is not None
    print(f"machine: {machine()}; load generator: {'wrk' if use_wrk else 'httpx'}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        script = classify_script(tmp, texts) if use_wrk else None
        echo_dir = Path(tmp) / "echo"
        echo_dir.mkdir()
        (echo_dir / "echo_app.py").write_text(ECHO_APP)
        uvicorn = [
            sys.executable,
            "-m",
            "uvicorn",
            "echo_app:app",
            "--no-access-log",
            "--log-level",
            "warning",
        ]

        # 1. genserve with every default model: startup, memory, then the load levels
        env = {"GENSERVE_STATE_DIR": str(Path(tmp) / "genserve"), "GENSERVE_RUNNER_SLOTS": "0"}
        proc, url, startup = start(GENSERVE, env)
        try:
            pids = worker_pids(url)
            loads = load_seconds(url)
            memory = {"api": rss_mb(proc.pid), **{f"worker {p}": rss_mb(p) for p in pids}}
            print(f"genserve ready in {startup:.2f} s", flush=True)
            classify = {}
            for c in args.clients:
                before = batch_totals(url, "sentiment")
                classify[c] = classify_load(url, texts, script, c, args.seconds)
                classify[c]["batch"] = mean_batch(before, batch_totals(url, "sentiment"))
            text = {}
            for s in args.streams:
                before = batch_totals(url, "shakespeare-gpt")
                text[s] = asyncio.run(text_level(url, "shakespeare-gpt", s, 128, 2))
                text[s]["batch"] = mean_batch(before, batch_totals(url, "shakespeare-gpt"))
            images = {
                1: asyncio.run(image_run(url, "mnist-cgan", 1, 8, 200)),
                64: asyncio.run(image_run(url, "mnist-cgan", 64, 1, 10)),
            }
            # 5. soak: RSS before and after N more requests
            soak_before = {"api": rss_mb(proc.pid), **{f"worker {p}": rss_mb(p) for p in pids}}
            done, t0 = 0, time.perf_counter()
            while done < args.soak:
                done += int(classify_load(url, texts, script, 32, 5.0)["requests"])
            soak_seconds = time.perf_counter() - t0
            soak_after = {"api": rss_mb(proc.pid), **{f"worker {p}": rss_mb(p) for p in pids}}
        finally:
            stop(proc)

        # 2b/3b. batching off
        env = {
            "GENSERVE_STATE_DIR": str(Path(tmp) / "nobatch"),
            "GENSERVE_RUNNER_SLOTS": "0",
            "GENSERVE_MAX_BATCH_SIZE": "1",
            "GENSERVE_MAX_RUNNING_SEQUENCES": "1",
            "GENSERVE_MAX_WAITING_SEQUENCES": "1024",
        }
        proc, url, _ = start(GENSERVE, env)
        try:
            before = batch_totals(url, "sentiment")
            nobatch = classify_load(url, texts, script, 32, args.seconds)
            nobatch["batch"] = mean_batch(before, batch_totals(url, "sentiment"))
            text_nobatch = asyncio.run(text_level(url, "shakespeare-gpt", 16, 128, 1))
        finally:
            stop(proc)

        # 2c. the bare echo app
        proc, url, _ = start(uvicorn, {}, echo_dir)
        try:
            echo = {c: classify_load(url, texts, script, c, args.seconds) for c in args.clients}
        finally:
            stop(proc)

    print(f"\n## startup and memory\nready (/readyz 200) in {startup:.2f} s")
    for name, seconds in sorted(loads.items(), key=lambda kv: -kv[1]):
        print(f"  load {name:<20}{seconds:>7.3f} s")
    for name, mb in memory.items():
        print(f"  RSS {name:<20}{mb:>7.0f} MB")

    print(f"\n## /classify, one sentence per request, {args.seconds:g} s per level")
    print(
        f"{'server':<18}{'clients':>8}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
        f"{'batch':>8}{'fail':>6}"
    )
    rows = [("genserve", c, r) for c, r in classify.items()] + [
        ("echo", c, r) for c, r in echo.items()
    ]
    rows.append(("genserve, no batch", 32, nobatch))
    for name, c, r in rows:
        print(
            f"{name:<18}{c:>8}{r['rps']:>9.0f}{r['p50']:>9.1f}{r['p95']:>9.1f}{r['p99']:>9.1f}"
            f"{r.get('batch', float('nan')):>8.2f}{r['failures']:>6.0f}"
        )
    if 32 in classify:
        print(
            f"genserve / echo at 32 clients: {classify[32]['rps'] / echo[32]['rps']:.2f} "
            "(target >= 0.60)"
        )
        print(
            f"batching speed-up at 32 clients: {classify[32]['rps'] / nobatch['rps']:.2f}x "
            f"(mean batch {classify[32]['batch']:.1f})"
        )

    print("\n## /generate/text, shakespeare-gpt, 128 tokens per stream")
    print(
        f"{'streams':>8}{'tokens/s':>11}{'per stream':>12}{'TTFT p50 ms':>13}"
        f"{'TTFT p95 ms':>13}{'mean batch':>12}"
    )
    for s, r in text.items():
        print(
            f"{s:>8}{r['tok_s']:>11.0f}{r['per_stream']:>12.0f}{r['ttft_p50']:>13.1f}"
            f"{r['ttft_p95']:>13.1f}{r['batch']:>12.1f}"
        )
    print(
        f"{'16, off':>8}{text_nobatch['tok_s']:>11.0f}{text_nobatch['per_stream']:>12.0f}"
        f"{text_nobatch['ttft_p50']:>13.1f}{text_nobatch['ttft_p95']:>13.1f}{1.0:>12.1f}"
    )
    if 1 in text and 16 in text:
        print(f"16 streams / 1 stream: {text[16]['tok_s'] / text[1]['tok_s']:.1f}x (target >= 8x)")
        print(
            f"continuous batching speed-up at 16 streams: "
            f"{text[16]['tok_s'] / text_nobatch['tok_s']:.1f}x"
        )

    print("\n## /generate/image, mnist-cgan")
    for n, r in images.items():
        print(f"  n={n:<3} {r['images_s']:>8.0f} images/s   p50 {r['p50']:.1f} ms")

    print(f"\n## soak: {done} /classify requests at 32 clients in {soak_seconds:.0f} s")
    for name in soak_before:
        print(f"  RSS {name:<20}{soak_before[name]:>7.0f} MB -> {soak_after[name]:>7.0f} MB")


if __name__ == "__main__":
    main()
