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
    ready = [w for w in pool.workers() if w.ready]
    aliases = {a.alias: a.version for a in model.aliases}
    traffic = {str(v): int(w) for v, w in (model.traffic or {}).items()} or None
    versions = []
    for v in model.versions:
        view = ModelVersionPublic.model_validate(v)
        view.aliases = sorted(a for a, n in aliases.items() if n == v.version)
        view.traffic = (traffic or {}).get(str(v.version), 0)
        versions.append(view)
    return ModelPublic(
        name=model.name,
        task=model.task,
        description=model.description,
        default=model.name in registry.settings.default_models(),
        default_vae=model.name == registry.settings.default_vae_model,
        active_version=desired,
        aliases=aliases,
        traffic=traffic,
        archived=model.archived_at is not None,
        archived_at=model.archived_at,
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
        labels=class_labels(config),
        workers=pool.placement().get(model.name, []),
        loaded=sorted(
            {w.models[model.name] for w in ready if model.name in w.models}
            | {v for w in ready for v in w.beside.get(model.name, [])}
        ),
        versions=versions,
    )


def class_labels(config: dict[str, Any]) -> list[str] | None:
    """What a request's `label` picks from: a classifier's labels, or a class-conditional
    image generator's classes (named when trained on named folders, else numbered), so that
    clients can tell conditional generators from unconditional ones; None for the others."""
    if config.get("labels"):
        return list(config["labels"])
    return [str(i) for i in range(config.get("num_classes") or 0)] or None
