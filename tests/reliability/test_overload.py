"""Overload, a hung worker and a killed one, against a real server with tiny queues.

Every queue is bounded and answers 429 (or 503) with Retry-After past its bound; /healthz
answers throughout a flood and the service recovers once it stops; a request that waits
longer than GENSERVE_REQUEST_TIMEOUT_S is answered 504 and its slot freed; a worker killed
mid-batch or mid-stream fails its requests with 503 (an `error` event when streaming), is
restarted, and later requests succeed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import wait_until_ready
from tests.e2e.server import Server, metric
from tests.reliability.conftest import start_server

pytestmark = pytest.mark.e2e
TIMEOUT_S = 1.5
TEXTS = [f"review {i}: the battery lasts and the screen is great" for i in range(16)]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp("overload") / "state",
        GENSERVE_MAX_QUEUE="4",  # requests per model queued or running in the pool
        GENSERVE_MAX_RUNNING_SEQUENCES="2",
        GENSERVE_MAX_WAITING_SEQUENCES="2",
        GENSERVE_MAX_NEW_TOKENS="4096",
        GENSERVE_MAX_QUEUED_JOBS="3",
        GENSERVE_MAX_UPLOADS_IN_FLIGHT="1",
        GENSERVE_RUNNER_SLOTS="0",
        GENSERVE_REQUEST_TIMEOUT_S=str(TIMEOUT_S),
    )
    yield srv
    srv.stop()


def queue_depth(srv: Server, model: str) -> float:
    return metric(srv.client.get("/metrics").text, f'genserve_queue_depth{{model="{model}"}}')


def assert_overloaded(response: httpx.Response) -> None:
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["error"]["code"] == "overloaded", response.text


def test_a_flood_is_refused_with_429_while_health_answers_then_it_recovers(
    server: Server,
) -> None:
    """60 clients for 3 s, 15 times what the queues hold, while another one probes /healthz."""
    health: list[tuple[int, float]] = []
    flooding = threading.Event()
    flooding.set()

    def probe() -> None:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            while flooding.is_set():
                started = time.monotonic()
                code = client.get("/healthz").status_code
                health.append((code, time.monotonic() - started))
                time.sleep(0.05)

    async def client_loop(client: httpx.AsyncClient, i: int, until: float) -> list[httpx.Response]:
        responses = []
        while time.monotonic() < until:
            if i % 3:
                responses.append(await client.post("/classify", json={"inputs": TEXTS}))
            else:
                body = {"prompt": "ROMEO:", "max_new_tokens": 64}
                responses.append(await client.post("/generate/text", json=body))
        return responses

    async def flood() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:
            until = time.monotonic() + 3
            waves = await asyncio.gather(*(client_loop(client, i, until) for i in range(60)))
        return [response for wave in waves for response in wave]

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        responses = asyncio.run(flood())
    finally:
        flooding.clear()
        prober.join()
    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {200, 429}, statuses
    assert statuses[429] >= 20 and statuses[200] >= 8, statuses
    for response in responses:
        if response.status_code == 429:
            assert_overloaded(response)
    print(f"\nflood: {dict(statuses)}; /healthz answered {len(health)} times, "
          f"slowest in {max(s for _, s in health):.3f} s")  # fmt: skip
    assert len(health) >= 10 and {code for code, _ in health} == {200}, health
    assert max(seconds for _, seconds in health) < 2.0, health

    assert queue_depth(server, "sentiment") == 0 and queue_depth(server, "tiny-gpt") == 0
    assert server.client.post("/classify", json={"inputs": TEXTS}).status_code == 200
    body = {"prompt": "ROMEO:", "max_new_tokens": 8}
    assert server.client.post("/generate/text", json=body).status_code == 200


def test_the_training_queue_is_bounded(server: Server) -> None:
    corpus = ("To be, or not to be, that is the question.\n" * 50).encode()
    dataset = server.client.post("/datasets", files={"file": ("corpus.txt", corpus)}).json()
    body = {"kind": "text-ngram", "dataset": dataset["id"], "name": "never-trained"}
    accepted = [server.client.post("/train", json=body) for _ in range(3)]
    assert [r.status_code for r in accepted] == [202, 202, 202], accepted[-1].text
    refused = server.client.post("/train", json=body)
    assert refused.status_code == 429, refused.text
    assert_overloaded(refused)
    cancelled = server.client.post(f"/train/{accepted[0].json()['id']}/cancel")
    assert cancelled.json()["status"] == "cancelled"
    assert server.client.post("/train", json=body).status_code == 202


def test_uploads_being_parsed_are_bounded(server: Server) -> None:
    """Each upload may hold its file in memory while it is parsed: only one at a time here."""
    corpora = [f"{i} To be, or not to be.\n".encode() * 1_000_000 for i in range(6)]  # 24 MB

    async def upload_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            return await asyncio.gather(
                *(client.post("/datasets", files={"file": (f"{i}.txt", c)}) for i, c in
                  enumerate(corpora))
            )  # fmt: skip

    responses = asyncio.run(upload_all())
    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {201, 429} and statuses[201] >= 1 and statuses[429] >= 1, statuses
    for response in responses:
        if response.status_code == 429:
            assert_overloaded(response)
    assert not list((Path(server.state_dir) / "datasets" / "tmp").iterdir())


def worker_pid(srv: Server) -> int:
    return srv.client.get("/readyz").json()["workers"][0]["pid"]


def test_a_hung_worker_times_out_with_504_and_frees_its_slots(server: Server) -> None:
    body = {"prompt": "ROMEO:", "max_new_tokens": 8}
    assert server.client.post("/generate/text", json=body).status_code == 200
    pid = worker_pid(server)
    os.kill(pid, signal.SIGSTOP)  # hung: alive, but answers nothing
    try:
        started = time.monotonic()
        classify = server.client.post("/classify", json={"inputs": TEXTS})
        generate = server.client.post(
            "/generate/text", json={"prompt": "ROMEO:", "max_new_tokens": 4000}
        )
        assert time.monotonic() - started < 2 * TIMEOUT_S + 2
        for response in (classify, generate):
            assert response.status_code == 504, response.text
            assert response.json()["error"]["code"] == "timeout"
        # Their queue slots are free again although the worker never answered.
        assert queue_depth(server, "sentiment") == 0 and queue_depth(server, "tiny-gpt") == 0
        assert server.client.get("/readyz").json()["workers"][0]["inflight"] == 0
    finally:
        os.kill(pid, signal.SIGCONT)
    assert server.client.post("/classify", json={"inputs": TEXTS}).status_code == 200
    # The worker dropped the timed-out generation instead of spending 4000 steps on it.
    steps = 'genserve_batch_size_count{model="tiny-gpt"}'
    before = metric(server.client.get("/metrics").text, steps)
    time.sleep(0.5)
    assert metric(server.client.get("/metrics").text, steps) == before
    assert server.client.post("/generate/text", json=body).status_code == 200


def test_a_killed_worker_fails_its_requests_with_503_then_serves_again(server: Server) -> None:
    pid = worker_pid(server)
    long = {"prompt": "ROMEO:", "max_new_tokens": 4000, "seed": 1}
    events: list[tuple[str, dict[str, Any]]] = []

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            collected = asyncio.create_task(client.post("/generate/text", json=long))
            async with client.stream("POST", "/generate/text", json={**long, "stream": True}) as s:
                event = ""
                async for line in s.aiter_lines():
                    if line.startswith("event:"):
                        event = line.split(":", 1)[1].strip()
                    elif line.startswith("data:"):
                        events.append((event, json.loads(line.split(":", 1)[1])))
                        if len(events) == 1:  # mid-stream, mid-batch: kill the worker
                            batch = client.post("/classify", json={"inputs": TEXTS})
                            classify = asyncio.create_task(batch)
                            await asyncio.sleep(0.01)
                            os.kill(pid, signal.SIGKILL)
            return [await collected, await classify]

    collected, classify = asyncio.run(run())
    assert events[0][0] == "token" and events[-1][0] == "error", events[-3:]
    assert events[-1][1]["error"]["code"] == "worker_lost"
    assert collected.status_code == 503 and collected.json()["error"]["code"] == "worker_lost"
    assert collected.headers["retry-after"]
    assert classify.status_code in (200, 503), classify.text  # it may have run before the kill
    assert server.client.get("/healthz").status_code == 200

    wait_until_ready(server.client.get, timeout=60)
    worker = server.client.get("/readyz").json()["workers"][0]
    assert worker["pid"] != pid and worker["restarts"] == 1
    assert server.client.post("/classify", json={"inputs": TEXTS}).status_code == 200
    done = server.client.post("/generate/text", json={**long, "max_new_tokens": 8})
    assert done.status_code == 200 and done.json()["choices"][0]["completion_tokens"] == 8
