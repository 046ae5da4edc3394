"""Jobs record who submitted them: the fingerprint of the API key, never the key itself."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.db import Database, migrate
from app.main import create_app
from app.settings import Settings, fingerprint
from app.tables import TrainingJob
from tests.conftest import make_settings

KEYS = {"alice": "alice-secret-key-1", "bob": "bob-secret-key-22"}


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    keys = ",".join(f"{key}:admin" for key in KEYS.values())
    return make_settings(tmp_path_factory.mktemp("owner"), api_keys=keys, runner_slots=0)


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    migrate(settings.db_url)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def submit(client: TestClient, key: str, name: str) -> dict:
    response = client.post(
        "/train",
        json={"kind": "classify-nb", "dataset": "sentiment", "name": name},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 202, response.text
    return response.json()


def test_a_job_records_its_keys_fingerprint_not_the_key(
    client: TestClient, settings: Settings
) -> None:
    jobs = {who: submit(client, key, f"nb-{who}") for who, key in KEYS.items()}
    for who, key in KEYS.items():
        owner = jobs[who]["owner"]
        assert owner == fingerprint(key) and len(owner) == 16
        assert key not in owner and owner not in key
        shown = client.get(f"/train/{jobs[who]['id']}", headers={"Authorization": f"Bearer {key}"})
        assert shown.json()["owner"] == owner and key not in shown.text
    assert jobs["alice"]["owner"] != jobs["bob"]["owner"]
    db = Database(settings.db_url)
    try:
        with db.session() as session:
            rows = {j.name: j.owner for j in session.scalars(select(TrainingJob))}
    finally:
        db.dispose()
    assert rows == {f"nb-{who}": fingerprint(key) for who, key in KEYS.items()}
    assert settings.db_url.startswith("sqlite:///")
    path = Path(settings.db_url.removeprefix("sqlite:///"))
    raw = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))  # and its WAL
    assert not any(key.encode() in raw for key in KEYS.values())  # nowhere in the database


def test_fingerprints_are_stable_and_distinct() -> None:
    assert fingerprint("alice-secret-key-1") == fingerprint("alice-secret-key-1")
    assert fingerprint("alice-secret-key-1") != fingerprint("alice-secret-key-2")
