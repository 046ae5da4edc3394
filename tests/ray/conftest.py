"""The API suite's `client`, served by the Ray pool on a local Ray instance it starts itself."""

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
    """tests/api's app on GENSERVE_POOL=ray: one CPU actor on a two-CPU Ray instance, started
    and shut down by the pool like in production (once per package: it takes seconds)."""
    tmp = tmp_path_factory.mktemp("ray")
    settings = tiny_settings(
        tmp,
        pool="ray",
        ray_num_cpus=2,
        max_body_bytes=64 * 1024,
        max_new_tokens=256,
        runner_slots=0,  # jobs stay queued, as in tests/api
        # test_ray_pool.py loads versions on the pool directly, which the database does not
        # know: the registry's sync must not put the database's back under it mid-test
        registry_poll_s=3600,
    )
    migrate(settings.db_url)
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        wait_until_ready(test_client.get, timeout=180)
        yield test_client
