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


class PlacementPublic(BaseModel):
    """What one replica serves of a model; `stale` if it has not reported for a while."""

    replica: str
    desired_version: int | None
    served_version: int | None
    state: str  # serving, loading, degraded
    error: str | None
    workers: dict[str, int | None]  # worker id -> the version it has loaded
    updated_at: UTCDateTime
    stale: bool


class DegradedPublic(BaseModel):
    """Why this replica does not serve the desired version, and when it tries again."""

    desired_version: int
    served_version: int | None
    error: str
    attempts: int
    since: UTCDateTime
    retry_in_s: float


class ModelPublic(BaseModel):
    name: str
    task: str
    description: str
    active_version: int | None  # the desired version, the same on every replica
    replica: str  # the replica that answered
    served_version: int | None  # what that replica's workers answer with
    degraded: DegradedPublic | None = None  # why served_version is not active_version
    acknowledged_by: list[str]  # fresh replicas serving active_version
    replicas: list[PlacementPublic]
    input: str | None = None
    labels: list[str] | None = None
    workers: list[int]  # ready workers serving the active version
    versions: list[ModelVersionPublic]


class ModelsPublic(BaseModel):
    data: list[ModelPublic]
    count: int
