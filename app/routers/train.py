from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Path, Query, Response, status

from app.deps import AdminKey, AdminScope, ReadScope, TrainingServiceDep
from app.schemas.errors import error_responses
from app.schemas.train import JobDetail, JobPublic, JobsPublic, KindsPublic, TrainRequest

router = APIRouter(prefix="/train", tags=["training"])
JobId = Path(ge=1, le=2**31 - 1)


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobPublic,
    dependencies=[AdminScope],
    responses=error_responses(400, 401, 403, 404, 409, 422, 429),  # 400: a body that is not JSON
)
def submit_job(
    body: TrainRequest, service: TrainingServiceDep, response: Response, key: AdminKey
) -> JobPublic:
    """Queue a training job; poll the `Location` it answers with."""
    job = service.submit(body, owner=key.fingerprint if key is not None else None)
    response.headers["Location"] = f"/train/{job.id}"
    return job


@router.get(
    "/kinds",
    response_model=KindsPublic,
    dependencies=[ReadScope],
    responses=error_responses(401, 403),
)
def read_kinds(service: TrainingServiceDep) -> KindsPublic:
    """Every trainable model family with its parameters, types, defaults and bounds."""
    kinds = service.kinds()
    return KindsPublic(data=kinds, count=len(kinds))


@router.get(
    "",
    response_model=JobsPublic,
    dependencies=[ReadScope],
    responses=error_responses(401, 403, 422),
)
def read_jobs(
    service: TrainingServiceDep,
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"] | None = None,
    kind: str | None = Query(None, max_length=64),
    name: str | None = Query(None, max_length=200),
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=2**31 - 1),
) -> JobsPublic:
    """Jobs, newest first, filtered by status, kind and model name."""
    jobs, total = service.list(status, kind, name, limit, offset)
    return JobsPublic(data=jobs, count=total)


@router.get(
    "/{job_id}",
    response_model=JobDetail,
    dependencies=[ReadScope],
    responses=error_responses(401, 403, 404, 422),
)
def read_job(service: TrainingServiceDep, job_id: int = JobId) -> JobDetail:
    """One job with its progress, latest metrics and full metric history."""
    return service.get(job_id)


@router.post(
    "/{job_id}/cancel",
    response_model=JobDetail,
    dependencies=[AdminScope],
    responses=error_responses(401, 403, 404, 409, 422),
)
def cancel_job(service: TrainingServiceDep, job_id: int = JobId) -> JobDetail:
    """Cancel a queued job now, or a running one at its next step (409 once finished)."""
    return service.cancel(job_id)


@router.delete(
    "/{job_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[AdminScope],
    responses=error_responses(401, 403, 404, 409, 422),
)
def delete_job(service: TrainingServiceDep, job_id: int = JobId) -> None:
    """Delete a finished job and its metric history (409 while queued or running: cancel it
    first); the version it produced stays, with its `job_id`."""
    service.delete(job_id)
