"""Ray Serve through a DeploymentHandle against genserve's Ray actor pool, on /classify.

    python bench/ray_serve_handle.py [--seconds 5] [--rounds 3] [--clients 32]

Issue 16 asks for Ray Serve deployments behind genserve's own FastAPI unless they cost more
than 10 % against the actor pool. This measures the Serve side of that choice without
rewriting the pool: `bench/peers/rayserve_app.py --handle` (its own venv, made by
bench/peers/setup.sh) is a FastAPI app under uvicorn calling one Serve replica of the same
sentiment artifact through a DeploymentHandle, with @serve.batch(8); genserve runs
GENSERVE_POOL=ray with one actor. Both on private two-CPU Ray instances, wrk alternating
between them. Medians of the rounds.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import DATA_DIR, GENSERVE, REPO, free_port, machine, run_wrk, start, stop
from bench.serving import classify_script
from models.data.builtin import load_sentiment

PEER = REPO / "bench" / "peers"


def start_peer() -> tuple[subprocess.Popen, str]:
    port = free_port()
    python = PEER / ".venvs" / "rayserve" / "bin" / "python"
    proc = subprocess.Popen(
        [str(python), str(PEER / "rayserve_app.py"), "--port", str(port), "--handle"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.post(url + "/classify", json={"inputs": ["ok"]}, timeout=5).is_success:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("the Ray Serve peer never answered")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=32)
    args = parser.parse_args()
    _, _, texts, _ = load_sentiment(DATA_DIR)
    rps: dict[str, list[float]] = {"genserve ray pool": [], "ray serve handle": []}
    with tempfile.TemporaryDirectory() as tmp:
        script = classify_script(tmp, texts)
        env = {
            "GENSERVE_STATE_DIR": tmp,
            "GENSERVE_RUNNER_SLOTS": "0",
            "GENSERVE_WORKERS": "1",
            "GENSERVE_DEVICE": "cpu",
            "GENSERVE_POOL": "ray",
            "GENSERVE_RAY_NUM_CPUS": "2",
        }
        genserve, genserve_url, _ = start(GENSERVE, env)
        try:
            peer, peer_url = start_peer()
            try:
                urls = {"genserve ray pool": genserve_url, "ray serve handle": peer_url}
                for r in range(args.rounds):
                    for name, url in urls.items():
                        got = run_wrk(url, script, args.clients, args.seconds)
                        rps[name].append(got["rps"])
                        print(f"round {r + 1} {name}: {got['rps']:,.0f} req/s", flush=True)
            finally:
                peer.terminate()
                peer.wait(timeout=60)
        finally:
            stop(genserve)
    pool, serve = (statistics.median(rps[k]) for k in rps)
    print(f"\n{machine()}; /classify, {args.clients} connections")
    print(f"genserve ray pool {pool:,.0f} req/s, ray serve handle {serve:,.0f} req/s: "
          f"serve / pool {serve / pool:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
