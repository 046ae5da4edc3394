"""API keys on a real server: good, wrong and wrong-scope keys on every operation, then the
whole server log (access log on, workers and runner included) holds none of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.conftest import start_server

pytestmark = pytest.mark.e2e
READ, ADMIN, WRONG = "read-key-Zq8rT1vX", "admin-key-Jm4wB7nP", "wrong-key-Hc2yK9sD"
PATH_VALUES = {"{name}": "sentiment", "{version}": "1", "{job_id}": "1", "{dataset_id}": "1"}


def test_keys_are_checked_everywhere_and_never_logged(tmp_path: Path) -> None:
    srv = start_server(
        tmp_path / "state",
        access_log=True,
        GENSERVE_API_KEYS=f"{READ}:read,{ADMIN}:admin",
        GENSERVE_RUNNER_SLOTS="1",
    )
    try:
        paths = srv.client.get("/openapi.json").json()["paths"]
        seen: dict[str, set[int]] = {READ: set(), ADMIN: set(), WRONG: set(), "": set()}
        for template, methods in paths.items():
            url = template
            for placeholder, value in PATH_VALUES.items():
                url = url.replace(placeholder, value)
            for method in methods:
                for key in seen:
                    headers = {"Authorization": f"Bearer {key}"} if key else {}
                    response = srv.client.request(method.upper(), url, headers=headers)
                    seen[key].add(response.status_code)
                    assert response.status_code != 500, (method, url, response.text)
        upload = srv.client.post(
            "/datasets",
            files={"file": ("corpus.txt", b"To be, or not to be.\n" * 100)},
            headers={"Authorization": f"Bearer {ADMIN}"},
        )
        assert upload.status_code in (200, 201), upload.text
        assert {401} < seen[WRONG] and {401} < seen[""]  # only open endpoints answer them
        assert 403 in seen[READ] and 401 not in seen[READ]
        assert not {401, 403} & seen[ADMIN]
    finally:
        srv.stop()
    log = srv.output()
    assert "GET /openapi.json" in log  # the access log was on
    for key in (READ, ADMIN, WRONG):
        assert key not in log
    assert "Bearer" not in log
