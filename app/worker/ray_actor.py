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
import time
from dataclasses import dataclass, field
from typing import Any

from app.worker.loop import Worker, prepare
from app.worker.protocol import (
    BatchDone,
    Cancel,
    EventsReply,
    Failed,
    Failure,
    FromWorker,
    Generate,
    Infer,
    InferReply,
    Load,
    Loaded,
    Preview,
    Previews,
    Ready,
    TokenEvent,
    Tokens,
    Unload,
    WorkerConfig,
)

log = logging.getLogger("genserve.worker")
PREVIEW_WAIT_S = 3660.0  # longer than any request may run (GENSERVE_REQUEST_TIMEOUT_S)


@dataclass
class _Stream:
    """One generation request's events that the API has not fetched yet."""

    remaining: int  # choices not finished yet
    events: list[TokenEvent] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)  # sequences per decoding step it was in
    failure: Failure | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class WorkerActor:
    """One slot of the Ray pool: calls come in on the event loop, a `Worker` computes on its
    thread, and its messages answer the calls."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.device = prepare(config, override_threads=True)
        self.worker = Worker.for_config(self, config)
        self.calls: dict[int, asyncio.Future[Any]] = {}  # infer and load calls awaiting an answer
        self.streams: dict[int, _Stream] = {}
        # previews of the infer calls that asked for them; None ends one
        self.previews: dict[int, asyncio.Queue[Preview | None]] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.ready: asyncio.Future[Ready] | None = None
        self.models: dict[str, int] = {}  # what it serves now: name -> version
        self.active_at = time.monotonic()  # when it last had work

    async def start(self) -> Ready:
        """Loads the models and starts serving; answers once they are loaded. Called again (by
        another API replica sharing this actor) it answers with what it serves now."""
        if self.ready is None:
            self.loop = asyncio.get_running_loop()
            self.ready = self.loop.create_future()
            threading.Thread(target=self._run, name="worker", daemon=True).start()
        ready = await self.ready
        return Ready(ready.pid, dict(self.models), ready.load_errors, ready.load_seconds)

    async def idle_seconds(self) -> float:
        """How long no API replica has had work here (0 while some has): a shared actor is
        retired only when all of them left it idle."""
        if self.calls or self.streams:
            return 0.0
        return time.monotonic() - self.active_at

    def _run(self) -> None:
        try:
            self.worker.load(self.config.specs, self.device, self.config.max_running)
            self.worker.serve()
        except BaseException:
            # Never a live actor with a dead worker: exiting lets the pool start a new one.
            log.exception("worker %d crashed", self.config.worker_id)
            os._exit(1)

    async def node(self) -> str:
        """The Ray node this actor runs on, for the pool's placement."""
        import ray

        return ray.get_runtime_context().get_node_id()

    async def watch(self) -> None:
        """Never answers: the pool keeps this call open to learn at once when the actor dies."""
        await asyncio.Event().wait()

    async def infer(self, request: Infer) -> InferReply:
        inputs, request_id = request.inputs, request.request_id
        if not (isinstance(inputs, dict) and inputs.get("preview_every")):
            return await self._call(request_id, request)
        previews = self.previews.setdefault(request_id, asyncio.Queue())
        try:
            return await self._call(request_id, request)
        finally:
            previews.put_nowait(None)
            self.previews.pop(request_id, None)

    async def next_preview(self, request_id: int, first: bool) -> Preview | None:
        """Waits for the next preview of an infer call; None once it has been answered. The
        first wait may come before the call itself (an async actor may start them in either
        order); one that outlives its call, its client gone, ends after PREVIEW_WAIT_S."""
        previews = self.previews.get(request_id)
        if previews is None:
            if not first:
                return None
            previews = self.previews.setdefault(request_id, asyncio.Queue())
        try:
            return await asyncio.wait_for(previews.get(), PREVIEW_WAIT_S)
        except TimeoutError:
            self.previews.pop(request_id, None)
            return None

    async def load(self, request: Load) -> Loaded:
        """Hot-loads a version beside what this worker serves; answers once it serves or failed."""
        return await self._call(request.request_id, request)

    async def unload(self, request: Unload) -> None:
        """Drops a version served beside the active one (the pool evicts it)."""
        self.worker.inbox.put(request)

    async def generate(self, request: Generate) -> None:
        self.active_at = time.monotonic()
        self.streams[request.request_id] = _Stream(remaining=request.n)
        self.worker.inbox.put(request)

    async def next_events(self, request_id: int) -> EventsReply:
        """Waits for new events of a request."""
        stream = self.streams.get(request_id)
        if stream is None:
            reason = f"request {request_id} is not running on worker {self.config.worker_id}"
            return EventsReply([], [], Failure(request_id, reason))
        await stream.wake.wait()
        stream.wake.clear()
        events, steps = stream.events, stream.steps
        stream.events, stream.steps = [], []
        if stream.remaining == 0 or stream.failure is not None:
            self.streams.pop(request_id, None)
            self.active_at = time.monotonic()
        return EventsReply(events, steps, stream.failure)

    async def cancel(self, request_id: int) -> None:
        self.worker.inbox.put(Cancel(request_id))
        stream = self.streams.pop(request_id, None)
        if stream is not None:
            stream.failure = Failure(request_id, "cancelled")
            stream.wake.set()

    async def _call(self, request_id: int, message: Infer | Load) -> Any:
        assert self.loop is not None, "start() first"
        future = self.calls[request_id] = self.loop.create_future()
        self.worker.inbox.put(message)
        try:
            return await future
        finally:
            self.calls.pop(request_id, None)
            self.active_at = time.monotonic()

    # -- the Worker's outbox -----------------------------------------------------------------

    def send(self, message: FromWorker, /) -> None:
        """Called on the worker thread: hands the message to the event loop."""
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self._on_message, message)

    def _on_message(self, message: FromWorker) -> None:
        match message:
            case Ready():
                assert self.ready is not None
                self.models = dict(message.models)
                self.ready.set_result(message)
            case Loaded():
                if message.error is None and not message.side:
                    self.models[message.name] = message.version
                self._resolve(message.request_id, message)
            case BatchDone(rows=rows, results=results):
                for i, (request_id, output) in enumerate(results):
                    self._resolve(request_id, InferReply(output, rows if i == 0 else 0))
            case Previews(previews=previews):
                for preview in previews:
                    if (queue := self.previews.get(preview.request_id)) is not None:
                        queue.put_nowait(preview)
            case Tokens(running=running, events=events):
                counted = False
                for event in events:
                    stream = self.streams.get(event.request_id)
                    if stream is None:
                        continue  # cancelled
                    stream.events.append(event)
                    if not counted:
                        stream.steps.append(running)
                        counted = True
                    if event.finish_reason is not None:
                        stream.remaining -= 1
                    stream.wake.set()
            case Failed(failures=failures):
                for failure in failures:
                    stream = self.streams.get(failure.request_id)
                    if stream is not None:
                        stream.failure = failure
                        stream.wake.set()
                    else:
                        self._resolve(failure.request_id, InferReply(None, 0, failure))

    def _resolve(self, request_id: int, value: InferReply | Loaded) -> None:
        future = self.calls.get(request_id)
        if future is not None and not future.done():
            future.set_result(value)
