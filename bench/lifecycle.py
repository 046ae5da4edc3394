"""Versions side by side on a real server: what naming a version costs, what a canary split
sends where, and what activating a version already loaded beside saves.

    python bench/lifecycle.py [--requests 400]

Serves the committed defaults, registers a copy of shakespeare-gpt as v2, then prints:
- latency of /generate/text (16 greedy tokens) on the active version, on the first request
  naming v2 (it loads beside the active one) and on the following ones;
- a 90/10 traffic split: the share each version answered, and how many users always got the
  same version (sticky routing by `user`);
- activation time, interleaved: a version already loaded beside (promoted in place) against
  one loaded anew.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.db import Database, migrate
from app.services import versions
from app.settings import PRETRAINED_DIR
from bench.common import GENSERVE, machine, start, stop
from models.artifacts import artifact_digest

MODEL = "shakespeare-gpt"
BODY = {"prompt": "ROMEO:", "max_new_tokens": 16, "temperature": 0}


def register_copy(state: Path, url: str) -> int:
    """A copy of the committed GPT as the next, inactive version."""
    source = PRETRAINED_DIR / MODEL
    relative = "artifacts/bench/gpt-copy"
    shutil.copytree(source, state / relative)
    sha256, size = artifact_digest(source)
    config = json.loads((source / "config.json").read_text())
    db = Database(url)
    try:
        with db.session() as session:
            return versions.register_trained(
                session,
                name=MODEL,
                task=config["task"],
                kind=config["kind"],
                artifact_path=relative,
                sha256=sha256,
                size=size,
                params={},
                config=config,
                dataset_id=None,
                activate=False,
            ).version
    finally:
        db.dispose()


def timed(client: httpx.Client, method: str, path: str, **kwargs: object) -> tuple[float, dict]:
    started = time.perf_counter()
    response = client.request(method, path, **kwargs)  # type: ignore[arg-type]
    response.raise_for_status()
    return (time.perf_counter() - started) * 1000, response.json()


def generate(client: httpx.Client, model: str, user: str | None = None) -> tuple[float, int]:
    body = {**BODY, "model": model} | ({"user": user} if user else {})
    ms, answer = timed(client, "POST", "/generate/text", json=body)
    return ms, answer["version"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=400, help="requests under the split")
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="genserve-lifecycle-"))
    url = f"sqlite:///{state / 'genserve.db'}"
    migrate(url)
    env = {"GENSERVE_STATE_DIR": str(state), "GENSERVE_RUNNER_SLOTS": "0"}
    proc, base, ready_s = start(GENSERVE, env)
    try:
        other = register_copy(state, url)
        client = httpx.Client(base_url=base, timeout=300)
        print(f"{machine()}; server ready in {ready_s:.1f} s; {MODEL} v1 active, v{other} copy")

        active = [generate(client, MODEL)[0] for _ in range(10)]
        first, _ = generate(client, f"{MODEL}@{other}")
        beside = [generate(client, f"{MODEL}@{other}")[0] for _ in range(10)]
        print(f"active v1, median of 10          {statistics.median(active):8.1f} ms")
        print(f"first request naming v{other} (loads) {first:8.1f} ms")
        print(f"v{other} beside, median of 10       {statistics.median(beside):8.1f} ms")

        client.post(f"/models/{MODEL}/traffic", json={"1": 90, str(other): 10}).raise_for_status()
        shares = Counter(generate(client, MODEL)[1] for _ in range(args.requests))
        users = [f"user-{i}" for i in range(args.requests // 8)]
        sticky = sum(len({generate(client, MODEL, u)[1] for _ in range(4)}) == 1 for u in users)
        picked = Counter(generate(client, MODEL, u)[1] for u in users)
        print(
            f"split 90/10 over {args.requests} requests: "
            + ", ".join(f"v{v} {n / args.requests:.1%}" for v, n in sorted(shares.items()))
        )
        print(
            f"sticky: {sticky}/{len(users)} users got one version in 4 requests; users per "
            + ", ".join(f"v{v} {n}" for v, n in sorted(picked.items()))
        )
        client.post(f"/models/{MODEL}/traffic", json={}).raise_for_status()

        promote, load = [], []
        versions_ = [1, other]
        for round_ in range(3):  # A B A B: promote one loaded beside, then load one anew
            target = versions_[(round_ + 1) % 2]
            generate(client, f"{MODEL}@{target}")  # loaded beside the active version
            promote.append(timed(client, "POST", f"/models/{MODEL}/versions/{target}/activate")[0])
            fresh = versions_[round_ % 2]  # retired by that activation: loads anew
            load.append(timed(client, "POST", f"/models/{MODEL}/versions/{fresh}/activate")[0])
        print(
            f"activate, loaded beside (promote): {statistics.median(promote):8.1f} ms median "
            f"of 3; loaded anew: {statistics.median(load):8.1f} ms "
            f"({statistics.median(load) / statistics.median(promote):.1f}x)"
        )
    finally:
        stop(proc)
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
