"""Export and import of model versions against real servers (issue 19).

A version exported from one server (its own state dir and database) and imported into another
(SQLite or PostgreSQL, another state dir) answers the same requests with the same outputs: a
trained n-gram, committed skops and CNN classifiers, a tiny GPT and a conditional VAE. The
archive is a tar whose manifest carries every file's sha256 and the version's identity and
lineage; an artifact changed on disk is refused (409); reading needs a read key, importing an
admin key; an archive over the upload limit is a 413.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from models.artifacts import PAYLOAD_FILES, digest_payload
from tests.e2e.server import Server
from tests.e2e.test_training import submit, wait_job, wait_served
from tests.helpers import held_out_digits, tar_members
from tests.reliability.conftest import start_server

pytestmark = pytest.mark.e2e
TRAINED = "archived-ngram"
ADMIN, READER = "archive-admin", "archive-reader"
PROMPT = {"prompt": "To be", "max_new_tokens": 12, "seed": 7, "temperature": 0.9}
# model -> the request whose answer must be the same after the round trip
REQUESTS: dict[str, tuple[str, dict[str, Any]]] = {
    TRAINED: ("/generate/text", PROMPT),
    "sentiment": ("/classify", {"inputs": ["what a lovely day", "a dreadful, dull film"]}),
    "digits": ("/classify", {"images": held_out_digits(3)[0]}),
    "tiny-gpt": ("/generate/text", PROMPT),
    "tiny-cvae": ("/generate/image", {"n": 2, "seed": 3, "label": 7}),
}


def authorized(srv: Server, key: str) -> Server:
    srv.client.headers["Authorization"] = f"Bearer {key}"
    return srv


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with the small defaults and one trained n-gram version (v1, lineage and all)."""
    srv = start_server(
        tmp_path_factory.mktemp("archive-source") / "state",
        GENSERVE_API_KEYS=f"{ADMIN}:admin,{READER}:read",
        GENSERVE_JOB_HEARTBEAT_S="0.2",
        GENSERVE_REGISTRY_POLL_S="0.2",
    )
    authorized(srv, ADMIN)
    params = {"order": 3}
    job = submit(
        srv,
        kind="text-ngram",
        dataset="tinyshakespeare",
        name=TRAINED,
        params=params,
        activate=True,
    )
    done = wait_job(srv, job["id"])
    assert done["status"] == "succeeded", done["error"]
    wait_served(srv, "/generate/text", {"model": TRAINED, **PROMPT}, 1)
    yield srv
    srv.stop()


@pytest.fixture
def target(db_url: str, tmp_path: Path) -> Iterator[Server]:
    """Another server: its own state dir and database, a 2 MB upload limit."""
    srv = start_server(
        tmp_path / "target",
        GENSERVE_DATABASE_URL=db_url,
        GENSERVE_RUNNER_SLOTS="0",
        GENSERVE_MAX_UPLOAD_BYTES=str(2 * 1024 * 1024),
    )
    yield srv
    srv.stop()


def export(srv: Server, name: str, version: int = 1) -> bytes:
    response = srv.client.get(f"/models/{name}/versions/{version}/artifact")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-tar"
    assert int(response.headers["content-length"]) == len(response.content)
    disposition = response.headers["content-disposition"]
    assert disposition == f'attachment; filename="{name}-v{version}.tar"'
    return response.content


def version_of(srv: Server, name: str, version: int) -> dict[str, Any]:
    model = srv.client.get(f"/models/{name}").json()
    return next(v for v in model["versions"] if v["version"] == version)


def answer(srv: Server, name: str) -> dict[str, Any]:
    path, body = REQUESTS[name.removeprefix("imported-")]
    response = srv.client.post(path, json={"model": name, **body})
    assert response.status_code == 200, response.text
    out = response.json()
    return {k: v for k, v in out.items() if k not in ("model", "version", "id", "created")}


def test_an_archive_holds_the_artifact_and_a_manifest_of_its_identity(source: Server) -> None:
    archive = export(source, TRAINED)
    members = tar_members(archive)
    assert list(members) == ["manifest.json", "config.json", "weights.safetensors", "README.md"]
    manifest = json.loads(members.pop("manifest.json"))
    registered = version_of(source, TRAINED, 1)
    assert manifest["format"] == "genserve-archive/1"
    assert {k: manifest[k] for k in ("name", "task", "kind", "version", "source")} == {
        "name": TRAINED,
        "task": "text-generation",
        "kind": "text-ngram",
        "version": 1,
        "source": "trained",
    }
    assert manifest["sha256"] == registered["sha256"]
    assert manifest["params"] == registered["params"] and manifest["params"]["order"] == 3
    assert manifest["metrics"] == registered["metrics"] and manifest["metrics"]
    assert manifest["lineage"] == {
        k: registered[k] for k in ("parent", "dataset_name", "dataset_sha256", "job_id")
    }
    assert manifest["files"] == {
        n: {"sha256": hashlib.sha256(d).hexdigest(), "size": len(d)} for n, d in members.items()
    }
    payload = {n: d for n, d in members.items() if n in PAYLOAD_FILES}
    assert digest_payload(payload)[0] == registered["sha256"]
    assert export(source, TRAINED) == archive  # the same bytes each time


def test_reading_needs_a_read_key_and_importing_an_admin_key(source: Server) -> None:
    client = source.client
    path = f"/models/{TRAINED}/versions"
    reader = {"Authorization": f"Bearer {READER}"}
    assert client.get(f"{path}/1/artifact", headers={"Authorization": ""}).status_code == 401
    archive = client.get(f"{path}/1/artifact", headers=reader)
    assert archive.status_code == 200
    refused = client.post(path, files={"file": ("a.tar", archive.content)}, headers=reader)
    assert refused.status_code == 403, refused.text
    assert [v["version"] for v in client.get(f"/models/{TRAINED}").json()["versions"]] == [1]
    assert client.get(f"{path}/9/artifact").status_code == 404
    assert client.get("/models/nothing-here/versions/1/artifact").status_code == 404


def test_a_version_round_trips_into_another_server_and_answers_the_same(
    source: Server, target: Server
) -> None:
    for name in REQUESTS:
        archive = export(source, name)
        imported = f"imported-{name}"
        response = target.client.post(
            f"/models/{imported}/versions",
            files={"file": (f"{name}.tar", archive, "application/x-tar")},
            data={"activate": "true"},
            timeout=300,
        )
        assert response.status_code == 201, response.text
        version = response.json()
        original = version_of(source, name, 1)
        assert version["version"] == 1 and version["is_active"] and version["source"] == "imported"
        for key in ("kind", "sha256", "size_bytes", "params", "metrics", "dataset_name",
                    "dataset_sha256", "parent"):  # fmt: skip
            assert version[key] == original[key], key
        assert answer(target, imported) == answer(source, name), name
        # nothing of the archive but the artifact is kept, under the target's state dir
        [stored] = (target.state_dir / "artifacts" / imported).iterdir()
        assert sorted(p.name for p in stored.iterdir()) == sorted(json.loads(
            tar_members(archive)["manifest.json"])["files"])  # fmt: skip

    # into a model the target has: its next version, served only when asked
    archive = export(source, "sentiment")
    url = "/models/sentiment/versions"
    response = target.client.post(url, files={"file": ("s.tar", archive)})
    assert response.status_code == 201, response.text
    assert (response.json()["version"], response.json()["is_active"]) == (2, False)
    assert target.client.get("/models/sentiment").json()["active_version"] == 1
    response = target.client.post(f"{url}?activate=true", files={"file": ("s.tar", archive)})
    assert (response.json()["version"], response.json()["is_active"]) == (3, True)
    served = target.client.post("/classify", json={"model": "sentiment", "inputs": ["fine"]})
    assert served.json()["version"] == 3

    too_big = target.client.post(url, files={"file": ("big.tar", bytes(3 * 1024 * 1024))})
    assert too_big.status_code == 413, too_big.text
    assert too_big.json()["error"]["code"] == "payload_too_large"


def test_an_artifact_changed_on_disk_is_not_exported(source: Server) -> None:
    config = next((source.state_dir / "artifacts" / TRAINED).glob("job-*/config.json"))
    original = config.read_bytes()
    try:
        config.write_bytes(original.replace(b'"order": 3', b'"order": 4'))
        response = source.client.get(f"/models/{TRAINED}/versions/1/artifact")
        assert response.status_code == 409, response.text
        error = response.json()["error"]
        assert error["code"] == "artifact_mismatch"
        assert str(source.state_dir) not in error["message"]
    finally:
        config.write_bytes(original)
    assert source.client.get(f"/models/{TRAINED}/versions/1/artifact").status_code == 200
