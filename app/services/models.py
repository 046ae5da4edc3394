"""Shapes registry rows into the public model view: the desired version, what this replica
serves, and which replicas acknowledged the desired version."""

from __future__ import annotations

from typing import Any

from app.pool.base import WorkerPool
from app.schemas.models import ModelPublic, ModelVersionPublic, PlacementPublic
from app.services.registry import ModelRegistry
from app.tables import Model


def model_public(
    model: Model, registry: ModelRegistry, pool: WorkerPool, placements: list[dict[str, Any]]
) -> ModelPublic:
    """One model's view from this replica, with every replica's `placements` of it."""
    active = next((v for v in model.versions if v.is_active), None)
    config = active.config if active is not None else {}
    desired = active.version if active is not None else None
    replicas = [PlacementPublic(**row) for row in placements]
    return ModelPublic(
        name=model.name,
        task=model.task,
        description=model.description,
        active_version=desired,
        replica=registry.placements.replica,
        served_version=registry.served_version(pool, model.name),
        degraded=registry.degraded().get(model.name),
        acknowledged_by=[
            r.replica
            for r in replicas
            if not r.stale and desired is not None and r.served_version == desired
        ],
        replicas=replicas,
        input=config.get("input"),
        labels=config.get("labels"),
        workers=pool.placement().get(model.name, []),
        versions=[ModelVersionPublic.model_validate(v) for v in model.versions],
    )
