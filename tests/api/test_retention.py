"""Deletes that must be refused, and the dataset quota, through the app with its real
lifespan on SQLite and PostgreSQL (no job runner: submitted jobs stay queued)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.conftest import make_settings, wait_until_ready
from tests.tiny_models import small_pretrained

ADMIN, READER = {"Authorization": "Bearer admin-key-1"}, {"Authorization": "Bearer reader-key-1"}
CSV = "text,label\n" + "".join(f"{t},{lab}\n" for t, lab in [("good", "pos"), ("bad", "neg")] * 4)


@pytest.fixture
def client(db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    settings = make_settings(
        tmp_path,
        database_url=db_url,
        pretrained_dir=small_pretrained(tmp_path / "pretrained", ("sentiment",), False),
        runner_slots=0,
        api_keys="admin-key-1:admin,reader-key-1:read",
        max_dataset_bytes_total=2 * len(CSV) + 10,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        wait_until_ready(test_client.get)
        yield test_client


def upload(client: TestClient, name: str, content: str) -> tuple[int, dict]:
    files = {"file": (name, content.encode())}
    response = client.post("/datasets", files=files, headers=ADMIN)
    return response.status_code, response.json()


def test_a_dataset_in_use_and_an_unfinished_job_stay(client: TestClient, tmp_path: Path) -> None:
    status, dataset = upload(client, "reviews.csv", CSV)
    assert status == 201, dataset
    stored = tmp_path / "state" / "datasets" / f"{dataset['sha256']}.csv"
    body = {"kind": "classify-nb", "dataset": dataset["id"], "name": "queued-clf"}
    job = client.post("/train", json=body, headers=ADMIN).json()

    response = client.delete(f"/datasets/{dataset['id']}", headers=ADMIN)
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "dataset_in_use" and error["details"] == {"jobs": [job["id"]]}
    assert f"job(s) {job['id']}" in error["message"]
    response = client.delete(f"/train/{job['id']}", headers=ADMIN)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "job_not_finished"
    assert "cancel it first" in response.json()["error"]["message"]
    assert client.delete(f"/train/{job['id']}", headers=READER).status_code == 403
    assert client.delete(f"/datasets/{dataset['id']}", headers=READER).status_code == 403

    client.post(f"/train/{job['id']}/cancel", headers=ADMIN)
    assert client.delete(f"/train/{job['id']}", headers=ADMIN).status_code == 204
    assert client.get(f"/train/{job['id']}", headers=READER).status_code == 404
    assert client.delete(f"/train/{job['id']}", headers=ADMIN).status_code == 404
    assert stored.is_file()
    assert client.delete(f"/datasets/{dataset['id']}", headers=ADMIN).status_code == 204
    assert not stored.exists()
    assert client.get(f"/datasets/{dataset['id']}", headers=READER).status_code == 404
    assert client.delete(f"/datasets/{dataset['id']}", headers=ADMIN).status_code == 404

    builtin = next(
        d for d in client.get("/datasets", headers=READER).json()["data"] if d["builtin"]
    )
    response = client.delete(f"/datasets/{builtin['id']}", headers=ADMIN)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "builtin_dataset"


def test_uploads_past_the_byte_quota_get_507(client: TestClient) -> None:
    assert upload(client, "a.csv", CSV)[0] == 201
    assert upload(client, "a-again.csv", CSV)[0] == 200  # the same bytes take no more room
    other = CSV.replace("good", "fine")
    assert upload(client, "b.csv", other)[0] == 201
    status, body = upload(client, "c.csv", CSV.replace("good", "nice"))
    assert status == 507
    error = body["error"]
    assert error["code"] == "dataset_quota_exceeded"
    assert "GENSERVE_MAX_DATASET_BYTES_TOTAL" in error["message"]
    assert error["details"]["limit_bytes"] == 2 * len(CSV) + 10
    # deleting one makes room
    first = next(
        d for d in client.get("/datasets", headers=READER).json()["data"] if d["name"] == "a.csv"
    )
    assert client.delete(f"/datasets/{first['id']}", headers=ADMIN).status_code == 204
    assert upload(client, "c.csv", CSV.replace("good", "nice"))[0] == 201


def test_version_and_model_deletes_need_admin_and_a_known_target(client: TestClient) -> None:
    assert client.delete("/models/sentiment/versions/1", headers=READER).status_code == 403
    assert client.delete("/models/sentiment", headers=READER).status_code == 403
    for path in ("/models/nope", "/models/nope/versions/1", "/models/sentiment/versions/7"):
        response = client.delete(path, headers=ADMIN)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"
    assert client.delete("/models/sentiment/versions/0", headers=ADMIN).status_code == 422
