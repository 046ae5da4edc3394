"""Errors about an artifact name the model, the version and the problem, never a path on the
server: the client learns nothing of the server's layout, and the log keeps the path for the
operator.

Covers the activation path (the API's digest check and a worker's load), the background sync
that reports a degraded model (GET /models/{name}, /readyz), and a worker's start-up load.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from app.db import Database
from app.tables import Model, ModelVersion
from app.worker.loop import Worker
from app.worker.protocol import ModelSpec, Ready
from models.artifacts import CONFIG_FILE, WEIGHTS_FILE, artifact_digest
from tests.e2e.server import Server
from tests.reliability.conftest import start_server

MODEL = "tiny-gpt"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("paths") / "state", GENSERVE_REGISTRY_POLL_S="0.2")
    yield srv
    srv.stop()


def broken_copy(srv: Server, tag: str) -> Path:
    """A copy of the served tiny GPT's artifact under the state dir, to be spoilt."""
    pretrained = srv.state_dir.parent / f"{srv.state_dir.name}-pretrained" / MODEL
    target = srv.state_dir / "artifacts" / MODEL / tag
    shutil.copytree(pretrained, target)
    return target


def register(srv: Server, artifact: Path, sha256: str, size: int, active: bool = False) -> int:
    """A new version of MODEL, written to the database as a finished job would (with
    `active`, as a job that activates its version: the desired state changes)."""
    db = Database(f"sqlite:///{srv.state_dir / 'genserve.db'}")
    try:
        with db.session() as session:
            model = session.scalar(select(Model).where(Model.name == MODEL))
            assert model is not None
            latest = session.scalar(
                select(func.max(ModelVersion.version)).where(ModelVersion.model_id == model.id)
            )
            template = next(v for v in model.versions if v.is_active)
            if active:
                session.execute(
                    update(ModelVersion)
                    .where(ModelVersion.model_id == model.id)
                    .values(is_active=False)
                )
            version = ModelVersion(
                model_id=model.id,
                version=(latest or 0) + 1,
                kind=template.kind,
                artifact_path=str(artifact.relative_to(srv.state_dir)),
                sha256=sha256,
                size_bytes=size,
                config=template.config,
                source="trained",
                is_active=active,
            )
            session.add(version)
            session.flush()
            return version.version
    finally:
        db.dispose()


def reactivate(srv: Server, version: int) -> None:
    db = Database(f"sqlite:///{srv.state_dir / 'genserve.db'}")
    try:
        with db.session() as session:
            model_id = session.scalar(select(Model.id).where(Model.name == MODEL))
            session.execute(
                update(ModelVersion)
                .where(ModelVersion.model_id == model_id)
                .values(is_active=False)
            )
            session.execute(
                update(ModelVersion)
                .where(ModelVersion.model_id == model_id, ModelVersion.version == version)
                .values(is_active=True)
            )
    finally:
        db.dispose()


def assert_no_path(text: str, *paths: Path) -> None:
    """No server path, nor any piece of the state dir's layout, in what a client sees."""
    for path in paths:
        assert str(path) not in text, text
    for fragment in ("/artifacts/", "/state/", "/tmp/", "/pytest-"):
        assert fragment not in text, text


def activate(srv: Server, version: int) -> dict[str, Any]:
    response = srv.client.post(f"/models/{MODEL}/versions/{version}/activate")
    assert response.status_code == 409, response.text
    return response.json()["error"]


@pytest.mark.e2e
def test_activation_errors_name_the_version_not_the_path(server: Server) -> None:
    # config.json deleted after registration: the API's own check refuses it
    gone = broken_copy(server, "no-config")
    version = register(server, gone, *artifact_digest(gone))
    (gone / CONFIG_FILE).unlink()
    error = activate(server, version)
    assert error["code"] == "artifact_mismatch", error
    assert f"{MODEL} v{version}" in error["message"] and CONFIG_FILE in error["message"], error
    assert_no_path(json.dumps(error), gone, server.state_dir)

    # tampered weights: the digest no longer matches
    tampered = broken_copy(server, "tampered")
    version = register(server, tampered, *artifact_digest(tampered))
    (tampered / WEIGHTS_FILE).write_bytes((tampered / WEIGHTS_FILE).read_bytes() + b"\0")
    error = activate(server, version)
    assert error["code"] == "artifact_mismatch" and "sha256" in error["message"], error
    assert f"{MODEL} v{version}" in error["message"], error
    assert_no_path(json.dumps(error), tampered, server.state_dir)

    # bad weights registered with their own digest: the API's check passes, the worker refuses
    garbage = broken_copy(server, "garbage")
    (garbage / WEIGHTS_FILE).write_bytes(b"not safetensors at all")
    version = register(server, garbage, *artifact_digest(garbage))
    error = activate(server, version)
    assert error["code"] == "load_failed", error
    details = json.dumps(error["details"])
    assert "ArtifactError" in details and f"{MODEL} v{version}" in details, error
    assert_no_path(json.dumps(error), garbage, server.state_dir)

    log = server.output()
    for artifact in (gone, tampered, garbage):
        assert str(artifact) in log, f"{artifact} not logged"


def degraded_views(srv: Server, version: int, timeout: float = 30) -> tuple[str, str]:
    """GET /models/{MODEL} and /readyz once the sync reports `version` as failing."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        model = srv.client.get(f"/models/{MODEL}").json()
        degraded = model.get("degraded") or {}
        errors = [r.get("error") for r in model.get("replicas", [])]
        if degraded.get("desired_version") == version and any(errors):
            return json.dumps(model), srv.client.get("/readyz").text
        time.sleep(0.2)
    raise AssertionError(f"{MODEL} v{version} never reported degraded: {model}")


@pytest.mark.e2e
def test_degraded_model_views_name_the_version_not_the_path(server: Server) -> None:
    served = server.client.get(f"/models/{MODEL}").json()["active_version"]
    gone = broken_copy(server, "desired-no-config")
    digest = artifact_digest(gone)
    shutil.rmtree(gone)
    version = register(server, gone, *digest, active=True)  # as a job runner activates it
    try:
        model, ready = degraded_views(server, version)
        for text in (model, ready):
            assert f"{MODEL} v{version}" in text, text
            assert_no_path(text, gone, server.state_dir)
    finally:
        reactivate(server, served)
    assert str(gone) in server.output()


class Outbox:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send(self, message: Any) -> None:
        self.sent.append(message)


def test_worker_start_up_load_errors_carry_no_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Ready.load_errors travels to the API (and to clients, as ModelLoadFailed details)."""
    artifact = tmp_path / "secret-layout" / "artifact"
    artifact.mkdir(parents=True)
    (artifact / CONFIG_FILE).write_text(json.dumps({"name": "m", "kind": "text-gpt"}))
    (artifact / WEIGHTS_FILE).write_bytes(b"garbage")
    sha256 = artifact_digest(artifact)[0]
    broken = ModelSpec("m", 3, "text-gpt", "text-generation", str(artifact), sha256, {})
    missing = ModelSpec("n", 4, "text-gpt", "text-generation", str(tmp_path / "nowhere"), "0", {})
    outbox = Outbox()
    worker = Worker(outbox, batcher=None)  # type: ignore[arg-type]
    with caplog.at_level("ERROR"):
        worker.load([broken, missing], "cpu", 1)
    (ready,) = outbox.sent
    assert isinstance(ready, Ready) and set(ready.load_errors) == {"m", "n"}, ready
    assert "m v3" in ready.load_errors["m"] and "n v4" in ready.load_errors["n"], ready
    for error in ready.load_errors.values():
        assert_no_path(error, tmp_path)
    assert str(artifact) in caplog.text and str(tmp_path / "nowhere") in caplog.text


def test_a_failed_jobs_error_carries_no_path() -> None:
    """A job's `error` is read by clients (GET /train/{id}): an OSError's file name is cut to
    its last part, and a ValueError's message (the user's own mistake) too."""
    from app.jobs.runner import _describe

    full = FileNotFoundError(2, "No such file or directory", "/srv/state/datasets/ab/12.csv")
    assert _describe(full) == "FileNotFoundError: [Errno 2] No such file or directory: '12.csv'"
    assert _describe(ValueError("/srv/state/datasets/x.gz: corrupt")) == "x.gz: corrupt"
