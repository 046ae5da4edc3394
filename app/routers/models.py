from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, File, Form, Path, Query, Response, UploadFile, status
from fastapi.responses import StreamingResponse

from app.deps import AdminScope, ArchiveServiceDep, PoolDep, ReadScope, RegistryDep
from app.pool.base import WorkerPool
from app.schemas.errors import error_responses
from app.schemas.models import ModelPublic, ModelsPublic, ModelVersionPublic
from app.schemas.train import NAME_PATTERN
from app.services.models import model_public
from app.services.registry import ModelRegistry

# Every route needs a read key at least; writes also ask for admin (which implies read).
router = APIRouter(prefix="/models", tags=["models"], dependencies=[ReadScope])


@router.get("", response_model=ModelsPublic, responses=error_responses(401, 403))
def read_models(registry: RegistryDep, pool: PoolDep) -> ModelsPublic:
    """Registered models with their versions and metrics, the desired (active) version, what
    this replica serves, and which replicas serve what."""
    placements = registry.placements.by_model()
    data = [
        model_public(m, registry, pool, placements.get(m.name, [])) for m in registry.list_models()
    ]
    return ModelsPublic(data=data, count=len(data))


def _one(registry: ModelRegistry, pool: WorkerPool, name: str) -> ModelPublic:
    model = registry.get_model(name)
    return model_public(model, registry, pool, registry.placements.by_model(name).get(name, []))


@router.get(
    "/{name}",
    response_model=ModelPublic,
    responses=error_responses(401, 403, 404, 422),
)
def read_model(
    registry: RegistryDep, pool: PoolDep, name: str = Path(max_length=200)
) -> ModelPublic:
    """One model, all its versions, what this replica serves and each replica's placement."""
    return _one(registry, pool, name)


@router.post(
    "/{name}/versions/{version}/activate",
    response_model=ModelPublic,
    dependencies=[AdminScope],
    responses=error_responses(401, 403, 404, 409, 422),
)
async def activate_version(
    registry: RegistryDep,
    pool: PoolDep,
    name: str = Path(max_length=200),
    version: int = Path(ge=1, le=2**31 - 1),
) -> ModelPublic:
    """Serve this version: verified and hot-loaded on this replica's workers, then recorded as
    the desired version, which the other replicas follow; the old version answers until then.
    Answers once this replica serves it; `acknowledged_by` lists the replicas that do so far.
    409 if its artifact fails the sha256 check or will not load here (nothing changes)."""
    await registry.activate(pool, name, version)
    return await asyncio.to_thread(_one, registry, pool, name)


@router.get(
    "/{name}/versions/{version}/artifact",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/x-tar": {}}, "description": "the version's archive"},
        **error_responses(401, 403, 404, 409, 422),
    },
)
async def export_version(
    archives: ArchiveServiceDep,
    name: str = Path(max_length=200),
    version: int = Path(ge=1, le=2**31 - 1),
) -> StreamingResponse:
    """Download this version as a tar: its config, weights (or skops file) and model card, and
    a manifest.json with each file's sha256 and the version's task, kind, params, metrics and
    lineage; `POST /models/{name}/versions` imports it. 409 if the artifact fails its sha256
    check."""
    archive = await asyncio.to_thread(archives.export, name, version)
    return StreamingResponse(
        archive.chunks,
        media_type="application/x-tar",
        headers={
            "Content-Length": str(archive.size),
            "Content-Disposition": f'attachment; filename="{archive.filename}"',
        },
    )


@router.post(
    "/{name}/versions",
    response_model=ModelVersionPublic,
    status_code=status.HTTP_201_CREATED,
    dependencies=[AdminScope],
    responses=error_responses(400, 401, 403, 409, 413, 422, 429, 503),
)
async def import_version(
    archives: ArchiveServiceDep,
    registry: RegistryDep,
    pool: PoolDep,
    response: Response,
    file: Annotated[UploadFile, File(description="a tar from GET .../versions/{v}/artifact")],
    name: str = Path(pattern=NAME_PATTERN),
    activate: Annotated[bool, Query(description="serve it once registered")] = False,
    activate_field: Annotated[bool, Form(alias="activate")] = False,
) -> ModelVersionPublic:
    """Import an exported archive as the next version of `name` (created if new), source
    `imported`: validated like an upload (plain files only, every sha256 checked, no pickle,
    a known kind, skops types on the allowlist) and loaded once before it is registered.
    `activate` (query or form field) then serves it (should that fail, the version stays
    registered, inactive). 422 for a refused archive, 409 if `name` is a model of another
    task; nothing is kept of a refused one."""
    number = await archives.import_archive(pool, name, file, activate or activate_field)
    model = await asyncio.to_thread(registry.get_model, name)
    response.headers["Location"] = f"/models/{name}"
    return ModelVersionPublic.model_validate(next(v for v in model.versions if v.version == number))
