"""Ray pool backend: one Ray actor per GPU (or CPU slot) of a Ray cluster.

Each actor hosts the same `Worker` as a local worker process (app/worker/ray_actor.py), so
batching, generation and hot loads behave alike. This side keeps what the local pool keeps:
per-model queue limits, least-loaded routing, timeouts and readiness. One supervisor task per
slot starts its actor, marks it ready once its models are loaded, and replaces it when it dies.
Imported only when GENSERVE_POOL=ray, so the local backend never loads Ray.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import RayActorError

from app import metrics
from app.errors import GatewayTimeout, NotFound, Overloaded, Unavailable
from app.pool.base import (
    Event,
    ModelSpec,
    WorkerInfo,
    WorkerLost,
    WorkerPool,
    restart_delay,
    worker_error,
)
from app.pool.local import LoadFailed
from app.settings import Settings
from app.worker.ray_actor import WorkerActor

log = logging.getLogger("genserve.pool")
RemoteWorker = ray.remote(WorkerActor)


@dataclass
class _Slot:
    """One actor's place in the pool; it outlives the actors that fill it."""

    id: int
    device: str  # "cuda" (one GPU, wherever Ray places it) or "cpu"
    actor: Any = None  # the actor handle
    pid: int | None = None
    ready: bool = False
    models: dict[str, int] = field(default_factory=dict)
    load_errors: dict[str, str] = field(default_factory=dict)
    inflight: int = 0
    inflight_rows: int = 0
    restarts: int = 0
    supervisor: asyncio.Task[None] | None = None


class RayPool(WorkerPool):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.specs: list[ModelSpec] = []
        self._slots: list[_Slot] = []
        self._ids = itertools.count(1)
        self._queued: dict[str, int] = {}
        self._stopping = False
        self._owns_ray = False  # this pool connected to Ray, so it disconnects at stop

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, specs: list[ModelSpec]) -> None:
        self.specs = list(specs)
        if not ray.is_initialized():
            await asyncio.to_thread(self._init_ray)
            self._owns_ray = True
        self._slots = [_Slot(i, device) for i, device in enumerate(self._slot_devices())]
        for slot in self._slots:
            slot.supervisor = asyncio.create_task(self._supervise(slot), name=f"ray-{slot.id}")

    def _init_ray(self) -> None:
        address = self.settings.ray_address
        if address:
            log.info("joining the Ray cluster at %s", address)
            ray.init(address=address, namespace="genserve")
        else:
            ray.init(
                num_cpus=self.settings.ray_num_cpus or None,
                include_dashboard=False,
                namespace="genserve",
            )

    def _slot_devices(self) -> list[str]:
        """One actor per GPU of the cluster (or `workers` of them), else `workers` CPU actors."""
        use_gpus = self.settings.device != "cpu"
        gpus = int(ray.cluster_resources().get("GPU", 0)) if use_gpus else 0
        if gpus:
            return ["cuda"] * (self.settings.workers or gpus)
        return ["cpu"] * (self.settings.workers or 1)

    async def stop(self) -> None:
        self._stopping = True
        for slot in self._slots:
            if slot.supervisor is not None:
                slot.supervisor.cancel()
            if slot.actor is not None:
                _kill(slot.actor)
            slot.ready = False
        supervisors = [s.supervisor for s in self._slots if s.supervisor is not None]
        await asyncio.gather(*supervisors, return_exceptions=True)
        metrics.WORKERS_READY.set(0)
        if self._owns_ray:
            ray.shutdown()

    async def _supervise(self, slot: _Slot) -> None:
        """Keeps an actor in `slot`: starts it, marks it ready once loaded, replaces it on death."""
        while not self._stopping:
            started = time.monotonic()
            slot.actor = self._create_actor(slot)
            try:
                status = await asyncio.wait_for(
                    _wait(slot.actor.start.remote()), self.settings.worker_start_timeout_s
                )
                slot.pid = status["pid"]
                slot.models, slot.load_errors = status["models"], status["load_errors"]
                slot.ready = True
                metrics.WORKERS_READY.set(sum(s.ready for s in self._slots))
                log.info("worker %d (pid %d) ready with %s", slot.id, slot.pid, slot.models)
                await self._catch_up(slot)
                await _wait(slot.actor.watch.remote())  # fails when the actor dies
            except Exception as exc:  # a dead, unplaceable or broken actor: replace it
                if self._stopping:
                    return
                log.error("worker %d lost (%s); restarting", slot.id, exc)
            slot.ready, slot.pid, slot.models = False, None, {}
            metrics.WORKERS_READY.set(sum(s.ready for s in self._slots))
            _kill(slot.actor)
            slot.restarts += 1
            metrics.WORKER_RESTARTS.inc()
            # Back off when an actor dies right after starting, so a crash loop does not spin.
            await asyncio.sleep(restart_delay(started, slot.restarts))

    def _create_actor(self, slot: _Slot) -> Any:
        gpu = slot.device == "cuda"
        options = RemoteWorker.options(
            num_cpus=1,
            num_gpus=1 if gpu else 0,
            max_concurrency=10_000,  # async calls waiting on batches cost a coroutine each
            scheduling_strategy="SPREAD",  # across the cluster's machines
        )
        return options.remote(
            slot.id,
            slot.device,
            self.settings.worker_threads(),
            self.specs,
            self.settings.max_batch_size,
            self.settings.max_wait_ms,
            self.settings.max_running_sequences,
        )

    async def _catch_up(self, slot: _Slot) -> None:
        """Loads versions activated while the actor was starting with the older ones."""
        for spec in list(self.specs):
            if slot.models.get(spec.name, spec.version) != spec.version:
                error = await self._load_on(slot, spec)
                if error is not None:
                    log.error("worker %d could not load %s: %s", slot.id, spec.name, error)

    # -- the API ---------------------------------------------------------------------------

    async def infer(self, model: str, inputs: Any, rows: int) -> Any:
        slot = self._pick(model)
        self._acquire(slot, model, rows, self.settings.max_queue)
        try:
            call = slot.actor.infer.remote(next(self._ids), model, inputs, rows)
            output, batch_rows, error = await self._answer(slot, call, f"{model!r} did not answer")
        finally:
            self._release(slot, model, rows)
        if error is not None:
            raise worker_error(error)
        if batch_rows:
            metrics.BATCH_SIZE.labels(model).observe(batch_rows)
        return output

    def generate(
        self, model: str, prompt: str, params: dict[str, Any], n: int
    ) -> AsyncIterator[Event]:
        # Submitted now, not on first iteration, so a full queue is an error before streaming.
        slot = self._pick(model)
        limit = self.settings.max_running_sequences + self.settings.max_waiting_sequences
        self._acquire(slot, model, n, limit)
        request_id = next(self._ids)
        submitted = slot.actor.generate.remote(request_id, model, prompt, params, n)
        return self._events(slot, slot.actor, request_id, submitted, model, n)

    async def _events(
        self, slot: _Slot, actor: Any, request_id: int, submitted: ray.ObjectRef, model: str, n: int
    ) -> AsyncIterator[Event]:
        remaining, late = n, f"{model!r} produced no token"
        try:
            await self._answer(slot, submitted, late)
            while remaining > 0:
                call = actor.next_events.remote(request_id)
                events, steps, error = await self._answer(slot, call, late)
                for running in steps:
                    metrics.BATCH_SIZE.labels(model).observe(running)
                for event in events:
                    if event[3] is not None:  # a choice finished
                        remaining -= 1
                    yield event
                if error is not None:
                    raise worker_error(error)
        finally:
            self._release(slot, model, n)
            if remaining > 0:  # the client went away or we failed: stop the work there too
                actor.cancel.remote(request_id)

    async def _answer(self, slot: _Slot, call: ray.ObjectRef, late: str) -> Any:
        """Awaits an actor call: a dead actor is a 503 to retry, a slow one a 504."""
        timeout = self.settings.request_timeout_s
        try:
            return await asyncio.wait_for(_wait(call), timeout)
        except TimeoutError:
            raise GatewayTimeout(f"{late} within {timeout:g} s") from None
        except RayActorError:
            raise WorkerLost(f"worker {slot.id} died; retry the request") from None

    async def load(self, spec: ModelSpec) -> None:
        """Every ready actor loads `spec` beside what it serves, then switches to it; requests
        keep flowing to the old version meanwhile. Actors that start later load it at start."""
        previous = list(self.specs)
        self.specs = [s for s in self.specs if s.name != spec.name] + [spec]
        ready = [slot for slot in self._slots if slot.ready]
        timeout = self.settings.model_load_timeout_s
        try:
            async with asyncio.timeout(timeout):
                results = await asyncio.gather(*(self._load_on(slot, spec) for slot in ready))
        except TimeoutError:
            results = [f"no answer within {timeout:g} s"] * len(ready)
        errors = {slot.id: err for slot, err in zip(ready, results, strict=True) if err is not None}
        if errors:
            # Back to the old version: actors that did switch keep serving, the next restart
            # (or activation) evens them out.
            self.specs = previous
            raise LoadFailed(f"could not load {spec.name!r} version {spec.version}", details=errors)

    async def _load_on(self, slot: _Slot, spec: ModelSpec) -> str | None:
        try:
            error = await _wait(slot.actor.load.remote(next(self._ids), spec))
        except RayActorError:
            return f"worker {slot.id} is gone"
        if error is None:
            slot.models[spec.name] = spec.version
            slot.load_errors.pop(spec.name, None)
        return error

    def _pick(self, model: str) -> _Slot:
        """The least loaded ready actor that serves `model`."""
        candidates = [s for s in self._slots if s.ready and model in s.models]
        if candidates:
            return min(candidates, key=lambda s: s.inflight_rows)
        if not any(s.name == model for s in self.specs):
            raise NotFound(f"model {model!r} is not served by this pool")
        errors = {s.id: s.load_errors[model] for s in self._slots if model in s.load_errors}
        if errors and all(s.ready for s in self._slots):
            raise Unavailable(f"model {model!r} failed to load", details=errors, retry_after=30)
        raise Unavailable(f"model {model!r} is loading; retry shortly", retry_after=2)

    def _acquire(self, slot: _Slot, model: str, rows: int, limit: int) -> None:
        """Counts a request against its model's queue, or refuses it when the queue is full."""
        if self._queued.get(model, 0) >= limit:
            raise Overloaded(f"the queue for {model!r} is full; retry shortly")
        self._queued[model] = self._queued.get(model, 0) + 1
        slot.inflight += 1
        slot.inflight_rows += rows
        metrics.QUEUE_DEPTH.labels(model).set(self._queued[model])

    def _release(self, slot: _Slot, model: str, rows: int) -> None:
        self._queued[model] -= 1
        slot.inflight -= 1
        slot.inflight_rows -= rows
        metrics.QUEUE_DEPTH.labels(model).set(self._queued[model])

    def workers(self) -> list[WorkerInfo]:
        return [
            WorkerInfo(
                id=s.id,
                pid=s.pid,
                device=s.device,
                ready=s.ready,
                models=dict(s.models),
                restarts=s.restarts,
                inflight=s.inflight,
            )
            for s in self._slots
        ]


def _wait(ref: ray.ObjectRef) -> Awaitable[Any]:
    """Awaits an actor call, leaving the call alone if the waiting task is cancelled (a closed
    stream, a timeout, stop): Ray Client raises in its own thread when a call's future is
    cancelled under it."""
    call = asyncio.ensure_future(ref)
    call.add_done_callback(lambda done: done.cancelled() or done.exception())  # retrieved
    return asyncio.shield(call)


def _kill(actor: Any) -> None:
    """Kills an actor, dead or alive; a hung one must not linger holding its GPU."""
    try:
        ray.kill(actor, no_restart=True)
    except Exception as exc:
        log.warning("could not kill a worker actor: %s", exc)
