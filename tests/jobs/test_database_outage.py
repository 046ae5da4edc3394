"""The database goes down while a job finishes, and while it runs: the job still ends
`succeeded` in its first attempt, with no step trained twice and one version registered
(SQLite and PostgreSQL; PostgreSQL through a TCP proxy the test cuts)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import models.artifacts
from app.db import Database
from app.jobs.store import JobStore
from tests.jobs.harness import (
    Run,
    assert_no_work_lost,
    job_row,
    queue_job,
    run_one,
    settings_for,
    version_count,
)
from tests.outage import Outage


@pytest.fixture
def outage(db: Database) -> Iterator[Outage]:
    cut = Outage(db.url)
    yield cut
    cut.close()


@pytest.mark.parametrize("when", ["finishing", "running"])
def test_a_job_survives_a_database_outage(
    db: Database, outage: Outage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    settings = settings_for(tmp_path, outage.url, job_heartbeat_s=0.1)
    runner_db = Database(outage.url)
    outage.watch(runner_db.engine)
    store = JobStore(runner_db, settings)
    job_id = queue_job(db)
    timers: list[threading.Timer] = []

    def start_outage(seconds: float) -> None:
        outage.down()
        timers.append(threading.Timer(seconds, outage.up))
        timers[-1].start()

    run = Run()
    if when == "finishing":  # down from the artifact write until 3 s later
        save = models.artifacts.save_artifact

        def save_then_outage(*args: Any, **kwargs: Any) -> tuple[str, int]:
            digest = save(*args, **kwargs)
            start_outage(3.0)
            return digest

        monkeypatch.setattr(models.artifacts, "save_artifact", save_then_outage)
    else:  # down from the 10th step to well after the loop ends
        on_step = run.steps

        class Steps(list):  # type: ignore[type-arg]
            def append(self, step: int) -> None:
                super().append(step)
                if step == 10:
                    start_outage(4.0)

        run.steps = Steps(on_step)
    try:
        run_one(store, run=run)
    finally:
        for timer in timers:
            timer.join()
        outage.up()
        runner_db.dispose()
    assert timers, "the outage never started"
    job = job_row(db, job_id)
    assert job.status == "succeeded", job.error
    assert job.attempts == 1
    assert_no_work_lost(run)
    assert version_count(db, "faulty-gpt") == 1
