"""Versions served side by side on a real server: `name@3` and `name@alias` in requests,
aliases, a canary traffic split with sticky users, per-version metrics, and the workers'
memory budget (least recently used versions evicted, the active one never).

The versions are copies of one artifact, so what tells them apart is the version that
answered: the response's `version` and its X-Model-Version header.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from app.settings import PRETRAINED_DIR
from models.artifacts import artifact_digest
from tests.e2e.server import Server
from tests.reliability.replicas import MODEL, add_version, fresh_database, start_replicas
from tests.tiny_models import small_pretrained

SIZE = artifact_digest(PRETRAINED_DIR / MODEL)[1]


def classify(server: Server, model: str, **extra: str) -> int:
    """The version that answered a request for `model`."""
    response = server.client.post("/classify", json={"model": model, "inputs": ["hi"], **extra})
    assert response.status_code == 200, response.text
    assert response.headers["x-model-version"] == str(response.json()["version"])
    return response.json()["version"]


def view(server: Server) -> dict:
    response = server.client.get(f"/models/{MODEL}")
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def server(db_url: str, tmp_path: Path) -> Iterator[Server]:
    """One replica serving v1 of sentiment, with v2 and v3 registered and inactive."""
    fresh_database(db_url)
    (replica,) = start_replicas(tmp_path, db_url, names=("a",))
    try:
        for relative in ("artifacts/v2", "artifacts/v3"):
            add_version(db_url, [replica], relative)
        yield replica
    finally:
        replica.stop()


def test_a_request_names_a_version_or_an_alias(server: Server) -> None:
    assert classify(server, MODEL) == 1
    assert classify(server, f"{MODEL}@2") == 2  # loaded beside on first use
    assert classify(server, f"{MODEL}@1") == 1
    assert classify(server, MODEL) == 1  # the active version is unchanged
    assert view(server)["loaded"] == [1, 2]

    response = server.client.put(f"/models/{MODEL}/aliases/staging", json={"version": 3})
    assert response.status_code == 200, response.text
    assert response.json()["aliases"] == {"staging": 3}
    assert [v["aliases"] for v in response.json()["versions"]] == [[], [], ["staging"]]
    assert classify(server, f"{MODEL}@staging") == 3
    # moving an alias: the next request follows it
    server.client.put(f"/models/{MODEL}/aliases/staging", json={"version": 2})
    assert classify(server, f"{MODEL}@staging") == 2

    for ref, needle in [(f"{MODEL}@9", "no version 9"), (f"{MODEL}@prod", "no alias 'prod'")]:
        response = server.client.post("/classify", json={"model": ref, "inputs": ["hi"]})
        assert response.status_code == 404, response.text
        assert needle in response.json()["error"]["message"]
    assert server.client.delete(f"/models/{MODEL}/aliases/staging").status_code == 200
    response = server.client.post("/classify", json={"model": f"{MODEL}@staging", "inputs": ["x"]})
    assert response.status_code == 404

    bad = [("PUT", "/aliases/3", {"version": 2}), ("PUT", "/aliases/ok", {"version": 9})]
    for method, path, body in bad:
        response = server.client.request(method, f"/models/{MODEL}{path}", json=body)
        assert response.status_code in (404, 422), response.text
        assert response.json()["error"]["message"]

    # activating a version already loaded beside promotes it in place
    response = server.client.post(f"/models/{MODEL}/versions/2/activate")
    assert response.status_code == 200, response.text
    assert classify(server, MODEL) == 2
    assert view(server)["loaded"] == [2, 3]  # v3 still beside; the old active v1 retired


def test_a_traffic_split_is_weighted_sticky_per_user_and_counted_per_version(
    server: Server,
) -> None:
    response = server.client.post(f"/models/{MODEL}/traffic", json={"1": 70, "2": 30})
    assert response.status_code == 200, response.text
    assert response.json()["traffic"] == {"1": 70, "2": 30}
    assert [v["traffic"] for v in response.json()["versions"]] == [70, 30, 0]

    answered = Counter(classify(server, MODEL) for _ in range(200))
    assert set(answered) == {1, 2}
    assert 0.15 <= answered[2] / 200 <= 0.45, answered
    for user in ("alice", "bob", "carol", "dave"):
        assert len({classify(server, MODEL, user=user) for _ in range(10)}) == 1
    assert classify(server, f"{MODEL}@3") == 3  # a named version bypasses the split

    metrics = server.client.get("/metrics").text
    counted = [line for line in metrics.splitlines() if "model_requests_total{" in line]
    for version in ("1", "2", "3"):
        assert any(f'version="{version}"' in line and 'status="200"' in line for line in counted), (
            counted
        )

    for body, status in [
        ({"1": 70, "2": 20}, 422),  # not 100
        ({"1": 50, "9": 50}, 404),  # no version 9
        ({"one": 100}, 422),
        ({"1": 150, "2": -50}, 422),
    ]:
        response = server.client.post(f"/models/{MODEL}/traffic", json=body)
        assert response.status_code == status, (body, response.text)
        assert response.json()["error"]["message"]
    assert view(server)["traffic"] == {"1": 70, "2": 30}  # refusals changed nothing

    assert server.client.post(f"/models/{MODEL}/traffic", json={}).json()["traffic"] is None
    assert {classify(server, MODEL) for _ in range(20)} == {1}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_versions_beside_the_active_one_fit_the_memory_budget(db_url: str, tmp_path: Path) -> None:
    """Room for the active version and one more: the least recently used one goes."""
    fresh_database(db_url)
    budget = str(int(SIZE * 2.5))
    (server,) = start_replicas(tmp_path, db_url, names=("a",), GENSERVE_MAX_LOADED_BYTES=budget)
    try:
        for relative in ("artifacts/v2", "artifacts/v3"):
            add_version(db_url, [server], relative)
        assert classify(server, f"{MODEL}@2") == 2
        assert view(server)["loaded"] == [1, 2]
        assert classify(server, f"{MODEL}@3") == 3
        assert view(server)["loaded"] == [1, 3]  # v2 evicted, the active v1 kept
        assert classify(server, f"{MODEL}@2") == 2  # loaded again on demand
        assert view(server)["loaded"] == [1, 2]
    finally:
        server.stop()

    fresh_database(db_url)
    tight = str(int(SIZE * 1.5))
    (server,) = start_replicas(
        tmp_path / "tight", db_url, names=("a",), GENSERVE_MAX_LOADED_BYTES=tight
    )
    try:
        add_version(db_url, [server], "artifacts/v2")
        response = server.client.post("/classify", json={"model": f"{MODEL}@2", "inputs": ["x"]})
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "no_room"
        assert "GENSERVE_MAX_LOADED_BYTES" in response.json()["error"]["message"]
        assert classify(server, MODEL) == 1
    finally:
        server.stop()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_text_model_version_beside_the_active_one_streams(db_url: str, tmp_path: Path) -> None:
    """A second GPT version generates beside the first: through the openai client, and as
    SSE from /generate/text, with the version's headers; greedy text matches (same weights)."""
    fresh_database(db_url)
    pretrained = small_pretrained(tmp_path / "pretrained", names=(), generators=True)
    server = Server(
        tmp_path,
        GENSERVE_DATABASE_URL=db_url,
        GENSERVE_PRETRAINED_DIR=str(pretrained),
        GENSERVE_DEFAULT_TEXT_MODEL="tiny-gpt",
        GENSERVE_DEFAULT_IMAGE_MODEL="tiny-cvae",
        GENSERVE_RUNNER_SLOTS="0",
        GENSERVE_THREADS_PER_WORKER="1",
    ).ready()
    try:
        assert add_version(db_url, [server], "artifacts/gpt-v2", pretrained / "tiny-gpt") == 2
        api = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused")
        texts = {}
        for ref in ("tiny-gpt@1", "tiny-gpt@2"):
            raw = api.completions.with_raw_response.create(
                model=ref, prompt="ROMEO:", max_tokens=8, temperature=0
            )
            assert raw.headers["x-model-version"] == ref[-1]
            texts[ref] = raw.parse().choices[0].text
        assert texts["tiny-gpt@1"] == texts["tiny-gpt@2"]

        body = {"model": "tiny-gpt@2", "prompt": "ROMEO:", "max_new_tokens": 8, "stream": True}
        body |= {"temperature": 0}
        with server.client.stream("POST", "/generate/text", json=body) as response:
            assert response.status_code == 200
            assert response.headers["x-model-version"] == "2"
            event, streamed = "", ""
            for line in response.iter_lines():
                if line.startswith("event:"):
                    event = line.removeprefix("event:").strip()
                elif line.startswith("data:") and event == "token":
                    streamed += json.loads(line.removeprefix("data:")).get("text", "")
        assert streamed == texts["tiny-gpt@2"]

        with pytest.raises(openai.NotFoundError, match="no alias 'prod'"):
            api.completions.create(model="tiny-gpt@prod", prompt="A", max_tokens=1)
    finally:
        server.stop()
