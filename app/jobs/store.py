"""Every state change of a training job, each one a single transaction.

The database is the only channel between the API and the runners: a job is claimed with a
conditional UPDATE (plus SELECT ... FOR UPDATE SKIP LOCKED on PostgreSQL), kept alive by
heartbeats, and finished only by the runner that holds it. A job whose runner vanished goes
back to the queue and resumes from its checkpoint; after `job_max_attempts` claims it fails.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from app.db import Database
from app.settings import Settings
from app.tables import JobMetric, Model, ModelVersion, TrainingJob

log = logging.getLogger("genserve.jobs")
TERMINAL = ("succeeded", "failed", "cancelled")


class JobLost(Exception):
    """The job is no longer ours: another runner reclaimed it, or it was finished."""


def now() -> datetime:
    return datetime.now(UTC)


class JobStore:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

    def _claimable(self) -> ColumnElement[bool]:
        stale = now() - timedelta(seconds=self.settings.job_stale_after_s)
        return or_(
            TrainingJob.status == "queued",
            and_(TrainingJob.status == "running", TrainingJob.heartbeat_at < stale),
        )

    def claim(self, runner_id: str) -> TrainingJob | None:
        """The oldest claimable job, now ours; None when there is none."""
        with self.db.session() as session:
            claimable = self._claimable()
            job_id = session.scalar(
                select(TrainingJob.id)
                .where(claimable)
                .order_by(TrainingJob.id)
                .limit(1)
                .with_for_update(skip_locked=True)  # PostgreSQL; SQLite serialises writers
            )
            if job_id is None:
                return None
            at = now()
            claimed = session.execute(
                update(TrainingJob)
                .where(TrainingJob.id == job_id, claimable)
                .values(
                    status="running",
                    runner_id=runner_id,
                    heartbeat_at=at,
                    attempts=TrainingJob.attempts + 1,
                    started_at=func.coalesce(TrainingJob.started_at, at),
                )
                .execution_options(synchronize_session=False)
            )
            if claimed.rowcount != 1:
                return None  # another runner won the race
            job = session.get(TrainingJob, job_id, populate_existing=True)
            assert job is not None
            if job.attempts > self.settings.job_max_attempts:
                job.status, job.finished_at = "failed", at
                job.error = (
                    f"the runner stopped {job.attempts - 1} times during this job "
                    f"(limit {self.settings.job_max_attempts}); see the server log"
                )
                log.error("job %d failed: %s", job.id, job.error)
                return None
            log.info("runner %s claimed job %d (attempt %d)", runner_id, job.id, job.attempts)
            return job

    def heartbeat(
        self,
        job_id: int,
        runner_id: str,
        progress: float,
        metrics: dict[str, Any],
        rows: list[tuple[int, dict[str, Any]]],
    ) -> bool:
        """Records liveness, progress and new history rows; True if a cancel was asked for."""
        with self.db.session() as session:
            result = session.execute(
                update(TrainingJob)
                .where(
                    TrainingJob.id == job_id,
                    TrainingJob.runner_id == runner_id,
                    TrainingJob.status == "running",
                )
                .values(heartbeat_at=now(), progress=progress, metrics=metrics)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:
                raise JobLost(f"job {job_id} is no longer held by {runner_id}")
            session.add_all(JobMetric(job_id=job_id, step=s, values=v) for s, v in rows)
            return bool(
                session.scalar(select(TrainingJob.cancel_requested).where(TrainingJob.id == job_id))
            )

    def finish(self, job_id: int, runner_id: str, status: str, error: str | None = None) -> None:
        with self.db.session() as session:
            session.execute(
                update(TrainingJob)
                .where(TrainingJob.id == job_id, TrainingJob.runner_id == runner_id)
                .where(TrainingJob.status == "running")
                .values(status=status, error=error, finished_at=now())
                .execution_options(synchronize_session=False)
            )

    def release(self, job_id: int, runner_id: str) -> None:
        """Back to the queue after an orderly stop; that claim does not count as an attempt."""
        with self.db.session() as session:
            session.execute(
                update(TrainingJob)
                .where(TrainingJob.id == job_id, TrainingJob.runner_id == runner_id)
                .where(TrainingJob.status == "running")
                .values(status="queued", runner_id=None, attempts=TrainingJob.attempts - 1)
                .execution_options(synchronize_session=False)
            )

    def requeue_runner(self, runner_id: str) -> int:
        """Requeues the jobs of a runner that died; their checkpoints let them resume."""
        with self.db.session() as session:
            result = session.execute(
                update(TrainingJob)
                .where(TrainingJob.runner_id == runner_id, TrainingJob.status == "running")
                .values(status="queued", runner_id=None)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount:
                log.warning("requeued %d job(s) of runner %s", result.rowcount, runner_id)
            return result.rowcount

    def complete(
        self,
        job_id: int,
        runner_id: str,
        *,
        task: str,
        artifact_path: str,
        sha256: str,
        size: int,
        config: dict[str, Any],
        rows: list[tuple[int, dict[str, Any]]],
    ) -> int:
        """Registers the new model version and marks the job succeeded, in one transaction.

        Returns the version number. Two jobs finishing the same name at once race for the
        version number; the loser retries with the next one.
        """
        for attempt in range(5):
            try:
                return self._complete(
                    job_id, runner_id, task, artifact_path, sha256, size, config, rows
                )
            except IntegrityError:
                if attempt == 4:
                    raise
        raise AssertionError("unreachable")

    def _complete(
        self,
        job_id: int,
        runner_id: str,
        task: str,
        artifact_path: str,
        sha256: str,
        size: int,
        config: dict[str, Any],
        rows: list[tuple[int, dict[str, Any]]],
    ) -> int:
        with self.db.session() as session:
            job = session.get(TrainingJob, job_id, with_for_update=True, populate_existing=True)
            if job is None or job.runner_id != runner_id or job.status != "running":
                raise JobLost(f"job {job_id} is no longer held by {runner_id}")
            model = session.scalar(select(Model).where(Model.name == job.name))
            if model is None:
                model = Model(name=job.name, task=task, description=config.get("description", ""))
                session.add(model)
                session.flush()
            elif model.task != task:
                raise ValueError(f"model {job.name!r} is a {model.task} model, not {task}")
            latest = session.scalar(
                select(func.max(ModelVersion.version)).where(ModelVersion.model_id == model.id)
            )
            version = ModelVersion(
                model_id=model.id,
                version=(latest or 0) + 1,
                kind=job.kind,
                artifact_path=artifact_path,
                sha256=sha256,
                size_bytes=size,
                params=job.params,
                metrics=config.get("metrics", {}),
                config=config,
                dataset_id=job.dataset_id,
                source="trained",
                is_active=False,
            )
            session.add(version)
            session.flush()
            if job.activate:
                session.execute(
                    update(ModelVersion)
                    .where(ModelVersion.model_id == model.id, ModelVersion.is_active)
                    .values(is_active=False)
                    .execution_options(synchronize_session=False)
                )
                session.flush()
                version.is_active = True
            session.add_all(JobMetric(job_id=job_id, step=s, values=v) for s, v in rows)
            job.status, job.progress, job.finished_at = "succeeded", 1.0, now()
            job.model_version_id = version.id
            job.metrics = {**job.metrics, **config.get("metrics", {})}
            log.info("job %d registered %s v%d", job_id, job.name, version.version)
            return version.version
