from __future__ import annotations

from pydantic import BaseModel


class Health(BaseModel):
    status: str


class WorkerPublic(BaseModel):
    id: int
    pid: int | None
    device: str
    ready: bool
    models: dict[str, int]
    restarts: int
    inflight: int
    node: str | None = None  # the Ray node (GENSERVE_POOL=ray)


class Readiness(BaseModel):
    status: str  # "ready" or "loading"
    models: dict[str, list[int]]  # model -> ready workers serving it
    missing: list[str]
    workers: list[WorkerPublic]
