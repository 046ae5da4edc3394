"""Generation through uvicorn: disconnects cancel work, a full queue answers 429."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.server import Server, metric
from tests.tiny_models import pretrained_with_tiny_models

pytestmark = pytest.mark.e2e
STEPS = 'genserve_batch_size_count{model="tiny-gpt"}'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("e2e-gen")
    srv = Server(
        tmp,
        GENSERVE_PRETRAINED_DIR=str(pretrained_with_tiny_models(tmp / "pretrained")),
        GENSERVE_DEFAULT_TEXT_MODEL="tiny-gpt",
        GENSERVE_MAX_RUNNING_SEQUENCES="2",
        GENSERVE_MAX_WAITING_SEQUENCES="0",
        GENSERVE_MAX_NEW_TOKENS="100000",
    ).ready()
    yield srv
    srv.stop()


def steps(server: Server) -> float:
    return metric(server.client.get("/metrics").text, STEPS)


def open_stream(server: Server, tokens: int = 50_000) -> tuple[httpx.Client, httpx.Response]:
    client = httpx.Client(base_url=server.url, timeout=30)
    request = client.build_request(
        "POST", "/generate/text", json={"prompt": "A", "max_new_tokens": tokens, "stream": True}
    )
    return client, client.send(request, stream=True)


def test_streamed_tokens_arrive_over_http(server: Server) -> None:
    client, response = open_stream(server, tokens=20)
    events = [json.loads(line[5:]) for line in response.iter_lines() if line.startswith("data:")]
    client.close()
    assert len(events) == 21 and events[-1]["usage"]["completion_tokens"] == 20


def test_full_queue_is_429_and_disconnect_frees_the_worker(server: Server) -> None:
    streams = [open_stream(server) for _ in range(2)]
    readers = [response.iter_lines() for _, response in streams]  # kept: dropping one closes it
    for (_, response), lines in zip(streams, readers, strict=True):
        assert response.status_code == 200
        assert next(lines) == "event: token"  # generation is under way
    refused = server.client.post("/generate/text", json={"prompt": "A", "max_new_tokens": 5})
    assert refused.status_code == 429 and refused.headers["retry-after"]
    assert refused.json()["error"]["code"] == "overloaded"
    assert server.client.get("/healthz").status_code == 200

    for client, response in streams:  # the clients go away mid-generation
        response.close()
        client.close()
    deadline = time.monotonic() + 10
    while True:
        before = steps(server)
        time.sleep(0.5)
        if steps(server) == before:
            break  # no decoding step ran: the worker dropped both sequences
        assert time.monotonic() < deadline, "generation went on after the clients left"
    accepted = server.client.post("/generate/text", json={"prompt": "A", "max_new_tokens": 5})
    assert accepted.status_code == 200


def test_a_generation_past_its_deadline_is_a_504_and_frees_the_worker(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    tmp = tmp_path_factory.mktemp("e2e-deadline")
    srv = Server(
        tmp,
        GENSERVE_PRETRAINED_DIR=str(pretrained_with_tiny_models(tmp / "pretrained")),
        GENSERVE_DEFAULT_TEXT_MODEL="tiny-gpt",
        GENSERVE_MAX_NEW_TOKENS="100000",
        GENSERVE_GENERATION_TIMEOUT_S="2",
    ).ready()
    try:
        started = time.monotonic()
        response = srv.client.post(
            "/generate/text", json={"prompt": "A", "max_new_tokens": 100_000}
        )
        assert response.status_code == 504, response.text
        assert "did not finish within 2 s" in response.json()["error"]["message"]
        assert time.monotonic() - started < 10
        # the worker dropped the sequence: a short request is answered at once
        before = steps(srv)
        time.sleep(0.5)
        assert steps(srv) - before < 5  # no decoding left running
        ok = srv.client.post("/generate/text", json={"prompt": "A", "max_new_tokens": 5})
        assert ok.status_code == 200
    finally:
        srv.stop()
