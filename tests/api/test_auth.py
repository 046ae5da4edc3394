"""API keys: read scope for serving endpoints; health and metrics stay open."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.db import migrate
from app.main import create_app
from tests.conftest import make_settings


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = make_settings(
        tmp_path_factory.mktemp("auth"), api_keys="reader-key-123:read,admin-key-456:admin"
    )
    migrate(settings.db_url)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_keys_are_required_and_checked(secured: TestClient) -> None:
    missing = secured.get("/models")
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "unauthorized"
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = secured.get("/models", headers={"Authorization": "Bearer reader-key-999"})
    assert wrong.status_code == 401
    for key in ("reader-key-123", "admin-key-456"):
        ok = secured.get("/models", headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200


def test_health_and_metrics_stay_open(secured: TestClient) -> None:
    assert secured.get("/healthz").status_code == 200
    assert secured.get("/metrics").status_code == 200
    assert secured.get("/readyz").status_code in (200, 503)
