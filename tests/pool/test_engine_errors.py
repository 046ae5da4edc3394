"""The engine's errors carry no HTTP status; app/errors.py gives each the status, error code
and Retry-After that clients rely on (DESIGN.md: 404 unknown, 409 conflict, 429/503 with
Retry-After, 504 timeout, and a 500 only for a bug)."""

from __future__ import annotations

import pytest

from app.errors import http_error
from app.pool.errors import (
    EngineError,
    EngineTimeout,
    InferenceFailed,
    LoadFailed,
    ModelLoadFailed,
    ModelLoading,
    ModelNotServed,
    OutOfMemory,
    QueueFull,
    WorkerLost,
)


@pytest.mark.parametrize(
    ("error", "status", "code", "retry_after"),
    [
        (ModelNotServed("m"), 404, "not_found", None),
        (ModelLoading("m"), 503, "unavailable", "2"),
        (ModelLoadFailed("m", details={0: "bad"}), 503, "unavailable", "30"),
        (QueueFull("m"), 429, "overloaded", "1"),
        (WorkerLost("m"), 503, "worker_lost", "1"),
        (OutOfMemory("m"), 503, "out_of_memory", "1"),
        (InferenceFailed("m"), 500, "inference_failed", None),
        (EngineTimeout("m"), 504, "timeout", None),
        (LoadFailed("m", details={0: "bad"}), 409, "load_failed", None),
    ],
)
def test_each_engine_error_has_its_status_code_and_retry_after(
    error: EngineError, status: int, code: str, retry_after: str | None
) -> None:
    answer = http_error(error)
    assert (answer.status, answer.code, answer.message) == (status, code, "m")
    assert answer.headers.get("Retry-After") == retry_after
    assert answer.details == error.details
    assert not hasattr(error, "status")  # the engine side knows nothing of HTTP
