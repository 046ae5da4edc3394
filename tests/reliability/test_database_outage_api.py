"""The database down under a running app: every database-backed endpoint answers 503
`database_unavailable` with Retry-After (never 500), /readyz reports the database and fails
only when GENSERVE_READY_REQUIRES names it, and all answer again once it is back."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.routers.health import PING_CACHE_S
from tests.conftest import wait_until_ready
from tests.outage import Outage
from tests.tiny_models import tiny_settings

ENDPOINTS = [("GET", "/train"), ("GET", "/train/1"), ("GET", "/datasets"), ("POST", "/train")]


@pytest.mark.parametrize("requires", ["database,models", "models"])
def test_endpoints_answer_503_while_the_database_is_down(
    db_url: str, tmp_path: Path, requires: str
) -> None:
    outage = Outage(db_url)
    settings = tiny_settings(
        tmp_path,
        database_url=outage.url,
        ready_requires=requires,
    )
    body = {"kind": "text-ngram", "dataset": "tinyshakespeare", "name": "lm"}
    try:
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            wait_until_ready(client.get)
            outage.watch(client.app.state.db.engine)  # type: ignore[attr-defined]
            outage.down()
            for method, path in ENDPOINTS:
                answer = client.request(method, path, json=body if method == "POST" else None)
                assert answer.status_code == 503, (path, answer.text)
                assert answer.json()["error"]["code"] == "database_unavailable"
                assert int(answer.headers["retry-after"]) > 0
            time.sleep(PING_CACHE_S)  # the last probe's answer, from before the outage, expires
            ready = client.get("/readyz")
            assert ready.json()["database"] == "unavailable"
            assert ready.status_code == (503 if "database" in requires else 200)
            assert client.get("/healthz").status_code == 200
            outage.up()
            assert client.get("/train").status_code == 200
            assert client.post("/train", json=body).status_code == 202
            time.sleep(PING_CACHE_S)
            wait_until_ready(client.get, timeout=10)
            assert client.get("/readyz").json()["database"] == "ok"
    finally:
        outage.close()
