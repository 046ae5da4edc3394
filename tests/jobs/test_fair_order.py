"""Queued jobs are claimed round-robin by the API key that submitted them (SQLite and
PostgreSQL): one key's hundred jobs never starve another key's one."""

from __future__ import annotations

import time
from pathlib import Path

from app.db import Database
from app.jobs.store import JobStore, NewVersion, add_job
from app.tables import Dataset
from tests.conftest import make_settings


def submit(db: Database, owners: list[str | None]) -> list[int]:
    """One job per entry, in order, each recording the fingerprint of its key as owner."""
    with db.session() as session:
        dataset = Dataset(
            name="d", kind="text", format="txt", sha256="f" * 64, size_bytes=1, path="x", meta={}
        )
        session.add(dataset)
        session.flush()
        return [
            add_job(session, "text-ngram", f"m{i}", dataset.id, {}, False, owner=owner).id
            for i, owner in enumerate(owners)
        ]


def claim_all(store: JobStore, finish: bool) -> list[int]:
    """The order one runner takes every job in; `finish`: each ends before the next claim."""
    order = []
    while (job := store.claim("r")) is not None:
        time.sleep(0.005)  # SQLite's clock counts milliseconds: no two claims in one
        order.append(job.id)
        if finish:
            new = NewVersion("text-generation", f"artifacts/m/job-{job.id}", "c" * 64, 1, {})
            store.complete(job.id, "r", new, [])
    return order


def test_one_runner_serves_the_keys_in_turn(db: Database, tmp_path: Path) -> None:
    store = JobStore(db, make_settings(tmp_path))
    *a, b = submit(db, ["key-a"] * 5 + ["key-b"])  # A's five jobs, then B's one
    assert claim_all(store, finish=True) == [a[0], b, *a[1:]]


def test_jobs_still_running_count_as_served(db: Database, tmp_path: Path) -> None:
    """Several runners (claims without finishing): each key's next job waits for the others."""
    store = JobStore(db, make_settings(tmp_path))
    ids = submit(db, ["a", "a", "a", "b", "b", "c"])
    assert claim_all(store, finish=False) == [ids[0], ids[3], ids[5], ids[1], ids[4], ids[2]]


def test_without_keys_jobs_run_in_submission_order(db: Database, tmp_path: Path) -> None:
    store = JobStore(db, make_settings(tmp_path))
    ids = submit(db, [None] * 4)
    assert claim_all(store, finish=True) == ids
