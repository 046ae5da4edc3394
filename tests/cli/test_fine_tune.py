"""`genserve train --from NAME[@VERSION]` against a real `genserve serve`: a fine-tune of the
committed tiny GPT trains, and its version names its parent; a param that would change the
architecture is refused with both values, a malformed --from is a usage error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.test_against_a_server import genserve
from tests.e2e.server import Server
from tests.reliability.conftest import start_server

pytestmark = pytest.mark.e2e
TRAIN = ("train", "text-gpt", "--dataset", "tinyshakespeare", "--name", "cli-ft")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("cli-ft") / "state", GENSERVE_JOB_HEARTBEAT_S="0.2")
    yield srv
    srv.stop()


def test_from_refuses_another_architecture_and_bad_syntax(server: Server, tmp_path: Path) -> None:
    done = genserve(tmp_path, *TRAIN, "--from", "tiny-gpt", "-p", "n_layer=3", url=server.url)
    assert done.returncode == 1
    assert "n_layer 3 (parent: 2)" in done.stderr, done.stderr
    done = genserve(tmp_path, *TRAIN, "--from", "tiny-gpt@latest", url=server.url)
    assert done.returncode == 2 and "NAME@VERSION" in done.stderr
    assert server.client.get("/train", params={"name": "cli-ft"}).json()["count"] == 0


def test_from_fine_tunes_that_version(server: Server, tmp_path: Path) -> None:
    params = ("-p", "max_steps=2", "-p", "eval_every=1", "-p", "batch_size=4")
    done = genserve(tmp_path, *TRAIN, "--from", "tiny-gpt@1", *params, "--follow", url=server.url)
    assert done.returncode == 0, done.stdout + done.stderr
    version = server.client.get("/models/cli-ft").json()["versions"][0]
    assert version["parent"] == {"model": "tiny-gpt", "version": 1}
    assert version["params"]["n_layer"] == 2 and version["params"]["max_steps"] == 2
