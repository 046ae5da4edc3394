"""Shared fixtures: real databases (SQLite and PostgreSQL), settings, a running app."""

from __future__ import annotations

import os

# One torch thread in the test process: on a busy 2-core machine, spinning OpenMP threads
# make small models a hundred times slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from app.db import Database, downgrade, migrate
from app.settings import REPO_ROOT, Settings

DATA_DIR = Path(os.environ.get("GENSERVE_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))


def _database_of_this_worker(url: str) -> str:
    """Under pytest-xdist (`make test` runs two at once) each worker migrates and drops its own
    PostgreSQL database, `<name>_gw0`, ..., created on first use (the role needs CREATEDB,
    which .ci/run grants); a lone pytest uses `url` itself."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not url or not worker:
        return url
    base = make_url(url)
    name = f"{base.database}_{worker}"
    try:
        engine = create_engine(base, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            query = text("SELECT 1 FROM pg_database WHERE datname = :name")
            if conn.scalar(query, {"name": name}) is None:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
    except Exception:
        return url  # unreachable: the PostgreSQL tests skip with the reason
    return base.set(database=name).render_as_string(hide_password=False)


POSTGRES_URL = _database_of_this_worker(os.environ.get("GENSERVE_TEST_POSTGRES_URL", ""))
if POSTGRES_URL:  # for the tests (and servers they start) that read the variable itself
    os.environ["GENSERVE_TEST_POSTGRES_URL"] = POSTGRES_URL


def _postgres_skip_reason() -> str | None:
    if not POSTGRES_URL:
        return "GENSERVE_TEST_POSTGRES_URL is not set (.ci/run starts PostgreSQL and sets it)"
    try:
        engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        return f"PostgreSQL at GENSERVE_TEST_POSTGRES_URL is unreachable: {exc}"
    return None


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A freshly migrated database of each kind; the schema comes from Alembic only."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'genserve.db'}"
    else:
        reason = _postgres_skip_reason()
        if reason:
            pytest.skip(reason)
        url = POSTGRES_URL
        downgrade(url, "base")
    migrate(url)
    yield url
    if request.param == "postgresql":
        downgrade(url, "base")


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.dispose()


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "state_dir": tmp_path / "state",
        "database_url": f"sqlite:///{tmp_path / 'state' / 'genserve.db'}",
        "workers": 1,
        "device": "cpu",
        "max_wait_ms": 2,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def wait_until_ready(get, timeout: float = 90) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if get("/readyz").status_code == 200:
                return
        except TimeoutError:
            raise  # the caller knows it will never be ready (the process exited)
        except Exception:
            pass
        time.sleep(0.2)
    raise TimeoutError("the service did not become ready")


@pytest.fixture
def centroid_kind(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """The small kind of tests/models/test_add_a_kind.py, in the registry for one test."""
    from models.kinds import KINDS
    from tests.models.test_add_a_kind import CENTROID

    monkeypatch.setitem(KINDS, CENTROID.name, CENTROID)
    return CENTROID
