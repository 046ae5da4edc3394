"""Shapes registry rows into the public model view."""

from __future__ import annotations

from app.schemas.models import ModelPublic, ModelVersionPublic
from app.tables import Model


def model_public(model: Model, placement: dict[str, list[int]]) -> ModelPublic:
    active = next((v for v in model.versions if v.is_active), None)
    config = active.config if active is not None else {}
    return ModelPublic(
        name=model.name,
        task=model.task,
        description=model.description,
        active_version=active.version if active is not None else None,
        input=config.get("input"),
        labels=config.get("labels"),
        workers=placement.get(model.name, []),
        versions=[ModelVersionPublic.model_validate(v) for v in model.versions],
    )
