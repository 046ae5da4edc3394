"""The worker process: loads model versions on its device and serves dynamic batches.

Messages in (a pipe):   ("infer", id, model, inputs, rows) | ("stop",)
                        ("generate", id, model, prompt, params, n) | ("cancel", id)
                        ("load", id, spec): hot-load a version, loaded on a thread
Messages out (a pipe):  ("ready", {name: version}, {name: load error}, {name: load seconds})
                        ("loaded", id, name, version, error or None)
                        ("batch", model, rows, seconds, [(id, output), ...])
                        ("tokens", model, running, [event, ...])
                        ("errors", [(id, message), ...])
One message per batch keeps the pipe's per-message cost off the per-request path. A thread
drains the request pipe into a local queue while the main thread computes, so the API's
writes never wait on a forward pass; EOF on that pipe (the API died) stops the worker.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import queue
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from app.pool.base import OOM_PREFIX, ModelSpec
from app.worker.batching import DynamicBatcher, Request

if TYPE_CHECKING:  # torch is imported only inside the worker process
    from app.worker.continuous_batching import GenerationEngine

log = logging.getLogger("genserve.worker")


class Outbox(Protocol):
    """Where a worker sends its messages: the result pipe of a local worker process, or the
    Ray actor that hosts it (app/worker/ray_actor.py)."""

    def send(self, message: Any, /) -> None: ...


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
    # Ctrl-C or a SIGTERM to the process group is the API's to handle: it stops its workers
    # (a "stop" message, then SIGKILL), and EOF on the pipe stops us if the API is gone.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
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
    threading.Thread(target=_receive, args=(requests, worker.inbox), daemon=True).start()
    worker.serve(worker.inbox)


class Worker:
    """Dynamic batches (classification, images) and text-generation steps, interleaved on
    one thread."""

    def __init__(self, outbox: Outbox, batcher: DynamicBatcher) -> None:
        self.outbox = outbox
        self.batcher = batcher
        self.batched: dict[str, Any] = {}  # classifiers, image generators: dynamic batches
        self.engines: dict[str, GenerationEngine] = {}
        self.retiring: list[GenerationEngine] = []  # replaced engines finishing their sequences
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.device, self.max_running = "cpu", 1
        self.precision: Callable[[], Any] = contextlib.nullcontext  # load() sets autocast

    def load(self, specs: list[ModelSpec], device: str, max_running: int) -> None:
        import torch

        from models.training.precision import autocast

        self.device, self.max_running = device, max_running
        # mixed precision on GPUs (bf16, else fp16); a no-op on CPUs
        self.precision = functools.partial(autocast, torch.device(device))
        versions: dict[str, int] = {}
        errors: dict[str, str] = {}
        seconds: dict[str, float] = {}
        for spec in specs:
            started = time.perf_counter()
            try:
                self.install(spec, self.build(spec))
                versions[spec.name] = spec.version
                seconds[spec.name] = round(time.perf_counter() - started, 3)
            except Exception as exc:  # a bad artifact must not take the worker down
                errors[spec.name] = f"{type(exc).__name__}: {exc}"
                log.error("could not load %s v%d: %s", spec.name, spec.version, exc)
        self.outbox.send(("ready", versions, errors, seconds))

    def build(self, spec: ModelSpec) -> Any:
        """Loads one model version (verifying its sha256) into what serves it."""
        from app.worker.continuous_batching import GenerationEngine
        from app.worker.executors import ClassifierExecutor, ImageExecutor
        from models.artifacts import load_artifact

        path = Path(spec.artifact_dir)
        served = load_artifact(
            path, expected_sha256=spec.sha256, device=self.device, task=spec.task
        )
        if spec.task == "text-generation":
            return GenerationEngine(served, self.max_running)
        if spec.task == "image-generation":
            return ImageExecutor(served)
        return ClassifierExecutor(served)

    def install(self, spec: ModelSpec, served: Any) -> None:
        """Serves `served` as `spec.name` from now on. Sequences the old engine is generating
        finish on it: it keeps stepping until empty, then it is dropped."""
        from app.worker.continuous_batching import GenerationEngine

        if isinstance(served, GenerationEngine):
            old = self.engines.pop(spec.name, None)
            if old is not None and old.has_work():
                self.retiring.append(old)
            self.engines[spec.name] = served
        else:
            self.batched[spec.name] = served  # queued requests run on the new version

    def load_in_background(
        self, request_id: int, spec: ModelSpec, inbox: queue.SimpleQueue
    ) -> None:
        """Hot load: the old version keeps serving on the main thread while this one loads."""

        def run() -> None:
            try:
                inbox.put(("loaded", request_id, spec, self.build(spec), None))
            except Exception as exc:
                log.error("could not load %s v%d: %s", spec.name, spec.version, exc)
                inbox.put(("loaded", request_id, spec, None, f"{type(exc).__name__}: {exc}"))

        threading.Thread(target=run, name=f"load-{spec.name}", daemon=True).start()

    def serve(self, inbox: queue.SimpleQueue) -> None:
        while True:
            busy = any(e.has_work() for e in [*self.engines.values(), *self.retiring])
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
            for engine in self.retiring:
                self.generate_step(engine.lm.name or "retiring", engine)
            self.retiring = [e for e in self.retiring if e.has_work()]

    def handle(self, message: tuple[Any, ...]) -> None:
        kind, request_id, *rest = message
        if kind == "cancel":
            for engine in [*self.engines.values(), *self.retiring]:
                engine.cancel(request_id)
            return
        if kind == "load":
            self.load_in_background(request_id, rest[0], self.inbox)
            return
        if kind == "loaded":
            spec, served, error = rest
            if served is not None:
                self.install(spec, served)
                log.info("now serving %s v%d", spec.name, spec.version)
            self.outbox.send(("loaded", request_id, spec.name, spec.version, error))
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
            with self.precision():
                outputs = self.batched[model].run(batch)
        except Exception:
            self.report_failure(model, [r.id for r in batch])
            return
        results = [(r.id, out) for r, out in zip(batch, outputs, strict=True)]
        rows = sum(r.rows for r in batch)
        self.outbox.send(("batch", model, rows, time.perf_counter() - started, results))

    def generate_step(self, model: str, engine: GenerationEngine) -> None:
        running = len(engine.running) + min(len(engine.waiting), engine.free)
        try:
            with self.precision():
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
        import torch

        if isinstance(sys.exc_info()[1], torch.OutOfMemoryError):
            # Free the cached blocks so that the next, smaller batch fits; the worker lives on.
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            reason = OOM_PREFIX + reason
        self.outbox.send(("errors", [(request_id, reason) for request_id in request_ids]))
