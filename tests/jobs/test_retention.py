"""Retention rules on SQLite and PostgreSQL: the metric-history cap, pruning past
GENSERVE_MAX_VERSIONS_PER_MODEL (never an active, aliased or in-traffic version; a
registration that can prune nothing still happens), and the start-up sweep over an object
store (fsspec, file://) that leaves referenced, running and young artifacts alone."""

from __future__ import annotations

import os
import time
from pathlib import Path

from sqlalchemy import func, select

from app.db import Database
from app.jobs.store import JobStore, NewVersion
from app.services import versions
from app.services.retention import Retention
from app.settings import PRETRAINED_DIR
from app.storage import open_store
from app.tables import Dataset, JobMetric, Model, ModelVersion, TrainingJob
from tests.conftest import make_settings


def add_jobs(db: Database, count: int, name: str = "lm") -> list[int]:
    with db.session() as session:
        dataset = Dataset(
            name="d", kind="text", format="txt", sha256="d" * 64, size_bytes=1, path="x", meta={}
        )
        session.add(dataset)
        session.flush()
        jobs = [
            TrainingJob(kind="text-ngram", name=name, dataset_id=dataset.id, params={})
            for _ in range(count)
        ]
        session.add_all(jobs)
        session.flush()
        return [j.id for j in jobs]


def finish(store: JobStore, state: Path) -> tuple[int, Path]:
    """Claims the next job and registers an artifact it wrote under the state dir."""
    job = store.claim("r")
    assert job is not None
    key = f"artifacts/{job.name}/job-{job.id}"
    (state / key).mkdir(parents=True)
    (state / key / "config.json").write_text("{}")
    config = {"metrics": {}, "training": {"dataset": "d", "dataset_sha256": "d" * 64}}
    version = store.complete(
        job.id, "r", NewVersion("text-generation", key, "e" * 64, 2, config), []
    )
    assert version is not None
    return version, state / key


def test_history_keeps_the_first_and_latest_rows_within_the_cap(
    db: Database, tmp_path: Path
) -> None:
    store = JobStore(db, make_settings(tmp_path, max_job_metric_rows=10))
    [job_id] = add_jobs(db, 1)
    assert store.claim("r") is not None
    for beat in range(6):  # 60 evaluation rows, ten a heartbeat
        rows = [
            (step, {"step": step, "loss": 1 / (step + 1)})
            for step in range(beat * 10, beat * 10 + 10)
        ]
        store.heartbeat(job_id, "r", beat / 6, {}, rows)
    with db.session() as session:
        steps = list(
            session.scalars(
                select(JobMetric.step).where(JobMetric.job_id == job_id).order_by(JobMetric.step)
            )
        )
    assert len(steps) <= 10
    assert steps[0] == 0 and steps[-5:] == [55, 56, 57, 58, 59]
    assert steps == sorted(set(steps))


def test_pruning_spares_active_aliased_and_in_traffic_versions(
    db: Database, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    store = JobStore(db, make_settings(tmp_path, max_versions_per_model=2))
    add_jobs(db, 5)
    made = [finish(store, state) for _ in range(2)]
    with db.session() as session:  # v1 active, v2 aliased
        model = session.scalars(select(Model).where(Model.name == "lm")).one()
        versions.set_active(session, "lm", 1)
        versions.set_alias(session, model, "staging", 2)
    made.append(finish(store, state))  # v3: nothing may go, and it is registered anyway
    with db.session() as session:  # v3 in the traffic split
        session.scalars(select(Model)).one().traffic = {"1": 90, "3": 10}
    made.append(finish(store, state))  # v4: still nothing
    made.append(finish(store, state))  # v5: v4 goes, with its files
    assert [v for v, _ in made] == [1, 2, 3, 4, 5]
    with db.session() as session:
        left = list(session.scalars(select(ModelVersion.version).order_by(ModelVersion.version)))
        pointing = session.scalar(
            select(func.count()).where(TrainingJob.model_version_id.is_not(None))
        )
        lineage = session.scalars(select(ModelVersion.dataset_name)).all()
    assert left == [1, 2, 3, 5]
    assert pointing == 4  # v4's job no longer names a version
    assert set(lineage) == {"d"}
    assert [path.exists() for _, path in made] == [True, True, True, False, True]


def test_the_sweep_of_an_object_store_spares_referenced_running_and_young_artifacts(
    db: Database, tmp_path: Path
) -> None:
    bucket = tmp_path / "bucket"
    settings = make_settings(tmp_path, artifact_url=bucket.as_uri(), sweep_grace_s=3600)
    store = open_store(settings)
    assert store.remote
    source = PRETRAINED_DIR / "sentiment"
    running, finished = add_jobs(db, 2)
    jobs = JobStore(db, settings)
    jobs.claim("r")  # the first job is running, the second cancelled
    assert jobs.cancel(finished) == "queued"
    keys = {
        "referenced": "artifacts/lm/job-1000",
        "running": f"artifacts/lm/job-{running}",
        "finished": f"artifacts/lm/job-{finished}",
        "deleted-job": "artifacts/lm/job-4242",
        "young": "artifacts/other/imported-1",
    }
    for key in keys.values():
        store.publish(source, key)
    with db.session() as session:
        versions.register_trained(
            session,
            name="lm",
            task="text-generation",
            kind="text-ngram",
            artifact_path=keys["referenced"],
            sha256="f" * 64,
            size=2,
            params={},
            config={},
            dataset_id=None,
            activate=False,
        )
    old = time.time() - 7200
    for name in ("referenced", "running", "finished", "deleted-job"):
        for path in (bucket / keys[name]).iterdir():
            os.utime(path, (old, old))

    removed = Retention(db, settings).sweep()
    assert sorted(removed) == sorted([keys["finished"], keys["deleted-job"]])
    assert not (bucket / keys["finished"]).exists()
    for name in ("referenced", "running", "young"):
        assert store.published(keys[name]) is not None, name
