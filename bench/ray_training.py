"""Data-parallel training on a two-node Ray cluster: samples/s with 1 and 2 Ray Train workers.

    python bench/ray_training.py [--steps 60] [--rounds 2] [--kind gpt|cnn]

Starts a Ray cluster of two one-CPU nodes on this machine (`ray start --head` and one
`ray start --address`, token authentication on), and a genserve with
GENSERVE_TRAIN_BACKEND=ray. Jobs alternate num_workers 1, 2, 1, 2 on the same model, data and
global batch: a GPT on tinyshakespeare (samples/s is steps x global batch / the loop's wall
time as the job reports it), or with `--kind cnn` the digits CNN for `--epochs` epochs (the
median of its epochs' samples/s).
On one 2-core machine the two "nodes" share the cores the one worker had, so expect little
gain: the figure shows what DDP costs here (the all-reduce per step), not what it buys on
real nodes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import GENSERVE, machine, start, stop
from tests.ray.cluster import RayCluster

MODEL = {"n_layer": 2, "n_head": 4, "n_embd": 128, "block_size": 128, "batch_size": 16}
CNN = {"batch_size": 64}


def job_body(kind: str, workers: int, steps: int, epochs: int, name: str) -> dict:
    if kind == "cnn":
        params = {**CNN, "num_workers": workers, "epochs": epochs}
        return {"kind": "classify-cnn", "dataset": "digits", "name": name, "params": params}
    params = {**MODEL, "num_workers": workers, "max_steps": steps, "eval_every": steps}
    return {"kind": "text-gpt", "dataset": "tinyshakespeare", "name": name, "params": params}


def samples_per_s(url: str, job: dict) -> float:
    if "samples_per_s" in job["metrics"]:
        return job["metrics"]["samples_per_s"]
    history = httpx.get(f"{url}/train/{job['id']}", timeout=30).json()["history"]
    return statistics.median(row["values"]["samples_per_s"] for row in history)


def run_job(url: str, body: dict) -> dict:
    job = httpx.post(f"{url}/train", json=body, timeout=30).json()
    while job["status"] not in ("succeeded", "failed", "cancelled"):
        time.sleep(0.5)
        job = httpx.get(f"{url}/train/{job['id']}", timeout=30).json()
    if job["status"] != "succeeded":
        raise RuntimeError(f"job failed: {job.get('error')}")
    return job


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--kind", choices=("gpt", "cnn"), default="gpt")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cluster = RayCluster(Path(tmp)).start_head(cpus=1)
        try:
            cluster.add_node(cpus=1)
            env = {
                **cluster.env,
                "GENSERVE_STATE_DIR": tmp,
                "GENSERVE_TRAIN_BACKEND": "ray",
                "GENSERVE_RAY_ADDRESS": cluster.address,
                "GENSERVE_RUNNER_SLOTS": "1",
                "GENSERVE_DEVICE": "cpu",
            }
            proc, url, _ = start(GENSERVE, env)
            try:
                rates: dict[int, list[float]] = {1: [], 2: []}
                for r in range(args.rounds):
                    for workers in (1, 2):
                        name = f"bench-{r}-{workers}"
                        body = job_body(args.kind, workers, args.steps, args.epochs, name)
                        job = run_job(url, body)
                        rate = samples_per_s(url, job)
                        rates[workers].append(rate)
                        nodes = len(job["placement"]["nodes"])
                        where = f"{workers} worker(s) on {nodes} node(s)"
                        print(f"round {r + 1}: {where}: {rate} samples/s")
            finally:
                stop(proc)
        finally:
            cluster.stop()
    one, two = (statistics.median(rates[w]) for w in (1, 2))
    what = (
        f"digits CNN, {args.epochs} epochs, global batch {CNN['batch_size']}"
        if args.kind == "cnn"
        else f"GPT {MODEL}, {args.steps} steps, global batch {MODEL['batch_size']}"
    )
    print(f"\n{machine()}; {what}")
    print(f"1 worker: {one:.1f} samples/s, 2 workers: {two:.1f} samples/s, ratio {two / one:.2f}")


if __name__ == "__main__":
    main()
