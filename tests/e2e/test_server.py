"""End to end: `genserve serve` in a real uvicorn subprocess, called over HTTP with httpx."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import wait_until_ready
from tests.e2e.server import Server, metric
from tests.helpers import accuracy, held_out_digits, held_out_sentences

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # A short batching window makes the batching assertion below independent of timing luck.
    srv = Server(tmp_path_factory.mktemp("e2e"), GENSERVE_MAX_WAIT_MS="5").ready()
    print(f"ready {time.monotonic() - srv.started:.1f} s after start")
    yield srv
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells why.
    assert srv.stop() in (0, -signal.SIGTERM), srv.output()
    assert "Application shutdown complete" in srv.output()


def test_classifies_unseen_sentences_and_digits(server: Server) -> None:
    texts, expected = held_out_sentences(200)
    body = server.client.post("/classify", json={"inputs": texts}).json()
    assert body["model"] == "sentiment"
    assert accuracy([r["label"] for r in body["results"]], expected) >= 0.75

    images, digits = held_out_digits(100)
    body = server.client.post("/classify", json={"images": images}).json()
    assert body["model"] == "digits"
    assert accuracy([r["label"] for r in body["results"]], digits) >= 0.93


def test_concurrent_clients_are_batched(server: Server) -> None:
    texts, _ = held_out_sentences(64)

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            return await asyncio.gather(
                *(client.post("/classify", json={"inputs": [t]}) for t in texts)
            )

    responses = asyncio.run(run())
    assert all(r.status_code == 200 for r in responses)
    metrics = server.client.get("/metrics").text
    count = metric(metrics, 'genserve_batch_size_count{model="sentiment"}')
    total = metric(metrics, 'genserve_batch_size_sum{model="sentiment"}')
    assert total / count > 1, "concurrent requests should share forward passes"


def test_killed_worker_fails_its_requests_with_503_then_restarts(server: Server) -> None:
    pid = server.client.get("/readyz").json()["workers"][0]["pid"]
    texts, _ = held_out_sentences(8)

    async def flood() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            tasks = [
                asyncio.create_task(client.post("/classify", json={"inputs": texts}))
                for _ in range(200)
            ]
            await asyncio.sleep(0.05)
            os.kill(pid, signal.SIGKILL)
            return await asyncio.gather(*tasks)

    responses = asyncio.run(flood())
    statuses = {r.status_code for r in responses}
    assert statuses <= {200, 503}, statuses
    for r in responses:
        if r.status_code == 503:
            assert r.headers["retry-after"] and r.json()["error"]["code"] in (
                "worker_lost",
                "unavailable",
            )
    assert server.client.get("/healthz").status_code == 200
    wait_until_ready(server.client.get, timeout=60)
    workers = server.client.get("/readyz").json()["workers"]
    assert workers[0]["pid"] != pid and workers[0]["restarts"] == 1
    assert server.client.post("/classify", json={"inputs": texts}).status_code == 200
    assert metric(server.client.get("/metrics").text, "genserve_worker_restarts_total") == 1


def test_default_text_model_writes_shakespeare(server: Server) -> None:
    body = {"prompt": "ROMEO:\n", "max_new_tokens": 200, "temperature": 0.8, "seed": 3}
    response = server.client.post("/generate/text", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["model"] == "shakespeare-gpt"
    text = result["choices"][0]["text"]
    words = text.split()
    assert len(text) == 200 and len(words) > 20
    # A trained character model spells mostly real words; noise would not.
    common = {"the", "and", "i", "to", "of", "a", "my", "you", "that", "in", "is", "not", "me"}
    assert sum(w.lower().strip(",.;:!?'") in common for w in words) >= 3, text


def test_default_image_model_draws_the_asked_digit_as_png(server: Server) -> None:
    response = server.client.post("/generate/image", json={"n": 9, "seed": 1, "label": 7})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["model"] == "mnist-cgan" and (result["width"], result["height"]) == (28, 28)
    assert [image["label"] for image in result["images"]] == [7] * 9
    grid = server.client.post(
        "/generate/image", json={"n": 9, "seed": 1, "label": 7}, headers={"Accept": "image/png"}
    )
    assert grid.headers["content-type"] == "image/png" and grid.content[:4] == b"\x89PNG"
