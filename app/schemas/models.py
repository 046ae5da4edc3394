from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from app.schemas.common import UTCDateTime


class ModelVersionPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    version: int
    kind: str
    sha256: str
    size_bytes: int
    params: dict[str, Any]
    metrics: dict[str, Any]
    dataset_id: int | None
    source: str
    is_active: bool
    created_at: UTCDateTime


class ModelPublic(BaseModel):
    name: str
    task: str
    description: str
    active_version: int | None
    input: str | None = None
    labels: list[str] | None = None
    workers: list[int]  # ready workers serving the active version
    versions: list[ModelVersionPublic]


class ModelsPublic(BaseModel):
    data: list[ModelPublic]
    count: int
