"""The OpenAI-compatible API without silent gaps, through the official `openai` client:
logprobs, echo and scoring, penalties and logit_bias, token-id prompts, chat completions, and
refusals of what genserve cannot do. Served by tiny GPTs (characters and BPE) in the pool."""

from __future__ import annotations

import math

import openai
import pytest
from fastapi.testclient import TestClient


@pytest.fixture(scope="module")
def api(client: TestClient) -> openai.OpenAI:
    return openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=client)


def test_logprobs_give_top_alternatives_and_offsets(api: openai.OpenAI) -> None:
    result = api.completions.create(
        model="tiny-gpt", prompt="ROMEO:", max_tokens=8, seed=1, logprobs=3
    )
    choice = result.choices[0]
    lp = choice.logprobs
    assert lp is not None and len(lp.tokens) == len(lp.token_logprobs) == 8
    assert "".join(lp.tokens) == choice.text
    assert lp.text_offset == [len("".join(lp.tokens[:i])) for i in range(8)]
    for token_logprob, top in zip(lp.token_logprobs, lp.top_logprobs, strict=True):
        assert len(top) == 3 and all(v <= 0 for v in top.values())
        assert token_logprob <= max(top.values()) + 1e-6
    # greedy: the chosen token is the most likely one
    greedy = (
        api.completions.create(
            model="tiny-gpt", prompt="ROMEO:", max_tokens=5, temperature=0, logprobs=1
        )
        .choices[0]
        .logprobs
    )
    for tok, token_logprob, top in zip(
        greedy.tokens, greedy.token_logprobs, greedy.top_logprobs, strict=True
    ):
        assert top == {tok: pytest.approx(token_logprob)}


def test_echo_with_zero_tokens_scores_the_prompt_like_score(
    api: openai.OpenAI, client: TestClient
) -> None:
    text = "ROMEO:\nBut soft, what light"
    result = api.completions.create(
        model="tiny-gpt", prompt=text, max_tokens=0, echo=True, logprobs=1
    )
    choice = result.choices[0]
    assert choice.text == text
    lp = choice.logprobs
    assert lp.tokens == list(text) and lp.token_logprobs[0] is None
    assert lp.text_offset == list(range(len(text)))
    assert result.usage.prompt_tokens == len(text) and result.usage.completion_tokens == 0
    score = client.post("/score", json={"model": "tiny-gpt", "text": text, "top_logprobs": 2})
    assert score.status_code == 200, score.text
    body = score.json()
    assert [t["logprob"] for t in body["tokens"]] == pytest.approx(lp.token_logprobs)
    total = sum(lp.token_logprobs[1:])
    assert body["logprob"] == pytest.approx(total, abs=1e-4)
    assert body["tokens_scored"] == len(text) - 1 and body["chars"] == len(text) - 1
    assert body["nats_per_char"] == pytest.approx(-total / (len(text) - 1), abs=1e-4)
    assert body["perplexity"] == pytest.approx(math.exp(-total / (len(text) - 1)), rel=1e-4)
    assert all(len(t["top_logprobs"]) == 2 for t in body["tokens"][1:])
    # echo followed by generation: the completion's offsets continue after the prompt
    more = api.completions.create(
        model="tiny-gpt", prompt=text, max_tokens=4, echo=True, logprobs=0, seed=2
    ).choices[0]
    assert more.text.startswith(text) and len(more.logprobs.tokens) == len(text) + 4
    assert more.logprobs.text_offset[len(text)] == len(text)


def test_score_works_for_every_text_family(client: TestClient) -> None:
    for model in ("shakespeare-ngram", "shakespeare-lstm", "shakespeare-gpt", "tiny-bpe-gpt"):
        body = client.post("/score", json={"model": model, "text": "To be, or not to be"})
        assert body.status_code == 200, body.text
        result = body.json()
        assert result["tokens_scored"] == len(result["tokens"]) - 1 > 0
        assert 0 < result["nats_per_char"] < 10
    # a trained model finds Shakespeare likelier than noise
    real = client.post("/score", json={"model": "shakespeare-gpt", "text": "KING HENRY:\nNo"})
    noise = client.post("/score", json={"model": "shakespeare-gpt", "text": "qZxv;JJk pQ!wq"})
    assert real.json()["nats_per_char"] < noise.json()["nats_per_char"]


def test_bpe_model_scores_and_generates_any_utf8(client: TestClient, api: openai.OpenAI) -> None:
    text = "Café “naïve” 🎭 — ½"
    body = {"model": "tiny-bpe-gpt", "text": text, "top_logprobs": 20}
    score = client.post("/score", json=body).json()
    assert "".join(t["token"] for t in score["tokens"]) == text
    for token in score["tokens"][1:]:  # pieces of characters are named by their bytes
        names = [alt["token"] for alt in token["top_logprobs"]]
        assert len(set(names)) == len(names) == 20
    result = api.completions.create(model="tiny-bpe-gpt", prompt=text, max_tokens=5, seed=0)
    assert result.choices[0].finish_reason == "length"


def test_token_id_prompts(api: openai.OpenAI, client: TestClient) -> None:
    text = "ROMEO:"
    ids = [
        t["id"]
        for t in client.post("/score", json={"model": "tiny-gpt", "text": text}).json()["tokens"]
    ]
    by_text = api.completions.create(model="tiny-gpt", prompt=text, max_tokens=6, seed=5)
    by_ids = api.completions.create(model="tiny-gpt", prompt=ids, max_tokens=6, seed=5)
    assert by_ids.choices[0].text == by_text.choices[0].text
    batch = api.completions.create(model="tiny-gpt", prompt=[ids, ids[:3]], max_tokens=2)
    assert len(batch.choices) == 2
    echoed = api.completions.create(model="tiny-gpt", prompt=ids, max_tokens=0, echo=True)
    assert echoed.choices[0].text == text
    with pytest.raises(openai.UnprocessableEntityError, match="vocabulary size"):
        api.completions.create(model="tiny-gpt", prompt=[1, 2, 99_999], max_tokens=2)


def test_logit_bias_and_penalties_change_sampling(api: openai.OpenAI, client: TestClient) -> None:
    def greedy(**kw: object) -> list[dict]:
        body = {"prompt": "ROMEO:", "max_new_tokens": 12, "temperature": 0, "top_logprobs": 1}
        response = client.post("/generate/text", json={**body, **kw})
        assert response.status_code == 200, response.text
        return response.json()["choices"][0]["tokens"]

    plain = [t["id"] for t in greedy()]
    assert greedy(logit_bias={str(plain[0]): -100})[0]["id"] != plain[0]
    forced = (plain[0] + 1) % 65
    assert {t["id"] for t in greedy(logit_bias={str(forced): 100})} == {forced}
    repeated = max(set(plain), key=plain.count)
    assert plain.count(repeated) > 1  # an untrained model repeats itself; penalties stop it
    assert [t["id"] for t in greedy(frequency_penalty=2.0)].count(repeated) < plain.count(repeated)
    assert [t["id"] for t in greedy(presence_penalty=2.0)] != plain
    # the same controls through the OpenAI client
    text = api.completions.create(
        model="tiny-gpt", prompt="ROMEO:", max_tokens=12, temperature=0,
        logit_bias={str(forced): 100},
    ).choices[0].text  # fmt: skip
    assert len(set(text)) == 1


def test_unsupported_fields_are_refused_not_ignored(api: openai.OpenAI) -> None:
    with pytest.raises(openai.UnprocessableEntityError, match="suffix"):
        api.completions.create(model="tiny-gpt", prompt="A", suffix="B", max_tokens=2)
    with pytest.raises(openai.UnprocessableEntityError, match="best_of"):
        api.completions.create(model="tiny-gpt", prompt="A", best_of=3, max_tokens=2)
    ok = api.completions.create(model="tiny-gpt", prompt="A", best_of=2, n=2, max_tokens=2)
    assert len(ok.choices) == 2
    with pytest.raises(openai.UnprocessableEntityError, match="tools"):
        api.chat.completions.create(
            model="tiny-gpt",
            messages=[{"role": "user", "content": "hi"}],
            tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
        )


def test_stream_include_usage(api: openai.OpenAI) -> None:
    chunks = list(
        api.completions.create(
            model="tiny-gpt",
            prompt="ROMEO:",
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5
    assert chunks[-1].usage.prompt_tokens == 6
    assert all(c.usage is None for c in chunks[:-1])


def test_chat_plain_streaming_n_and_logprobs(api: openai.OpenAI) -> None:
    messages = [
        {"role": "system", "content": "A scene in Verona."},
        {"role": "user", "name": "Romeo", "content": "Is she there?"},
    ]
    result = api.chat.completions.create(
        model="tiny-gpt", messages=messages, max_tokens=20, seed=4, n=2
    )
    assert result.object == "chat.completion" and len(result.choices) == 2
    for choice in result.choices:
        assert choice.message.role == "assistant"
        assert "\n\n" not in choice.message.content  # the turn ends at a blank line
        assert choice.finish_reason in ("stop", "length")
    # the prompt is "A scene in Verona.\n\nROMEO:\nIs she there?\n\nASSISTANT:\n"
    prompt = "A scene in Verona.\n\nROMEO:\nIs she there?\n\nASSISTANT:\n"
    assert result.usage.prompt_tokens == len(prompt)
    chunks = list(
        api.chat.completions.create(
            model="tiny-gpt",
            messages=messages,
            max_tokens=20,
            seed=4,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == result.choices[0].message.content
    assert chunks[-1].usage.prompt_tokens == len(prompt)
    with_lp = api.chat.completions.create(
        model="tiny-gpt", messages=messages, max_tokens=5, logprobs=True, top_logprobs=2
    )
    content = with_lp.choices[0].logprobs.content
    assert content and all(len(t.top_logprobs) == 2 for t in content)
    assert "".join(t.token for t in content).startswith(with_lp.choices[0].message.content)


def test_generate_text_top_logprobs(client: TestClient) -> None:
    response = client.post(
        "/generate/text", json={"prompt": "ROMEO:", "max_new_tokens": 4, "top_logprobs": 3}
    )
    assert response.status_code == 200, response.text
    tokens = response.json()["choices"][0]["tokens"]
    assert len(tokens) == 4 and all(len(t["top_logprobs"]) == 3 for t in tokens)
    assert "".join(t["token"] for t in tokens) == response.json()["choices"][0]["text"]
