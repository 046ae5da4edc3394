"""A real job runner's work, in the test process: one tiny GPT job claimed and trained by
`JobExecution` on the calling thread, against a real database, so a test can inject faults
(storage, database, a late cancel) with monkeypatch and watch every step."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from app.db import Database
from app.jobs.runner import JobExecution
from app.jobs.store import JobStore, add_job
from app.settings import Settings
from app.tables import Dataset, Model, ModelVersion, TrainingJob
from tests.conftest import make_settings
from tests.tiny_models import TINY_GPT_PARAMS

STEPS = 40
PARAMS = {**TINY_GPT_PARAMS, "max_steps": STEPS, "eval_every": 10}  # a checkpoint every 10


def settings_for(tmp_path: Path, db_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": db_url,
        "job_heartbeat_s": 0.1,
        "runner_threads": 1,
    }
    return make_settings(tmp_path, **{**values, **overrides})


def queue_job(db: Database, name: str = "faulty-gpt") -> int:
    """A text-gpt job on the built-in tinyshakespeare."""
    with db.session() as session:
        dataset = session.scalar(select(Dataset).where(Dataset.name == "tinyshakespeare"))
        if dataset is None:
            dataset = Dataset(
                name="tinyshakespeare",
                kind="text",
                format="builtin",
                sha256="e" * 64,
                size_bytes=1,
                path="builtin:tinyshakespeare",
                builtin=True,
                meta={},
            )
            session.add(dataset)
            session.flush()
        return add_job(session, "text-gpt", name, dataset.id, PARAMS, activate=False).id


@dataclass
class Run:
    """What happened: every step the loop reported, in order."""

    steps: list[int] = field(default_factory=list)
    execution: JobExecution | None = None


def run_one(
    store: JobStore, runner_id: str = "test-runner", stop: Any = None, run: Run | None = None
) -> Run:
    """Claims the next job and runs it to its end on this thread; `run` fills as it goes."""
    job = store.claim(runner_id)
    assert job is not None, "no job to claim"
    run = run or Run()
    execution = JobExecution(
        job, store, store.settings, runner_id, "cpu", stop or threading.Event()
    )
    report = execution.on_step

    def on_step(done: int, total: int, loss: Any) -> None:
        run.steps.append(done)
        report(done, total, loss)

    execution.on_step = on_step  # type: ignore[method-assign]
    run.execution = execution
    execution.run()
    return run


def job_row(db: Database, job_id: int) -> TrainingJob:
    with db.session() as session:
        return session.get_one(TrainingJob, job_id)


def version_count(db: Database, name: str) -> int:
    with db.session() as session:
        return len(
            session.scalars(select(ModelVersion).join(Model).where(Model.name == name)).all()
        )


def assert_no_work_lost(run: Run) -> None:
    """Each step trained once, in order, through to the last: nothing was redone."""
    assert run.steps == list(range(1, STEPS + 1)), run.steps
