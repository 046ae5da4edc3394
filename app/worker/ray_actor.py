"""The Ray actor of the Ray pool: hosts the same `Worker` as a local worker process.

The actor is async. Its event loop answers the API's calls while the `Worker` loads models and
runs batches and generation steps on a thread of its own, exactly as in a local process; the
actor is the `Worker`'s outbox, so each message it sends resolves the call waiting for it.
Generation is polled: `generate` submits a request, `next_events` waits for the events made
since the last poll, `cancel` stops it. Plain Python: no Ray import here, Ray wraps the class.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from app.pool.base import Event, ModelSpec
from app.worker.batching import DynamicBatcher
from app.worker.loop import Worker

log = logging.getLogger("genserve.worker")

# What `infer` answers: (output, rows of its batch or 0, error). Exactly one request of each
# batch carries the batch's rows, so the API records each batch size once.
InferResult = tuple[Any, int, str | None]


@dataclass
class _Stream:
    """One generation request's events that the API has not fetched yet."""

    remaining: int  # choices not finished yet
    events: list[Event] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)  # sequences per decoding step it was in
    error: str | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class WorkerActor:
    """One slot of the Ray pool: calls come in on the event loop, a `Worker` computes on its
    thread, and its messages answer the calls."""

    def __init__(
        self,
        worker_id: int,
        device: str,
        threads: int,
        specs: list[ModelSpec],
        max_batch_size: int,
        max_wait_ms: float,
        max_running: int,
    ) -> None:
        # Threads are fixed before torch starts so that workers do not fight over the cores.
        os.environ["OMP_NUM_THREADS"] = str(threads)
        import torch

        torch.set_num_threads(threads)
        log_format = f"%(asctime)s worker-{worker_id} %(message)s"
        logging.basicConfig(level=logging.INFO, format=log_format)
        if device.startswith("cuda") and not torch.cuda.is_available():
            log.warning("CUDA requested but unavailable; worker %d falls back to CPU", worker_id)
            device = "cpu"
        self.worker_id = worker_id
        self.device = device
        self.specs = specs  # loaded at start
        self.max_running = max_running
        self.worker = Worker(self, DynamicBatcher(max_batch_size, max_wait_ms / 1000))
        self.models: dict[str, int] = {}
        self.load_errors: dict[str, str] = {}
        self.calls: dict[int, asyncio.Future[Any]] = {}  # infer and load calls awaiting an answer
        self.streams: dict[int, _Stream] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.ready: asyncio.Future[None] | None = None

    async def start(self) -> dict[str, Any]:
        """Loads the models and starts serving; answers once they are loaded."""
        self.loop = asyncio.get_running_loop()
        self.ready = self.loop.create_future()
        threading.Thread(target=self._run, name="worker", daemon=True).start()
        await self.ready
        return {"pid": os.getpid(), "models": self.models, "load_errors": self.load_errors}

    def _run(self) -> None:
        try:
            self.worker.load(self.specs, self.device, self.max_running)
            self.worker.serve(self.worker.inbox)
        except BaseException:
            # Never a live actor with a dead worker: exiting lets the pool start a new one.
            log.exception("worker %d crashed", self.worker_id)
            os._exit(1)

    async def watch(self) -> None:
        """Never answers: the pool keeps this call open to learn at once when the actor dies."""
        await asyncio.Event().wait()

    async def infer(self, request_id: int, model: str, inputs: Any, rows: int) -> InferResult:
        return await self._call(request_id, ("infer", request_id, model, inputs, rows))

    async def load(self, request_id: int, spec: ModelSpec) -> str | None:
        """Hot-loads `spec` beside what this worker serves; the error, or None once it serves."""
        return await self._call(request_id, ("load", request_id, spec))

    async def generate(
        self, request_id: int, model: str, prompt: str, params: dict[str, Any], n: int
    ) -> None:
        self.streams[request_id] = _Stream(remaining=n)
        self.worker.inbox.put(("generate", request_id, model, prompt, params, n))

    async def next_events(self, request_id: int) -> tuple[list[Event], list[int], str | None]:
        """Waits for new events of a request: (events, step sizes, error)."""
        stream = self.streams.get(request_id)
        if stream is None:
            return [], [], f"request {request_id} is not running on worker {self.worker_id}"
        await stream.wake.wait()
        stream.wake.clear()
        events, steps = stream.events, stream.steps
        stream.events, stream.steps = [], []
        if stream.remaining == 0 or stream.error is not None:
            self.streams.pop(request_id, None)
        return events, steps, stream.error

    async def cancel(self, request_id: int) -> None:
        self.worker.inbox.put(("cancel", request_id))
        stream = self.streams.pop(request_id, None)
        if stream is not None:
            stream.error = "cancelled"
            stream.wake.set()

    async def _call(self, request_id: int, message: tuple[Any, ...]) -> Any:
        assert self.loop is not None, "start() first"
        future = self.calls[request_id] = self.loop.create_future()
        self.worker.inbox.put(message)
        try:
            return await future
        finally:
            self.calls.pop(request_id, None)

    # -- the Worker's outbox -----------------------------------------------------------------

    def send(self, message: tuple[Any, ...], /) -> None:
        """Called on the worker thread: hands the message to the event loop."""
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self._on_message, message)

    def _on_message(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "ready":
            self.models, self.load_errors = message[1], message[2]
            assert self.ready is not None
            self.ready.set_result(None)
        elif kind == "loaded":
            _, request_id, name, version, error = message
            if error is None:
                self.models[name] = version
                self.load_errors.pop(name, None)
            self._resolve(request_id, error)
        elif kind == "batch":
            _, _model, rows, _seconds, results = message
            for i, (request_id, output) in enumerate(results):
                self._resolve(request_id, (output, rows if i == 0 else 0, None))
        elif kind == "tokens":
            _, _model, running, events = message
            counted = False
            for event in events:
                stream = self.streams.get(event[0])
                if stream is None:
                    continue  # cancelled
                stream.events.append(event)
                if not counted:
                    stream.steps.append(running)
                    counted = True
                if event[3] is not None:
                    stream.remaining -= 1
                stream.wake.set()
        elif kind == "errors":
            for request_id, reason in message[1]:
                stream = self.streams.get(request_id)
                if stream is not None:
                    stream.error = reason
                    stream.wake.set()
                else:
                    self._resolve(request_id, (None, 0, reason))

    def _resolve(self, request_id: int, value: Any) -> None:
        future = self.calls.get(request_id)
        if future is not None and not future.done():
            future.set_result(value)
