"""The pool interface, and the half of a pool that does not depend on where workers live.

`WorkerPool` is what the services call. `SharedPool` holds what the local and the Ray backend
do alike: admission (per-model queue limits), least-loaded routing, readiness, the in-flight
counts, the generation deadline and hot loads on every worker. A backend adds how it starts
its workers and how it talks to them.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from app import metrics
from app.pool.errors import (
    EngineTimeout,
    LoadFailed,
    ModelLoadFailed,
    ModelLoading,
    ModelNotServed,
    NoRoom,
    QueueFull,
)
from app.settings import Settings
from app.worker.protocol import Loaded, ModelSpec, Preview, Ready, TokenEvent, WorkerConfig

Progress = Callable[[Preview], None]  # what an inference request's previews are handed to

log = logging.getLogger("genserve.pool")
T = TypeVar("T")


@dataclass
class WorkerInfo:
    id: int
    pid: int | None
    device: str
    ready: bool
    models: dict[str, int]  # name -> loaded version
    restarts: int
    inflight: int
    node: str | None = None  # the Ray node it runs on (None: a local process)
    beside: dict[str, list[int]] = field(default_factory=dict)  # name -> versions beside


class WorkerPool(ABC):
    """Runs inference for the API; implementations decide where the workers live."""

    specs: list[ModelSpec]  # the model versions this pool was asked to serve

    @abstractmethod
    async def start(self, specs: list[ModelSpec]) -> None:
        """Starts the workers and returns at once; readiness follows as they load."""

    @abstractmethod
    async def stop(self) -> None: ...

    @abstractmethod
    async def infer(
        self, model: str, inputs: Any, rows: int, progress: Progress | None = None
    ) -> Any:
        """Runs `rows` inputs through `model`, batched with other callers' inputs. `progress`
        gets the request's previews as they come (diffusion models, with `preview_every`)."""

    @abstractmethod
    def generate(
        self, model: str, prompt: str | list[int], params: dict[str, Any], n: int
    ) -> AsyncIterator[list[TokenEvent]]:
        """Streams the events of `n` sampled continuations, in batches: everything that arrived
        since the consumer last asked, so that a stream behind its worker catches up in one
        write rather than one per token. Closing the stream cancels them."""

    @abstractmethod
    def check_room(self, model: str, sequences: int) -> None:
        """Raises QueueFull unless `sequences` more generations of `model` would be admitted
        now: a request of several prompts is refused whole, before any of them starts."""

    @abstractmethod
    async def load(self, spec: ModelSpec) -> None:
        """Hot-loads a model version on every worker; the old one serves until it is ready."""

    @abstractmethod
    async def ensure(self, spec: ModelSpec) -> None:
        """Makes `spec` servable under `key(spec)`: a version other than the active one is
        loaded beside it on the workers that lack it, evicting the least recently used such
        versions to stay within the memory budget."""

    def key(self, spec: ModelSpec) -> str:
        """What `infer` and `generate` take for `spec`: its name while it is the version this
        pool serves for it (whichever worker has it), else `name@version`."""
        for served in self.specs:
            if served.name == spec.name:
                return spec.name if served.version == spec.version else spec.key
        return spec.key

    @abstractmethod
    def workers(self) -> list[WorkerInfo]: ...

    def placement(self) -> dict[str, list[int]]:
        """Model name -> ids of the ready workers that serve it."""
        out: dict[str, list[int]] = {}
        for worker in self.workers():
            if worker.ready:
                for name in worker.models:
                    out.setdefault(name, []).append(worker.id)
        return out

    def missing(self) -> list[str]:
        """Models asked for that no ready worker serves yet."""
        placement = self.placement()
        return [spec.name for spec in self.specs if spec.name not in placement]

    def is_ready(self) -> bool:
        return bool(self.specs) and not self.missing()


@dataclass
class Slot:
    """What the pool knows of one worker, whichever process or actor fills the slot now."""

    id: int
    device: str
    pid: int | None = None
    ready: bool = False
    models: dict[str, int] = field(default_factory=dict)  # name -> loaded version
    side: dict[str, set[int]] = field(default_factory=dict)  # name -> versions loaded beside
    load_errors: dict[str, str] = field(default_factory=dict)
    inflight: int = 0  # requests
    inflight_rows: int = 0  # what routing balances: a request of 64 rows weighs 64
    node: str | None = None  # the Ray node it runs on, once known
    restarts: int = 0
    sequences: dict[str, int] = field(default_factory=dict)  # model -> generations admitted
    running: dict[str, int] = field(default_factory=dict)  # model -> in its latest step


class StreamMeter:
    """Token counts, time to first token and inter-token latency of one generation, taken
    where its events arrive in the API process: what a client waits for, less the HTTP hop.
    (Ray delivers events in polled batches, so its inter-token gaps are lumpier.)"""

    __slots__ = ("counted", "first", "itl", "last", "prompt_tokens", "started", "tokens", "ttft")

    def __init__(self, model: str) -> None:
        self.started = time.perf_counter()
        self.first = True  # no generated token yet
        self.counted = False  # its prompt: once per request, as its usage counts it
        self.last: dict[int, tuple[int, float]] = {}  # choice -> (its tokens, when the last came)
        self.prompt_tokens = metrics.PROMPT_TOKENS.labels(model)
        self.tokens = metrics.COMPLETION_TOKENS.labels(model)
        self.ttft = metrics.TIME_TO_FIRST_TOKEN.labels(model)
        self.itl = metrics.INTER_TOKEN_LATENCY.labels(model)

    def observe(self, event: TokenEvent) -> None:
        if event.prompt_tokens and not self.counted:
            self.counted = True
            self.prompt_tokens.inc(event.prompt_tokens)
        seen, at = self.last.get(event.index, (0, 0.0))
        new = event.completion_tokens - seen
        if new <= 0:
            return  # no token (a scored prompt), or a repeat
        now = time.perf_counter()
        self.tokens.inc(new)
        if self.first:
            self.first = False
            self.ttft.observe(now - self.started)
        elif seen:
            self.itl.observe((now - at) / new)
        self.last[event.index] = (event.completion_tokens, now)


S = TypeVar("S", bound=Slot)


class SharedPool(WorkerPool, Generic[S]):
    """Admission, routing, readiness and hot loads over the backend's `slots`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.specs: list[ModelSpec] = []
        self.slots: list[S] = []
        # request ids, unique across the pool's workers, and (from a random start) across the
        # API replicas that share a Ray pool's actors
        self._ids = itertools.count(secrets.randbits(40) << 20)
        # model -> what is admitted and not finished: requests (inference) or sequences
        # (generation: a request of n choices is n sequences for the worker's batch)
        self._queued: dict[str, int] = {}
        # versions served beside the active ones, by key, in least recently used order
        self._beside: dict[str, ModelSpec] = {}
        self._loading: dict[str, asyncio.Future[None]] = {}  # key -> its load in flight

    def worker_config(self, slot: Slot) -> WorkerConfig:
        """What a new worker for `slot` is started with: the versions asked for right now."""
        settings = self.settings
        return WorkerConfig(
            worker_id=slot.id,
            device=slot.device,
            threads=settings.worker_threads(),
            specs=list(self.specs),
            max_batch_size=settings.max_batch_size,
            max_wait_ms=settings.max_wait_ms,
            max_running=settings.max_running_sequences,
            prefill_tokens=settings.prefill_chunk_tokens,
            artifact_cache_dir=str(settings.artifact_cache_path()),
            storage_options=settings.storage_options(),
        )

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
                node=s.node,
                beside={name: sorted(v) for name, v in s.side.items() if v},
            )
            for s in self.slots
        ]

    # -- admission and routing ---------------------------------------------------------------

    def _pick(self, model: str) -> tuple[S, str]:
        """The least loaded ready worker that serves `model`, and the key it knows it by: a
        `name@version` is the worker's active model on one worker and loaded beside on
        another."""
        name, _, version = model.partition("@")
        if version:
            if (spec := self._beside.pop(model, None)) is not None:
                self._beside[model] = spec  # most recently used
            v = int(version)
            pairs = [
                (s, name if s.models.get(name) == v else model)
                for s in self.slots
                if s.ready and (s.models.get(name) == v or v in s.side.get(name, ()))
            ]
            if pairs:
                return min(pairs, key=lambda pair: pair[0].inflight_rows)
            raise ModelLoading(f"model {model!r} is loading; retry shortly")
        candidates = [s for s in self.slots if s.ready and model in s.models]
        if candidates:
            return min(candidates, key=lambda s: s.inflight_rows), model
        if not any(s.name == model for s in self.specs):
            raise ModelNotServed(f"model {model!r} is not served by this pool")
        errors = {s.id: s.load_errors[model] for s in self.slots if model in s.load_errors}
        if errors and all(s.ready for s in self.slots):
            raise ModelLoadFailed(f"model {model!r} failed to load", details=errors)
        raise ModelLoading(f"model {model!r} is loading; retry shortly")

    def _admit(
        self, model: str, rows: int, limit: int, units: int = 1, generation: bool = False
    ) -> tuple[S, str]:
        """Picks a worker and counts `units` (1 per inference request, n per generation)
        against its model's queue, or refuses them when they would take it past `limit`.
        Returns the worker and the key to send it (see `_pick`)."""
        slot, key = self._pick(model)
        if self._queued.get(model, 0) + units > limit:
            raise QueueFull(f"the queue for {model!r} is full; retry shortly")
        self._queued[model] = self._queued.get(model, 0) + units
        slot.inflight += 1
        slot.inflight_rows += rows
        metrics.QUEUE_DEPTH.labels(model).set(self._queued[model])
        if generation:
            slot.sequences[model] = slot.sequences.get(model, 0) + units
            self._sequence_gauges(slot, model)
        return slot, key

    def _release(
        self, slot: Slot, model: str, rows: int, units: int = 1, generation: bool = False
    ) -> None:
        self._queued[model] -= units
        slot.inflight -= 1
        slot.inflight_rows -= rows
        metrics.QUEUE_DEPTH.labels(model).set(self._queued[model])
        if generation:
            slot.sequences[model] -= units
            self._sequence_gauges(slot, model)

    def _on_step(self, slot: Slot, model: str, running: int) -> None:
        """A decoding step of `model` on `slot` ran `running` sequences."""
        slot.running[model] = running
        self._sequence_gauges(slot, model)

    @staticmethod
    def _sequence_gauges(slot: Slot, model: str) -> None:
        """Running and waiting sequences from the admission count and the latest step: the
        worker reports steps only while it decodes, so what this replica no longer has in
        flight (finished, cancelled) is not running, whatever the last step said."""
        admitted = slot.sequences.get(model, 0)
        running = min(slot.running.get(model, 0), admitted)
        worker = str(slot.id)
        metrics.RUNNING_SEQUENCES.labels(model, worker).set(running)
        metrics.WAITING_SEQUENCES.labels(model, worker).set(admitted - running)

    def _generation_limit(self) -> int:
        """Sequences of one model running or waiting before a generation is refused."""
        return self.settings.max_running_sequences + self.settings.max_waiting_sequences

    def check_room(self, model: str, sequences: int) -> None:
        if self._queued.get(model, 0) + sequences > self._generation_limit():
            raise QueueFull(f"the queue for {model!r} is full; retry shortly")

    async def _next_event(self, model: str, wait: Callable[[], Awaitable[T]], deadline: float) -> T:
        """Awaits `wait()`, what a generation waits for next: a timeout after
        `request_timeout_s` without a token, or past the whole generation's deadline
        (`generation_timeout_s`)."""
        loop = asyncio.get_running_loop()
        gap = self.settings.request_timeout_s
        left = deadline - loop.time()
        try:
            if left <= 0:
                raise TimeoutError
            return await asyncio.wait_for(wait(), min(gap, left))
        except TimeoutError:
            if deadline - loop.time() <= 0:
                limit = self.settings.generation_timeout_s
                raise EngineTimeout(
                    f"{model!r} did not finish within {limit:g} s; ask for fewer tokens"
                ) from None
            raise EngineTimeout(f"{model!r} produced no token for {gap:g} s") from None

    def _deadline(self) -> float:
        return asyncio.get_running_loop().time() + self.settings.generation_timeout_s

    # -- readiness and hot loads -------------------------------------------------------------

    def _on_ready(self, slot: Slot, ready: Ready) -> None:
        slot.pid = ready.pid
        slot.models, slot.load_errors = dict(ready.models), dict(ready.load_errors)
        slot.side = {}
        for name, seconds in ready.load_seconds.items():
            metrics.MODEL_LOAD_SECONDS.labels(name).set(seconds)
        slot.ready = True
        metrics.WORKERS_READY.set(sum(s.ready for s in self.slots))
        log.info("worker %d (pid %d) ready with %s", slot.id, ready.pid, slot.models)

    def _on_lost(self, slot: Slot, restarting: bool) -> None:
        slot.ready, slot.pid, slot.models, slot.side = False, None, {}, {}
        for model in slot.running:  # nothing runs there now; its requests fail as they learn
            slot.running[model] = 0
            self._sequence_gauges(slot, model)
        metrics.WORKERS_READY.set(sum(s.ready for s in self.slots))
        if restarting:
            slot.restarts += 1
            metrics.WORKER_RESTARTS.inc()

    def _on_loaded(self, slot: Slot, loaded: Loaded) -> None:
        if loaded.error is not None:
            return
        beside = slot.side.setdefault(loaded.name, set())
        if loaded.side:
            beside.add(loaded.version)
        else:  # activated: loaded anew, or promoted from beside
            slot.models[loaded.name] = loaded.version
            slot.load_errors.pop(loaded.name, None)
            beside.discard(loaded.version)

    def _outdated(self, slot: Slot) -> list[ModelSpec]:
        """Versions activated while the worker was starting with older ones."""
        return [s for s in self.specs if slot.models.get(s.name, s.version) != s.version]

    @abstractmethod
    async def _load_on(self, slot: S, spec: ModelSpec, side: bool = False) -> str | None:
        """Hot-loads `spec` on one worker (beside the active version, with `side`): the
        error, or None once it serves it."""

    @abstractmethod
    def _unload_on(self, slot: S, key: str) -> None:
        """Tells one worker to drop the version it serves beside as `key`."""

    async def load(self, spec: ModelSpec) -> None:
        """Every ready worker loads `spec` beside what it serves, then switches to it; requests
        keep flowing to the old version meanwhile. Workers that start later load it at start.
        """
        previous = list(self.specs)
        self.specs = [s for s in self.specs if s.name != spec.name] + [spec]
        try:
            await self._load_everywhere(spec, side=False)
        except LoadFailed:
            # Back to the old version: workers that did switch keep serving, the next restart
            # (or activation) evens them out.
            self.specs = previous
            raise
        self._beside.pop(spec.key, None)  # promoted where it was loaded beside

    async def _load_everywhere(self, spec: ModelSpec, side: bool) -> None:
        """Loads `spec` on every ready worker; LoadFailed with each worker's error."""
        ready = [slot for slot in self.slots if slot.ready]
        loads = [asyncio.ensure_future(self._load_on(slot, spec, side)) for slot in ready]
        timeout = self.settings.model_load_timeout_s
        done: set[asyncio.Future[str | None]] = set()
        try:
            if loads:
                done, _ = await asyncio.wait(loads, timeout=timeout)
        finally:
            for load in loads:
                if load not in done:
                    load.cancel()
        late = f"no answer within {timeout:g} s"
        results = [load.result() if load in done else late for load in loads]
        errors = {slot.id: err for slot, err in zip(ready, results, strict=True) if err is not None}
        if errors:
            raise LoadFailed(f"could not load {spec.name!r} version {spec.version}", details=errors)

    # -- versions served beside the active ones -----------------------------------------------

    async def ensure(self, spec: ModelSpec) -> None:
        key = self.key(spec)
        if key == spec.name:
            return
        name, version = spec.name, spec.version
        if any(
            s.ready and (s.models.get(name) == version or version in s.side.get(name, ()))
            for s in self.slots
        ):
            self._beside[key] = self._beside.pop(key, spec)  # most recently used
            return
        loading = self._loading.get(key)
        if loading is None:
            loading = self._loading[key] = asyncio.ensure_future(self._load_beside(spec))
            loading.add_done_callback(lambda _: self._loading.pop(key, None))
        await asyncio.shield(loading)

    async def _load_beside(self, spec: ModelSpec) -> None:
        self._make_room(spec)
        self._beside[spec.key] = spec
        try:
            await self._load_everywhere(spec, side=True)
        except LoadFailed:
            if not any(spec.version in s.side.get(spec.name, ()) for s in self.slots):
                self._beside.pop(spec.key, None)
                raise
        log.info("serving %s beside the active versions", spec.key)

    def loaded_bytes(self) -> int:
        """What the workers hold by the budget's count: each served version's artifact."""
        return sum(s.size_bytes for s in self.specs) + sum(
            s.size_bytes for s in self._beside.values()
        )

    def _make_room(self, spec: ModelSpec) -> None:
        """Evicts versions served beside, least recently used first, until `spec` fits in
        `max_loaded_bytes`; one with requests in flight stays. NoRoom if it cannot fit."""
        budget = self.settings.max_loaded_bytes
        if not budget:
            return
        for key in list(self._beside):
            if self.loaded_bytes() + spec.size_bytes <= budget:
                return
            if self._queued.get(key, 0) == 0:
                self.unload(key)
        if self.loaded_bytes() + spec.size_bytes > budget:
            raise NoRoom(
                f"loading {spec.key} ({spec.size_bytes:,} bytes) would pass the workers' "
                f"memory budget of {budget:,} bytes (GENSERVE_MAX_LOADED_BYTES), and the "
                "versions served beside the active ones are in use; retry shortly"
            )

    def unload(self, key: str) -> None:
        """Stops serving a version beside the active ones, on every worker."""
        self._beside.pop(key, None)
        name, _, version = key.partition("@")
        for slot in self.slots:
            beside = slot.side.get(name, set())
            if int(version) in beside:
                beside.discard(int(version))
                self._unload_on(slot, key)
        log.info("evicted %s", key)

    def beside(self) -> list[str]:
        """Versions served beside the active ones, least recently used first."""
        return list(self._beside)
