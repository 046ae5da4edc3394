"""Peer: Ray Serve serving genserve's sentiment artifact with @serve.batch.

    bench/peers/.venvs/rayserve/bin/python bench/peers/rayserve_app.py --port 8102

One replica (as genserve runs one CPU worker) behind Ray Serve's HTTP proxy, on a local Ray
cluster of 2 CPUs started by this script and shut down on SIGTERM/SIGINT. POST /classify takes
genserve's body and answers genserve's shape. @serve.batch(max_batch_size=8,
batch_wait_timeout_s=PEER_BATCH_TIMEOUT); max_ongoing_requests is raised from Ray's default
(5) so that a batch of 8 can form at all.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
# the replica is another process: it must import _sentiment (and genserve's models) too
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(HERE), str(HERE.parents[1]), *filter(None, [os.environ.get("PYTHONPATH")])]
)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import _sentiment  # noqa: E402
import ray  # noqa: E402
from ray import serve  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402


@serve.deployment(
    num_replicas=1,
    max_ongoing_requests=int(os.environ.get("PEER_MAX_ONGOING", "64")),
    ray_actor_options={"num_cpus": 1},
)
class Sentiment:
    def __init__(self) -> None:
        self.model = _sentiment.load()

    @serve.batch(
        max_batch_size=_sentiment.MAX_BATCH_SIZE, batch_wait_timeout_s=_sentiment.BATCH_TIMEOUT
    )
    async def classify(self, requests: list[list[str]]) -> list[list[dict]]:
        flat = [t for texts in requests for t in texts]
        results = _sentiment.results(self.model, flat)
        out, start = [], 0
        for texts in requests:
            out.append(results[start : start + len(texts)])
            start += len(texts)
        return out

    async def __call__(self, request: Request):
        try:
            texts = _sentiment.texts_of(await request.json())
        except ValueError as e:
            return JSONResponse({"detail": str(e)}, status_code=422)
        return {"model": "sentiment", "version": 1, "results": await self.classify(texts)}


def serve_through_handle(handle: object, port: int) -> None:
    """`--handle`: our own FastAPI app under uvicorn in this process, calling the deployment
    through its DeploymentHandle (no Serve HTTP proxy): how genserve's API would use Serve."""
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/classify")
    async def classify(request: Request):  # type: ignore[no-untyped-def]
        try:
            texts = _sentiment.texts_of(await request.json())
        except ValueError as e:
            return JSONResponse({"detail": str(e)}, status_code=422)
        results = await handle.classify.remote(texts)  # type: ignore[attr-defined]
        return {"model": "sentiment", "version": 1, "results": results}

    print(f"ray serve (handle) ready on http://127.0.0.1:{port}/classify", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8102)
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--handle", action="store_true", help="FastAPI + DeploymentHandle")
    args = parser.parse_args()
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    # no per-request access log (genserve runs with --no-access-log too)
    quiet = {"enable_access_log": False, "log_level": "WARNING"}
    if args.handle:
        serve.start(http_options={"location": "NoServer"}, logging_config=quiet)
        handle = serve.run(Sentiment.bind(), name="sentiment", route_prefix=None)
        try:
            serve_through_handle(handle, args.port)
        finally:
            serve.shutdown()
            ray.shutdown()
        return
    serve.start(http_options={"host": "127.0.0.1", "port": args.port}, logging_config=quiet)
    serve.run(Sentiment.bind(), name="sentiment", route_prefix="/classify", logging_config=quiet)
    print(f"ray serve ready on http://127.0.0.1:{args.port}/classify", flush=True)

    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping:
        time.sleep(0.2)
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
