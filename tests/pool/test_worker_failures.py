"""What a worker reports when a batch fails: a device out of memory is a retryable 503 and the
worker keeps serving; anything else is a 500. The engine's errors carry no status: app/errors.py
maps them."""

from __future__ import annotations

from typing import Any

import torch

from app.errors import http_error
from app.pool.errors import InferenceFailed, OutOfMemory, failure_error
from app.worker.batching import DynamicBatcher, Request
from app.worker.loop import Worker
from app.worker.protocol import BatchDone, Failed, FromWorker


class Outbox:
    def __init__(self) -> None:
        self.sent: list[FromWorker] = []

    def send(self, message: FromWorker) -> None:
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
    failed = outbox.sent[-1]
    assert isinstance(failed, Failed) and [f.request_id for f in failed.failures] == [1, 2]
    assert all(f.out_of_memory for f in failed.failures)
    error = failure_error(failed.failures[0])
    assert isinstance(error, OutOfMemory)
    answer = http_error(error)
    assert answer.status == 503 and answer.headers["Retry-After"] == "1"
    assert answer.code == "out_of_memory" and "CUDA out of memory" in answer.message

    worker.run_batch("m", [Request(3, "m", "c", 1)])
    done = outbox.sent[-1]
    assert isinstance(done, BatchDone) and done.results == [(3, "c")]


def test_other_failures_are_500s() -> None:
    worker, outbox = worker_with(Flaky(ValueError("shapes do not match")))
    worker.run_batch("m", [Request(1, "m", "a", 1)])
    failed = outbox.sent[-1]
    assert isinstance(failed, Failed) and not failed.failures[0].out_of_memory
    error = failure_error(failed.failures[0])
    assert isinstance(error, InferenceFailed) and http_error(error).status == 500
    assert http_error(error).code == "inference_failed"
    assert "shapes do not match" in error.message
