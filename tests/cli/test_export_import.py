"""`genserve models export` and `genserve models import` (issue 19): the real command in a
subprocess against a real `genserve serve`, in an empty directory.

Export streams the archive to NAME-vV.tar (or -o FILE), byte for byte what the API sends,
and leaves no file when refused; import registers it as the next version, served with
--activate; a refusal prints the server's reason and exits 1.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.test_against_a_server import genserve
from tests.e2e.server import Server
from tests.helpers import held_out_digits
from tests.reliability.conftest import start_server

pytestmark = pytest.mark.e2e
ADMIN, READER = "cli-admin", "cli-reader"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp("cli-archives") / "state",
        GENSERVE_API_KEYS=f"{ADMIN}:admin,{READER}:read",
        GENSERVE_RUNNER_SLOTS="0",
    )
    srv.client.headers["Authorization"] = f"Bearer {ADMIN}"
    yield srv
    srv.stop()


def classify(srv: Server, model: str, images: list[str]) -> dict:
    response = srv.client.post("/classify", json={"model": model, "images": images})
    assert response.status_code == 200, response.text
    return response.json()


def test_export_then_import_with_the_cli(server: Server, tmp_path: Path) -> None:
    url, key = server.url, {"GENSERVE_API_KEY": READER}
    done = genserve(tmp_path, "models", "export", "digits", "1", url=url, **key)
    assert done.returncode == 0, done.stderr
    archive = tmp_path / "digits-v1.tar"
    size = archive.stat().st_size
    assert done.stdout == f"exported digits v1 to digits-v1.tar ({size} bytes)\n"
    sent = server.client.get("/models/digits/versions/1/artifact").content
    assert archive.read_bytes() == sent
    done = genserve(tmp_path, "models", "export", "digits", "1", "-o", "copy.tar", url=url, **key)
    assert done.returncode == 0 and (tmp_path / "copy.tar").read_bytes() == sent

    refused = genserve(tmp_path, "models", "import", "cli-digits", "digits-v1.tar", url=url, **key)
    assert refused.returncode == 1
    assert "error: this API key has read scope; this action needs admin" in refused.stderr

    admin = {"GENSERVE_API_KEY": ADMIN}
    args = ("models", "import", "cli-digits", "digits-v1.tar", "--activate")
    done = genserve(tmp_path, *args, url=url, **admin)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "imported digits-v1.tar as cli-digits v1 (classify-cnn, active)\n"
    images = held_out_digits(4)[0]
    assert (
        classify(server, "cli-digits", images)["results"]
        == classify(server, "digits", images)["results"]
    )

    done = genserve(tmp_path, "models", "import", "cli-digits", "copy.tar", url=url, **admin)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "imported copy.tar as cli-digits v2 (classify-cnn)\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.tar", "digits-v1.tar"]


def test_refusals_print_the_reason_and_leave_no_file(server: Server, tmp_path: Path) -> None:
    url, admin = server.url, {"GENSERVE_API_KEY": ADMIN}
    missing = genserve(tmp_path, "models", "export", "digits", "9", url=url, **admin)
    assert missing.returncode == 1
    assert "error: model 'digits' has no version 9" in missing.stderr
    assert list(tmp_path.iterdir()) == []
    nowhere = genserve(
        tmp_path, "models", "export", "digits", "1", "-o", "no/x.tar", url=url, **admin
    )
    assert nowhere.returncode == 1
    assert "error: cannot write no/x.tar: No such file or directory" in nowhere.stderr

    cut = tmp_path / "cut.tar"
    cut.write_bytes(server.client.get("/models/digits/versions/1/artifact").content[:100_000])
    done = genserve(tmp_path, "models", "import", "cut-digits", "cut.tar", url=url, **admin)
    assert done.returncode == 1
    assert "error: not a complete, uncompressed tar archive" in done.stderr
    assert server.client.get("/models/cut-digits").status_code == 404
