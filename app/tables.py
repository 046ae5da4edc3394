"""ORM mapping of the schema that migrations/ creates (tables never come from `create_all`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(32))  # text, labelled-text, images
    format: Mapped[str] = mapped_column(String(32))  # txt, csv, tsv, jsonl, npz, idx, zip, builtin
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    path: Mapped[str] = mapped_column(Text)
    num_records: Mapped[int | None] = mapped_column(Integer)
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    builtin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TrainingJob(Base):
    __tablename__ = "training_jobs"
    __table_args__ = (
        Index("ix_training_jobs_status", "status"),
        Index("ix_training_jobs_name", "name"),
        Index("ix_training_jobs_kind", "kind"),
        Index("ix_training_jobs_owner_started", "owner", "started_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id"))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    activate: Mapped[bool] = mapped_column(Boolean, default=False)
    # who submitted it: the fingerprint of its API key ('' without one), never the key itself
    owner: Mapped[str] = mapped_column(String(64), default="", server_default="")
    status: Mapped[str] = mapped_column(String(16), default="queued")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)  # latest values
    # where it ran: {"backend": "local" | "ray", "nodes": [...], "devices": [...]}
    placement: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    error: Mapped[str | None] = mapped_column(Text)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # claims by a runner so far
    runner_id: Mapped[str | None] = mapped_column(String(128))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    checkpoint_path: Mapped[str | None] = mapped_column(Text)
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    history: Mapped[list[JobMetric]] = relationship(
        back_populates="job", order_by="JobMetric.step", cascade="all, delete-orphan"
    )


class JobMetric(Base):
    """One row per evaluation point, so loss curves survive restarts."""

    __tablename__ = "training_job_metrics"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(
        ForeignKey("training_jobs.id", ondelete="CASCADE"), index=True
    )
    step: Mapped[int] = mapped_column(Integer)
    values: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    job: Mapped[TrainingJob] = relationship(back_populates="history")


class Model(Base):
    __tablename__ = "models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    task: Mapped[str] = mapped_column(String(32))  # classification, text-generation, ...
    description: Mapped[str] = mapped_column(Text, default="")
    # canary split of requests that name no version: {"3": 90, "4": 10}; None: the active one
    traffic: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    archived_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    versions: Mapped[list[ModelVersion]] = relationship(
        back_populates="model", order_by="ModelVersion.version", cascade="all, delete-orphan"
    )
    aliases: Mapped[list[ModelAlias]] = relationship(
        back_populates="model", order_by="ModelAlias.alias", cascade="all, delete-orphan"
    )


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("model_id", "version", name="uq_model_versions_model_version"),
        # At most one active version per model, enforced by the database itself.
        Index(
            "uq_model_versions_one_active",
            "model_id",
            unique=True,
            sqlite_where=text("is_active"),
            postgresql_where=text("is_active"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(64))
    artifact_path: Mapped[str] = mapped_column(Text)  # "builtin:<dir>" or relative to state dir
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id"))
    source: Mapped[str] = mapped_column(String(16), default="trained")  # builtin|trained|imported
    is_active: Mapped[bool] = mapped_column(Boolean, default=False)
    # lineage by value, so it outlives the rows it names: {"model": name, "version": v}
    parent: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    job_id: Mapped[int | None] = mapped_column(Integer)  # the job that trained it
    dataset_name: Mapped[str | None] = mapped_column(String(200))
    dataset_sha256: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    model: Mapped[Model] = relationship(back_populates="versions")


class ModelAlias(Base):
    """A name for one version of a model (`staging`, `champion`), as in MLflow's registry."""

    __tablename__ = "model_aliases"
    __table_args__ = (UniqueConstraint("model_id", "alias", name="uq_model_aliases_model_alias"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    alias: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    model: Mapped[Model] = relationship(back_populates="aliases")


class ModelPlacement(Base):
    """What one replica serves of one model, and why not the desired version if it does not.

    The desired version is `model_versions.is_active`; replicas only ever write these rows.
    """

    __tablename__ = "model_placements"
    __table_args__ = (
        UniqueConstraint("replica_id", "model_id", name="uq_model_placements_replica_model"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    replica_id: Mapped[str] = mapped_column(String(200))
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    desired_version: Mapped[int | None] = mapped_column(Integer)
    served_version: Mapped[int | None] = mapped_column(Integer)
    workers: Mapped[dict[str, Any]] = mapped_column(default=dict)  # worker id -> version|None
    state: Mapped[str] = mapped_column(String(16))  # serving, loading, degraded
    error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
