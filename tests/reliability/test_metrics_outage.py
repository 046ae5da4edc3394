"""/metrics with the database down or hung: the job counts it reads from the database are
left out (genserve_training_jobs_up 0), and the scrape answers at once, with everything the
API process knows, instead of failing or waiting for the database."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import event

from app.main import create_app
from app.metrics import JOBS, JobCounts
from tests.conftest import wait_until_ready
from tests.e2e.server import metric
from tests.outage import Outage
from tests.tiny_models import tiny_settings

QUEUED = 'genserve_training_jobs{status="queued"}'


def scrape(client: TestClient) -> tuple[str, float]:
    """/metrics, fresh (no read cached from an earlier scrape), and how long it took."""
    JOBS.read_at = float("-inf")
    started = time.monotonic()
    answer = client.get("/metrics")
    assert answer.status_code == 200
    return answer.text, time.monotonic() - started


def test_metrics_answer_without_job_counts_while_the_database_is_down_or_hung(
    db_url: str, tmp_path: Path
) -> None:
    outage = Outage(db_url)
    settings = tiny_settings(
        tmp_path,
        database_url=outage.url,
    )
    hung = threading.Event()
    try:
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            wait_until_ready(client.get)
            engine = client.app.state.db.engine  # type: ignore[attr-defined]
            outage.watch(engine)

            @event.listens_for(engine, "before_cursor_execute")
            def _hang(*_: Any) -> None:
                if hung.is_set():
                    time.sleep(JobCounts.TIMEOUT_S * 3)

            text, _ = scrape(client)
            assert metric(text, "genserve_training_jobs_up") == 1
            assert metric(text, QUEUED) == 0

            outage.down()
            text, took = scrape(client)
            assert metric(text, "genserve_training_jobs_up") == 0
            assert QUEUED not in text  # unknown, not zero
            assert "genserve_workers_ready" in text  # what the API knows is all there
            assert took < JobCounts.TIMEOUT_S + 1
            outage.up()

            hung.set()
            text, took = scrape(client)
            assert metric(text, "genserve_training_jobs_up") == 0
            assert took < JobCounts.TIMEOUT_S + 1
            text, took = scrape(client)  # the hung read is awaited again, not doubled
            assert took < JobCounts.TIMEOUT_S + 1
            hung.clear()

            time.sleep(JobCounts.TIMEOUT_S * 3)  # the hung read ends
            text, _ = scrape(client)
            assert metric(text, "genserve_training_jobs_up") == 1
            assert metric(text, QUEUED) == 0
    finally:
        outage.close()
