"""Delete and retention against a real server, on SQLite and PostgreSQL (issue 19): versions
deleted (409 while active), pruned past GENSERVE_MAX_VERSIONS_PER_MODEL, a dataset deleted
with its versions keeping its name and sha256, a finished job deleted, a model archived and
brought back, and a restart after a crash between a delete's commit and its file removal
sweeping exactly the files no row references (never a committed default's)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from app.db import Database
from app.jobs.store import forget_version
from app.services import versions
from app.tables import Model, ModelVersion
from models.artifacts import artifact_digest
from tests.e2e.server import Server
from tests.e2e.test_training import submit, wait_job
from tests.reliability.conftest import start_server

pytestmark = pytest.mark.e2e
NAME = "ret-clf"
GOOD = ["great fun", "lovely and good", "good film", "really great", "so good", "fun fun"]
BAD = ["awful", "boring and bad", "bad film", "really awful", "so bad", "dull dull"]


def upload_reviews(srv: Server, path: Path) -> dict[str, Any]:
    rows = ["text,label"] + [f"{t},good" for t in GOOD * 3] + [f"{t},bad" for t in BAD * 3]
    path.write_text("\n".join(rows) + "\n")
    with path.open("rb") as f:
        response = srv.client.post("/datasets", files={"file": (path.name, f)})
    assert response.status_code == 201, response.text
    return response.json()


def train(srv: Server, dataset: int, activate: bool = False, name: str = NAME) -> dict[str, Any]:
    """One quick classifier version of `name`; the finished job."""
    job = submit(srv, kind="classify-nb", dataset=dataset, name=name, params={}, activate=activate)
    done = wait_job(srv, job["id"])
    assert done["status"] == "succeeded", done["error"]
    return done


def numbers(srv: Server, name: str = NAME) -> list[int]:
    return [v["version"] for v in srv.client.get(f"/models/{name}").json()["versions"]]


def artifact(state: Path, job: dict[str, Any]) -> Path:
    return state / "artifacts" / job["name"] / f"job-{job['id']}"


def error(response: Any, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["code"] == code, body
    return body["message"]


def test_delete_prune_archive_and_the_sweep_after_a_crash(db_url: str, tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = {
        "GENSERVE_DATABASE_URL": db_url,
        "GENSERVE_MAX_VERSIONS_PER_MODEL": "3",
        "GENSERVE_SWEEP_GRACE_S": "0",
        "GENSERVE_JOB_HEARTBEAT_S": "0.2",
        "GENSERVE_REGISTRY_POLL_S": "0.2",
    }
    srv = start_server(state, **env)
    try:
        dataset = upload_reviews(srv, tmp_path / "reviews.csv")
        jobs = [train(srv, dataset["id"], activate=i == 0) for i in range(3)]
        assert numbers(srv) == [1, 2, 3]

        # the active version stays; another goes, its artifact with it
        message = error(srv.client.delete(f"/models/{NAME}/versions/1"), 409, "version_in_use")
        assert "active" in message
        assert srv.client.delete(f"/models/{NAME}/versions/2").status_code == 204
        assert numbers(srv) == [1, 3]
        assert not artifact(state, jobs[1]).exists()
        assert srv.client.get(f"/train/{jobs[1]['id']}").json()["model_version"] is None
        error(srv.client.delete(f"/models/{NAME}/versions/2"), 404, "not_found")
        gone = {"model": f"{NAME}@2", "inputs": ["so good"]}
        error(srv.client.post("/classify", json=gone), 404, "not_found")
        error(srv.client.delete("/models/no-such-model/versions/1"), 404, "not_found")
        message = error(srv.client.delete("/models/sentiment/versions/1"), 409, "version_in_use")
        assert "active" in message  # a committed default, and active

        # past 3 versions the oldest one not active goes: v3 when v5 arrives
        jobs += [train(srv, dataset["id"]) for _ in range(2)]
        assert numbers(srv) == [1, 4, 5]
        assert not artifact(state, jobs[2]).exists()
        assert all(artifact(state, j).is_dir() for j in (jobs[0], jobs[3], jobs[4]))

        # the dataset goes; versions keep its name and sha256, finished jobs lose the id
        dataset_file = state / "datasets" / f"{dataset['sha256']}.csv"
        assert dataset_file.is_file()
        assert srv.client.delete(f"/datasets/{dataset['id']}").status_code == 204
        error(srv.client.get(f"/datasets/{dataset['id']}"), 404, "not_found")
        assert not dataset_file.exists()
        for v in srv.client.get(f"/models/{NAME}").json()["versions"]:
            assert v["dataset_id"] is None
            assert (v["dataset_name"], v["dataset_sha256"]) == ("reviews.csv", dataset["sha256"])
        assert srv.client.get(f"/train/{jobs[4]['id']}").json()["dataset_id"] is None

        # a finished job goes with its history; its version stays
        assert srv.client.delete(f"/train/{jobs[3]['id']}").status_code == 204
        error(srv.client.get(f"/train/{jobs[3]['id']}"), 404, "not_found")
        assert numbers(srv) == [1, 4, 5]

        # archived: not listed, not served, still readable; a new version brings it back
        body = {"model": NAME, "inputs": ["so good"]}
        assert srv.client.post("/classify", json=body).status_code == 200
        assert srv.client.delete(f"/models/{NAME}").status_code == 204
        listed = {m["name"] for m in srv.client.get("/models").json()["data"]}
        assert NAME not in listed and "sentiment" in listed
        every = srv.client.get("/models", params={"archived": "true"}).json()["data"]
        assert {m["name"]: m["archived"] for m in every}[NAME] is True
        model = srv.client.get(f"/models/{NAME}").json()
        assert model["archived"] and model["archived_at"] and model["active_version"] == 1
        error(srv.client.post("/classify", json=body), 404, "not_found")
        message = error(srv.client.delete("/models/sentiment"), 409, "default_model")
        assert "default" in message
        again = upload_reviews(srv, tmp_path / "reviews.csv")
        jobs.append(train(srv, again["id"]))
        assert NAME in {m["name"] for m in srv.client.get("/models").json()["data"]}
        assert srv.client.get(f"/models/{NAME}").json()["archived"] is False
        assert numbers(srv) == [1, 5, 6]  # v4 pruned: its job was deleted, not its version
        assert not artifact(state, jobs[3]).exists()
    finally:
        srv.stop()

    # A crash between a delete's commit and its file removal: the row of v5 is gone, its
    # artifact is not. Plus what other crashes leave: an artifact, a dataset file and a job
    # work dir that no row names.
    db = Database(db_url)
    with db.session() as session:
        v5 = session.scalars(
            select(ModelVersion).join(Model).where(Model.name == NAME, ModelVersion.version == 5)
        ).one()
        forget_version(session, v5.id)
        assert versions.delete_version(session, v5) == v5.artifact_path
    db.dispose()
    orphans = [
        artifact(state, jobs[4]),
        state / "artifacts" / NAME / "job-9999",
        state / "artifacts" / "gone-model" / "imported-1",
        state / "datasets" / f"{'0' * 64}.txt",
        state / "jobs" / "9998",
    ]
    shutil.copytree(artifact(state, jobs[0]), orphans[1])
    shutil.copytree(artifact(state, jobs[0]), orphans[2])
    orphans[3].write_text("a corpus whose row was deleted\n")
    (orphans[4] / "checkpoint").mkdir(parents=True)
    kept = [artifact(state, jobs[0]), artifact(state, jobs[5])]
    pretrained = state.parent / "state-pretrained"
    builtin = {p.name: artifact_digest(p.resolve()) for p in pretrained.iterdir() if p.is_dir()}

    srv = start_server(state, pretrained=pretrained, **env)
    try:
        assert [p for p in orphans if p.exists()] == []
        assert all(p.is_dir() for p in kept)
        assert {n: artifact_digest(pretrained / n) for n in builtin} == builtin
        assert numbers(srv) == [1, 6]
        response = srv.client.post("/classify", json={"model": NAME, "inputs": ["awful"]})
        assert response.status_code == 200 and response.json()["version"] == 1
        assert srv.client.post("/classify", json={"inputs": ["so good"]}).status_code == 200
    finally:
        srv.stop()
