from __future__ import annotations

import asyncio

from fastapi import APIRouter, Path

from app.deps import AdminScope, PoolDep, ReadScope, RegistryDep
from app.pool.base import WorkerPool
from app.schemas.errors import error_responses
from app.schemas.models import AliasTarget, ModelPublic, ModelsPublic, TrafficSplit
from app.services.models import model_public
from app.services.registry import ALIAS, ModelRegistry

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


AliasPath = Path(pattern=ALIAS.pattern, description="letters, digits, _ . -; starts with a letter")


@router.put(
    "/{name}/aliases/{alias}",
    response_model=ModelPublic,
    dependencies=[AdminScope],
    responses=error_responses(401, 403, 404, 422),
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
    responses=error_responses(401, 403, 404, 409, 422),
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
