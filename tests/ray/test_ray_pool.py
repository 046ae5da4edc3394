"""What the API suite cannot see of the Ray backend: hot loads on the actors, cancelled streams,
actors that die, and Ray staying out of the local backend. Runs after test_api_on_ray.py on
the same app, since it replaces the actor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from msgspec.structs import replace

from app.pool.errors import LoadFailed
from app.settings import REPO_ROOT
from tests.api.test_generate import sse_events
from tests.conftest import wait_until_ready
from tests.helpers import held_out_sentences

pytest.importorskip("ray", reason="the Ray backend needs `pip install genserve[ray]`")


def greedy(client: TestClient) -> str:
    body = {"prompt": "ROMEO:", "max_new_tokens": 20, "temperature": 0}
    response = client.post("/generate/text", json=body)
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["text"]


def test_hot_load_switches_the_actor_to_the_new_version(client: TestClient) -> None:
    pool = client.app.state.pool  # type: ignore[attr-defined]
    spec = next(s for s in pool.specs if s.name == "tiny-gpt")
    before = greedy(client)
    newer = replace(spec, version=spec.version + 1)  # same weights, new version
    client.portal.call(pool.load, newer)  # type: ignore[union-attr]
    assert client.get("/readyz").json()["workers"][0]["models"]["tiny-gpt"] == newer.version
    assert greedy(client) == before

    broken = replace(spec, version=spec.version + 2, sha256="0" * 64)
    with pytest.raises(LoadFailed):
        client.portal.call(pool.load, broken)  # type: ignore[union-attr]
    assert next(s for s in pool.specs if s.name == "tiny-gpt") == newer
    assert greedy(client) == before  # the registry's v1, loaded beside the pool's newer v2
    client.portal.call(pool.load, spec)  # type: ignore[union-attr]
    assert pool.key(spec) == "tiny-gpt"  # the pool serves what the registry says again


def test_an_actor_serves_a_version_beside_the_active_one(client: TestClient) -> None:
    """ensure() loads another version beside the active one on the actor; requests under its
    key reach it (same weights: same text), and unload drops it again."""
    pool = client.app.state.pool  # type: ignore[attr-defined]
    active = next(s for s in pool.specs if s.name == "tiny-gpt")
    other = replace(active, version=active.version + 10)
    assert pool.key(other) == "tiny-gpt@" + str(other.version)
    client.portal.call(pool.ensure, other)  # type: ignore[union-attr]
    (worker,) = pool.workers()
    assert other.version in worker.beside["tiny-gpt"]
    assert worker.models["tiny-gpt"] == active.version

    async def generate(key: str) -> str:
        params = {"max_new_tokens": 12, "temperature": 0.0}
        text = ""
        async for batch in pool.generate(key, "ROMEO:", params, 1):
            text += "".join(event.text for event in batch)
        return text

    assert client.portal.call(generate, pool.key(other)) == client.portal.call(  # type: ignore[union-attr]
        generate, "tiny-gpt"
    )
    pool.unload(pool.key(other))
    assert other.version not in pool.workers()[0].beside.get("tiny-gpt", [])


def test_a_diffusion_stream_gets_its_previews_from_the_actor(client: TestClient) -> None:
    body = {"model": "mnist-diffusion", "n": 2, "seed": 3, "label": 5, "steps": 6}
    events = sse_events(client, {**body, "preview_every": 2}, "/generate/image")
    assert [(name, e.get("step")) for name, e in events] == [
        ("preview", 2),
        ("preview", 4),
        ("done", None),
    ]
    plain = client.post("/generate/image", json=body)
    assert plain.status_code == 200, plain.text
    assert events[-1][1]["images"] == plain.json()["images"]


def test_a_stream_closed_early_frees_its_place(client: TestClient) -> None:
    body = {"prompt": "ROMEO:", "max_new_tokens": 256, "stream": True}
    with client.stream("POST", "/generate/text", json=body) as response:
        lines = response.iter_lines()
        assert any(line.startswith("data:") for line in lines)
    deadline = time.monotonic() + 10
    while client.get("/readyz").json()["workers"][0]["inflight"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.get("/readyz").json()["workers"][0]["inflight"] == 0
    text = client.get("/metrics").text
    assert 'genserve_queue_depth{model="tiny-gpt"} 0.0' in text
    assert 'genserve_running_sequences{model="tiny-gpt",worker="0"} 0.0' in text
    assert 'genserve_waiting_sequences{model="tiny-gpt",worker="0"} 0.0' in text


def test_tokens_and_their_latencies_are_measured_from_the_actors_events(
    client: TestClient,
) -> None:
    def scrape() -> dict[str, float]:
        lines = client.get("/metrics").text.splitlines()
        return {k: float(v) for k, v in (line.rsplit(" ", 1) for line in lines if line[0] != "#")}

    before = scrape()
    answer = client.post("/generate/text", json={"prompt": "ROMEO:", "max_new_tokens": 20}).json()
    after = scrape()
    grew = {
        name: after[name] - before.get(name, 0)
        for name in (
            'genserve_prompt_tokens_total{model="tiny-gpt"}',
            'genserve_completion_tokens_total{model="tiny-gpt"}',
            'genserve_time_to_first_token_seconds_count{model="tiny-gpt"}',
            'genserve_inter_token_latency_seconds_count{model="tiny-gpt"}',
        )
    }
    usage = answer["usage"]
    assert usage["completion_tokens"] == 20
    assert list(grew.values()) == [usage["prompt_tokens"], 20, 1, 19]


def test_a_killed_actor_fails_its_requests_with_503_then_is_replaced(client: TestClient) -> None:
    pid = client.get("/readyz").json()["workers"][0]["pid"]
    texts, _ = held_out_sentences(8)

    def classify(i: int):  # type: ignore[no-untyped-def]
        if i == 10:
            os.kill(pid, signal.SIGKILL)
        return client.post("/classify", json={"inputs": texts})

    with ThreadPoolExecutor(8) as threads:
        responses = list(threads.map(classify, range(60)))
    assert {r.status_code for r in responses} <= {200, 503}
    for r in responses:
        if r.status_code == 503:
            assert r.headers["retry-after"]
            assert r.json()["error"]["code"] in ("worker_lost", "unavailable")
    wait_until_ready(client.get, timeout=120)
    worker = client.get("/readyz").json()["workers"][0]
    assert worker["pid"] != pid and worker["restarts"] == 1
    assert client.post("/classify", json={"inputs": texts}).status_code == 200
    assert len(greedy(client)) == 20
    assert "genserve_worker_restarts_total 1.0" in client.get("/metrics").text


def test_the_local_backend_never_imports_ray() -> None:
    code = (
        "import sys\n"
        "from app.main import create_app\n"
        "from app.pool.local import LocalPool\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)
