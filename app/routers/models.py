from __future__ import annotations

import asyncio
from functools import partial
from typing import Annotated

from fastapi import APIRouter, File, Form, Path, Query, Response, UploadFile, status
from fastapi.responses import StreamingResponse

from app.deps import (
    AdminScope,
    ArchiveServiceDep,
    PoolDep,
    ReadScope,
    RegistryDep,
    RetentionDep,
)
from app.pool.base import WorkerPool
from app.schemas.errors import error_responses
from app.schemas.models import (
    AliasTarget,
    ModelPublic,
    ModelsPublic,
    ModelVersionPublic,
    TrafficSplit,
)
from app.schemas.train import NAME_PATTERN
from app.services.models import model_public
from app.services.registry import ALIAS, ModelRegistry

# Every route needs a read key at least; writes also ask for admin (which implies read).
router = APIRouter(prefix="/models", tags=["models"], dependencies=[ReadScope])


@router.get("", response_model=ModelsPublic, responses=error_responses(401, 403, 422))
def read_models(
    registry: RegistryDep,
    pool: PoolDep,
    archived: bool = Query(False, description="Also list archived models"),
) -> ModelsPublic:
    """Registered models with their versions and metrics, the desired (active) version, what
    this replica serves, and which replicas serve what."""
    placements = registry.placements.by_model()
    data = [
        model_public(m, registry, pool, placements.get(m.name, []))
        for m in registry.list_models()
        if archived or m.archived_at is None
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


AliasPath = Path(pattern=ALIAS.pattern, description="letters, digits, _ . -; starts with a letter")


@router.put(
    "/{name}/aliases/{alias}",
    response_model=ModelPublic,
    dependencies=[AdminScope],
    responses=error_responses(400, 401, 403, 404, 422),  # 400: a body that is not JSON
)
async def set_alias(
    body: AliasTarget,
    registry: RegistryDep,
    pool: PoolDep,
    name: str = Path(max_length=200),
    alias: str = AliasPath,
) -> ModelPublic:
    """Points `alias` at a version, as MLflow's registry does: requests for `name@alias` get
    that version, loaded beside the active one if it is another."""
    await registry.set_alias(name, alias, body.version)
    return await asyncio.to_thread(_one, registry, pool, name)


@router.delete(
    "/{name}/aliases/{alias}",
    response_model=ModelPublic,
    dependencies=[AdminScope],
    responses=error_responses(401, 403, 404, 422),
)
async def delete_alias(
    registry: RegistryDep,
    pool: PoolDep,
    name: str = Path(max_length=200),
    alias: str = AliasPath,
) -> ModelPublic:
    """Removes an alias; requests that name it get 404 from then on."""
    await registry.delete_alias(name, alias)
    return await asyncio.to_thread(_one, registry, pool, name)


@router.post(
    "/{name}/traffic",
    response_model=ModelPublic,
    dependencies=[AdminScope],
    responses=error_responses(400, 401, 403, 404, 409, 422, 503),  # 503: no room to load
)
async def set_traffic(
    split: TrafficSplit,
    registry: RegistryDep,
    pool: PoolDep,
    name: str = Path(max_length=200),
) -> ModelPublic:
    """Splits the requests that name no version by weight, e.g. `{"3": 90, "4": 10}` (the
    weights add up to 100; `{}` sends all to the active version again). A request's `user`
    makes its pick sticky. 409 if a version will not load here (nothing changes)."""
    await registry.set_traffic(pool, name, split.versions())
    return await asyncio.to_thread(_one, registry, pool, name)


@router.delete(
    "/{name}/versions/{version}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[AdminScope],
    responses=error_responses(401, 403, 404, 409, 422),
)
async def delete_version(
    retention: RetentionDep,
    registry: RegistryDep,
    name: str = Path(max_length=200),
    version: int = Path(ge=1, le=2**31 - 1),
) -> None:
    """Delete a version and its artifact. 409 `version_in_use` while it is active, an alias
    points at it or it has weight in the traffic split, and for built-in defaults."""
    await registry.retire(partial(retention.delete_version, name, version), name, version)


@router.delete(
    "/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[AdminScope],
    responses=error_responses(401, 403, 404, 409, 422),
)
async def archive_model(
    retention: RetentionDep, registry: RegistryDep, name: str = Path(max_length=200)
) -> None:
    """Archive a model: left out of GET /models (unless `?archived=true`) and no longer served;
    its versions and artifacts stay, and a version registered under its name brings it back.
    409 for a server default model."""
    await registry.retire(partial(retention.archive_model, name), name)


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
