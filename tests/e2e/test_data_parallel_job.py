"""A local job with num_workers > 1 trains under DistributedDataParallel on the runner's own
machine (gloo on CPU here), is served like any other, and is cancelled like any other."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.e2e.server import Server
from tests.e2e.test_training import start, submit, wait_job, wait_served
from tests.tiny_models import TINY_GPT_PARAMS

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start(tmp_path_factory.mktemp("e2e-ddp"))
    yield srv
    srv.stop()


def ddp_job(server: Server, name: str, **params: object) -> dict:
    body = {**TINY_GPT_PARAMS, "num_workers": 2, "eval_every": 10, **params}
    return submit(
        server, kind="text-gpt", dataset="tinyshakespeare", name=name, params=body, activate=True
    )


def test_a_two_rank_job_trains_registers_and_serves(server: Server) -> None:
    job = wait_job(server, ddp_job(server, "ddp-gpt", max_steps=20)["id"])
    assert job["status"] == "succeeded", (job, server.output()[-3000:])
    assert job["placement"]["backend"] == "local"
    assert job["placement"]["workers"] == 2 and job["placement"]["devices"] == ["cpu", "cpu"]
    history = server.client.get(f"/train/{job['id']}").json()["history"]
    assert [row["step"] for row in history] == [10, 20]
    body = {"model": "ddp-gpt", "prompt": "ROMEO:", "max_new_tokens": 5}
    assert wait_served(server, "/generate/text", body, job["model_version"]["version"])


def test_a_cancelled_two_rank_job_stops_both_ranks(server: Server) -> None:
    job_id = ddp_job(server, "ddp-cancel", max_steps=1_000_000)["id"]
    wait_job(server, job_id, until=lambda j: j["metrics"].get("step", 0) >= 3)
    asked = time.monotonic()
    assert server.client.post(f"/train/{job_id}/cancel").status_code == 200
    job = wait_job(server, job_id, timeout=60)
    assert job["status"] == "cancelled" and time.monotonic() - asked < 30
    assert job["model_version"] is None
    # the runner is free again: the next job runs
    assert wait_job(server, ddp_job(server, "ddp-after", max_steps=10)["id"])["status"] == (
        "succeeded"
    )
