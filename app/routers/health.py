from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.deps import PoolDep
from app.schemas.health import Health, Readiness, WorkerPublic

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def read_health() -> Health:
    """Liveness: the API process answers; it says nothing about the models."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def read_readiness(pool: PoolDep) -> JSONResponse:
    """Readiness: 200 once every served model is loaded on at least one worker."""
    placement = pool.placement()
    ready = pool.is_ready()
    body = Readiness(
        status="ready" if ready else "loading",
        models=placement,
        missing=pool.missing(),
        workers=[WorkerPublic(**vars(w)) for w in pool.workers()],
    )
    headers = None if ready else {"Retry-After": "1"}
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503, headers=headers)


@router.get("/metrics", response_class=Response)
async def read_metrics() -> Response:
    """Prometheus exposition of request, batch, queue and worker metrics."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
