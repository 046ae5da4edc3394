"""POST /train admits a job by what it needs: a job whose estimated peak training memory is
above GENSERVE_JOB_MAX_MEMORY_BYTES is refused with a 422 giving the estimate."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.db import migrate
from app.main import create_app
from app.settings import system_memory_bytes
from tests.conftest import make_settings

LIMIT = 256 * 2**20


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = make_settings(
        tmp_path_factory.mktemp("admission"), job_max_memory_bytes=LIMIT, runner_slots=0
    )
    migrate(settings.db_url)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_a_job_too_big_for_the_limit_is_refused_with_its_estimate(client: TestClient) -> None:
    big = {"n_layer": 12, "n_head": 12, "n_embd": 768, "block_size": 1024, "batch_size": 32}
    response = client.post(
        "/train", json={"kind": "text-gpt", "dataset": "digits", "name": "x", "params": big}
    )
    assert response.status_code == 422  # digits are images: the data's kind is checked first
    response = client.post(
        "/train",
        json={"kind": "text-gpt", "dataset": "tinyshakespeare", "name": "big", "params": big},
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "job_too_large"
    assert "GENSERVE_JOB_MAX_MEMORY_BYTES" in error["message"]
    details = error["details"]
    assert 85_000_000 < details["params"] < 90_000_000  # GPT-2 small with 65 characters
    assert details["bytes"] > details["limit_bytes"] == LIMIT
    assert details["bytes"] == sum(details["parts"].values())
    assert client.get("/train", params={"name": "big"}).json()["count"] == 0


def test_a_job_within_the_limit_is_queued(client: TestClient) -> None:
    response = client.post(
        "/train",
        json={"kind": "text-gpt", "dataset": "tinyshakespeare", "name": "small", "params": {}},
    )
    assert response.status_code == 202, response.text


def test_the_default_limit_is_half_the_memory(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path, runner_device="cpu")
    assert settings.job_memory_limit() == system_memory_bytes() // 2 > 0
    assert make_settings(tmp_path, job_max_memory_bytes=123).job_memory_limit() == 123
