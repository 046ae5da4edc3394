"""Input that used to give 500s, on SQLite and PostgreSQL: NUL (which PostgreSQL cannot store)
and lone surrogates (which the error handler could not encode) in any text field, path or
query are a 422; dataset references are ASCII decimal ids in range or exact names."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.db import downgrade, migrate
from app.main import create_app
from tests.conftest import POSTGRES_URL, _postgres_skip_reason
from tests.tiny_models import tiny_settings


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    tmp = tmp_path_factory.mktemp(f"input-{request.param}")
    url = f"sqlite:///{tmp / 'state' / 'genserve.db'}"
    if request.param == "postgresql":
        reason = _postgres_skip_reason()
        if reason:
            pytest.skip(reason)
        url = POSTGRES_URL
        downgrade(url, "base")
    settings = tiny_settings(
        tmp,
        database_url=url,
    )
    (tmp / "state").mkdir(exist_ok=True)
    migrate(url)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client
    if request.param == "postgresql":
        downgrade(url, "base")


def raw_post(api: TestClient, path: str, body: str) -> Any:
    """`body` is JSON text as sent: "\\ud800" stays an escape that decodes to a lone surrogate."""
    return api.post(path, content=body.encode(), headers={"content-type": "application/json"})


def assert_422(response: Any) -> None:
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] in ("validation_error", "invalid_text", "invalid_input")


TRAIN = '{"kind": "text-ngram", "dataset": "tinyshakespeare", "name": "ok", "params": {}}'
BODIES = [
    ("/generate/text", '{"prompt": "ROMEO\\ud800", "max_new_tokens": 2}'),
    ("/generate/text", '{"prompt": "A\\u0000B", "max_new_tokens": 2}'),
    ("/generate/text", '{"prompt": "A", "stop": ["\\udfff"]}'),
    ("/v1/completions", '{"prompt": ["A", "\\ud83d"], "max_tokens": 2}'),
    ("/classify", '{"inputs": ["fine", "bad\\u0000"]}'),
    ("/classify", '{"model": "x\\u0000", "inputs": ["fine"]}'),
    ("/generate/image", '{"model": "\\ud800"}'),
    ("/train", TRAIN.replace('"ok"', '"o\\u0000k"')),
    ("/train", TRAIN.replace('"tinyshakespeare"', '"tiny\\u0000"')),
    ("/train", TRAIN.replace('"text-ngram"', '"text\\u0000"')),
    ("/train", TRAIN.replace("{}", '{"order": "\\u0000", "x": ["\\ud800"]}')),
    ("/train", TRAIN.replace("{}", '{"\\u0000": 1}')),
]


@pytest.mark.parametrize(("path", "body"), BODIES)
def test_nul_and_lone_surrogates_in_bodies_are_422(api: TestClient, path: str, body: str) -> None:
    json.loads(body)  # the test sends valid JSON
    assert_422(raw_post(api, path, body))


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("GET", "/models/tiny%00gpt"),
        ("POST", "/models/tiny%00gpt/versions/1/activate"),
        ("GET", "/train?name=a%00b"),
        ("GET", "/train?kind=%00"),
        ("GET", "/train/1%00"),
        ("GET", "/datasets/%00"),
    ],
)
def test_nul_in_paths_and_queries_is_422(api: TestClient, method: str, url: str) -> None:
    assert_422(api.request(method, url))


def multipart(filename: bytes, name: bytes | None) -> tuple[bytes, str]:
    """A form built by hand: httpx would percent-encode a NUL in a file name."""
    parts = [
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n'
        b"Content-Type: text/plain\r\n\r\n" + b"some text for a corpus\n" * 20 + b"\r\n"
    ]
    if name is not None:
        parts.append(b'--B\r\nContent-Disposition: form-data; name="name"\r\n\r\n' + name + b"\r\n")
    return b"".join(parts) + b"--B--\r\n", "multipart/form-data; boundary=B"


@pytest.mark.parametrize(
    ("filename", "name"),
    [(b"a\x00.txt", None), (b"a.txt", b"x\x00y")],
)
def test_nul_in_upload_names_is_refused(
    api: TestClient, filename: bytes, name: bytes | None
) -> None:
    body, content_type = multipart(filename, name)
    response = api.post("/datasets", content=body, headers={"content-type": content_type})
    assert response.status_code in (400, 422), response.text


@pytest.mark.parametrize(
    "ref", ["\u0661", "\u00b2", "1\u0662", "\uff11", str(2**31), str(10**30), 2**40, -1, 0]
)
def test_dataset_references_are_ascii_ids_in_range_or_exact_names(
    api: TestClient, ref: str | int
) -> None:
    """Unicode digits are names, so "\\u0661" (Arabic-Indic one) is not dataset 1; ids past
    INTEGER are unknown."""
    body = {"kind": "text-ngram", "dataset": ref, "name": "refs"}
    response = api.post("/train", json=body)
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "not_found"


def test_an_ascii_id_and_an_exact_name_still_resolve(api: TestClient) -> None:
    datasets = api.get("/datasets").json()["data"]
    text = next(d for d in datasets if d["kind"] == "text")
    for ref in (text["id"], str(text["id"]), text["name"]):
        body = {"kind": "text-ngram", "dataset": ref, "name": "refs"}
        response = api.post("/train", json=body)
        assert response.status_code == 202, response.text
        api.post(f"/train/{response.json()['id']}/cancel")
