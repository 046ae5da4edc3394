"""Ray pool backend: an elastic set of Ray actors across a Ray cluster.

Each actor hosts the same `Worker` as a local worker process (app/worker/ray_actor.py), so
batching, generation and hot loads behave alike, and admission, routing, readiness and hot
loads are the local pool's (app/pool/base.py). One supervisor task per slot starts its actor,
marks it ready once its models are loaded, and replaces it when it dies.

A scaler task resizes the pool every `ray_scale_interval_s`: a node that joins with room for
an actor gets one pinned to it (`ray_worker_per_node`), in-flight requests above
`ray_target_inflight` per actor add one (up to `ray_max_workers`), and actors beyond the floor
that stay idle for `ray_scale_down_after_s` are drained and removed, as are the ones pinned to
nodes that died. Imported only when GENSERVE_POOL=ray, so the local backend never loads Ray.

API replicas that share a `ray_pool_name` share its actors: these are named after the pool,
detached, and created with get_if_exists, so each replica finds the ones the others added.
An extra one is retired only once the actor itself says no replica used it lately.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import RayActorError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from app import metrics
from app.pool.base import Progress, SharedPool, Slot, StreamMeter
from app.pool.errors import EngineTimeout, WorkerLost, failure_error
from app.settings import Settings
from app.supervision import restart_delay
from app.worker.protocol import (
    EventsReply,
    Generate,
    Infer,
    InferReply,
    Load,
    Loaded,
    ModelSpec,
    Ready,
    TokenEvent,
    Unload,
)
from app.worker.ray_actor import WorkerActor

log = logging.getLogger("genserve.pool")
RECONNECT_MAX_DELAY_S = 5.0  # a head restarting takes tens of seconds: poll it, not minutes
KILL_TIMEOUT_S = 5.0  # for one ray.kill or ray.shutdown; a lost cluster must not hang a stop
RemoteWorker = ray.remote(WorkerActor)


@dataclass
class _Actor(Slot):
    """One actor's place in the pool; it outlives the actors that fill it. `device` is "cuda"
    (one GPU, wherever Ray places it) or "cpu"."""

    actor: Any = None  # the actor handle
    name: str = ""  # the actor's name in a shared pool (GENSERVE_RAY_POOL_NAME), else ""
    supervisor: asyncio.Task[None] | None = None
    pinned: str | None = None  # the node this slot's actors must run on (one per node)
    idle_since: float = field(default_factory=time.monotonic)
    retiring: bool = False  # being drained: no new requests


class RayPool(SharedPool[_Actor]):
    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._stopping = False
        self._owns_ray = False  # this pool connected to Ray, so it disconnects at stop
        self._scaler: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()  # cleared while the cluster is being reconnected
        self._connected.set()
        self._floor = 0  # actors kept whatever the load, nodes' own ones aside
        self._gcs_lost = False  # a direct driver serving on while the head is away

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, specs: list[ModelSpec]) -> None:
        self.specs = list(specs)
        if not ray.is_initialized():
            await self._join()
            self._owns_ray = True
        devices = self._slot_devices()
        self._floor = max(self.settings.ray_min_workers, len(devices))
        self._device = devices[0]
        for _ in range(self._floor):
            self._add()
        self._scaler = asyncio.create_task(self._scale_loop(), name="ray-scaler")

    def _add(self, pinned: str | None = None, name: str = "") -> _Actor:
        slot = _Actor(max((s.id for s in self.slots), default=-1) + 1, self._device)
        slot.pinned = pinned
        slot.name = name or self._name_for(pinned)
        self.slots.append(slot)
        slot.supervisor = asyncio.create_task(self._supervise(slot), name=f"ray-{slot.id}")
        log.info("worker %d added%s", slot.id, f" on node {pinned}" if pinned else "")
        return slot

    async def _join(self) -> None:
        """Joins the cluster at start, retrying for up to GENSERVE_WORKER_START_TIMEOUT_S: a
        head still coming up (pods start in any order), or a Ray Client server that fails to
        start a session, must not end the API. A Ray of its own is started once."""
        wait = self.settings.worker_start_timeout_s if self.settings.ray_address else 0.0
        await self._connect(time.monotonic() + wait)

    async def _connect(self, deadline: float | None) -> bool:
        """Connects to the cluster, trying again with back-off until `deadline` (monotonic
        seconds; past it the error is raised) or, with None, until the pool stops (False)."""
        delay = 1.0
        while not self._stopping:
            try:
                await asyncio.to_thread(self._connect_again)
                return True
            except Exception as exc:
                if deadline is not None and time.monotonic() + delay > deadline:
                    raise
                log.warning("the Ray cluster is unreachable (%s); retrying in %.0f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_DELAY_S)
        return False

    def _init_ray(self) -> None:
        address = self.settings.ray_address
        if address:
            log.info("joining the Ray cluster at %s", address)
            node_ip = None if _via_client(address) else self.settings.ray_node_ip or None
            ray.init(address=address, namespace="genserve", _node_ip_address=node_ip)
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

    # -- elasticity --------------------------------------------------------------------------

    async def _scale_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.settings.ray_scale_interval_s)
            try:
                nodes = await asyncio.to_thread(_alive_nodes)
                if self._shared:
                    self._attach(await asyncio.to_thread(_named, f"{self._shared}-"))
            except Exception as exc:  # the head is gone (a Ray Client connection survives it)
                if self._direct:
                    # Ray's core worker reconnects to a restarted GCS by itself (GCS fault
                    # tolerance) while the actors keep serving: dropping their handles would
                    # stop that. Without fault tolerance Ray ends this process.
                    if not self._gcs_lost:  # once, not every tick until it is back
                        log.warning("the Ray GCS is unreachable (%s); serving on", exc)
                    self._gcs_lost = True
                else:
                    await self._reconnect(exc)
                continue
            if self._gcs_lost:
                log.info("the Ray GCS answers again")
                self._gcs_lost = False
            try:
                await self.scale(nodes)
            except Exception:
                log.exception("resizing the Ray pool failed; trying again")

    async def _reconnect(self, exc: Exception) -> None:
        """Connects again once the head is back, with back-off; the supervisors then start
        new actors (the old ones died with the cluster). A driver attached to the cluster
        directly cannot do this, Ray aborts it: use a ray:// address, or GCS fault
        tolerance with GENSERVE_RAY_NODE_IP, for an API that outlives its head."""
        log.error("lost the Ray cluster (%s); reconnecting", exc)
        self._connected.clear()
        if await self._connect(deadline=None):
            log.info("reconnected to the Ray cluster")
            self._connected.set()

    @property
    def _direct(self) -> bool:
        """Attached to a running cluster's raylet, not through Ray Client nor to a Ray of its
        own."""
        address = self.settings.ray_address
        return bool(address) and not _via_client(address)

    def _connect_again(self) -> None:
        """One try: drops what is left of an earlier connection, joins, asks for the nodes."""
        with contextlib.suppress(Exception):
            ray.shutdown()
        self._init_ray()
        _alive_nodes()

    # -- sharing the actors with other API replicas -------------------------------------------

    @property
    def _shared(self) -> str:
        return self.settings.ray_pool_name

    def _name_for(self, pinned: str | None) -> str:
        """A node's actor is named after its node; the others take the lowest free number, so
        replicas that start alike ask for the same actors and get them (get_if_exists)."""
        if not self._shared:
            return ""
        if pinned:
            return f"{self._shared}-node-{pinned}"
        taken = {s.name for s in self.slots}
        names = (f"{self._shared}-{i}" for i in itertools.count())
        return next(name for name in names if name not in taken)

    def _attach(self, names: list[str]) -> None:
        """Takes on the actors other replicas started, so requests spread over all of them."""
        known = {s.name for s in self.slots}
        for name in names:
            if name not in known:
                node = name.removeprefix(f"{self._shared}-node-")
                self._add(pinned=node if node != name else None, name=name)

    def _extra(self, slot: _Actor) -> bool:
        """Above the floor and on no node of its own: load added it, idleness removes it."""
        floor = {f"{self._shared}-{i}" for i in range(self._floor)}
        return not slot.pinned and slot.name not in floor

    async def _idle_everywhere(self, slot: _Actor) -> bool:
        """Idle for every replica using it, as the actor itself counts."""
        if not self._shared:
            return True
        try:
            idle = await asyncio.wait_for(_wait(slot.actor.idle_seconds.remote()), KILL_TIMEOUT_S)
        except Exception:
            return False
        return idle >= self.settings.ray_scale_down_after_s

    def _ceiling(self, per_node: int) -> int:
        return max(self.settings.ray_max_workers, self._floor + per_node)

    async def scale(self, nodes: list[dict[str, Any]]) -> None:
        """One resize: nodes' own actors, then load, then idle and orphaned actors."""
        alive = {n["NodeID"] for n in nodes}
        for slot in [s for s in self.slots if s.pinned and s.pinned not in alive]:
            await self._retire(slot, "its node is gone")
        active = [s for s in self.slots if not s.retiring]
        pinned = [s for s in active if s.pinned]
        placed = all(s.node or s.pinned for s in active)  # else an actor may be going there
        if self.settings.ray_worker_per_node and placed:
            served = {s.node or s.pinned for s in active}
            need = "GPU" if self._device == "cuda" else "CPU"
            for node in nodes:
                room = node.get("Resources", {}).get(need, 0) >= 1
                if (
                    room
                    and node["NodeID"] not in served
                    and len(active) < self._ceiling(len(pinned) + 1)
                ):
                    active.append(self._add(pinned=node["NodeID"]))
                    pinned = [s for s in active if s.pinned]
        now = time.monotonic()
        for slot in active:
            if slot.inflight or not slot.ready:  # a starting actor has not been idle yet
                slot.idle_since = now
        busy = sum(s.inflight for s in active)
        wanted = math.ceil(busy / self.settings.ray_target_inflight)
        if wanted > len(active) and len(active) < self._ceiling(len(pinned)):
            active.append(self._add())
            return
        if wanted >= len(active):
            return
        extra = [s for s in active if not s.pinned][self._floor :]
        for slot in extra[: len(active) - max(wanted, self._floor)]:
            idle_here = now - slot.idle_since >= self.settings.ray_scale_down_after_s
            if idle_here and await self._idle_everywhere(slot):
                await self._retire(slot, "idle")

    async def _retire(self, slot: _Actor, why: str) -> None:
        """Drains a slot (no new requests; in-flight ones get `drain_timeout_s`), then ends
        its actor and forgets it."""
        log.info("worker %d removed: %s", slot.id, why)
        slot.retiring, slot.ready = True, False
        deadline = time.monotonic() + self.settings.drain_timeout_s
        while slot.inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if slot.supervisor is not None:
            slot.supervisor.cancel()
        await _kill(slot.actor)
        self.slots.remove(slot)
        metrics.WORKERS_READY.set(sum(s.ready for s in self.slots))

    async def stop(self) -> None:
        self._stopping = True
        if self._scaler is not None:
            self._scaler.cancel()
        for slot in self.slots:
            if slot.supervisor is not None:
                slot.supervisor.cancel()
            slot.ready = False
        supervisors = [s.supervisor for s in self.slots if s.supervisor is not None]
        await asyncio.gather(*supervisors, return_exceptions=True)
        if not self._shared:  # shared actors serve the other replicas on
            await asyncio.gather(*(_kill(s.actor) for s in self.slots))
        metrics.WORKERS_READY.set(0)
        if self._owns_ray:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.to_thread(ray.shutdown), KILL_TIMEOUT_S)

    async def _supervise(self, slot: _Actor) -> None:
        """Keeps an actor in `slot`: starts it, marks it ready once loaded, replaces it on death."""
        while not self._stopping:
            await self._connected.wait()
            started = time.monotonic()
            try:
                slot.actor = self._create_actor(slot)
                ready: Ready = await asyncio.wait_for(
                    _wait(slot.actor.start.remote()), self.settings.worker_start_timeout_s
                )
                slot.node = await _wait(slot.actor.node.remote())
                self._on_ready(slot, ready)
                for spec in self._outdated(slot):  # activated while this actor started
                    error = await self._load_on(slot, spec)
                    if error is not None:
                        log.error("worker %d could not load %s: %s", slot.id, spec.name, error)
                await _wait(slot.actor.watch.remote())  # fails when the actor dies
            except Exception as exc:  # a dead, unplaceable or broken actor: replace it
                if self._stopping or slot.retiring:
                    return
                if self._shared and self._extra(slot):  # maybe retired by another replica
                    log.info("worker %d (%s) is gone: %s", slot.id, slot.name, exc)
                    self._on_lost(slot, restarting=False)
                    self.slots.remove(slot)
                    return
                log.error("worker %d lost (%s); restarting", slot.id, exc)
            self._on_lost(slot, restarting=True)
            await _kill(slot.actor)
            # Back off when an actor dies right after starting, so a crash loop does not spin.
            await asyncio.sleep(restart_delay(started, slot.restarts))

    def _create_actor(self, slot: _Actor) -> Any:
        gpu = slot.device == "cuda"
        shared: dict[str, Any] = {}
        if slot.name:  # found by name by every replica, and outliving the one that started it
            shared = {"name": slot.name, "lifetime": "detached", "get_if_exists": True}
        options = RemoteWorker.options(
            **shared,
            num_cpus=1,
            num_gpus=1 if gpu else 0,
            max_concurrency=10_000,  # async calls waiting on batches cost a coroutine each
            # a node's own actor stays there; the others spread across the machines
            scheduling_strategy=NodeAffinitySchedulingStrategy(slot.pinned, soft=False)
            if slot.pinned
            else "SPREAD",
        )
        return options.remote(self.worker_config(slot))

    # -- the API ---------------------------------------------------------------------------

    async def infer(
        self, model: str, inputs: Any, rows: int, progress: Progress | None = None
    ) -> Any:
        slot, key = self._admit(model, rows, self.settings.max_queue)
        timeout = self.settings.request_timeout_s
        request_id = next(self._ids)
        previews = None
        answered = False
        try:
            call = slot.actor.infer.remote(Infer(request_id, key, inputs, rows))
            if progress is not None:
                previews = asyncio.ensure_future(self._previews(slot, request_id, progress))
            reply: InferReply = await asyncio.wait_for(self._call(slot, call), timeout)
            answered = True
        except TimeoutError:
            raise EngineTimeout(f"{model!r} did not answer within {timeout:g} s") from None
        finally:
            self._release(slot, model, rows)
            if previews is not None:
                previews.cancel()
            if not answered:  # timed out or the client left: stop the worker's steps on it
                slot.actor.cancel.remote(request_id)
        if reply.failure is not None:
            raise failure_error(reply.failure)
        if reply.batch_rows:
            metrics.BATCH_SIZE.labels(model).observe(reply.batch_rows)
        return reply.output

    def generate(
        self, model: str, prompt: str | list[int], params: dict[str, Any], n: int
    ) -> AsyncIterator[list[TokenEvent]]:
        # Submitted now, not on first iteration, so a full queue is an error before streaming.
        meter = StreamMeter(model)
        slot, key = self._admit(model, n, self._generation_limit(), units=n, generation=True)
        request = Generate(next(self._ids), key, prompt, params, n)
        submitted = slot.actor.generate.remote(request)
        return self._events(slot, slot.actor, model, request, submitted, self._deadline(), meter)

    async def _events(
        self,
        slot: _Actor,
        actor: Any,
        model: str,
        request: Generate,
        submitted: Any,
        deadline: float,
        meter: StreamMeter,
    ) -> AsyncIterator[list[TokenEvent]]:
        """Polls the actor for events until every choice finished, it failed, or a timeout:
        each reply's events are one batch."""
        remaining = request.n

        def poll() -> Awaitable[EventsReply]:
            return self._call(slot, actor.next_events.remote(request.request_id))

        try:
            await self._next_event(model, lambda: self._call(slot, submitted), deadline)
            while remaining > 0:
                reply: EventsReply = await self._next_event(model, poll, deadline)
                for running in reply.steps:
                    metrics.BATCH_SIZE.labels(model).observe(running)
                if reply.steps:
                    self._on_step(slot, model, reply.steps[-1])
                for event in reply.events:
                    if event.finish_reason is not None:  # a choice finished
                        remaining -= 1
                    meter.observe(event)
                if reply.events:
                    yield reply.events
                if reply.failure is not None:
                    raise failure_error(reply.failure)
        finally:
            self._release(slot, model, request.n, units=request.n, generation=True)
            if remaining > 0:  # the client went away or we failed: stop the work there too
                actor.cancel.remote(request.request_id)

    @staticmethod
    async def _previews(slot: _Actor, request_id: int, progress: Progress) -> None:
        """Hands an infer call's previews to `progress` until the call is answered."""
        first = True
        try:
            while preview := await _wait(slot.actor.next_preview.remote(request_id, first)):
                progress(preview)
                first = False
        except RayActorError:
            return  # the infer call itself reports the lost worker

    async def _call(self, slot: _Actor, call: Any) -> Any:
        """Awaits an actor call; a dead actor is a lost worker (a 503 to retry)."""
        try:
            return await _wait(call)
        except RayActorError:
            raise WorkerLost(f"worker {slot.id} died; retry the request") from None

    async def _load_on(self, slot: _Actor, spec: ModelSpec, side: bool = False) -> str | None:
        try:
            load = Load(next(self._ids), spec, side)
            loaded: Loaded = await _wait(slot.actor.load.remote(load))
        except RayActorError:
            return f"worker {slot.id} is gone"
        self._on_loaded(slot, loaded)
        return loaded.error

    def _unload_on(self, slot: _Actor, key: str) -> None:
        if slot.actor is not None:
            slot.actor.unload.remote(Unload(key))


def _wait(ref: ray.ObjectRef) -> Awaitable[Any]:
    """Awaits an actor call, leaving the call alone if the waiting task is cancelled (a closed
    stream, a timeout, stop): Ray Client raises in its own thread when a call's future is
    cancelled under it."""
    call = asyncio.ensure_future(ref)
    call.add_done_callback(lambda done: done.cancelled() or done.exception())  # retrieved
    return asyncio.shield(call)


def _named(prefix: str) -> list[str]:
    """The live named actors of genserve's namespace whose names start with `prefix`."""
    return sorted(n for n in ray.util.list_named_actors() if n.startswith(prefix))


def _via_client(address: str) -> bool:
    return address.startswith("ray://")


def _alive_nodes() -> list[dict[str, Any]]:
    return [n for n in ray.nodes() if n.get("Alive")]


async def _kill(actor: Any) -> None:
    """Kills an actor, dead or alive; a hung one must not linger holding its GPU. Off the
    event loop and bounded: with the cluster gone the call can block for a long time, and
    while disconnected there is nothing left to kill."""
    if actor is None or not ray.is_initialized():
        return
    try:
        await asyncio.wait_for(asyncio.to_thread(ray.kill, actor, no_restart=True), KILL_TIMEOUT_S)
    except Exception as exc:
        log.warning("could not kill a worker actor: %s", exc)
