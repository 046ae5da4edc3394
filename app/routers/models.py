from __future__ import annotations

from fastapi import APIRouter, Path

from app.deps import PoolDep, ReadScope, RegistryDep
from app.schemas.errors import error_responses
from app.schemas.models import ModelPublic, ModelsPublic
from app.services.models import model_public

router = APIRouter(prefix="/models", tags=["models"], dependencies=[ReadScope])


@router.get("", response_model=ModelsPublic, responses=error_responses(401, 403))
def read_models(registry: RegistryDep, pool: PoolDep) -> ModelsPublic:
    """Registered models with their versions, metrics and where the active one is served."""
    placement = pool.placement()
    data = [model_public(m, placement) for m in registry.list_models()]
    return ModelsPublic(data=data, count=len(data))


@router.get("/{name}", response_model=ModelPublic, responses=error_responses(401, 403, 404))
def read_model(
    registry: RegistryDep, pool: PoolDep, name: str = Path(max_length=200)
) -> ModelPublic:
    """One model, all its versions, and the workers serving its active version."""
    return model_public(registry.get_model(name), pool.placement())
