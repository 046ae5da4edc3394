"""Cancel always wins: a cancel requested before a job registered its version ends the job
`cancelled` with nothing registered, however late it came (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import models.artifacts
from app.db import Database
from app.jobs.store import JobStore, NewVersion
from tests.jobs.harness import job_row, queue_job, run_one, settings_for, version_count


def test_a_cancel_during_the_artifact_save_wins(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cancel lands after the last step, while the artifact is written: the last ~2 s
    of a job, when no heartbeat will read it before the version is registered."""
    store = JobStore(db, settings_for(tmp_path, db.url, job_heartbeat_s=60))
    job_id = queue_job(db)
    save = models.artifacts.save_artifact
    answers = []

    def save_then_cancel(*args: object, **kwargs: object) -> tuple[str, int]:
        digest = save(*args, **kwargs)  # type: ignore[arg-type]
        answers.append(store.cancel(job_id))
        return digest

    monkeypatch.setattr(models.artifacts, "save_artifact", save_then_cancel)
    run_one(store)
    assert answers == ["running"]  # the API answered 200 cancel_requested
    job = job_row(db, job_id)
    assert (job.status, job.error, job.model_version_id) == (
        "cancelled",
        "cancelled by request",
        None,
    )
    assert version_count(db, "faulty-gpt") == 0
    assert not (tmp_path / "state" / "artifacts" / "faulty-gpt" / f"job-{job_id}").exists()


def test_cancel_and_complete_racing_never_register_a_cancelled_job(
    db: Database, tmp_path: Path
) -> None:
    """Whatever the interleaving: a cancel accepted while the job ran means no version; a
    cancel refused because the job had finished means exactly one."""
    store = JobStore(db, settings_for(tmp_path, db.url))
    rounds = 12
    for i in range(rounds):
        queue_job(db, name=f"race-{i}")
    for i in range(rounds):
        job = store.claim("r")
        assert job is not None
        new = NewVersion("text-generation", f"artifacts/x/job-{job.id}", "c" * 64, 1, {})
        barrier = threading.Barrier(2)
        answer: list[str | None] = []

        def cancel(job_id: int = job.id, barrier=barrier, answer=answer) -> None:  # type: ignore[no-untyped-def]
            barrier.wait()
            answer.append(store.cancel(job_id))

        thread = threading.Thread(target=cancel)
        thread.start()
        barrier.wait()
        version = store.complete(job.id, "r", new, [])
        thread.join()
        status = job_row(db, job.id).status
        registered = version_count(db, f"race-{i}")
        if answer == ["running"]:
            assert (status, version, registered) == ("cancelled", None, 0)
        else:
            assert answer == ["succeeded"]
            assert (status, version, registered) == ("succeeded", 1, 1)


def test_complete_after_a_cancel_request_registers_nothing(db: Database, tmp_path: Path) -> None:
    store = JobStore(db, settings_for(tmp_path, db.url))
    job_id = queue_job(db)
    assert store.claim("r") is not None
    assert store.cancel(job_id) == "running"
    new = NewVersion("text-generation", "artifacts/x/job-1", "c" * 64, 1, {})
    assert store.complete(job_id, "r", new, [(5, {"loss": 1.0})]) is None
    job = job_row(db, job_id)
    assert (job.status, job.model_version_id, job.finished_at is not None) == (
        "cancelled",
        None,
        True,
    )
    assert version_count(db, "faulty-gpt") == 0
    assert store.cancel(job_id) == "cancelled"
