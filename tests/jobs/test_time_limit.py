"""GENSERVE_JOB_MAX_SECONDS (SQLite and PostgreSQL): a job past its time limit stops at its
next step, registers the model it has and ends succeeded, saying why; the limit counts from
the job's first start on the database's clock, so a resumed job does not get a new one."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from app.db import Database, db_now
from app.jobs.runner import JobExecution
from app.jobs.store import JobStore
from app.tables import JobMetric, TrainingJob
from tests.jobs.harness import PARAMS, job_row, queue_job, run_one, settings_for, version_count

REASON = "time limit (GENSERVE_JOB_MAX_SECONDS=3600)"


def queue_endless_job(db: Database, **values: object) -> int:
    job_id = queue_job(db)
    with db.session() as session:
        session.execute(
            update(TrainingJob)
            .where(TrainingJob.id == job_id)
            .values(params={**PARAMS, "max_steps": 10_000_000}, **values)
        )
    return job_id


def test_a_job_past_its_time_limit_registers_what_it_trained(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The limit passes during step 5 (moved there, so that slow machines agree)."""
    store = JobStore(db, settings_for(tmp_path, db.url, job_max_seconds=3600))
    job_id = queue_endless_job(db)
    on_step = JobExecution.on_step

    def expire_at_step_5(self: JobExecution, done: int, total: int, loss: Any) -> None:
        on_step(self, done, total, loss)
        if done == 5:
            self.deadline = time.monotonic()  # the hour is up

    monkeypatch.setattr(JobExecution, "on_step", expire_at_step_5)
    run = run_one(store)
    assert run.steps == [1, 2, 3, 4, 5]
    job = job_row(db, job_id)
    assert (job.status, job.error) == ("succeeded", None)
    assert job.metrics["stopped_reason"] == REASON
    assert version_count(db, "faulty-gpt") == 1
    with db.session() as session:  # the step it stopped at was evaluated, and recorded
        last = session.scalars(
            select(JobMetric).where(JobMetric.job_id == job_id).order_by(JobMetric.step.desc())
        ).first()
    assert last is not None and last.step == 5 == job.metrics["steps"]


def test_a_resumed_job_keeps_the_time_it_already_ran(db: Database, tmp_path: Path) -> None:
    """First started an hour ago (by the database's clock), limit 60 s: it stops at once."""
    store = JobStore(db, settings_for(tmp_path, db.url, job_max_seconds=60))
    job_id = queue_endless_job(db, started_at=db_now(-3600))
    run = run_one(store)
    job = job_row(db, job_id)
    assert run.steps == []
    assert job.status == "succeeded"
    assert job.metrics["stopped_reason"] == "time limit (GENSERVE_JOB_MAX_SECONDS=60)"


def test_no_limit_with_zero(db: Database, tmp_path: Path) -> None:
    store = JobStore(db, settings_for(tmp_path, db.url, job_max_seconds=0))
    job_id = queue_job(db)  # 40 steps
    run_one(store)
    job = job_row(db, job_id)
    assert job.status == "succeeded" and "stopped_reason" not in job.metrics
