"""The one interface every pool backend implements (local processes now, Ray actors later)."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from app.errors import AppError, Unavailable


@dataclass(frozen=True)
class ModelSpec:
    """What a worker needs to load one model version; plain data, cheap to send to a process."""

    name: str
    version: int
    kind: str
    task: str
    artifact_dir: str
    sha256: str
    config: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass
class WorkerInfo:
    id: int
    pid: int | None
    device: str
    ready: bool
    models: dict[str, int]  # name -> loaded version
    restarts: int
    inflight: int


# A generation event: (request id, choice index, new text, finish reason or None,
# completion tokens so far, logprob of the token)
Event = tuple[int, int, str, str | None, int, float | None]


def restart_delay(started_at: float, restarts: int) -> float:
    """Seconds to wait before restarting a process that died: none after a long life, then
    0.5 s doubling to 30 s for one that dies right after starting, so a crash loop idles."""
    if time.monotonic() - started_at > 30:
        return 0.0
    return min(30.0, 0.5 * 2 ** min(restarts, 6))


class WorkerLost(Unavailable):
    code = "worker_lost"


class InferenceFailed(AppError):
    status, code = 500, "inference_failed"


class OutOfMemory(Unavailable):
    """The device ran out of memory for this batch; the worker freed it and keeps serving."""

    code = "out_of_memory"


OOM_PREFIX = "out of memory: "  # how a worker marks a failure worth retrying


def worker_error(reason: str) -> AppError:
    """The API's error for a failure a worker reported."""
    if reason.startswith(OOM_PREFIX):
        return OutOfMemory(
            f"the device ran out of memory ({reason[len(OOM_PREFIX) :]}); retry "
            "with a smaller request or later",
            retry_after=1,
        )
    return InferenceFailed(reason)


class WorkerPool(ABC):
    """Runs inference for the API; implementations decide where the workers live."""

    specs: list[ModelSpec]  # the model versions this pool was asked to serve

    @abstractmethod
    async def start(self, specs: list[ModelSpec]) -> None:
        """Starts the workers and returns at once; readiness follows as they load."""

    @abstractmethod
    async def stop(self) -> None: ...

    @abstractmethod
    async def infer(self, model: str, inputs: Any, rows: int) -> Any:
        """Runs `rows` inputs through `model`, batched with other callers' inputs."""

    @abstractmethod
    def generate(
        self, model: str, prompt: str, params: dict[str, Any], n: int
    ) -> AsyncIterator[Event]:
        """Streams the events of `n` sampled continuations; closing the stream cancels them."""

    @abstractmethod
    async def load(self, spec: ModelSpec) -> None:
        """Hot-loads a model version on every worker; the old one serves until it is ready."""

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
