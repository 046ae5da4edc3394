"""Liveness, readiness and metrics: the endpoints that stay open without an API key.

/readyz reports every dependency (the database, each served model, degraded models, a drain
in progress) but fails only for what GENSERVE_READY_REQUIRES names, so an operator chooses
whether a database outage takes a replica out of its load balancer (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from app import metrics
from app.db import Database
from app.deps import PoolDep, SettingsDep
from app.schemas.health import Health, Readiness, WorkerPublic

router = APIRouter(tags=["health"])
PING_TIMEOUT_S = 2.0  # a database slower than this to answer `SELECT 1` counts as down
PING_CACHE_S = 1.0  # probes from many balancers share one round trip


class ReadinessReport(Readiness):
    """`Readiness` plus what else was checked, and what this replica requires of it."""

    database: str = "ok"  # ok, unavailable (with database_error), or unknown before start
    database_error: str | None = None
    degraded: dict[str, Any] = {}  # model -> why it does not serve its active version
    draining: bool = False
    requires: list[str] = []


class _DatabaseProbe:
    """One `SELECT 1` at a time, its answer reused for PING_CACHE_S."""

    def __init__(self) -> None:
        self.checked_at = 0.0
        self.error: str | None = None
        self.lock = asyncio.Lock()

    async def check(self, db: Database) -> str | None:
        async with self.lock:
            if time.monotonic() - self.checked_at >= PING_CACHE_S:
                try:
                    await asyncio.wait_for(run_in_threadpool(db.ping), PING_TIMEOUT_S)
                    self.error = None
                except TimeoutError:
                    self.error = f"no answer within {PING_TIMEOUT_S:g} s"
                except Exception as exc:
                    self.error = (str(exc) or type(exc).__name__).splitlines()[0]
                self.checked_at = time.monotonic()
            return self.error


@router.get("/healthz", response_model=Health)
async def read_health() -> Health:
    """Liveness: the API process answers; it says nothing about the models."""
    return Health(status="ok")


@router.get("/readyz", response_model=ReadinessReport, responses={503: {"model": ReadinessReport}})
async def read_readiness(request: Request, pool: PoolDep, settings: SettingsDep) -> JSONResponse:
    """Readiness: 503 while draining, or while a required dependency is down or loading."""
    state = request.app.state
    requires = [r for r in settings.ready_requires.split(",") if r]
    db: Database | None = getattr(state, "db", None)
    if db is None:
        database, database_error = "unknown", None
    else:
        probe = getattr(state, "database_probe", None) or _DatabaseProbe()
        state.database_probe = probe
        database_error = await probe.check(db)
        database = "unavailable" if database_error else "ok"
    registry = getattr(state, "registry", None)
    degraded = getattr(registry, "degraded", None)  # the registry reports it once it can
    draining = bool(getattr(state, "draining", False))
    models_ready = pool.is_ready()
    failing = [
        name
        for name, ok in (
            ("draining", not draining),
            ("models", models_ready),
            ("database", database == "ok"),
        )
        if not ok and (name == "draining" or name in requires)
    ]
    ready = not failing
    # the first failing reason names the status: draining, loading (models) or unavailable
    status = (
        {"draining": "draining", "models": "loading"}.get(failing[0], "unavailable")
        if failing
        else "ready"
    )
    body = ReadinessReport(
        status=status,
        models=pool.placement(),
        missing=pool.missing(),
        workers=[WorkerPublic(**vars(w)) for w in pool.workers()],
        database=database,
        database_error=database_error,
        degraded=degraded() if callable(degraded) else {},
        draining=draining,
        requires=requires,
    )
    headers = None if ready else {"Retry-After": "1"}
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503, headers=headers)


@router.get("/metrics", response_class=Response)
async def read_metrics(request: Request) -> Response:
    """Prometheus exposition of request, token, batch, queue, sequence, worker and job
    metrics; the job counts come from the database, and without one in 2 s, are left out."""
    db: Database | None = getattr(request.app.state, "db", None)
    if db is not None:
        await metrics.JOBS.refresh(db)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
