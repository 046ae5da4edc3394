"""What can go wrong in the engine, as plain exceptions: the pool knows nothing of HTTP.

app/errors.py maps each class to its status, error code and Retry-After.
"""

from __future__ import annotations

from typing import Any

from app.worker.protocol import Failure


class EngineError(Exception):
    """A request the pool could not serve; `details` says more, per worker where it applies."""

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ModelNotServed(EngineError):
    """No worker was asked to serve this model."""


class ModelLoading(EngineError):
    """The model is asked for but no worker serves it yet: it is loading, or its worker is
    restarting."""


class ModelLoadFailed(EngineError):
    """Every worker is up and none could load the model: a retry will not help soon."""


class QueueFull(EngineError):
    """The model's queue is at its limit: back off and retry."""


class WorkerLost(EngineError):
    """The worker serving the request died; it is being restarted."""


class OutOfMemory(EngineError):
    """The device ran out of memory for this batch; the worker freed it and keeps serving."""


class InferenceFailed(EngineError):
    """The model raised on this request: a bug, or an input the model cannot take."""


class EngineTimeout(EngineError):
    """The worker did not answer (or produce a token) in time."""


class LoadFailed(EngineError):
    """A model version that verified on disk still would not load in a worker."""


class NoRoom(EngineError):
    """Loading a version beside the active ones would pass the workers' memory budget, and
    every version that could be evicted is in use."""


def failure_error(failure: Failure) -> EngineError:
    """The error for a failure a worker reported."""
    if failure.out_of_memory:
        return OutOfMemory(
            f"the device ran out of memory ({failure.reason}); retry with a smaller request "
            "or later"
        )
    return InferenceFailed(failure.reason)
