"""The engine boundary: the API submits work here and never runs model code itself."""

from app.pool.base import ModelSpec, WorkerInfo, WorkerPool

__all__ = ["ModelSpec", "WorkerInfo", "WorkerPool"]
