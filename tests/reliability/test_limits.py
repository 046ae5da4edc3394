"""Every request limit answers a clear 4xx in the one error shape, before any work starts."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.e2e.server import Server, metric
from tests.helpers import held_out_digits
from tests.reliability.conftest import LIMITS

pytestmark = pytest.mark.e2e
MAX_BODY = int(LIMITS["GENSERVE_MAX_BODY_BYTES"])


def refused(srv: Server, path: str, body: dict[str, Any], status: int, needle: str) -> None:
    response = srv.client.post(path, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    openai = {"type", "param"} if path.startswith("/v1/") else set()  # OpenAI's fields too
    assert set(error) == {"code", "message", "details", *openai}, error
    assert needle in error["message"], error


@pytest.mark.parametrize(
    ("path", "body", "status", "needle"),
    [
        ("/classify", {"inputs": ["x" * (MAX_BODY + 1)]}, 413, "byte limit"),
        ("/generate/text", {"prompt": "a" * 257, "max_new_tokens": 4}, 422, "the limit is 256"),
        ("/generate/text", {"prompt": "a", "max_new_tokens": 17}, 422, "above the limit of 16"),
        ("/generate/text", {"prompt": "a", "max_new_tokens": 4, "n": 17}, 422, "n: Input"),
        ("/v1/completions", {"prompt": "a", "max_tokens": 17}, 422, "above the limit of 16"),
        ("/v1/completions", {"prompt": ["a"] * 17, "max_tokens": 4}, 422, "at most 16 in one"),
        ("/generate/image", {"n": 5}, 422, "above the limit of 4 images"),
        ("/classify", {"inputs": ["fine"] * 17}, 422, "the limit is 16"),
        ("/classify", {"inputs": ["x" * 1001]}, 422, "the limit is 1000"),
        ("/generate/text", {"prompt": "a", "seed": True}, 422, "seed: Input should be"),
    ],
)
def test_limits(server: Server, path: str, body: dict[str, Any], status: int, needle: str) -> None:
    refused(server, path, body, status, needle)


def test_images_per_request(server: Server) -> None:
    images = held_out_digits(17)[0]
    refused(server, "/classify", {"images": images}, 422, "the limit is 16")
    ok = server.client.post("/classify", json={"images": images[:16]})
    assert ok.status_code == 200 and len(ok.json()["results"]) == 16


def test_a_refused_list_of_prompts_starts_no_generation(server: Server) -> None:
    """The second prompt is refused: the first must not have started generating meanwhile."""
    good = {"prompt": "ROMEO:", "max_tokens": 16, "seed": 1}
    assert server.client.post("/v1/completions", json=good).status_code == 200
    steps = 'genserve_batch_size_count{model="tiny-gpt"}'
    before = metric(server.client.get("/metrics").text, steps)
    bad = {"prompt": ["ROMEO:", "ROMEO: \x01"], "max_tokens": 16, "seed": 1}
    refused(server, "/v1/completions", bad, 422, "outside the vocabulary")
    time.sleep(0.5)  # a generation that did start would have taken its 16 steps by now
    assert metric(server.client.get("/metrics").text, steps) == before


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("GET", "/datasets/99999999999999999999"),
        ("GET", "/train/99999999999999999999"),
        ("GET", "/train?offset=99999999999999999999"),
        ("POST", "/train/99999999999999999999/cancel"),
        ("POST", "/models/sentiment/versions/99999999999999999999/activate"),
    ],
)
def test_ids_beyond_what_the_database_holds_are_422(server: Server, method: str, url: str) -> None:
    """SQLite refuses integers over 64 bits with an OverflowError: that must not be a 500."""
    response = server.client.request(method, url)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "validation_error"
