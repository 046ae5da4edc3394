"""The worker loop: dynamic batches, text-generation steps and denoising steps, interleaved
on one thread.

The same `Worker` runs in a local worker process (app/worker/process.py) and in a Ray actor
(app/worker/ray_actor.py); each hands it the messages of app/worker/protocol.py on its inbox and
is its outbox. One message out per batch or decoding step keeps the per-message cost of the
transport off the per-request path.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import os
import queue
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from app.worker.batching import DynamicBatcher, Request
from app.worker.protocol import (
    BatchDone,
    Cancel,
    Failed,
    Failure,
    FromWorker,
    Generate,
    Infer,
    Load,
    Loaded,
    ModelSpec,
    Previews,
    Ready,
    Stop,
    Tokens,
    Unload,
    WorkerConfig,
)

if TYPE_CHECKING:  # torch is imported only inside the worker process
    from app.worker.continuous_batching import GenerationEngine
    from app.worker.denoising import DenoisingEngine

log = logging.getLogger("genserve.worker")


def prepare(config: WorkerConfig, *, override_threads: bool) -> str:
    """Sets up a fresh worker process or actor; the device it will use.

    Threads are fixed before torch starts so that workers do not fight over the cores (Ray
    sets OMP_NUM_THREADS for its actors, so an actor overrides it).
    """
    if override_threads:
        os.environ["OMP_NUM_THREADS"] = str(config.threads)
    else:
        os.environ.setdefault("OMP_NUM_THREADS", str(config.threads))
    import torch

    torch.set_num_threads(config.threads)
    log_format = f"%(asctime)s worker-{config.worker_id} %(message)s"
    logging.basicConfig(level=logging.INFO, format=log_format)
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        log.warning("CUDA requested but unavailable; worker %d falls back to CPU", config.worker_id)
        return "cpu"
    return config.device


class Outbox(Protocol):
    """Where a worker sends its messages: the result pipe of a local worker process, or the
    Ray actor that hosts it."""

    def send(self, message: FromWorker, /) -> None: ...


class Built(NamedTuple):
    """A hot load finished on its thread (never leaves the worker): the loop installs it."""

    request_id: int
    spec: ModelSpec
    served: Any  # None when it failed
    error: str | None
    side: bool


def load_error(spec: ModelSpec, exc: Exception) -> str:
    """Why `spec` did not load, as the API and its clients see it: the model, the version and
    the problem, never a server path (only the log, written here, has the artifact's)."""
    from models.artifacts import describe_error

    where = spec.artifact_url or spec.artifact_dir
    log.error("could not load %s v%d from %s: %s", spec.name, spec.version, where, exc)
    return f"{spec.name} v{spec.version}: {describe_error(exc, *_locations(spec, exc))}"


def _locations(spec: ModelSpec, exc: Exception) -> list[str]:
    """Everything in an error about `spec` that names a place on a server or in a bucket."""
    places = [spec.artifact_dir, spec.artifact_url, str(getattr(exc, "path", "") or "")]
    return [p for p in places if p]


class Worker:
    """Dynamic batches (classifiers, GANs, VAEs), text-generation steps and denoising steps
    (diffusion models), interleaved on one thread."""

    def __init__(
        self,
        outbox: Outbox,
        batcher: DynamicBatcher,
        cache_dir: Path | None = None,
        storage_options: dict[str, Any] | None = None,
        prefill_tokens: int = 0,
    ) -> None:
        self.outbox = outbox
        self.prefill_tokens = prefill_tokens  # per step, for every GenerationEngine
        self.batcher = batcher
        # artifacts fetched by URL: this machine's own copies, never the API's paths
        self.cache_dir = cache_dir or Path(tempfile.gettempdir()) / "genserve-artifact-cache"
        self.storage_options = storage_options or {}
        self.batched: dict[str, Any] = {}  # classifiers, image generators: dynamic batches
        self.engines: dict[str, GenerationEngine] = {}
        self.denoisers: dict[str, DenoisingEngine] = {}
        # replaced engines finishing what they had started
        self.retiring: list[GenerationEngine | DenoisingEngine] = []
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.device, self.max_running = "cpu", 1
        self.precision: Callable[[], Any] = contextlib.nullcontext  # load() sets autocast

    @classmethod
    def for_config(cls, outbox: Outbox, config: WorkerConfig) -> Worker:
        """The worker a local process or a Ray actor hosts, set up from its WorkerConfig."""
        batcher = DynamicBatcher(config.max_batch_size, config.max_wait_ms / 1000)
        cache_dir = Path(config.artifact_cache_dir) if config.artifact_cache_dir else None
        return cls(outbox, batcher, cache_dir, config.storage_options, config.prefill_tokens)

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
                errors[spec.name] = load_error(spec, exc)
        gc.freeze()  # the loaded models stay: keep the collector off them (app/main.py)
        self.outbox.send(Ready(os.getpid(), versions, errors, seconds))

    def build(self, spec: ModelSpec) -> Any:
        """Loads one model version (verifying its sha256) into what serves it."""
        from app.worker.continuous_batching import GenerationEngine
        from app.worker.denoising import DenoisingEngine
        from app.worker.executors import ClassifierExecutor, ImageExecutor, VAEExecutor
        from models.artifacts import load_artifact
        from models.image.diffusion import DiffusionImageGenerator

        served = load_artifact(
            self.artifact_path(spec),
            expected_sha256=spec.sha256,
            device=self.device,
            task=spec.task,
        )
        if spec.task == "text-generation":
            return GenerationEngine(served, self.max_running, self.prefill_tokens)
        if isinstance(served, DiffusionImageGenerator):  # images join and leave between steps
            return DenoisingEngine(served, self.batcher.max_batch_size)
        if spec.task == "image-generation":
            # a generator with an encoder (a VAE) also encodes, reconstructs and interpolates
            return VAEExecutor(served) if hasattr(served, "encode") else ImageExecutor(served)
        return ClassifierExecutor(served)

    def artifact_path(self, spec: ModelSpec) -> Path:
        """`spec`'s artifact on this machine: its directory, or, for an artifact in object
        storage, the cache entry fetched by URL and verified against its sha256."""
        if not spec.artifact_url:
            return Path(spec.artifact_dir)
        from app.storage import fetch_artifact

        return fetch_artifact(spec.artifact_url, spec.sha256, self.cache_dir, self.storage_options)

    def install(self, spec: ModelSpec, served: Any, side: bool = False) -> None:
        """Serves `served` as `spec.name` from now on (as `spec.key` beside it, with `side`).
        Sequences the old engine is generating finish on it: it keeps stepping until empty,
        then it is dropped."""
        from app.worker.continuous_batching import GenerationEngine
        from app.worker.denoising import DenoisingEngine

        key = spec.key if side else spec.name
        if isinstance(served, GenerationEngine):
            self.retire(key)
            self.engines[key] = served
        elif isinstance(served, DenoisingEngine):
            self.retire(key)
            self.denoisers[key] = served
        else:
            self.batched[key] = served  # queued requests run on the new version

    def retire(self, key: str) -> None:
        """Stops serving `key`; an engine finishes what it is generating first."""
        self.batched.pop(key, None)
        for engines in (self.engines, self.denoisers):
            old = engines.pop(key, None)
            if old is not None and old.has_work():
                self.retiring.append(old)

    def promote(self, spec: ModelSpec) -> bool:
        """Activates a version already served beside the active one, without loading it."""
        for served in (self.batched, self.engines, self.denoisers):
            if spec.key in served:
                self.install(spec, served.pop(spec.key))
                return True
        return False

    def load_in_background(self, request: Load) -> None:
        """Hot load: the old version keeps serving on the main thread while this one loads."""
        spec, side = request.spec, request.side

        def run() -> None:
            try:
                self.inbox.put(Built(request.request_id, spec, self.build(spec), None, side))
            except Exception as exc:
                error = load_error(spec, exc)
                self.inbox.put(Built(request.request_id, spec, None, error, side))

        threading.Thread(target=run, name=f"load-{spec.name}", daemon=True).start()

    def serve(self) -> None:
        inbox = self.inbox
        while True:
            busy = any(e.has_work() for e in self.stepping())
            try:
                message = inbox.get_nowait() if busy else inbox.get(timeout=self.batcher.timeout())
            except queue.Empty:
                message = None
            while message is not None:  # drain whatever else already arrived
                if isinstance(message, Stop):
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
            for name, denoiser in self.denoisers.items():
                if denoiser.has_work():
                    self.denoise_step(name, denoiser)
            for old in self.retiring:
                self.step_retiring(old)
            self.retiring = [e for e in self.retiring if e.has_work()]

    def stepping(self) -> list[GenerationEngine | DenoisingEngine]:
        """The engines that advance by steps: the loop polls its inbox without blocking while
        one of them has work."""
        return [*self.engines.values(), *self.denoisers.values(), *self.retiring]

    def step_retiring(self, engine: GenerationEngine | DenoisingEngine) -> None:
        from app.worker.denoising import DenoisingEngine

        if isinstance(engine, DenoisingEngine):
            self.denoise_step(engine.generator.name or "retiring", engine)
        else:
            self.generate_step(engine.lm.name or "retiring", engine)

    def handle(self, message: Infer | Generate | Cancel | Load | Unload | Built) -> None:
        match message:
            case Infer(model=model) if model in self.batched:
                request = Request(message.request_id, model, message.inputs, message.rows)
                self.batcher.add(request)
            case Infer(model=model) if model in self.denoisers:
                request = Request(message.request_id, model, message.inputs, message.rows)
                try:
                    self.denoisers[model].add(request)
                except Exception:  # its caller's failure, never the loop's
                    self.report_failure(model, [request.id])
            case Generate(model=model) if model in self.engines:
                self.engines[model].add(
                    message.request_id, message.prompt, message.params, message.n
                )
            case Infer() | Generate():
                reason = f"model {message.model!r} is not loaded here"
                self.outbox.send(Failed([Failure(message.request_id, reason)]))
            case Cancel(request_id=request_id):
                for engine in self.stepping():
                    engine.cancel(request_id)
            case Load(request_id=request_id, spec=spec, side=False) if self.promote(spec):
                log.info("now serving %s v%d (it was loaded beside)", spec.name, spec.version)
                self.outbox.send(Loaded(request_id, spec.name, spec.version, None))
            case Load():
                self.load_in_background(message)
            case Unload(key=key):
                self.retire(key)
                log.info("unloaded %s", key)
            case Built(request_id, spec, served, error, side):
                if served is not None:
                    self.install(spec, served, side)
                    log.info("now serving %s%s", spec.key, " beside" if side else "")
                self.outbox.send(Loaded(request_id, spec.name, spec.version, error, side))

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
        self.outbox.send(BatchDone(model, rows, time.perf_counter() - started, results))

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
            self.outbox.send(Tokens(model, running, events))

    def denoise_step(self, model: str, denoiser: DenoisingEngine) -> None:
        """One forward pass over the model's running images: answers the requests whose last
        image finished (one BatchDone, as a dynamic batch does) and sends the previews due."""
        started = time.perf_counter()
        try:
            with self.precision():
                images, done, previews = denoiser.step()
        except Exception:
            ids = denoiser.request_ids()
            for request_id in ids:
                denoiser.cancel(request_id)
            self.report_failure(model, ids)
            return
        if previews:
            self.outbox.send(Previews(previews))
        if done:
            self.outbox.send(BatchDone(model, images, time.perf_counter() - started, done))

    def report_failure(self, model: str, request_ids: list[int]) -> None:
        trace = traceback.format_exc()
        log.error("%s failed:\n%s", model, trace)
        reason = trace.strip().splitlines()[-1]
        import torch

        out_of_memory = isinstance(sys.exc_info()[1], torch.OutOfMemoryError)
        if out_of_memory and torch.cuda.is_available():
            # Free the cached blocks so that the next, smaller batch fits; the worker lives on.
            torch.cuda.empty_cache()
        failures = [Failure(request_id, reason, out_of_memory) for request_id in request_ids]
        self.outbox.send(Failed(failures))
