"""The job store on SQLite and PostgreSQL: exclusive claims, reclaiming stale jobs, the
attempt limit, heartbeats that notice a lost job, cancels, and registration of finished ones."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import select, update

from app.db import Database, db_now
from app.jobs.store import JobLost, JobStore, NewVersion, add_job
from app.tables import Dataset, JobMetric, ModelVersion, TrainingJob
from tests.conftest import make_settings


@pytest.fixture
def store(db: Database, tmp_path: Path) -> JobStore:
    settings = make_settings(tmp_path, job_stale_after_s=30, job_max_attempts=2)
    return JobStore(db, settings)


def add_jobs(db: Database, count: int, **values: object) -> list[int]:
    with db.session() as session:
        dataset = Dataset(
            name="d", kind="text", format="txt", sha256="a" * 64, size_bytes=1, path="x", meta={}
        )
        session.add(dataset)
        session.flush()
        jobs = [
            TrainingJob(kind="text-ngram", name=f"m{i}", dataset_id=dataset.id, params={}, **values)
            for i in range(count)
        ]
        session.add_all(jobs)
        session.flush()
        return [j.id for j in jobs]


def test_concurrent_runners_claim_each_job_once(db: Database, store: JobStore) -> None:
    ids = add_jobs(db, 30)
    claimed: dict[str, list[int]] = {f"r{i}": [] for i in range(4)}

    def run(runner: str) -> None:
        while (job := store.claim(runner)) is not None:
            claimed[runner].append(job.id)

    threads = [threading.Thread(target=run, args=(r,)) for r in claimed]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = sorted(j for jobs in claimed.values() for j in jobs)
    assert every == ids  # each exactly once
    with db.session() as session:
        rows = session.scalars(select(TrainingJob)).all()
        assert {j.status for j in rows} == {"running"}
        assert {j.attempts for j in rows} == {1}


def test_a_stale_job_is_reclaimed_and_a_live_one_is_not(db: Database, store: JobStore) -> None:
    stale, live = add_jobs(db, 2, status="running", runner_id="gone", attempts=1)
    with db.session() as session:
        session.execute(
            update(TrainingJob).where(TrainingJob.id == stale).values(heartbeat_at=db_now(-60))
        )
        session.execute(
            update(TrainingJob).where(TrainingJob.id == live).values(heartbeat_at=db_now())
        )
    job = store.claim("new")
    assert job is not None and job.id == stale and job.attempts == 2
    assert store.claim("new") is None
    with pytest.raises(JobLost):  # the old runner's heartbeat finds it gone
        store.heartbeat(stale, "gone", 0.5, {}, [])


def test_too_many_attempts_fail_the_job(db: Database, store: JobStore) -> None:
    (job_id,) = add_jobs(db, 1)
    for _ in range(2):
        assert store.claim("r") is not None
        store.requeue_runner("r")  # the runner died
    assert store.claim("r") is None
    with db.session() as session:
        job = session.get(TrainingJob, job_id)
        assert job is not None and job.status == "failed"
        assert "runner stopped 2 times" in (job.error or "")


def test_orderly_release_does_not_count_as_an_attempt(db: Database, store: JobStore) -> None:
    add_jobs(db, 1)
    for _ in range(5):
        job = store.claim("r")
        assert job is not None and job.attempts == 1
        store.release(job.id, "r")


def test_heartbeat_records_progress_history_and_cancel(db: Database, store: JobStore) -> None:
    (job_id,) = add_jobs(db, 1)
    assert store.claim("r") is not None
    assert store.heartbeat(job_id, "r", 0.25, {"loss": 2.0}, [(10, {"val_loss": 2.1})]) is False
    with db.session() as session:
        session.execute(
            update(TrainingJob).where(TrainingJob.id == job_id).values(cancel_requested=True)
        )
    assert store.heartbeat(job_id, "r", 0.5, {"loss": 1.5}, []) is True
    with db.session() as session:
        job = session.get(TrainingJob, job_id)
        assert job is not None and (job.progress, job.metrics) == (0.5, {"loss": 1.5})
        rows = session.scalars(select(JobMetric).where(JobMetric.job_id == job_id)).all()
        assert [(r.step, r.values) for r in rows] == [(10, {"val_loss": 2.1})]


def test_complete_registers_versions_and_activates(db: Database, store: JobStore) -> None:
    with db.session() as session:
        dataset = Dataset(
            name="d", kind="text", format="txt", sha256="b" * 64, size_bytes=1, path="x", meta={}
        )
        session.add(dataset)
        session.flush()
        for activate in (True, False, True):
            session.add(
                TrainingJob(
                    kind="text-ngram",
                    name="lm",
                    dataset_id=dataset.id,
                    params={"order": 3},
                    activate=activate,
                )
            )
    versions = []
    while (job := store.claim("r")) is not None:
        config = {"description": "x", "metrics": {"val_loss": 1.0}}
        versions.append(
            store.complete(
                job.id,
                "r",
                NewVersion("text-generation", f"artifacts/lm/job-{job.id}", "c" * 64, 10, config),
                [],
            )
        )
    assert versions == [1, 2, 3]
    with db.session() as session:
        rows = session.scalars(select(ModelVersion).order_by(ModelVersion.version)).all()
        assert [v.is_active for v in rows] == [False, False, True]
        assert rows[0].params == {"order": 3} and rows[0].dataset_id is not None
        jobs = session.scalars(select(TrainingJob)).all()
        assert {j.status for j in jobs} == {"succeeded"}
        assert all(j.model_version_id is not None for j in jobs)
    with pytest.raises(JobLost):  # finished: nobody can complete it again
        store.complete(1, "r", NewVersion("text-generation", "a", "d" * 64, 1, {}), [])


def test_add_job_queues_and_cancel_follows_the_status(db: Database, store: JobStore) -> None:
    (running,) = add_jobs(db, 1)
    with db.session() as session:
        dataset_id = session.get_one(TrainingJob, running).dataset_id
        assert dataset_id is not None
        queued = add_job(session, "text-ngram", "m", dataset_id, {"order": 3}, activate=True).id
    claimed = store.claim("r")
    assert claimed is not None and claimed.id == running
    assert store.cancel(queued) == "queued"  # cancelled at once
    assert store.cancel(running) == "running"  # flagged: its runner stops at the next beat
    assert store.heartbeat(running, "r", 0.1, {}, []) is True
    assert store.cancel(queued) == "cancelled" and store.cancel(10**6) is None
    with db.session() as session:
        job = session.get_one(TrainingJob, queued)
        assert (job.status, job.error) == ("cancelled", "cancelled by request")
        assert (job.params, job.activate, job.finished_at is not None) == ({"order": 3}, True, True)
