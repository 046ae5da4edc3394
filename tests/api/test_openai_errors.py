"""Errors under /v1 carry OpenAI's `type` and `param` beside genserve's `code`, `message` and
`details`, so the official `openai` client fills `e.type`, `e.param` and `e.code`; errors
elsewhere keep genserve's shape."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    GatewayTimeout,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
    install_error_handlers,
)
from app.main import create_app
from app.pool.errors import QueueFull
from tests.conftest import make_settings


@pytest.fixture(scope="module")
def api(client: TestClient) -> openai.OpenAI:
    return openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=client)


def test_invalid_parameter_names_the_field(api: openai.OpenAI) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        api.completions.create(model="tiny-gpt", prompt="x", temperature=50)
    error = caught.value
    assert (error.type, error.param, error.code) == (
        "invalid_request_error",
        "temperature",
        "validation_error",
    )
    assert "temperature" in error.message
    assert isinstance(error.body, dict) and error.body["details"][0]["loc"][-1] == "temperature"


def test_missing_field_and_bad_json_are_invalid_requests(client: TestClient) -> None:
    missing = client.post("/v1/completions", json={"prompt": "x", "max_tokens": "many"}).json()
    assert missing["error"]["type"] == "invalid_request_error"
    assert missing["error"]["param"] == "max_tokens"
    broken = client.post(
        "/v1/completions", content=b"{", headers={"content-type": "application/json"}
    )
    assert broken.status_code == 422
    assert broken.json()["error"]["type"] == "invalid_request_error"
    assert broken.json()["error"]["param"] is None  # the body, not a field


def test_unknown_model_is_not_found(api: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        api.completions.create(model="no-such-model", prompt="x", max_tokens=2)
    error = caught.value
    assert (error.type, error.code, error.param) == ("invalid_request_error", "not_found", None)
    assert "no-such-model" in error.message


def test_missing_or_wrong_key_is_an_authentication_error(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path, api_keys="reader-key-1:read"))
    client = TestClient(app)  # no lifespan: the key is checked before anything else
    api = openai.OpenAI(base_url="http://testserver/v1", api_key="wrong-key", http_client=client)
    with pytest.raises(openai.AuthenticationError) as caught:
        api.models.list()
    assert (caught.value.type, caught.value.code) == ("authentication_error", "unauthorized")
    missing = client.get("/v1/models")  # the client refuses to send no key: plain HTTP
    assert missing.status_code == 401 and missing.json()["error"]["type"] == "authentication_error"


def test_errors_outside_v1_keep_genserve_shape(client: TestClient) -> None:
    response = client.post("/generate/text", json={"prompt": "x", "temperature": 50})
    assert response.status_code == 422
    assert set(response.json()["error"]) == {"code", "message", "details"}
    assert set(client.get("/models/no-such-model").json()["error"]) == {
        "code",
        "message",
        "details",
    }


def test_errors_built_before_routing_have_the_openai_shape_too(tmp_path: Path) -> None:
    """The body-size limit answers from middleware; an unknown /v1 path from the router."""
    client = TestClient(create_app(make_settings(tmp_path, max_body_bytes=1024)))
    too_large = client.post("/v1/completions", json={"prompt": "x" * 2000})
    assert too_large.status_code == 413
    error = too_large.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        "payload_too_large",
        None,
    )
    assert int(too_large.headers["content-length"]) == len(too_large.content)
    unknown = client.get("/v1/nowhere").json()["error"]
    assert (unknown["type"], unknown["code"]) == ("invalid_request_error", "not_found")
    elsewhere = client.post("/generate/text", json={"prompt": "x" * 2000}).json()["error"]
    assert "type" not in elsewhere


FAILURES: dict[str, tuple[Exception, int, str]] = {
    "bad": (BadRequest("bad"), 400, "invalid_request_error"),
    "key": (Unauthorized("no key"), 401, "authentication_error"),
    "scope": (Forbidden("read only"), 403, "permission_error"),
    "missing": (NotFound("none"), 404, "invalid_request_error"),
    "conflict": (Conflict("busy"), 409, "invalid_request_error"),
    "large": (PayloadTooLarge("big"), 413, "invalid_request_error"),
    "queue": (QueueFull("full"), 429, "rate_limit_error"),
    "loading": (Unavailable("later"), 503, "server_error"),
    "slow": (GatewayTimeout("slow"), 504, "server_error"),
    "bug": (RuntimeError("bug"), 500, "server_error"),
}


@pytest.fixture(scope="module")
def failing() -> TestClient:
    """An app whose routes raise each error, under /v1 and elsewhere, behind a proxy prefix."""
    app = FastAPI()
    install_error_handlers(app)

    async def fail(case: str) -> None:
        raise FAILURES[case][0]

    app.get("/v1/fail/{case}")(fail)
    app.get("/fail/{case}")(fail)
    return TestClient(app, raise_server_exceptions=False, root_path="/genserve")


@pytest.mark.parametrize("case", FAILURES)
def test_each_status_has_its_openai_type(failing: TestClient, case: str) -> None:
    _, status, kind = FAILURES[case]
    response = failing.get(f"/v1/fail/{case}")
    assert response.status_code == status
    assert response.json()["error"]["type"] == kind
    assert response.json()["error"]["code"]  # genserve's code is kept
    assert "type" not in failing.get(f"/fail/{case}").json()["error"]
