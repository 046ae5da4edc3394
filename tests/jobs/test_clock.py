"""Job liveness runs on the database's clock (SQLite and PostgreSQL): runners whose own clocks
are hours apart neither steal each other's live jobs nor leave a dead one unclaimed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import app.jobs.store as store_module
from app.db import Database
from app.jobs.store import JobLost, JobStore
from app.tables import TrainingJob
from tests.conftest import make_settings
from tests.jobs.test_store import add_jobs

SKEW = timedelta(hours=3)


class Clock:
    """Python's clock as the store module sees it, moved by `offset`."""

    offset = timedelta(0)


class SkewedDatetime(datetime):
    @classmethod
    def now(cls, tz=None):  # type: ignore[no-untyped-def, override]
        return datetime.now(tz) + Clock.offset


@pytest.fixture(autouse=True)
def skewable(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # the Python clock the job store reads, if it reads one (it must not, for liveness)
    monkeypatch.setattr(store_module, "datetime", SkewedDatetime, raising=False)
    yield
    Clock.offset = timedelta(0)


@contextmanager
def clock(offset: timedelta) -> Iterator[None]:
    """Runs the block as a machine whose clock is `offset` away from the database's."""
    Clock.offset = offset
    try:
        yield
    finally:
        Clock.offset = timedelta(0)


def stores(db: Database, tmp_path: Path, stale_after_s: float) -> tuple[JobStore, JobStore]:
    settings = make_settings(tmp_path, job_stale_after_s=stale_after_s, job_max_attempts=5)
    return JobStore(db, settings), JobStore(db, settings)


@pytest.mark.parametrize("holder_skew", [-SKEW, SKEW], ids=["holder-behind", "holder-ahead"])
def test_a_live_job_is_not_stolen_by_a_runner_with_a_skewed_clock(
    db: Database, tmp_path: Path, holder_skew: timedelta
) -> None:
    holder, other = stores(db, tmp_path, stale_after_s=30)
    (job_id,) = add_jobs(db, 1)
    with clock(holder_skew):
        assert holder.claim("holder") is not None
        holder.heartbeat(job_id, "holder", 0.1, {}, [])
    with clock(-holder_skew):  # six hours away from the holder
        assert other.claim("other") is None
    with clock(holder_skew):
        holder.heartbeat(job_id, "holder", 0.2, {}, [])  # still ours: no JobLost


@pytest.mark.parametrize("holder_skew", [-SKEW, SKEW], ids=["holder-behind", "holder-ahead"])
def test_a_dead_job_is_reclaimed_after_the_stale_period_whatever_the_clocks(
    db: Database, tmp_path: Path, holder_skew: timedelta
) -> None:
    holder, other = stores(db, tmp_path, stale_after_s=1.0)
    (job_id,) = add_jobs(db, 1)
    with clock(holder_skew):
        assert holder.claim("holder") is not None
        holder.heartbeat(job_id, "holder", 0.1, {}, [])  # its last beat: then it dies
    with clock(-holder_skew):
        assert other.claim("other") is None  # not stale yet
        time.sleep(1.5)
        job = other.claim("other")
    assert job is not None and job.id == job_id and job.attempts == 2
    with clock(holder_skew), pytest.raises(JobLost):
        holder.heartbeat(job_id, "holder", 0.3, {}, [])


def test_job_stamps_come_from_the_database_clock(db: Database, tmp_path: Path) -> None:
    """started_at, heartbeat_at and finished_at of a job claimed on a machine 3 h ahead."""
    holder, _ = stores(db, tmp_path, stale_after_s=30)
    (job_id,) = add_jobs(db, 1)
    with clock(SKEW):
        assert holder.claim("holder") is not None
        holder.heartbeat(job_id, "holder", 0.1, {}, [])
        holder.finish(job_id, "holder", "failed", "boom")
    real = datetime.now(UTC)  # this machine's clock is the database's (SQLite; a local server)
    with db.session() as session:
        job = session.get_one(TrainingJob, job_id)
    for stamp in (job.started_at, job.heartbeat_at, job.finished_at):
        assert stamp is not None
        utc = stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp  # SQLite: naive UTC
        assert abs(utc - real) < timedelta(minutes=1), (stamp, real)
