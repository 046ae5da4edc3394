"""Training on a real two-node Ray cluster (GENSERVE_TRAIN_BACKEND=ray): a text-gpt job with
two data-parallel workers trains across both nodes and is served; a node killed mid-job
costs the steps since the last checkpoint, not the job, until the attempt limit."""

from __future__ import annotations

import time
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
        # no node reads the state dir: artifacts and Ray Train's checkpoints go to the store
        GENSERVE_ARTIFACT_URL=f"file://{tmp / 'bucket'}",
        GENSERVE_RAY_ADDRESS=cluster.address,
        GENSERVE_RUNNER_SLOTS="1",
        GENSERVE_JOB_MAX_ATTEMPTS="2",
        GENSERVE_JOB_HEARTBEAT_S="0.2",
        GENSERVE_REGISTRY_POLL_S="0.2",
        **cluster.auth_env(),
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
    bucket = server.state_dir / "bucket"
    assert (bucket / f"artifacts/ray-gpt/job-{job['id']}/manifest.json").is_file()
    assert any((bucket / f"ray-train/job-{job['id']}").glob("checkpoint_*"))
    assert not (server.state_dir / "ray-train").exists()
    version = job["model_version"]["version"]
    body = {"model": "ray-gpt", "prompt": "ROMEO:", "max_new_tokens": 8}
    served = wait_served(server, "/generate/text", body, version)
    assert len(served["choices"][0]["text"]) > 0


@pytest.mark.parametrize(
    ("kind", "dataset", "path", "body"),
    [
        ("text-ngram", "tinyshakespeare", "/generate/text", {"prompt": "ROMEO:"}),
        ("classify-nb", "sentiment", "/classify", {"inputs": ["a fine day"]}),
    ],
)
def test_kinds_without_steps_train_as_one_ray_task(
    server: Server, cluster: RayCluster, kind: str, dataset: str, path: str, body: dict
) -> None:
    name = f"ray-{kind}"
    job = submit(server, kind=kind, dataset=dataset, name=name, activate=True)
    job = wait_job(server, job["id"], timeout=180)
    assert job["status"] == "succeeded", (job, server.output()[-3000:])
    placement = job["placement"]
    assert (placement["backend"], placement["workers"], placement["devices"]) == ("ray", 1, ["cpu"])
    assert placement["nodes"][0] in {n["NodeID"] for n in cluster.alive_nodes()}
    wait_served(server, path, {"model": name, **body}, job["model_version"]["version"])


def test_a_node_killed_mid_job_resumes_it_from_a_checkpoint_until_the_attempt_limit(
    server: Server, cluster: RayCluster
) -> None:
    job_id = gpt_job(server, "ray-gpt-resume", max_steps=100_000, eval_every=20)["id"]
    running = wait_job(server, job_id, until=lambda j: j["metrics"].get("step", 0) >= 45)
    victim = next(n for n in running["placement"]["nodes"] if n != cluster.head_id)
    killed = time.monotonic()
    cluster.kill_node(victim)
    joined = cluster.add_node(cpus=1)  # the replacement an autoscaler would bring
    resumed = wait_job(server, job_id, until=lambda j: joined in j["placement"]["nodes"])
    print(f"\nnode death to the job's workers running again: {time.monotonic() - killed:.1f} s")
    assert resumed["status"] == "running" and victim not in resumed["placement"]["nodes"]
    assert resumed["attempts"] == 2  # Ray Train restarting the workers counts, as locally

    past = running["metrics"]["step"] + 25
    wait_job(server, job_id, until=lambda j: j["metrics"].get("step", 0) >= past)
    steps = [row["step"] for row in server.client.get(f"/train/{job_id}").json()["history"]]
    # resumed from a checkpoint Ray Train had registered (the one being reported when the
    # node died may not be): the steps since then ran twice, the ones before it once
    assert sorted(set(steps)) == list(range(20, max(steps) + 1, 20)), steps
    assert steps.count(20) == 1 and steps == sorted(steps), steps
    redone = len(steps) - len(set(steps))
    print(f"evaluations redone after the resume: {redone} (of {len(set(steps))})")
    assert redone <= 3

    # killed again, past GENSERVE_JOB_MAX_ATTEMPTS=2: the job fails and says why
    cluster.kill_node(joined)
    job = wait_job(server, job_id, timeout=120)
    assert job["status"] == "failed" and job["attempts"] == 2, job
    assert "limit 2" in job["error"] and job["model_version"] is None, job
    cluster.add_node(cpus=1)  # two CPUs again for the tests after this one


def test_a_cancelled_ray_job_stops_its_workers_and_registers_nothing(
    server: Server, cluster: RayCluster
) -> None:
    job_id = gpt_job(server, "ray-gpt-cancel", max_steps=1_000_000)["id"]
    wait_job(server, job_id, until=lambda j: j["metrics"].get("step", 0) >= 3)
    asked = time.monotonic()
    assert server.client.post(f"/train/{job_id}/cancel").status_code == 200
    job = wait_job(server, job_id, timeout=120)
    print(f"\ncancel to cancelled on Ray: {time.monotonic() - asked:.1f} s")
    assert job["status"] == "cancelled" and job["model_version"] is None
    assert not (server.state_dir / "bucket" / f"artifacts/ray-gpt-cancel/job-{job_id}").exists()
    # the workers let go of the cluster: both CPUs are free for the next job
    deadline = time.monotonic() + 60
    while (free := cluster.free_cpus()) < 2 and time.monotonic() < deadline:
        time.sleep(1)
    assert free == 2, server.output()[-3000:]
