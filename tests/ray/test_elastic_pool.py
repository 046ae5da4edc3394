"""The Ray pool is elastic (GENSERVE_POOL=ray on a real cluster started with `ray start`): a
node that joins gets a serving actor and takes traffic, and when it dies its actor is
dropped while the others keep serving."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.server import Server
from tests.ray.cluster import RayCluster
from tests.tiny_models import small_pretrained

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    ray_cluster = RayCluster(tmp_path_factory.mktemp("ray-elastic"))
    try:
        ray_cluster.start_head(cpus=1)
    except (RuntimeError, TimeoutError, OSError) as exc:
        ray_cluster.stop()
        pytest.skip(f"a Ray cluster could not start here: {exc}")
    yield ray_cluster
    ray_cluster.stop()


@pytest.fixture(scope="module")
def server(cluster: RayCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("ray-elastic-api")
    srv = Server(
        tmp,
        GENSERVE_PRETRAINED_DIR=str(small_pretrained(tmp / "pretrained", ("sentiment",))),
        GENSERVE_DEFAULT_TEXT_MODEL="tiny-gpt",
        GENSERVE_DEFAULT_IMAGE_MODEL="tiny-cvae",
        GENSERVE_POOL="ray",
        GENSERVE_RAY_ADDRESS=cluster.address,
        GENSERVE_RAY_SCALE_INTERVAL_S="0.5",
        GENSERVE_RUNNER_SLOTS="0",
        GENSERVE_MAX_NEW_TOKENS="100000",
        RAY_AUTH_MODE=cluster.env["RAY_AUTH_MODE"],
        RAY_AUTH_TOKEN=cluster.env["RAY_AUTH_TOKEN"],
    ).ready(timeout=180)
    yield srv
    srv.stop()


def workers(server: Server) -> list[dict]:
    return server.client.get("/readyz").json()["workers"]


def wait_workers(server: Server, done, timeout: float = 90) -> list[dict]:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = workers(server)
        if done(now):
            return now
        time.sleep(0.2)
    pytest.fail(f"workers never got there: {workers(server)}\n{server.output()[-3000:]}")


def test_a_node_that_joins_gets_an_actor_that_takes_traffic(
    server: Server, cluster: RayCluster
) -> None:
    (first,) = wait_workers(server, lambda ws: len(ws) == 1 and ws[0]["ready"])
    assert first["node"] == cluster.head_id
    joined_at = time.monotonic()
    node = cluster.add_node(cpus=1)
    ready = wait_workers(server, lambda ws: any(w["node"] == node and w["ready"] for w in ws))
    print(f"\na joining node's actor ready for traffic after {time.monotonic() - joined_at:.1f} s")
    assert len(ready) == 2
    # two long streams: least-loaded routing gives one to each actor
    body = {"prompt": "A", "max_new_tokens": 100_000, "stream": True}
    clients = [httpx.Client(base_url=server.url, timeout=30) for _ in range(2)]
    streams = [c.send(c.build_request("POST", "/generate/text", json=body), stream=True)
               for c in clients]  # fmt: skip
    try:
        lines = [s.iter_lines() for s in streams]
        assert all(next(it) == "event: token" for it in lines)
        busy = wait_workers(server, lambda ws: sorted(w["inflight"] for w in ws) == [1, 1])
        assert {w["node"] for w in busy} == {cluster.head_id, node}
    finally:
        for stream, client in zip(streams, clients, strict=True):
            stream.close()
            client.close()

    # the node dies: its actor is dropped, the head's keeps serving
    cluster.kill_node(node)
    (left,) = wait_workers(server, lambda ws: len(ws) == 1)
    assert left["node"] == cluster.head_id and left["ready"]
    answer = server.client.post("/generate/text", json={"prompt": "A", "max_new_tokens": 3})
    assert answer.status_code == 200, answer.text
