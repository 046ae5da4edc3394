"""Local pool backend: N spawned worker processes on this machine.

Each worker has two pipes of its own, so a worker killed mid-write can corrupt only its own
channel, which is thrown away with it. The event loop watches each result pipe and process
sentinel directly (add_reader): no threads and no queue feeder hop on the request path, and
a death is noticed the moment the kernel closes the process (app/supervision.py restarts it).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import msgspec

from app import metrics
from app.pool.base import Progress, SharedPool, Slot, StreamMeter
from app.pool.errors import EngineTimeout, WorkerLost, failure_error
from app.settings import Settings
from app.supervision import SupervisedProcess, spawn, stop_all
from app.worker import protocol as msg
from app.worker.process import worker_main

log = logging.getLogger("genserve.pool")


@dataclass
class _Pending:
    """One request in flight: a future (inference) or an event queue (generation)."""

    model: str
    rows: int
    future: asyncio.Future[Any] | None = None
    events: asyncio.Queue[list[msg.TokenEvent] | Exception] | None = None
    progress: Progress | None = None  # inference: gets the request's previews
    remaining: int = 0  # generation: choices not finished yet
    units: int = 1  # what it counts against its model's queue: 1, or n sequences


@dataclass
class _Worker(Slot):
    process: SupervisedProcess = field(init=False)
    requests: Connection | None = None  # API -> worker
    results: Connection | None = None  # worker -> API
    pending: dict[int, _Pending] = field(default_factory=dict)  # request id -> request


class LocalPool(SharedPool[_Worker]):
    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.slots = [_Worker(i, d) for i, d in enumerate(settings.worker_devices())]
        for worker in self.slots:
            worker.process = SupervisedProcess(
                f"worker {worker.id}",
                functools.partial(self._launch, worker),
                functools.partial(self._on_exit, worker),
                ask_stop=lambda _, worker=worker: self._send(worker, msg.Stop()),
            )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loads: dict[int, asyncio.Future[str | None]] = {}  # hot loads awaiting a worker

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, specs: list[msg.ModelSpec]) -> None:
        self._loop = asyncio.get_running_loop()
        self.specs = list(specs)
        for worker in self.slots:
            worker.process.start()

    async def stop(self) -> None:
        self._stopping = True
        await stop_all([worker.process for worker in self.slots], timeout=5)

    def _launch(self, worker: _Worker) -> BaseProcess:
        assert self._loop is not None
        worker.ready, worker.models, worker.load_errors = False, {}, {}
        requests_in, requests_out = spawn.Pipe(duplex=False)  # (read end, write end)
        results_in, results_out = spawn.Pipe(duplex=False)
        process = spawn.Process(
            target=worker_main,
            name=f"genserve-worker-{worker.id}",
            args=(self.worker_config(worker), requests_in, results_out),
            daemon=True,
        )
        process.start()
        # The child holds the other ends, so EOF on either side means the peer is gone.
        requests_in.close()
        results_out.close()
        worker.requests, worker.results, worker.pid = requests_out, results_in, process.pid
        generation = worker.process.generation
        self._loop.add_reader(results_in.fileno(), self._on_readable, worker, generation)
        # uvloop's add_reader makes the fd non-blocking; recv() of a message larger than the
        # pipe's buffer would then stop midway with BlockingIOError, read as a dead worker.
        # Readable means a message has started, and the worker writes it whole: wait for it.
        os.set_blocking(results_in.fileno(), True)
        log.info("started worker %d (pid %d) on %s", worker.id, process.pid, worker.device)
        return process

    def _send(self, worker: _Worker, message: msg.ToWorker) -> bool:
        if worker.requests is None:
            return False
        try:
            worker.requests.send(message)
        except (BrokenPipeError, OSError):
            return False
        return True

    # -- loop-side handlers -----------------------------------------------------------------

    def _on_readable(self, worker: _Worker, generation: int) -> None:
        if generation == worker.process.generation and not self._drain(worker):
            worker.process.exited(generation)

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

    def _on_message(self, worker: _Worker, message: msg.FromWorker) -> None:
        match message:
            case msg.BatchDone(model=model, rows=rows, results=results):
                metrics.BATCH_SIZE.labels(model).observe(rows)
                for request_id, output in results:
                    self._resolve(worker, request_id, output, None)
            case msg.Previews(previews=previews):
                for preview in previews:
                    pending = worker.pending.get(preview.request_id)
                    if pending is not None and pending.progress is not None:
                        pending.progress(preview)
            case msg.Tokens(model=model, running=running, events=events):
                metrics.BATCH_SIZE.labels(model).observe(running)
                self._on_step(worker, model, running)
                by_request: dict[int, list[msg.TokenEvent]] = {}
                for event in events:
                    by_request.setdefault(event.request_id, []).append(event)
                for request_id, batch in by_request.items():
                    pending = worker.pending.get(request_id)
                    if pending is None or pending.events is None:
                        continue  # cancelled: the worker learns soon
                    pending.events.put_nowait(batch)
                    pending.remaining -= sum(e.finish_reason is not None for e in batch)
                    if pending.remaining == 0:
                        self._forget(worker, request_id)
            case msg.Failed(failures=failures):
                for failure in failures:
                    self._resolve(worker, failure.request_id, None, failure_error(failure))
            case msg.Ready():
                self._on_ready(worker, message)
                for spec in self._outdated(worker):  # activated while this worker started
                    self._send(worker, msg.Load(next(self._ids), spec))
            case msg.Loaded():
                self._on_loaded(worker, message)
                future = self._loads.pop(message.request_id, None)
                if future is not None and not future.done():
                    future.set_result(message.error)

    def _on_exit(self, worker: _Worker, exitcode: int | None, restarting: bool) -> None:
        """The worker's process ended (or its pipe broke): fail its requests."""
        assert self._loop is not None
        if worker.results is not None:
            self._drain(worker)  # results it sent before dying still count
            self._loop.remove_reader(worker.results.fileno())
            worker.results.close()
        if worker.requests is not None:
            worker.requests.close()
        worker.requests, worker.results = None, None
        self._on_lost(worker, restarting)
        lost = WorkerLost(f"worker {worker.id} exited; retry the request")
        for request_id in list(worker.pending):
            self._resolve(worker, request_id, None, lost)

    def _resolve(
        self, worker: _Worker, request_id: int, output: Any, error: Exception | None
    ) -> None:
        pending = self._forget(worker, request_id)
        if pending is None:
            return  # timed out or cancelled already
        if pending.events is not None:
            if error is not None:
                pending.events.put_nowait(error)
        elif pending.future is None or pending.future.done():
            return
        elif error is None:
            pending.future.set_result(output)
        else:
            pending.future.set_exception(error)

    def _forget(self, worker: _Worker, request_id: int) -> _Pending | None:
        """Takes a request off its worker and its model's queue; None if it was gone."""
        pending = worker.pending.pop(request_id, None)
        if pending is not None:
            generation = pending.events is not None
            self._release(worker, pending.model, pending.rows, pending.units, generation)
        return pending

    # -- the API ---------------------------------------------------------------------------

    def _submit(self, message: msg.Infer | msg.Generate, pending: _Pending, limit: int) -> _Worker:
        """Sends `message` to the least loaded worker, or refuses it when the queue is full."""
        generation = pending.events is not None
        worker, key = self._admit(pending.model, pending.rows, limit, pending.units, generation)
        if key != message.model:  # the worker serves this version as its active one
            message = msgspec.structs.replace(message, model=key)
        worker.pending[message.request_id] = pending
        if not self._send(worker, message):
            worker.process.exited()  # fails this request with WorkerLost too
        return worker

    async def infer(
        self, model: str, inputs: Any, rows: int, progress: Progress | None = None
    ) -> Any:
        assert self._loop is not None
        future: asyncio.Future[Any] = self._loop.create_future()
        request = msg.Infer(next(self._ids), model, inputs, rows)
        pending = _Pending(model, rows, future=future, progress=progress)
        worker = self._submit(request, pending, self.settings.max_queue)
        # One timer per request (asyncio.wait_for costs several times more on this path).
        timer = self._loop.call_later(self.settings.request_timeout_s, _expire, future)
        try:
            return await future
        except TimeoutError:
            raise EngineTimeout(
                f"{model!r} did not answer within {self.settings.request_timeout_s:g} s"
            ) from None
        finally:
            timer.cancel()
            # Timed out or the client went away: forget the request so its slot frees up,
            # and stop the worker's steps on it (a diffusion request runs for many).
            if self._forget(worker, request.request_id) is not None:
                self._send(worker, msg.Cancel(request.request_id))

    def generate(
        self, model: str, prompt: str | list[int], params: dict[str, Any], n: int
    ) -> AsyncIterator[list[msg.TokenEvent]]:
        # Submitted now, not on first iteration, so a full queue is an error before streaming.
        pending = _Pending(model, n, events=asyncio.Queue(), remaining=n, units=n)
        request = msg.Generate(next(self._ids), model, prompt, params, n)
        meter = StreamMeter(model)
        worker = self._submit(request, pending, self._generation_limit())
        return self._events(worker, request.request_id, pending, self._deadline(), meter)

    async def _events(
        self,
        worker: _Worker,
        request_id: int,
        pending: _Pending,
        deadline: float,
        meter: StreamMeter,
    ) -> AsyncIterator[list[msg.TokenEvent]]:
        """Events until every choice finished, the worker failed, or a timeout: each batch
        holds every step that arrived since the last (a timer only when none is waiting)."""
        events = pending.events
        assert events is not None
        loop = asyncio.get_running_loop()
        try:
            while pending.remaining > 0 or not events.empty():
                if events.empty() or loop.time() >= deadline:  # past it: the timeout, queued or not
                    item = await self._next_event(pending.model, events.get, deadline)
                else:
                    item = events.get_nowait()
                batch: list[msg.TokenEvent] = []
                while True:
                    if isinstance(item, Exception):
                        if batch:  # what came before the failure still reaches the client
                            yield batch
                        raise item
                    for event in item:
                        meter.observe(event)
                    batch += item
                    if events.empty():
                        break
                    item = events.get_nowait()
                yield batch
        finally:
            # The client went away or we failed: stop the work in the worker too.
            if self._forget(worker, request_id) is not None:
                self._send(worker, msg.Cancel(request_id))

    async def _load_on(
        self, worker: _Worker, spec: msg.ModelSpec, side: bool = False
    ) -> str | None:
        assert self._loop is not None
        request_id = next(self._ids)
        future = self._loads[request_id] = self._loop.create_future()
        try:
            if not self._send(worker, msg.Load(request_id, spec, side)):
                return f"worker {worker.id} is gone"
            return await future
        finally:
            self._loads.pop(request_id, None)

    def _unload_on(self, worker: _Worker, key: str) -> None:
        self._send(worker, msg.Unload(key))


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())
