from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.db import migrate
from app.main import create_app
from tests.conftest import wait_until_ready
from tests.tiny_models import tiny_settings


@pytest.fixture(scope="package")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The app with its real lifespan: migrated SQLite, registry, one spawned worker."""
    tmp = tmp_path_factory.mktemp("api")
    settings = tiny_settings(
        tmp,
        max_body_bytes=64 * 1024,
        max_new_tokens=256,
        runner_slots=0,  # jobs stay queued: training runs in the e2e tests
    )
    migrate(settings.db_url)
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        wait_until_ready(test_client.get)
        yield test_client
