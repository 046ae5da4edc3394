from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, RootModel, model_validator

from app.schemas.common import UTCDateTime


class ParentPublic(BaseModel):
    """The version a fine-tuned version started from."""

    model: str
    version: int


class ModelVersionPublic(BaseModel):
    """One version and its lineage: dataset (kept by name and sha256 once deleted), parent
    version, the job that trained it and its params and metrics."""

    model_config = ConfigDict(from_attributes=True)

    version: int
    kind: str
    sha256: str
    size_bytes: int
    params: dict[str, Any]
    metrics: dict[str, Any]
    dataset_id: int | None
    dataset_name: str | None = None
    dataset_sha256: str | None = None
    parent: ParentPublic | None = None
    job_id: int | None = None
    source: str  # builtin, trained or imported
    is_active: bool
    aliases: list[str] = []  # the model's aliases that point at this version
    traffic: int = 0  # its weight in the model's traffic split (0: none, or no split)
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
    default: bool = False  # what requests of its task (and input) that name no model get
    default_vae: bool = False  # what /images/* requests that name no model get
    active_version: int | None  # the desired version, the same on every replica
    aliases: dict[str, int] = {}  # alias -> version, for `model: "name@alias"`
    traffic: dict[str, int] | None = None  # version -> weight for requests naming no version
    archived: bool = False  # DELETE /models/{name}: not listed by default, not served
    archived_at: UTCDateTime | None = None
    replica: str  # the replica that answered
    served_version: int | None  # what that replica's workers answer with
    degraded: DegradedPublic | None = None  # why served_version is not active_version
    acknowledged_by: list[str]  # fresh replicas serving active_version
    replicas: list[PlacementPublic]
    input: str | None = None
    labels: list[str] | None = None  # a classifier's labels; a conditional generator's classes
    workers: list[int]  # ready workers serving the active version
    loaded: list[int] = []  # versions this replica's workers hold: active, and beside it
    versions: list[ModelVersionPublic]


class ModelsPublic(BaseModel):
    data: list[ModelPublic]
    count: int


class AliasTarget(BaseModel):
    version: int = Field(ge=1, le=2**31 - 1)


class TrafficSplit(RootModel[dict[str, int]]):
    """{version: weight}: whole-number weights from 0 to 100 that add up to 100, or {}."""

    @model_validator(mode="after")
    def _check(self) -> TrafficSplit:
        split = self.root
        if len(split) > 16:
            raise ValueError("a traffic split has at most 16 versions")
        for version, weight in split.items():
            if not version.isdigit() or not 1 <= int(version) < 2**31:
                raise ValueError(f"{version!r} is not a version number")
            if not 0 <= weight <= 100:
                raise ValueError(f"the weight of version {version} must be 0 to 100, not {weight}")
        total = sum(split.values())
        if split and total != 100:
            raise ValueError(f"the weights must add up to 100, not {total}")
        return self

    def versions(self) -> dict[int, int]:
        return {int(v): w for v, w in self.root.items()}
