"""Training jobs from the API's side: validate before queueing, list, show, cancel.

Everything a job could be refused for is checked here, so that a queued job fails only for
reasons nobody could know in advance. Parameter schemas are pydantic models built from the
dataclasses in models/training/trainers.py: one source for names, defaults and bounds.
Job rows are written by app.jobs.store only; this module decides what may be written.
"""

from __future__ import annotations

import dataclasses
import typing
from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from app.db import Database
from app.errors import Conflict, InvalidInput, NotFound, Overloaded
from app.jobs.store import PARENT_PARAM, TERMINAL, JobStore, add_job, delete_finished
from app.schemas.train import (
    FineTuneFrom,
    JobDetail,
    JobMetricPublic,
    JobPublic,
    KindPublic,
    ModelVersionRef,
    ParamPublic,
    TrainRequest,
)
from app.services.chat import check_template
from app.services.datasets import DatasetService
from app.services.retention import remove_job_dir
from app.settings import Settings
from app.tables import Dataset, Model, ModelVersion, TrainingJob
from models.kinds import KINDS, DataShape, FineTunable, Kind

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


@cache
def params_model(kind: str) -> type[BaseModel]:
    """A pydantic model mirroring the kind's parameter dataclass, refusing unknown keys."""
    cls = KINDS[kind].params
    hints = typing.get_type_hints(cls, include_extras=True)
    fields: dict[str, Any] = {
        f.name: (hints[f.name], Field(f.default, description=f.metadata.get("doc")))
        for f in dataclasses.fields(cls)
    }
    name = "".join(part.title() for part in kind.split("-")) + "Params"
    return create_model(name, __config__=ConfigDict(extra="forbid"), **fields)


def validate_params(kind: Kind, params: dict[str, Any]) -> dict[str, Any]:
    """The full parameter set (defaults filled in), or a 422 naming every bad field."""
    try:
        values = params_model(kind.name).model_validate(params).model_dump()
    except ValidationError as e:
        details = [
            {"loc": ["params", *e_["loc"]], "msg": e_["msg"], "type": e_["type"]}
            for e_ in e.errors(include_url=False, include_context=False, include_input=False)
        ]
        raise InvalidInput(f"invalid params for {kind.name}", details=details) from None
    try:
        kind.params(**values)  # cross-field checks (__post_init__)
        if values.get("chat_template"):
            check_template(values["chat_template"])
    except ValueError as e:
        raise InvalidInput(f"invalid params for {kind.name}: {e}") from None
    return values


def kind_public(kind: Kind) -> KindPublic:
    schema = params_model(kind.name).model_json_schema()
    params = [_param(name, prop) for name, prop in schema.get("properties", {}).items()]
    return KindPublic(
        kind=kind.name,
        task=kind.task,
        dataset_kinds=[kind.data],
        description=kind.description,
        params=params,
        json_schema=schema,
    )


def _param(name: str, prop: dict[str, Any]) -> ParamPublic:
    options = prop.get("anyOf", [prop])
    types = [o.get("type", "any") for o in options]
    enum = next((o["enum"] for o in options if "enum" in o), None)
    bound = next((o for o in options if "minimum" in o or "maximum" in o), {})
    return ParamPublic(
        name=name,
        type=" | ".join(t for t in types),
        default=prop.get("default"),
        minimum=bound.get("minimum"),
        maximum=bound.get("maximum"),
        exclusive_minimum=next(
            (o["exclusiveMinimum"] for o in options if "exclusiveMinimum" in o), None
        ),
        enum=enum,
        description=prop.get("description"),
    )


def job_public(job: TrainingJob, version: tuple[str, int] | None) -> JobPublic:
    """A job row as the API shows it: its columns, plus what is derived from them."""
    derived = {
        "owner": job.owner or None,
        "stopped_reason": (job.metrics or {}).get("stopped_reason"),
        "model_version": ModelVersionRef(name=version[0], version=version[1]) if version else None,
    }
    columns = {f: getattr(job, f) for f in JobPublic.model_fields if f not in derived}
    return JobPublic(**columns, **derived)


class TrainingService:
    def __init__(self, db: Database, datasets: DatasetService, settings: Settings) -> None:
        self.db = db
        self.datasets = datasets
        self.settings = settings
        self.jobs = JobStore(db, settings)  # every write to training_jobs goes through it

    def kinds(self) -> list[KindPublic]:
        return [kind_public(k) for k in KINDS.values()]

    def submit(self, request: TrainRequest, owner: str | None = None) -> JobPublic:
        """Validates and queues a job; `owner` is the submitting key's fingerprint."""
        kind = KINDS.get(request.kind)
        if kind is None:
            raise InvalidInput(
                f"unknown kind {request.kind!r}; one of: {', '.join(KINDS)}",
                details={"kinds": list(KINDS)},
            )
        parent, inherited = (None, {}) if request.from_ is None else self._parent(kind, request)
        params = validate_params(kind, {**request.params, **inherited})
        dataset = self.datasets.resolve(request.dataset)
        self._check_dataset(kind, dataset, params)
        if parent is not None:
            self._check_parent_data(kind, request.from_, parent[1], dataset)
        self._check_memory(kind, dataset, params)
        self._check_backend(params)
        if parent is not None:
            params[PARENT_PARAM] = parent[0]  # the runner loads its weights
        with self.db.session() as session:
            queued = session.scalar(
                select(func.count()).select_from(TrainingJob).where(TrainingJob.status == "queued")
            )
            if (queued or 0) >= self.settings.max_queued_jobs:
                raise Overloaded(
                    f"{queued} training jobs are queued already; retry once some have run",
                    retry_after=30,
                )
            model = session.scalar(select(Model).where(Model.name == request.name))
            if model is not None and model.task != kind.task:
                raise Conflict(
                    f"model {request.name!r} is a {model.task} model; {kind.name} makes "
                    f"{kind.task} models: choose another name"
                )
            job = add_job(
                session, kind.name, request.name, dataset.id, params, request.activate, owner
            )
            return job_public(job, None)

    def _parent(
        self, kind: Kind, request: TrainRequest
    ) -> tuple[tuple[dict[str, Any], dict[str, Any]], dict[str, Any]]:
        """((the parent's {"model", "version"}, its config), the params it fixes) for a
        fine-tune; a 422 for a parent that is missing or of another kind, a kind without
        weights to start from, or a param set to another value than the parent's."""
        ref: FineTuneFrom = request.from_  # type: ignore[assignment]
        if not issubclass(kind.params, FineTunable):
            reason = getattr(kind.params, "not_fine_tunable", "it has no weights to start from")
            raise InvalidInput(
                f"kind {kind.name} cannot be fine-tuned: {reason}", details={"loc": ["from"]}
            )
        with self.db.session() as session:
            where = [Model.name == ref.model]
            where.append(
                ModelVersion.version == ref.version if ref.version else ModelVersion.is_active
            )
            version = session.scalar(
                select(ModelVersion).join(Model, Model.id == ModelVersion.model_id).where(*where)
            )
            if version is None:
                which = f"version {ref.version}" if ref.version else "active version"
                raise InvalidInput(
                    f"cannot fine-tune from {ref.model!r}: no such model, or no {which} of it",
                    details={"loc": ["from"]},
                )
            number, parent_kind, config = version.version, version.kind, dict(version.config)
        if parent_kind != kind.name:
            raise InvalidInput(
                f"{ref.model} v{number} is a {parent_kind} model: a {kind.name} job cannot "
                "start from its weights",
                details={"loc": ["kind"], "kind": kind.name, "parent_kind": parent_kind},
            )
        fixed = kind.params.inherited(config)
        mismatched = [
            {"param": k, "requested": request.params[k], "parent": v}
            for k, v in fixed.items()
            if k in request.params and request.params[k] != v
        ]
        if mismatched:
            named = ", ".join(
                f"{m['param']} {m['requested']!r} (parent: {m['parent']!r})" for m in mismatched
            )
            raise InvalidInput(
                f"a fine-tune keeps the architecture of {ref.model} v{number}; these params "
                f"differ from it: {named}",
                code="architecture_mismatch",
                details=mismatched,
            )
        return ({"model": ref.model, "version": number}, config), fixed

    @staticmethod
    def _check_parent_data(kind: Kind, ref: Any, config: dict[str, Any], dataset: Dataset) -> None:
        """The dataset must suit the parent: its tokenizer, image size, classes."""
        problem = kind.params.unsuited(config, dataset.meta or {})
        if problem is not None:
            raise InvalidInput(
                f"{dataset.name!r} cannot fine-tune {ref.model}: {problem}",
                details={"loc": ["dataset"]},
            )

    def _check_backend(self, params: dict[str, Any]) -> None:
        """A GPU per worker is Ray Train's to give: a local runner's ranks share the GPUs it
        sees (GENSERVE_RUNNER_DEVICE)."""
        if self.settings.train_backend != "ray" and params.get("use_gpu"):
            raise InvalidInput(
                "use_gpu needs GENSERVE_TRAIN_BACKEND=ray; this server trains on its runners' "
                "own devices (GENSERVE_RUNNER_DEVICE)",
                details={"param": "use_gpu"},
            )

    @staticmethod
    def _check_dataset(kind: Kind, dataset: Dataset, params: dict[str, Any]) -> None:
        if dataset.kind != kind.data:
            raise InvalidInput(
                f"{kind.name} trains on {kind.data} datasets; dataset {dataset.id} "
                f"({dataset.name!r}) is {dataset.kind}"
            )
        meta = dataset.meta or {}
        labelled = bool(meta.get("labelled", True))
        if (kind.needs_labels or params.get("conditional")) and not labelled:
            raise InvalidInput(
                f"{kind.name} with these params needs labels; {dataset.name!r} has none"
            )
        size = meta.get("image_size")
        m = kind.size_multiple
        if size and m > 1 and (size[0] % m or size[1] % m):
            raise InvalidInput(
                f"{kind.name} needs image sides divisible by {m}; {dataset.name!r} has "
                f"{size[0]}x{size[1]} images"
            )
        block = params.get("block_size")
        chars = meta.get("chars")
        if block and chars and chars * min(params.get("test_fraction", 0.1), 0.5) <= block + 1:
            raise InvalidInput(
                f"{dataset.name!r} has {chars} characters: too few for block_size {block} "
                "in its validation split; lower block_size or upload more text"
            )

    def _check_memory(self, kind: Kind, dataset: Dataset, params: dict[str, Any]) -> None:
        """Refuses a job whose estimated peak training memory exceeds the per-job limit: it
        would be killed (or kill its runner) hours later, as an out-of-memory crash loop."""
        footprint = getattr(kind.params(**params), "footprint", None)
        if footprint is None:  # a kind without an estimate is admitted
            return
        need = footprint(DataShape.from_meta(dataset.num_records, dataset.meta or {}), kind.name)
        limit = self.settings.job_memory_limit()
        if need.bytes > limit:
            raise InvalidInput(
                f"{kind.name} with these params needs about {_gib(need.bytes)} to train "
                f"({need.params:,} parameters, on {dataset.name!r}); this server takes jobs "
                f"up to {_gib(limit)} (GENSERVE_JOB_MAX_MEMORY_BYTES): use a smaller model, "
                "batch or dataset",
                code="job_too_large",
                details={
                    "params": need.params,
                    "bytes": need.bytes,
                    "limit_bytes": limit,
                    "parts": need.parts,
                },
            )

    def list(
        self,
        status: str | None,
        kind: str | None,
        name: str | None,
        limit: int,
        offset: int,
    ) -> tuple[list[JobPublic], int]:
        filters = []
        if status is not None:
            filters.append(TrainingJob.status == status)
        if kind is not None:
            filters.append(TrainingJob.kind == kind)
        if name is not None:
            filters.append(TrainingJob.name == name)
        with self.db.session() as session:
            total = session.scalar(select(func.count()).select_from(TrainingJob).where(*filters))
            jobs = list(
                session.scalars(
                    select(TrainingJob)
                    .where(*filters)
                    .order_by(TrainingJob.id.desc())
                    .limit(limit)
                    .offset(offset)
                )
            )
            versions = self._versions(session, jobs)
            return [job_public(j, versions.get(j.id)) for j in jobs], total or 0

    @staticmethod
    def _versions(session: Any, jobs: list[TrainingJob]) -> dict[int, tuple[str, int]]:
        ids = {j.model_version_id: j.id for j in jobs if j.model_version_id is not None}
        if not ids:
            return {}
        rows = session.execute(
            select(ModelVersion.id, Model.name, ModelVersion.version)
            .join(Model, Model.id == ModelVersion.model_id)
            .where(ModelVersion.id.in_(ids))
        ).all()
        return {ids[vid]: (name, version) for vid, name, version in rows}

    def get(self, job_id: int) -> JobDetail:
        with self.db.session() as session:
            job = session.scalar(
                select(TrainingJob)
                .where(TrainingJob.id == job_id)
                .options(selectinload(TrainingJob.history))
            )
            if job is None:
                raise NotFound(f"no training job {job_id}")
            public = job_public(job, self._versions(session, [job]).get(job.id))
            history = [JobMetricPublic.model_validate(m) for m in job.history]
        return JobDetail(**public.model_dump(), history=history)

    def delete(self, job_id: int) -> None:
        """Deletes a finished job with its metric history, then its work dir; 409 while it is
        queued or running (cancel it first). The version it produced keeps its `job_id`."""
        with self.db.session() as session:
            status = delete_finished(session, job_id)
        if status is None:
            raise NotFound(f"no training job {job_id}")
        if status not in TERMINAL:
            raise Conflict(
                f"job {job_id} is {status}: cancel it first (POST /train/{job_id}/cancel), "
                "then delete it once it has ended",
                code="job_not_finished",
                details={"status": status},
            )
        remove_job_dir(self.settings, job_id)

    def cancel(self, job_id: int) -> JobDetail:
        """A queued job is cancelled now; a running one at its runner's next step."""
        status = self.jobs.cancel(job_id)
        if status is None:
            raise NotFound(f"no training job {job_id}")
        if status not in ("queued", "running"):
            raise Conflict(f"job {job_id} is already {status}")
        return self.get(job_id)
