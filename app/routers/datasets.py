from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Path, Response, UploadFile, status

from app.deps import AdminScope, DatasetServiceDep, ReadScope
from app.schemas.datasets import DatasetPublic, DatasetsPublic
from app.schemas.errors import error_responses

# Every route needs a read key at least; writes also ask for admin (which implies read).
router = APIRouter(prefix="/datasets", tags=["datasets"], dependencies=[ReadScope])


@router.post(
    "",
    response_model=DatasetPublic,
    status_code=status.HTTP_201_CREATED,
    dependencies=[AdminScope],
    responses={
        200: {"model": DatasetPublic},
        **error_responses(400, 401, 403, 409, 413, 415, 422, 429, 507),
    },
)
async def create_dataset(
    service: DatasetServiceDep,
    response: Response,
    file: Annotated[UploadFile, File(description="txt, csv, tsv, jsonl, npz, IDX (.gz) or zip")],
    name: Annotated[str | None, Form(min_length=1, max_length=200)] = None,
) -> DatasetPublic:
    """Upload and validate a dataset: 201 when new, 200 with the existing one for the same file."""
    dataset, created = await service.upload(file, name)
    if not created:
        response.status_code = status.HTTP_200_OK
    return DatasetPublic.model_validate(dataset)


@router.get("", response_model=DatasetsPublic, responses=error_responses(401, 403))
def read_datasets(service: DatasetServiceDep) -> DatasetsPublic:
    """Uploaded and built-in datasets, oldest first."""
    data = [DatasetPublic.model_validate(d) for d in service.list()]
    return DatasetsPublic(data=data, count=len(data))


@router.get(
    "/{dataset_id}",
    response_model=DatasetPublic,
    responses=error_responses(401, 403, 404, 422),
)
def read_dataset(
    service: DatasetServiceDep, dataset_id: int = Path(ge=1, le=2**31 - 1)
) -> DatasetPublic:
    """One dataset: its kind, format, sha256, record count and labels or image size."""
    return DatasetPublic.model_validate(service.get(dataset_id))


@router.delete(
    "/{dataset_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[AdminScope],
    responses=error_responses(401, 403, 404, 409, 422),
)
def delete_dataset(service: DatasetServiceDep, dataset_id: int = Path(ge=1, le=2**31 - 1)) -> None:
    """Delete an uploaded dataset and its file. 409 while a queued or running job uses it,
    and for built-ins; versions trained on it keep its name and sha256."""
    service.delete(dataset_id)
