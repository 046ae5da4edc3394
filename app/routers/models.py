from __future__ import annotations

import asyncio

from fastapi import APIRouter, Path

from app.deps import AdminScope, PoolDep, ReadScope, RegistryDep
from app.schemas.errors import error_responses
from app.schemas.models import ModelPublic, ModelsPublic
from app.services.models import model_public

router = APIRouter(prefix="/models", tags=["models"])


@router.get(
    "", response_model=ModelsPublic, dependencies=[ReadScope], responses=error_responses(401, 403)
)
def read_models(registry: RegistryDep, pool: PoolDep) -> ModelsPublic:
    """Registered models with their versions, metrics and where the active one is served."""
    placement = pool.placement()
    data = [model_public(m, placement) for m in registry.list_models()]
    return ModelsPublic(data=data, count=len(data))


@router.get(
    "/{name}",
    response_model=ModelPublic,
    dependencies=[ReadScope],
    responses=error_responses(401, 403, 404, 422),
)
def read_model(
    registry: RegistryDep, pool: PoolDep, name: str = Path(max_length=200)
) -> ModelPublic:
    """One model, all its versions, and the workers serving its active version."""
    return model_public(registry.get_model(name), pool.placement())


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
    """Serve this version: verified, hot-loaded on every worker, then switched to; the old
    version answers until then. 409 if its artifact fails the sha256 check or will not load."""
    await registry.activate(pool, name, version)
    model = await asyncio.to_thread(registry.get_model, name)
    return model_public(model, pool.placement())
