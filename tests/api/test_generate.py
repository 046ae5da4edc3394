"""/generate/text and the OpenAI-compatible API, served by a tiny GPT through the real pool."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from fastapi.testclient import TestClient


def generate(client: TestClient, **body: object) -> dict:
    response = client.post("/generate/text", json={"prompt": "ROMEO:", **body})
    assert response.status_code == 200, response.text
    return response.json()


def sse_events(
    client: TestClient, body: dict, path: str = "/generate/text"
) -> list[tuple[str, dict]]:
    events, name = [], "message"
    with client.stream("POST", path, json={**body, "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                events.append((name, json.loads(line.split(":", 1)[1])))
    return events


def test_response_shape_and_usage(client: TestClient) -> None:
    body = generate(client, max_new_tokens=12, n=3, seed=5, logprobs=True)
    assert body["model"] == "tiny-gpt" and body["version"] == 1
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    for choice in body["choices"]:
        assert len(choice["text"]) == 12 and choice["finish_reason"] == "length"
        assert choice["completion_tokens"] == 12
        assert len(choice["logprobs"]) == 12 and all(lp <= 0 for lp in choice["logprobs"])
    assert body["usage"] == {"prompt_tokens": 6, "completion_tokens": 36, "total_tokens": 42}
    assert len({c["text"] for c in body["choices"]}) == 3  # n choices are independent samples


def test_same_seed_same_text_alone_and_inside_a_busy_batch(client: TestClient) -> None:
    alone = generate(client, max_new_tokens=40, seed=1234, top_k=20)["choices"][0]["text"]
    assert generate(client, max_new_tokens=40, seed=1234, top_k=20)["choices"][0]["text"] == alone
    assert generate(client, max_new_tokens=40, seed=99, top_k=20)["choices"][0]["text"] != alone

    def busy(seed: int) -> str:
        prompt = "ROMEO:" if seed == 1234 else "KING:"
        body = {"prompt": prompt, "max_new_tokens": 40 if seed == 1234 else 60, "seed": seed,
                "top_k": 20}  # fmt: skip
        return client.post("/generate/text", json=body).json()["choices"][0]["text"]

    with ThreadPoolExecutor(8) as pool:
        texts = list(pool.map(busy, [1, 2, 3, 1234, 4, 5, 6, 7]))
    assert texts[3] == alone
    batches = client.get("/metrics").text
    assert 'genserve_batch_size_count{model="tiny-gpt"}' in batches


def test_greedy_is_deterministic_without_a_seed(client: TestClient) -> None:
    texts = {generate(client, max_new_tokens=20, temperature=0)["choices"][0]["text"]
             for _ in range(2)}  # fmt: skip
    assert len(texts) == 1


def test_stop_strings_end_the_text_before_them(client: TestClient) -> None:
    full = generate(client, max_new_tokens=60, temperature=0)["choices"][0]["text"]
    stop = full[20:23]
    cut = full.find(stop)
    body = generate(client, max_new_tokens=60, temperature=0, stop=[stop, "@@@"])
    choice = body["choices"][0]
    assert choice["text"] == full[:cut] and choice["finish_reason"] == "stop"
    streamed = sse_events(client, {"prompt": "ROMEO:", "max_new_tokens": 60,
                                   "temperature": 0, "stop": stop})  # fmt: skip
    assert "".join(e["text"] for name, e in streamed if name == "token") == full[:cut]


def test_stream_sends_one_event_per_token_then_done(client: TestClient) -> None:
    body = {"prompt": "ROMEO:", "max_new_tokens": 15, "seed": 7, "n": 2}
    events = sse_events(client, body)
    names = [name for name, _ in events]
    assert names[-1] == "done" and names.count("done") == 1
    tokens = [e for name, e in events if name == "token"]
    assert len(tokens) == 30 and {e["index"] for e in tokens} == {0, 1}
    done = events[-1][1]
    assert [c["finish_reason"] for c in done["choices"]] == ["length", "length"]
    assert done["usage"]["completion_tokens"] == 30
    plain = generate(client, max_new_tokens=15, seed=7, n=2)["choices"]
    for index in (0, 1):
        streamed = "".join(e["text"] for e in tokens if e["index"] == index)
        assert streamed == plain[index]["text"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"prompt": "héllo wörld"}, "'é'"),
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"n": 100}, "n"),
        ({"max_new_tokens": 100_000}, "limit"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
    ],
)
def test_bad_sampling_input_is_422(client: TestClient, body: dict, needle: str) -> None:
    response = client.post("/generate/text", json={"prompt": "A", **body})
    assert response.status_code == 422, response.text
    assert needle in response.json()["error"]["message"]


def test_unknown_characters_are_named(client: TestClient) -> None:
    error = client.post("/generate/text", json={"prompt": "naïve 😀"}).json()["error"]
    assert error["code"] == "unknown_characters"
    assert error["details"]["unknown"] == ["ï", "😀"]


def test_classifier_is_not_a_text_generator(client: TestClient) -> None:
    response = client.post("/generate/text", json={"model": "sentiment", "prompt": "hi"})
    assert response.status_code == 400
    assert client.post("/generate/text", json={"model": "nope"}).status_code == 404


def test_openai_client_completions_and_models(client: TestClient) -> None:
    api = openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=client)
    models = api.models.list()
    ids = [m.id for m in models.data]
    assert "tiny-gpt" in ids and "sentiment" not in ids  # text generators only
    result = api.completions.create(model="tiny-gpt", prompt="ROMEO:", max_tokens=10, seed=3, n=2)
    assert result.object == "text_completion" and len(result.choices) == 2
    assert all(len(c.text) == 10 and c.finish_reason == "length" for c in result.choices)
    assert result.usage.completion_tokens == 20 and result.usage.prompt_tokens == 6
    same = api.completions.create(model="tiny-gpt", prompt="ROMEO:", max_tokens=10, seed=3, n=2)
    assert [c.text for c in same.choices] == [c.text for c in result.choices]
    chunks = list(
        api.completions.create(
            model="tiny-gpt", prompt="ROMEO:", max_tokens=10, seed=3, stream=True
        )
    )
    assert "".join(c.choices[0].text for c in chunks) == result.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "length"
    with pytest.raises(openai.UnprocessableEntityError):
        api.completions.create(model="tiny-gpt", prompt="ROMEO:", max_tokens=10, top_p=2)
