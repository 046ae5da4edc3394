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


OPEN = {"/healthz", "/readyz", "/metrics"}
ADMIN = {
    ("POST", "/train"),
    ("POST", "/train/{job_id}/cancel"),
    ("POST", "/datasets"),
    ("POST", "/models/{name}/versions/{version}/activate"),
    ("PUT", "/models/{name}/aliases/{alias}"),
    ("DELETE", "/models/{name}/aliases/{alias}"),
    ("POST", "/models/{name}/traffic"),
    ("DELETE", "/models/{name}/versions/{version}"),
    ("DELETE", "/models/{name}"),
    ("DELETE", "/train/{job_id}"),
    ("DELETE", "/datasets/{dataset_id}"),
    ("POST", "/models/{name}/versions"),
}
READ = {  # serving operations: any key will do (checked below, with every other operation)
    ("POST", "/classify"),
    ("POST", "/generate/image"),
    ("POST", "/images/encode"),
    ("POST", "/images/reconstruct"),
    ("POST", "/images/interpolate"),
}
PATH_VALUES = {
    "{name}": "sentiment",
    "{version}": "1",
    "{job_id}": "1",
    "{dataset_id}": "1",
    "{alias}": "staging",
}


def operations(client: TestClient) -> list[tuple[str, str, str]]:
    """(method, path template, a concrete URL) for every documented operation but the open ones."""
    found = []
    for template, methods in client.app.openapi()["paths"].items():  # type: ignore[attr-defined]
        if template in OPEN:
            continue
        url = template
        for placeholder, value in PATH_VALUES.items():
            url = url.replace(placeholder, value)
        found.extend((method.upper(), template, url) for method in methods)
    return found


def test_every_operation_needs_a_key_and_admin_ones_need_the_admin_scope(
    secured: TestClient,
) -> None:
    ops = operations(secured)
    assert len(ops) >= 16 and {(m, t) for m, t, _ in ops} >= ADMIN | READ
    forbidden = set()
    for method, template, url in ops:
        for headers in ({}, {"Authorization": "Bearer wrong-key-0000"}, {"Authorization": "x"}):
            response = secured.request(method, url, headers=headers)
            assert response.status_code == 401, (method, url, headers, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.json()["error"]["code"] == "unauthorized"
        reader = secured.request(method, url, headers={"Authorization": "Bearer reader-key-123"})
        if reader.status_code == 403:
            assert reader.json()["error"]["code"] == "forbidden"
            forbidden.add((method, template))
        else:
            assert reader.status_code != 401, (method, url, reader.text)
        admin = secured.request(method, url, headers={"Authorization": "Bearer admin-key-456"})
        assert admin.status_code not in (401, 403), (method, url, admin.text)
    assert forbidden == ADMIN
