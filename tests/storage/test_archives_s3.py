"""Export and import with GENSERVE_ARTIFACT_URL=s3://... on moto's S3 server (issue 19).

An imported version's files go to the bucket, like a trained one's, and nothing stays under
the state dir; it is served from there, and exporting it again (fetched from the bucket into
the cache, verified) gives back the same files. A committed default is exported from the
repository in place.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

from tests.e2e.server import Server
from tests.helpers import tar_members
from tests.storage.conftest import S3Server
from tests.tiny_models import small_pretrained

pytestmark = pytest.mark.e2e
BODY = {"inputs": ["what a lovely day", "a dreadful, dull film"]}


@pytest.fixture(scope="module")
def server(s3: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    tmp = tmp_path_factory.mktemp("s3-archives")
    bucket = s3.bucket()
    state = tmp / "state"
    state.mkdir()
    srv = Server(
        state,
        **s3.env(),
        GENSERVE_ARTIFACT_URL=f"s3://{bucket}/store",
        GENSERVE_PRETRAINED_DIR=str(small_pretrained(tmp / "pretrained", ("sentiment",), False)),
        GENSERVE_RUNNER_SLOTS="0",
    ).ready()
    yield srv, bucket
    srv.stop()


def test_an_imported_version_lives_in_the_bucket_and_exports_the_same(
    server: tuple[Server, str], s3: S3Server
) -> None:
    srv, bucket = server
    builtin = srv.client.get("/models/sentiment/versions/1/artifact")
    assert builtin.status_code == 200, builtin.text
    response = srv.client.post(
        "/models/s3-sentiment/versions?activate=true",
        files={"file": ("sentiment-v1.tar", builtin.content)},
        timeout=300,
    )
    assert response.status_code == 201, response.text
    sha256 = response.json()["sha256"]

    fs = fsspec.filesystem("s3", skip_instance_cache=True, **s3.options())
    [stored] = fs.ls(f"{bucket}/store/artifacts/s3-sentiment")
    manifest = json.loads(fs.cat_file(f"{stored}/manifest.json"))  # the store's own manifest
    assert manifest["sha256"] == sha256
    assert set(manifest["files"]) == {"config.json", "model.skops", "README.md"}
    assert not (Path(srv.state_dir) / "artifacts").exists()

    ours = srv.client.post("/classify", json={"model": "s3-sentiment", **BODY}).json()
    theirs = srv.client.post("/classify", json={"model": "sentiment", **BODY}).json()
    assert ours["results"] == theirs["results"]

    again = srv.client.get("/models/s3-sentiment/versions/1/artifact")
    assert again.status_code == 200, again.text
    first, second = tar_members(builtin.content), tar_members(again.content)
    assert {n: d for n, d in second.items() if n != "manifest.json"} == {
        n: d for n, d in first.items() if n != "manifest.json"
    }
    assert json.loads(second["manifest.json"])["source"] == "imported"


def test_an_import_the_store_cannot_take_is_a_503_and_registers_nothing(
    s3: S3Server, tmp_path: Path
) -> None:
    """The bucket is missing (an operator has yet to create it): retry later, never a 500."""
    state = tmp_path / "state"
    state.mkdir()
    srv = Server(
        state,
        **s3.env(),
        GENSERVE_ARTIFACT_URL="s3://genserve-no-such-bucket/store",
        GENSERVE_PRETRAINED_DIR=str(small_pretrained(tmp_path / "pretrained", ("digits",), False)),
        GENSERVE_RUNNER_SLOTS="0",
    ).ready()
    try:
        archive = srv.client.get("/models/digits/versions/1/artifact").content
        response = srv.client.post(
            "/models/s3-digits/versions", files={"file": ("d.tar", archive)}, timeout=300
        )
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "5"
        assert "the artifact store cannot be written" in response.json()["error"]["message"]
        assert srv.client.get("/models/s3-digits").status_code == 404
        assert list((state / "datasets" / "tmp").iterdir()) == []
    finally:
        srv.stop()
