"""Replicas starting together on an empty database: every `migrate` succeeds (one applies the
revisions while the others wait for its lock), on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.db import current_revision, downgrade, head_revision
from app.settings import REPO_ROOT

# Each process waits for the same instant, so the migrations really overlap.
SCRIPT = """
import sys, time
from app.db import migrate
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
migrate(sys.argv[1])
"""


@pytest.mark.parametrize("processes", [4])
def test_concurrent_migrations_on_an_empty_database_all_succeed(
    db_url: str, processes: int, tmp_path: Path
) -> None:
    downgrade(db_url, "base")  # empty: no alembic_version, no tables
    assert current_revision(db_url) is None
    start = time.time() + 3  # the interpreters take a while to import
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT, db_url, str(start)],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(processes)
    ]
    outputs = [run.communicate(timeout=120)[0] for run in runs]
    failed = [out for run, out in zip(runs, outputs, strict=True) if run.returncode != 0]
    assert not failed, failed[0][-3000:]
    assert current_revision(db_url) == head_revision()
