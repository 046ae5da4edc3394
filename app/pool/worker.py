"""The worker process: loads model versions on its device and serves dynamic batches.

Messages in (a pipe):   ("infer", id, model, inputs, rows) | ("stop",)
Messages out (a pipe):  ("ready", {name: version}, {name: load error})
                        ("batch", model, rows, seconds, [(id, output), ...])
                        ("errors", [(id, message), ...])
One message per batch keeps the pipe's per-message cost off the per-request path. A thread
drains the request pipe into a local queue while the main thread computes, so the API's
writes never wait on a forward pass; EOF on that pipe (the API died) stops the worker.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from app.pool.base import ModelSpec
from app.pool.batching import DynamicBatcher, Request

log = logging.getLogger("genserve.worker")


def _concat(parts: list[Any]) -> Any:
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts) if len(parts) > 1 else parts[0]
    return [item for part in parts for item in part]


def run_batch(model: Any, batch: list[Request]) -> list[np.ndarray]:
    """One forward pass over every request's rows, split back per request."""
    probs = model.predict_proba(_concat([r.inputs for r in batch]))
    out, start = [], 0
    for request in batch:
        out.append(np.asarray(probs[start : start + request.rows], dtype=np.float32))
        start += request.rows
    return out


def _receive(requests: Connection, inbox: queue.SimpleQueue) -> None:
    while True:
        try:
            message = requests.recv()
        except (EOFError, OSError):
            message = ("stop",)
        inbox.put(message)
        if message[0] == "stop":
            return


def worker_main(
    worker_id: int,
    device: str,
    threads: int,
    specs: list[ModelSpec],
    requests: Connection,
    outbox: Connection,
    max_batch_size: int,
    max_wait_ms: float,
) -> None:
    # Threads are fixed before torch starts so that workers do not fight over the cores.
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import torch

    from models.artifacts import load_classifier

    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s worker-{worker_id} %(message)s")
    if device.startswith("cuda") and not torch.cuda.is_available():
        log.warning("CUDA requested but unavailable; worker %d falls back to CPU", worker_id)
        device = "cpu"

    loaded: dict[str, Any] = {}
    versions: dict[str, int] = {}
    errors: dict[str, str] = {}
    for spec in specs:
        try:
            loaded[spec.name] = load_classifier(
                Path(spec.artifact_dir), expected_sha256=spec.sha256, device=device
            )
            versions[spec.name] = spec.version
        except Exception as exc:  # a bad artifact must not take the worker down
            errors[spec.name] = f"{type(exc).__name__}: {exc}"
            log.error("could not load %s v%d: %s", spec.name, spec.version, exc)
    outbox.send(("ready", versions, errors))

    inbox: queue.SimpleQueue = queue.SimpleQueue()
    threading.Thread(target=_receive, args=(requests, inbox), daemon=True).start()

    batcher = DynamicBatcher(max_batch_size, max_wait_ms / 1000)
    while True:
        try:
            message = inbox.get(timeout=batcher.timeout())
        except queue.Empty:
            message = None
        while message is not None:  # drain whatever else already arrived
            if message[0] == "stop":
                return
            _, request_id, model, inputs, rows = message
            if model in loaded:
                batcher.add(Request(request_id, model, inputs, rows))
            else:
                outbox.send(("errors", [(request_id, f"model {model!r} is not loaded here")]))
            try:
                message = inbox.get_nowait()
            except queue.Empty:
                message = None
        while (due := batcher.next_batch()) is not None:
            model, batch = due
            started = time.perf_counter()
            try:
                outputs = run_batch(loaded[model], batch)
            except Exception:
                trace = traceback.format_exc()
                log.error("batch of %s failed:\n%s", model, trace)
                reason = trace.strip().splitlines()[-1]
                outbox.send(("errors", [(request.id, reason) for request in batch]))
                continue
            results = [(r.id, out) for r, out in zip(batch, outputs, strict=True)]
            rows = sum(r.rows for r in batch)
            outbox.send(("batch", model, rows, time.perf_counter() - started, results))
