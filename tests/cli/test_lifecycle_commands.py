"""`genserve models delete | alias | traffic`, `jobs delete` and `datasets delete` (issue 19):
the real command in a subprocess against a real server with trained versions.

The alias and traffic commands call `PUT/DELETE /models/{name}/aliases/{alias}` and
`POST /models/{name}/traffic`, which main's branch of issue 19 adds.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.test_against_a_server import genserve
from tests.e2e.server import Server
from tests.e2e.test_retention import numbers, train, upload_reviews
from tests.reliability.conftest import start_server

pytestmark = pytest.mark.e2e
NAME = "ret-clf"  # what tests.e2e.test_retention.train trains


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp("cli-lifecycle") / "state",
        GENSERVE_REGISTRY_POLL_S="0.2",
        GENSERVE_JOB_HEARTBEAT_S="0.2",
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def trained(server: Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """NAME v1 (active), v2 and v3, trained on an uploaded dataset: the dataset and jobs."""
    dataset = upload_reviews(server, tmp_path_factory.mktemp("data") / "reviews.csv")
    jobs = [train(server, dataset["id"], activate=i == 0) for i in range(3)]
    return {"dataset": dataset, "jobs": jobs}


def test_models_delete_asks_first_and_refuses_the_active_version(
    server: Server, trained: dict[str, Any], tmp_path: Path
) -> None:
    unanswered = genserve(tmp_path, "models", "delete", NAME, "2", url=server.url)
    assert unanswered.returncode == 1
    assert "delete ret-clf v2 and its artifact?" in unanswered.stdout
    assert "nothing deleted" in unanswered.stderr
    assert numbers(server) == [1, 2, 3]

    done = genserve(tmp_path, "models", "delete", NAME, "2", "--yes", url=server.url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"deleted {NAME} v2"
    assert numbers(server) == [1, 3]

    active = genserve(tmp_path, "models", "delete", NAME, "1", "-y", url=server.url)
    assert active.returncode == 1
    assert f"error: cannot delete {NAME} v1: it is the active version" in active.stderr
    missing = genserve(tmp_path, "models", "delete", NAME, "9", "-y", url=server.url)
    assert missing.returncode == 1 and "has no version 9" in missing.stderr


def test_alias_and_traffic_commands_print_the_model_routing(
    server: Server, trained: dict[str, Any], tmp_path: Path
) -> None:
    done = genserve(tmp_path, "models", "alias", NAME, "staging", "3", url=server.url)
    assert done.returncode == 0, done.stderr
    assert "staging=v3" in done.stdout
    assert server.client.get(f"/models/{NAME}").json()["aliases"] == {"staging": 3}
    refused = genserve(tmp_path, "models", "delete", NAME, "3", "-y", url=server.url)
    assert refused.returncode == 1 and "alias staging points at it" in refused.stderr
    done = genserve(tmp_path, "models", "alias", NAME, "staging", "--delete", url=server.url)
    assert done.returncode == 0, done.stderr
    assert server.client.get(f"/models/{NAME}").json()["aliases"] == {}

    done = genserve(tmp_path, "models", "traffic", NAME, "1=90", "3=10", url=server.url)
    assert done.returncode == 0, done.stderr
    assert "v1 90%, v3 10%" in done.stdout
    assert server.client.get(f"/models/{NAME}").json()["traffic"] == {"1": 90, "3": 10}
    refused = genserve(tmp_path, "models", "delete", NAME, "3", "-y", url=server.url)
    assert refused.returncode == 1 and "weight 10 in the traffic split" in refused.stderr
    done = genserve(tmp_path, "models", "traffic", NAME, "--clear", url=server.url)
    assert done.returncode == 0, done.stderr
    assert server.client.get(f"/models/{NAME}").json()["traffic"] is None

    for args in (("traffic", NAME), ("traffic", NAME, "3=x"), ("alias", NAME, "staging")):
        usage = genserve(tmp_path, "models", *args, url=server.url)
        assert usage.returncode == 2, (args, usage.stdout, usage.stderr)


def test_jobs_and_datasets_delete_then_the_model_is_archived(
    server: Server, trained: dict[str, Any], tmp_path: Path
) -> None:
    job = trained["jobs"][1]["id"]
    done = genserve(tmp_path, "jobs", "delete", str(job), "--yes", url=server.url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"deleted job {job}"
    assert server.client.get(f"/train/{job}").status_code == 404

    dataset = trained["dataset"]["id"]
    done = genserve(tmp_path, "datasets", "delete", str(dataset), "--yes", url=server.url)
    assert done.returncode == 0, done.stderr
    assert server.client.get(f"/datasets/{dataset}").status_code == 404
    builtin = genserve(tmp_path, "datasets", "delete", "1", "--yes", url=server.url)
    assert builtin.returncode == 1 and "built in" in builtin.stderr

    done = genserve(tmp_path, "models", "delete", NAME, "--yes", url=server.url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"archived {NAME}")
    listed = genserve(tmp_path, "models", "--json", url=server.url)
    assert NAME not in listed.stdout and "sentiment" in listed.stdout
    assert list(tmp_path.iterdir()) == []  # no local database or file
