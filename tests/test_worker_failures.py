"""What a worker reports when a batch fails: a device out of memory is a retryable 503 and the
worker keeps serving; anything else is a 500."""

from __future__ import annotations

from typing import Any

import torch

from app.pool.base import InferenceFailed, OutOfMemory, worker_error
from app.worker.batching import DynamicBatcher, Request
from app.worker.loop import Worker


class Outbox:
    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []

    def send(self, message: tuple[Any, ...]) -> None:
        self.sent.append(message)


class Flaky:
    """Fails its first batch with `error`, then echoes."""

    def __init__(self, error: Exception) -> None:
        self.error: Exception | None = error

    def run(self, batch: list[Request]) -> list[Any]:
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        return [r.inputs for r in batch]


def worker_with(runner: Flaky) -> tuple[Worker, Outbox]:
    outbox = Outbox()
    worker = Worker(outbox, DynamicBatcher(8, 0.0))  # type: ignore[arg-type]
    worker.batched["m"] = runner
    return worker, outbox


def test_out_of_memory_is_a_503_and_the_worker_serves_on() -> None:
    worker, outbox = worker_with(Flaky(torch.OutOfMemoryError("CUDA out of memory")))
    worker.run_batch("m", [Request(1, "m", "a", 1), Request(2, "m", "b", 1)])
    kind, failures = outbox.sent[-1]
    assert kind == "errors" and [i for i, _ in failures] == [1, 2]
    error = worker_error(failures[0][1])
    assert isinstance(error, OutOfMemory)
    assert error.status == 503 and error.headers["Retry-After"] == "1"

    worker.run_batch("m", [Request(3, "m", "c", 1)])
    assert outbox.sent[-1][0] == "batch" and outbox.sent[-1][-1] == [(3, "c")]


def test_other_failures_are_500s() -> None:
    worker, outbox = worker_with(Flaky(ValueError("shapes do not match")))
    worker.run_batch("m", [Request(1, "m", "a", 1)])
    error = worker_error(outbox.sent[-1][1][0][1])
    assert isinstance(error, InferenceFailed) and error.status == 500
    assert "shapes do not match" in error.message
