"""Every state change of a training job (the one writer of `training_jobs` and its metric
history), each one a single transaction.

The database is the only channel between the API and the runners: a job is claimed with a
conditional UPDATE (plus SELECT ... FOR UPDATE SKIP LOCKED on PostgreSQL), kept alive by
heartbeats, and finished only by the runner that holds it. A job whose runner vanished goes
back to the queue and resumes from its checkpoint; after `job_max_attempts` claims it fails.

Every stamp (created, started, heartbeat, finished) and the staleness test use the database's
clock (`db_now`), never the process's: runners on machines whose clocks disagree by hours
still agree on which jobs are alive.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, case, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from app.db import Database, db_now
from app.services import versions
from app.settings import Settings
from app.storage import remove_artifacts
from app.tables import JobMetric, TrainingJob

log = logging.getLogger("genserve.jobs")
TERMINAL = ("succeeded", "failed", "cancelled")
PARENT_PARAM = "from"  # a fine-tune's params name its parent version: {"model", "version"}


def kind_params(params: dict[str, Any]) -> dict[str, Any]:
    """A job's params as its kind's dataclass takes them: without the parent reference."""
    return {k: v for k, v in params.items() if k != PARENT_PARAM}


@dataclass(frozen=True)
class NewVersion:
    """A trained artifact on disk, ready to be registered as a model version."""

    task: str
    artifact_path: str  # relative to the state dir
    sha256: str
    size: int
    config: dict[str, Any]


class JobLost(Exception):
    """The job is no longer ours: another runner reclaimed it, or it was finished."""


def add_job(
    session: Session,
    kind: str,
    name: str,
    dataset_id: int,
    params: dict[str, Any],
    activate: bool,
    owner: str | None = None,
) -> TrainingJob:
    """Queues a job inside the caller's session, so its admission checks share the transaction.

    `owner` is the fingerprint of the submitting API key (None: no key), for fair claiming.
    """
    job = TrainingJob(
        kind=kind,
        name=name,
        dataset_id=dataset_id,
        params=params,
        activate=activate,
        owner=owner or "",
        status="queued",
        created_at=db_now(),
        progress=0.0,
        metrics={},
        attempts=0,
        cancel_requested=False,
    )
    session.add(job)
    session.flush()
    return job


def delete_finished(session: Session, job_id: int) -> str | None:
    """Deletes a finished job and its metric history; returns the status it had (None: no
    such job). A queued or running job is left alone: the caller answers 409."""
    status = session.scalar(
        select(TrainingJob.status).where(TrainingJob.id == job_id).with_for_update()
    )
    if status in TERMINAL:
        session.execute(delete(JobMetric).where(JobMetric.job_id == job_id))
        session.execute(delete(TrainingJob).where(TrainingJob.id == job_id))
    return status


def jobs_using(session: Session, dataset_id: int) -> list[int]:
    """The queued and running jobs that train on the dataset."""
    return list(
        session.scalars(
            select(TrainingJob.id).where(
                TrainingJob.dataset_id == dataset_id, TrainingJob.status.not_in(TERMINAL)
            )
        )
    )


def forget_dataset(session: Session, dataset_id: int) -> None:
    """Finished jobs that used a dataset being deleted lose the reference (their versions
    keep its name and sha256)."""
    _set(session, TrainingJob.dataset_id == dataset_id, dataset_id=None)


def forget_version(session: Session, version_id: int) -> None:
    """The job that produced a version being deleted no longer points at it."""
    _set(session, TrainingJob.model_version_id == version_id, model_version_id=None)


def thin_history(session: Session, job_id: int, cap: int) -> int:
    """Keeps a job's history within `cap` rows: the first and the latest stay, and every
    other row of the middle goes, until it fits; old stretches of a long curve end up coarse,
    the recent ones fine. Returns the rows deleted."""
    count = session.scalar(select(func.count()).where(JobMetric.job_id == job_id)) or 0
    if count <= cap:
        return 0
    ids = list(
        session.scalars(
            select(JobMetric.id)
            .where(JobMetric.job_id == job_id)
            .order_by(JobMetric.step, JobMetric.id)
        )
    )
    doomed: set[int] = set()
    while len(ids) > cap:
        latest = max(cap // 2, 1)
        middle = ids[1:-latest]
        gone = set(middle[1::2]) if len(middle) > 1 else set(middle)
        doomed |= gone
        ids = [i for i in ids if i not in gone]
    if doomed:
        session.execute(delete(JobMetric).where(JobMetric.id.in_(doomed)))
    return len(doomed)


def _set(session: Session, *where: ColumnElement[bool], **values: Any) -> int:
    """One conditional UPDATE of training_jobs; the number of rows it changed."""
    result = session.execute(
        update(TrainingJob)
        .where(*where)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount


class JobStore:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

    def _claimable(self) -> ColumnElement[bool]:
        stale = db_now(-self.settings.job_stale_after_s)
        return or_(
            TrainingJob.status == "queued",
            and_(TrainingJob.status == "running", TrainingJob.heartbeat_at < stale),
        )

    def claim(self, runner_id: str) -> TrainingJob | None:
        """The next claimable job, now ours; None when there is none.

        Stale jobs first (they hold checkpoints). Then queued jobs round-robin by owner: the
        owner served least recently (latest start among its jobs, never served first) gets
        its oldest job. Concurrent runners may both see an owner as unserved, so the turn
        order is fair up to the number of runners.
        """
        with self.db.session() as session:
            claimable = self._claimable()
            earlier = aliased(TrainingJob)
            last_served = (
                select(func.max(earlier.started_at))
                .where(earlier.owner == TrainingJob.owner)
                .correlate(TrainingJob)
                .scalar_subquery()
            )
            job_id = session.scalar(
                select(TrainingJob.id)
                .where(claimable)
                .order_by(
                    case((TrainingJob.status == "running", 0), else_=1),
                    last_served.asc().nulls_first(),
                    TrainingJob.id,
                )
                .limit(1)
                .with_for_update(skip_locked=True)  # PostgreSQL; SQLite serialises writers
            )
            if job_id is None:
                return None
            at = db_now()
            claimed = _set(
                session,
                TrainingJob.id == job_id,
                claimable,
                status="running",
                runner_id=runner_id,
                heartbeat_at=at,
                attempts=TrainingJob.attempts + 1,
                started_at=func.coalesce(TrainingJob.started_at, at),
            )
            if claimed != 1:
                return None  # another runner won the race
            job = session.get(TrainingJob, job_id, populate_existing=True)
            assert job is not None
            if job.attempts > self.settings.job_max_attempts:
                job.status, job.finished_at = "failed", db_now()
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
        placement: dict[str, Any] | None = None,
    ) -> bool:
        """Records liveness, progress, new history rows and (when known) where the job runs;
        True if a cancel was asked for."""
        where = {} if placement is None else {"placement": placement}
        with self.db.session() as session:
            beat = _set(
                session,
                *self._held(job_id, runner_id),
                heartbeat_at=db_now(),
                progress=progress,
                metrics=metrics,
                **where,
            )
            if beat != 1:
                raise JobLost(f"job {job_id} is no longer held by {runner_id}")
            session.add_all(JobMetric(job_id=job_id, step=s, values=v) for s, v in rows)
            if rows:
                session.flush()
                thin_history(session, job_id, self.settings.max_job_metric_rows)
            return bool(
                session.scalar(select(TrainingJob.cancel_requested).where(TrainingJob.id == job_id))
            )

    def add_attempt(self, job_id: int, runner_id: str) -> None:
        """Counts a restart of the job's workers under the same claim (Ray Train restarting
        them after a node died) as an attempt, as a runner's restart is."""
        if self._update(*self._held(job_id, runner_id), attempts=TrainingJob.attempts + 1) != 1:
            raise JobLost(f"job {job_id} is no longer held by {runner_id}")

    def running_for(self, job_id: int) -> float:
        """Seconds since the job first started, by the database's clock (0 if it has not)."""
        with self.db.session() as session:
            started, current = session.execute(
                select(TrainingJob.started_at, db_now()).where(TrainingJob.id == job_id)
            ).one()
        return max(0.0, (current - started).total_seconds()) if started else 0.0

    def _update(self, *where: ColumnElement[bool], **values: Any) -> int:
        """`_set` in its own transaction."""
        with self.db.session() as session:
            return _set(session, *where, **values)

    def _held(self, job_id: int, runner_id: str) -> tuple[ColumnElement[bool], ...]:
        return (
            TrainingJob.id == job_id,
            TrainingJob.runner_id == runner_id,
            TrainingJob.status == "running",
        )

    def cancel(self, job_id: int) -> str | None:
        """A queued job is cancelled now; a running one is flagged, and its runner stops at
        the next heartbeat. Returns the status the job had (None: no such job); a finished
        job is left as it is."""
        with self.db.session() as session:
            job = TrainingJob.id == job_id
            if _set(
                session,
                job,
                TrainingJob.status == "queued",
                status="cancelled",
                error="cancelled by request",
                finished_at=db_now(),
            ):
                return "queued"
            if _set(session, job, TrainingJob.status == "running", cancel_requested=True):
                return "running"
            return session.scalar(select(TrainingJob.status).where(job))

    def finish(self, job_id: int, runner_id: str, status: str, error: str | None = None) -> None:
        """Ends a held job as cancelled or failed; success goes through `complete`."""
        self._update(
            *self._held(job_id, runner_id), status=status, error=error, finished_at=db_now()
        )

    def release(self, job_id: int, runner_id: str) -> None:
        """Back to the queue after an orderly stop; that claim does not count as an attempt."""
        self._update(
            *self._held(job_id, runner_id),
            status="queued",
            runner_id=None,
            attempts=TrainingJob.attempts - 1,
        )

    def requeue_runner(self, runner_id: str) -> int:
        """Requeues the jobs of a runner that died; their checkpoints let them resume."""
        count = self._update(
            TrainingJob.runner_id == runner_id,
            TrainingJob.status == "running",
            status="queued",
            runner_id=None,
        )
        if count:
            log.warning("requeued %d job(s) of runner %s", count, runner_id)
        return count

    def complete(
        self, job_id: int, runner_id: str, new: NewVersion, rows: list[tuple[int, dict[str, Any]]]
    ) -> int | None:
        """Registers the new model version and marks the job succeeded, in one transaction.

        Returns the version number, or None when a cancel was requested first: the job is
        then marked cancelled in that same transaction and nothing is registered (cancel
        always wins). Two jobs finishing the same name at once race for the version number;
        the loser retries with the next one.
        """
        for attempt in range(5):
            pruned: list[str] = []
            try:
                with self.db.session() as session:
                    version = self._register(session, job_id, runner_id, new, rows, pruned)
                remove_artifacts(self.settings, pruned)  # committed: the rows are gone
                return version
            except IntegrityError:
                if attempt == 4:
                    raise
        raise AssertionError("unreachable")

    def prune(self, session: Session, model_id: int) -> list[str]:
        """Enforces GENSERVE_MAX_VERSIONS_PER_MODEL after a registration, in its transaction;
        returns the artifact keys to delete once it committed."""
        keys = []
        for doomed in versions.prunable(session, model_id, self.settings.max_versions_per_model):
            forget_version(session, doomed.id)
            log.info("pruning version %d of model %d (version cap)", doomed.version, model_id)
            if (key := versions.delete_version(session, doomed)) is not None:
                keys.append(key)
        return keys

    def _register(
        self,
        session: Session,
        job_id: int,
        runner_id: str,
        new: NewVersion,
        rows: list[tuple[int, dict[str, Any]]],
        pruned: list[str],
    ) -> int | None:
        # The conditional UPDATE comes first: it takes the row lock (PostgreSQL) or the write
        # lock (SQLite) before anything is read, so a cancel either committed before it, and
        # is seen here, or waits for this transaction and finds the job finished.
        at = db_now()
        held = self._held(job_id, runner_id)
        if not _set(session, *held, TrainingJob.cancel_requested.is_not(True), finished_at=at):
            if not _set(
                session, *held, status="cancelled", error="cancelled by request", finished_at=at
            ):
                raise JobLost(f"job {job_id} is no longer held by {runner_id}")
            session.add_all(JobMetric(job_id=job_id, step=s, values=v) for s, v in rows)
            log.info("job %d was cancelled before its version was registered", job_id)
            return None
        session.add_all(JobMetric(job_id=job_id, step=s, values=v) for s, v in rows)
        job = session.get_one(TrainingJob, job_id, populate_existing=True)
        # what the job asked for, and what its training produced
        asked = {k: getattr(job, k) for k in ("name", "kind", "params", "dataset_id", "activate")}
        made = {k: getattr(new, k) for k in ("task", "artifact_path", "sha256", "size", "config")}
        trained_on = new.config.get("training", {})
        lineage = {
            "parent": job.params.get(PARENT_PARAM),
            "job_id": job_id,
            "dataset_name": trained_on.get("dataset"),
            "dataset_sha256": trained_on.get("dataset_sha256"),
        }
        version = versions.register_trained(session, **asked, **made, **lineage)
        job.status, job.progress = "succeeded", 1.0
        job.model_version_id = version.id
        job.metrics = {**job.metrics, **new.config.get("metrics", {})}
        log.info("job %d registered %s v%d", job_id, job.name, version.version)
        pruned += self.prune(session, version.model_id)
        return version.version
