"""The worker process: loads model versions on its device and serves dynamic batches.

Messages in (a pipe):   ("infer", id, model, inputs, rows) | ("stop",)
                        ("generate", id, model, prompt, params, n) | ("cancel", id)
Messages out (a pipe):  ("ready", {name: version}, {name: load error})
                        ("batch", model, rows, seconds, [(id, output), ...])
                        ("tokens", model, running, [event, ...])
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
from typing import TYPE_CHECKING, Any

from app.pool.base import ModelSpec
from app.pool.batching import DynamicBatcher, Request

if TYPE_CHECKING:  # torch is imported only inside the worker process
    from app.pool.continuous_batching import GenerationEngine

log = logging.getLogger("genserve.worker")


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
    max_running: int,
) -> None:
    # Threads are fixed before torch starts so that workers do not fight over the cores.
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import torch

    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s worker-{worker_id} %(message)s")
    if device.startswith("cuda") and not torch.cuda.is_available():
        log.warning("CUDA requested but unavailable; worker %d falls back to CPU", worker_id)
        device = "cpu"
    worker = Worker(outbox, DynamicBatcher(max_batch_size, max_wait_ms / 1000))
    worker.load(specs, device, max_running)
    inbox: queue.SimpleQueue = queue.SimpleQueue()
    threading.Thread(target=_receive, args=(requests, inbox), daemon=True).start()
    worker.serve(inbox)


class Worker:
    """Dynamic batches (classification, images) and text-generation steps, interleaved on
    one thread."""

    def __init__(self, outbox: Connection, batcher: DynamicBatcher) -> None:
        self.outbox = outbox
        self.batcher = batcher
        self.batched: dict[str, Any] = {}  # classifiers, image generators: dynamic batches
        self.engines: dict[str, GenerationEngine] = {}

    def load(self, specs: list[ModelSpec], device: str, max_running: int) -> None:
        from app.pool.continuous_batching import GenerationEngine
        from app.pool.runners import ClassifierRunner, ImageRunner
        from models.artifacts import load_classifier
        from models.lm import load_language_model

        versions: dict[str, int] = {}
        errors: dict[str, str] = {}
        for spec in specs:
            path = Path(spec.artifact_dir)
            try:
                if spec.task == "text-generation":
                    lm = load_language_model(path, expected_sha256=spec.sha256, device=device)
                    self.engines[spec.name] = GenerationEngine(lm, max_running)
                elif spec.task == "image-generation":
                    from models.imagegen import load_image_generator

                    gen = load_image_generator(path, expected_sha256=spec.sha256, device=device)
                    self.batched[spec.name] = ImageRunner(gen)
                else:
                    clf = load_classifier(path, expected_sha256=spec.sha256, device=device)
                    self.batched[spec.name] = ClassifierRunner(clf)
                versions[spec.name] = spec.version
            except Exception as exc:  # a bad artifact must not take the worker down
                errors[spec.name] = f"{type(exc).__name__}: {exc}"
                log.error("could not load %s v%d: %s", spec.name, spec.version, exc)
        self.outbox.send(("ready", versions, errors))

    def serve(self, inbox: queue.SimpleQueue) -> None:
        while True:
            busy = any(engine.has_work() for engine in self.engines.values())
            try:
                message = inbox.get_nowait() if busy else inbox.get(timeout=self.batcher.timeout())
            except queue.Empty:
                message = None
            while message is not None:  # drain whatever else already arrived
                if message[0] == "stop":
                    return
                self.handle(message)
                try:
                    message = inbox.get_nowait()
                except queue.Empty:
                    message = None
            while (due := self.batcher.next_batch()) is not None:
                self.run_batch(*due)
            for name, engine in self.engines.items():
                if engine.has_work():
                    self.generate_step(name, engine)

    def handle(self, message: tuple[Any, ...]) -> None:
        kind, request_id, *rest = message
        if kind == "cancel":
            for engine in self.engines.values():
                engine.cancel(request_id)
            return
        model = rest[0]
        if kind == "infer" and model in self.batched:
            _, inputs, rows = rest
            self.batcher.add(Request(request_id, model, inputs, rows))
        elif kind == "generate" and model in self.engines:
            _, prompt, params, n = rest
            self.engines[model].add(request_id, prompt, params, n)
        else:
            self.outbox.send(("errors", [(request_id, f"model {model!r} is not loaded here")]))

    def run_batch(self, model: str, batch: list[Request]) -> None:
        started = time.perf_counter()
        try:
            outputs = self.batched[model].run(batch)
        except Exception:
            self.report_failure(model, [r.id for r in batch])
            return
        results = [(r.id, out) for r, out in zip(batch, outputs, strict=True)]
        rows = sum(r.rows for r in batch)
        self.outbox.send(("batch", model, rows, time.perf_counter() - started, results))

    def generate_step(self, model: str, engine: GenerationEngine) -> None:
        running = len(engine.running) + min(len(engine.waiting), len(engine.free))
        try:
            events = engine.step()
        except Exception:
            ids = {s.request_id for s in [*engine.running.values(), *engine.waiting]}
            for request_id in ids:
                engine.cancel(request_id)
            self.report_failure(model, sorted(ids))
            return
        if events:
            self.outbox.send(("tokens", model, running, events))

    def report_failure(self, model: str, request_ids: list[int]) -> None:
        trace = traceback.format_exc()
        log.error("%s failed:\n%s", model, trace)
        reason = trace.strip().splitlines()[-1]
        self.outbox.send(("errors", [(request_id, reason) for request_id in request_ids]))
