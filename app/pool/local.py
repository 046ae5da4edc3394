"""Local pool backend: N spawned worker processes on this machine.

Each worker has two pipes of its own, so a worker killed mid-write can corrupt only its own
channel, which is thrown away with it. The event loop watches each result pipe and process
sentinel directly (add_reader): no threads and no queue feeder hop on the request path, and
a death is noticed the moment the kernel closes the process.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing as mp
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from app import metrics
from app.errors import AppError, GatewayTimeout, NotFound, Overloaded, Unavailable
from app.pool.base import (
    Event,
    ModelSpec,
    WorkerInfo,
    WorkerLost,
    WorkerPool,
    restart_delay,
    worker_error,
)
from app.settings import Settings
from app.worker.loop import worker_main

log = logging.getLogger("genserve.pool")
_ctx = mp.get_context("spawn")  # never fork a process that may hold torch or CUDA state


class LoadFailed(AppError):
    """A model version that verified on disk still would not load in a worker."""

    status, code = 409, "load_failed"


@dataclass
class _Pending:
    """One request in flight: a future (inference) or an event queue (generation)."""

    model: str
    rows: int
    future: asyncio.Future[Any] | None = None
    events: asyncio.Queue[Any] | None = None
    remaining: int = 0  # generation: choices not finished yet


@dataclass
class _Worker:
    id: int
    device: str
    process: Any = None
    requests: Connection | None = None  # API -> worker
    results: Connection | None = None  # worker -> API
    ready: bool = False
    models: dict[str, int] = field(default_factory=dict)
    load_errors: dict[str, str] = field(default_factory=dict)
    inflight: dict[int, _Pending] = field(default_factory=dict)
    inflight_rows: int = 0
    restarts: int = 0
    started_at: float = 0.0
    generation: int = 0  # bumps on exit and restart so stale callbacks are ignored


class LocalPool(WorkerPool):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.specs: list[ModelSpec] = []
        self._workers = [_Worker(i, d) for i, d in enumerate(settings.worker_devices())]
        self._ids = itertools.count(1)
        self._queued: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._loads: dict[int, asyncio.Future[str | None]] = {}  # hot loads awaiting a worker

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, specs: list[ModelSpec]) -> None:
        self._loop = asyncio.get_running_loop()
        self.specs = list(specs)
        for worker in self._workers:
            self._spawn(worker)

    async def stop(self) -> None:
        self._stopping = True
        for worker in self._workers:
            self._send(worker, ("stop",))
        deadline = time.monotonic() + 5
        for worker in self._workers:
            process = worker.process  # _on_exit may clear it while we wait
            if process is None:
                continue
            await asyncio.to_thread(process.join, max(0.1, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                await asyncio.to_thread(process.join, 2)
            self._on_exit(worker, worker.generation)

    def _spawn(self, worker: _Worker) -> None:
        assert self._loop is not None
        worker.generation += 1
        worker.ready, worker.models, worker.load_errors = False, {}, {}
        requests_in, requests_out = _ctx.Pipe(duplex=False)  # (read end, write end)
        results_in, results_out = _ctx.Pipe(duplex=False)
        process = _ctx.Process(
            target=worker_main,
            name=f"genserve-worker-{worker.id}",
            args=(
                worker.id,
                worker.device,
                self.settings.worker_threads(),
                self.specs,
                requests_in,
                results_out,
                self.settings.max_batch_size,
                self.settings.max_wait_ms,
                self.settings.max_running_sequences,
            ),
            daemon=True,
        )
        process.start()
        # The child holds the other ends, so EOF on either side means the peer is gone.
        requests_in.close()
        results_out.close()
        worker.process, worker.requests, worker.results = process, requests_out, results_in
        worker.started_at = time.monotonic()
        generation = worker.generation
        self._loop.add_reader(results_in.fileno(), self._on_readable, worker, generation)
        self._loop.add_reader(process.sentinel, self._on_exit, worker, generation)
        log.info("started worker %d (pid %d) on %s", worker.id, process.pid, worker.device)

    def _send(self, worker: _Worker, message: tuple[Any, ...]) -> bool:
        if worker.requests is None:
            return False
        try:
            worker.requests.send(message)
        except (BrokenPipeError, OSError):
            return False
        return True

    # -- loop-side handlers -----------------------------------------------------------------

    def _on_readable(self, worker: _Worker, generation: int) -> None:
        if generation == worker.generation and not self._drain(worker):
            self._on_exit(worker, generation)

    def _drain(self, worker: _Worker) -> bool:
        """Handles every message already in the result pipe; False once the pipe is closed."""
        conn = worker.results
        if conn is None:
            return False
        try:
            while conn.poll():
                self._on_message(worker, conn.recv())
        except (EOFError, OSError):
            return False
        return True

    def _on_message(self, worker: _Worker, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "batch":
            _, model, rows, _seconds, results = message
            metrics.BATCH_SIZE.labels(model).observe(rows)
            for request_id, output in results:
                self._resolve(worker, request_id, output, None)
        elif kind == "tokens":
            _, model, running, events = message
            metrics.BATCH_SIZE.labels(model).observe(running)
            for event in events:
                pending = worker.inflight.get(event[0])
                if pending is None or pending.events is None:
                    continue  # cancelled: the worker learns soon
                pending.events.put_nowait(event)
                if event[3] is not None:
                    pending.remaining -= 1
                    if pending.remaining == 0:
                        del worker.inflight[event[0]]
                        self._release(worker, pending)
        elif kind == "errors":
            for request_id, reason in message[1]:
                self._resolve(worker, request_id, None, worker_error(reason))
        elif kind == "ready":
            worker.models, worker.load_errors = message[1], message[2]
            for name, seconds in message[3].items():
                metrics.MODEL_LOAD_SECONDS.labels(name).set(seconds)
            worker.ready = True
            metrics.WORKERS_READY.set(sum(w.ready for w in self._workers))
            log.info("worker %d ready with %s", worker.id, worker.models)
            # A version activated while this worker was starting: catch up.
            for spec in self.specs:
                if worker.models.get(spec.name, spec.version) != spec.version:
                    self._send(worker, ("load", next(self._ids), spec))
        elif kind == "loaded":
            _, request_id, name, version, error = message
            if error is None:
                worker.models[name] = version
                worker.load_errors.pop(name, None)
            future = self._loads.pop(request_id, None)
            if future is not None and not future.done():
                future.set_result(error)

    def _on_exit(self, worker: _Worker, generation: int) -> None:
        """The worker's process ended (or its pipe broke): fail its requests, restart it."""
        if generation != worker.generation or worker.process is None:
            return
        assert self._loop is not None
        if worker.results is not None:
            self._drain(worker)  # results it sent before dying still count
            self._loop.remove_reader(worker.results.fileno())
            worker.results.close()
        self._loop.remove_reader(worker.process.sentinel)
        if worker.requests is not None:
            worker.requests.close()
        worker.process.join(timeout=1)
        exitcode = worker.process.exitcode
        worker.process, worker.requests, worker.results = None, None, None
        worker.generation += 1
        worker.ready = False
        metrics.WORKERS_READY.set(sum(w.ready for w in self._workers))
        self._fail_inflight(worker, WorkerLost(f"worker {worker.id} exited; retry the request"))
        if self._stopping:
            return
        log.error("worker %d exited with code %s; restarting", worker.id, exitcode)
        worker.restarts += 1
        metrics.WORKER_RESTARTS.inc()
        # Back off when a worker dies right after starting, so a crash loop does not spin.
        delay = restart_delay(worker.started_at, worker.restarts)
        self._loop.call_later(delay, self._respawn, worker, worker.generation)

    def _respawn(self, worker: _Worker, generation: int) -> None:
        if not self._stopping and generation == worker.generation:
            self._spawn(worker)

    def _resolve(
        self, worker: _Worker, request_id: int, output: Any, error: Exception | None
    ) -> None:
        pending = worker.inflight.pop(request_id, None)
        if pending is None:
            return  # timed out or cancelled already
        self._release(worker, pending)
        if pending.events is not None:
            pending.events.put_nowait(error)
        elif pending.future is None or pending.future.done():
            return
        elif error is None:
            pending.future.set_result(output)
        else:
            pending.future.set_exception(error)

    def _release(self, worker: _Worker, pending: _Pending) -> None:
        worker.inflight_rows -= pending.rows
        self._queued[pending.model] -= 1
        metrics.QUEUE_DEPTH.labels(pending.model).set(self._queued[pending.model])

    def _fail_inflight(self, worker: _Worker, error: Exception) -> None:
        for request_id in list(worker.inflight):
            self._resolve(worker, request_id, None, error)

    # -- the API ---------------------------------------------------------------------------

    def _submit(
        self, pending: _Pending, message: tuple[Any, ...], limit: int
    ) -> tuple[_Worker, int]:
        """Queues `message` on the least loaded worker, or refuses it when the queue is full."""
        worker = self._pick(pending.model)
        if self._queued.get(pending.model, 0) >= limit:
            raise Overloaded(f"the queue for {pending.model!r} is full; retry shortly")
        request_id = next(self._ids)
        worker.inflight[request_id] = pending
        worker.inflight_rows += pending.rows
        self._queued[pending.model] = self._queued.get(pending.model, 0) + 1
        metrics.QUEUE_DEPTH.labels(pending.model).set(self._queued[pending.model])
        if not self._send(worker, (message[0], request_id, *message[1:])):
            self._on_exit(worker, worker.generation)  # fails this request with WorkerLost too
        return worker, request_id

    async def infer(self, model: str, inputs: Any, rows: int) -> Any:
        assert self._loop is not None
        future: asyncio.Future[Any] = self._loop.create_future()
        pending = _Pending(model, rows, future=future)
        worker, request_id = self._submit(
            pending, ("infer", model, inputs, rows), self.settings.max_queue
        )
        # One timer per request (asyncio.wait_for costs several times more on this path).
        timer = self._loop.call_later(self.settings.request_timeout_s, _expire, future)
        try:
            return await future
        except TimeoutError:
            raise GatewayTimeout(
                f"{model!r} did not answer within {self.settings.request_timeout_s:g} s"
            ) from None
        finally:
            timer.cancel()
            # Timed out or the client went away: forget the request so its slot frees up.
            if worker.inflight.pop(request_id, None) is not None:
                self._release(worker, pending)

    def generate(
        self, model: str, prompt: str, params: dict[str, Any], n: int
    ) -> AsyncIterator[Event]:
        # Submitted now, not on first iteration, so a full queue is an error before streaming.
        pending = _Pending(model, n, events=asyncio.Queue(), remaining=n)
        limit = self.settings.max_running_sequences + self.settings.max_waiting_sequences
        worker, request_id = self._submit(pending, ("generate", model, prompt, params, n), limit)
        assert self._loop is not None
        deadline = self._loop.time() + self.settings.generation_timeout_s
        return self._events(worker, request_id, pending, deadline)

    async def _events(
        self, worker: _Worker, request_id: int, pending: _Pending, deadline: float
    ) -> AsyncIterator[Event]:
        """Events until every choice finished; 504 after `request_timeout_s` without a token
        or past the whole generation's deadline (`generation_timeout_s`)."""
        model = pending.model
        assert pending.events is not None and self._loop is not None
        gap = self.settings.request_timeout_s
        try:
            while pending.remaining > 0 or not pending.events.empty():
                left = deadline - self._loop.time()
                try:
                    if left <= 0:
                        raise TimeoutError
                    item = await asyncio.wait_for(pending.events.get(), min(gap, left))
                except TimeoutError:
                    if deadline - self._loop.time() <= 0:
                        limit = self.settings.generation_timeout_s
                        raise GatewayTimeout(
                            f"{model!r} did not finish within {limit:g} s; ask for fewer tokens"
                        ) from None
                    raise GatewayTimeout(f"{model!r} produced no token for {gap:g} s") from None
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            # The client went away or we failed: stop the work in the worker too.
            if worker.inflight.pop(request_id, None) is not None:
                self._release(worker, pending)
                self._send(worker, ("cancel", request_id))

    async def load(self, spec: ModelSpec) -> None:
        """Every worker loads `spec` beside what it serves, then switches to it; requests keep
        flowing to the old version meanwhile. Workers that start later load it at start."""
        assert self._loop is not None
        previous = list(self.specs)
        self.specs = [s for s in self.specs if s.name != spec.name] + [spec]
        waits: dict[int, asyncio.Future[str | None]] = {}
        for worker in self._workers:
            if not worker.ready:
                continue  # starting: it reads self.specs, or catches up when ready
            request_id = next(self._ids)
            waits[worker.id] = self._loads[request_id] = self._loop.create_future()
            if not self._send(worker, ("load", request_id, spec)):
                waits[worker.id].set_result(f"worker {worker.id} is gone")
        try:
            async with asyncio.timeout(self.settings.model_load_timeout_s):
                results = await asyncio.gather(*waits.values())
        except TimeoutError:
            late = f"no answer within {self.settings.model_load_timeout_s:g} s"
            results = [w.result() if w.done() else late for w in waits.values()]
        errors = {wid: err for wid, err in zip(waits, results, strict=True) if err is not None}
        if errors:
            # Back to the old version: workers that did switch keep serving, the next
            # restart (or activation) evens them out.
            self.specs = previous
            raise LoadFailed(f"could not load {spec.name!r} version {spec.version}", details=errors)

    def _pick(self, model: str) -> _Worker:
        """The least loaded ready worker that serves `model`."""
        candidates = [w for w in self._workers if w.ready and model in w.models]
        if candidates:
            return min(candidates, key=lambda w: w.inflight_rows)
        if not any(s.name == model for s in self.specs):
            raise NotFound(f"model {model!r} is not served by this pool")
        errors = {w.id: w.load_errors[model] for w in self._workers if model in w.load_errors}
        if errors and all(w.ready for w in self._workers):
            raise Unavailable(f"model {model!r} failed to load", details=errors, retry_after=30)
        raise Unavailable(f"model {model!r} is loading; retry shortly", retry_after=2)

    def workers(self) -> list[WorkerInfo]:
        return [
            WorkerInfo(
                id=w.id,
                pid=w.process.pid if w.process is not None else None,
                device=w.device,
                ready=w.ready,
                models=dict(w.models),
                restarts=w.restarts,
                inflight=len(w.inflight),
            )
            for w in self._workers
        ]


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())
