"""Two real replicas on one database (SQLite file, PostgreSQL): the database holds the version
to serve, each replica follows it, a served version never goes backwards, and a replica that
cannot load a version keeps the old one, says so, and never reverts the fleet."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import pytest

from tests.conftest import POSTGRES_URL, _postgres_skip_reason
from tests.e2e.server import Server, metric
from tests.reliability.replicas import (
    BODY,
    MODEL,
    Sampler,
    add_version,
    fresh_database,
    start_replicas,
    wait_for,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'shared.db'}"
    else:
        reason = _postgres_skip_reason()
        if reason:
            pytest.skip(reason)
        url = POSTGRES_URL
    fresh_database(url)
    yield url


@pytest.fixture(scope="module")
def replicas(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    """Replicas a and b, shared by the tests of one database (each starts in seconds, not
    instantly); each test reads the versions it starts from."""
    servers = start_replicas(tmp_path_factory.mktemp("fleet"), database)
    yield servers
    for server in servers:
        server.stop()


def model(server: Server) -> dict:
    response = server.client.get(f"/models/{MODEL}")
    assert response.status_code == 200, response.text
    return response.json()


def served(server: Server) -> int:
    response = server.client.post("/classify", json=BODY)
    assert response.status_code == 200, response.text
    return response.json()["version"]


def test_activations_under_traffic_never_go_backwards(
    database: str, replicas: list[Server]
) -> None:
    a, b = replicas
    new = [add_version(database, replicas, f"artifacts/{MODEL}-{i}") for i in range(3)]
    with Sampler(replicas) as sampler:
        time.sleep(0.5)
        for i, version in enumerate(new):
            activating = replicas[i % 2]
            response = activating.client.post(f"/models/{MODEL}/versions/{version}/activate")
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["served_version"] == version and body["active_version"] == version
            assert body["replica"] in body["acknowledged_by"]
            assert served(activating) == version  # answered only once loaded here
            time.sleep(1.5)  # the other replica's sync and, before the fix, the flap back
        for server in replicas:
            wait_for(lambda s=server: model(s)["served_version"] == new[-1], 15, "convergence")
        time.sleep(0.5)
    print(f"longest flap: {sampler.longest_flap_ms():.0f} ms")
    for url, samples in sampler.samples.items():
        seen = [v for _, v in samples]
        assert len(seen) > 20, url
        backwards = [(x, y) for x, y in itertools.pairwise(seen) if y < x]
        assert not backwards, f"{url} went back: {backwards}"
        assert seen[-1] == new[-1]
    assert sampler.longest_flap_ms() == 0
    assert sorted(model(a)["acknowledged_by"]) == ["a", "b"] == sorted(model(b)["acknowledged_by"])


def test_a_replica_without_the_artifact_keeps_the_old_version_and_converges_later(
    database: str, replicas: list[Server]
) -> None:
    a, b = replicas
    old = model(a)["active_version"]
    version = add_version(database, replicas, f"artifacts/{MODEL}-new")
    artifact = b.state_dir / "artifacts" / f"{MODEL}-new"
    hidden = artifact.rename(artifact.with_name("hidden"))  # b cannot see it
    response = a.client.post(f"/models/{MODEL}/versions/{version}/activate")
    assert response.status_code == 200, response.text

    wait_for(lambda: model(b)["degraded"] is not None, 10, "b to report itself degraded")
    time.sleep(1.0)  # several syncs of b: none may revert the desired state
    view = model(b)
    assert view["active_version"] == version, "b wrote the desired state back"
    assert view["served_version"] == old and served(b) == old
    assert view["degraded"]["desired_version"] == version
    assert "artifact" in view["degraded"]["error"]
    placements = {p["replica"]: p for p in model(a)["replicas"]}
    assert placements["b"]["state"] == "degraded" and placements["b"]["served_version"] == old
    assert model(a)["acknowledged_by"] == ["a"] and served(a) == version
    degraded = f'genserve_model_degraded{{model="{MODEL}"}}'
    assert metric(b.client.get("/metrics").text, degraded) == 1.0

    hidden.rename(artifact)  # it appears
    wait_for(lambda: model(b)["served_version"] == version, 20, "b to load it once it appears")
    assert model(b)["degraded"] is None and served(b) == version
    assert metric(b.client.get("/metrics").text, degraded) == 0.0
    wait_for(lambda: sorted(model(a)["acknowledged_by"]) == ["a", "b"], 10, "b's ack")
