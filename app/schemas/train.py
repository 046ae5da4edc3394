"""Bodies of /train: the request, jobs, their history, and the catalogue of kinds."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.common import RequestBody, UTCDateTime

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


class TrainRequest(RequestBody):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    kind: str = Field(description="a model family; GET /train/kinds lists them")
    dataset: int | str = Field(description="dataset id, or the name of a unique dataset")
    name: str = Field(pattern=NAME_PATTERN, description="model name the version registers under")
    params: dict[str, Any] = Field(default_factory=dict, description="see GET /train/kinds")
    activate: bool = Field(False, description="serve the new version as soon as it is trained")
    from_: FineTuneFrom | None = Field(
        None,
        alias="from",
        description="fine-tune: start from this version's weights (architecture params are "
        "the parent's; a different value set in params is refused)",
    )


class FineTuneFrom(RequestBody):
    """The version a fine-tune starts from."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(pattern=NAME_PATTERN, description="a model name")
    version: int | None = Field(None, ge=1, description="a version; default: the active one")


class ModelVersionRef(BaseModel):
    name: str
    version: int


class JobMetricPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    step: int
    values: dict[str, Any]
    created_at: UTCDateTime


class JobPublic(BaseModel):
    id: int
    kind: str
    name: str
    dataset_id: int | None
    params: dict[str, Any]
    activate: bool
    owner: str | None = Field(
        None, description="fingerprint of the API key that submitted it (never the key)"
    )
    status: str  # queued | running | succeeded | failed | cancelled
    progress: float
    metrics: dict[str, Any]
    error: str | None
    stopped_reason: str | None = Field(
        None, description="why a succeeded job ended before its steps or epochs were done"
    )
    placement: dict[str, Any] | None = Field(
        None, description="where it ran: backend (local or ray), node ids, devices"
    )
    attempts: int
    cancel_requested: bool
    runner_id: str | None
    created_at: UTCDateTime
    started_at: UTCDateTime | None
    finished_at: UTCDateTime | None
    model_version: ModelVersionRef | None = None


class JobDetail(JobPublic):
    history: list[JobMetricPublic]


class JobsPublic(BaseModel):
    data: list[JobPublic]
    count: int  # all jobs that match the filters, not only this page


class ParamPublic(BaseModel):
    name: str
    type: str
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None
    enum: list[Any] | None = None
    description: str | None = None


class KindPublic(BaseModel):
    kind: str
    task: str
    dataset_kinds: list[str]
    description: str
    params: list[ParamPublic]
    json_schema: dict[str, Any]


class KindsPublic(BaseModel):
    data: list[KindPublic]
    count: int
