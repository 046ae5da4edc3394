"""Metrics and tracing through uvicorn: token counters, TTFT and inter-token histograms,
sequence and job gauges, per-version request counters, X-Request-ID and the model headers."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from app.db import Database
from app.tables import TrainingJob
from tests.e2e.server import Server
from tests.tiny_models import small_pretrained

pytestmark = pytest.mark.e2e
MODEL = "tiny-gpt"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("e2e-obs")
    srv = Server(
        tmp,
        access_log=True,
        GENSERVE_PRETRAINED_DIR=str(small_pretrained(tmp / "pretrained", names=("sentiment",))),
        GENSERVE_DEFAULT_TEXT_MODEL=MODEL,
        GENSERVE_DEFAULT_IMAGE_MODEL="tiny-cvae",
        GENSERVE_MAX_RUNNING_SEQUENCES="1",  # a second stream waits: both gauges move
        GENSERVE_MAX_NEW_TOKENS="100000",
        GENSERVE_RUNNER_SLOTS="0",  # job rows stay as the test writes them
        GENSERVE_MAX_BODY_BYTES=str(64 * 1024),
    ).ready()
    yield srv
    srv.stop()


def scrape(server: Server) -> dict[str, float]:
    """Every sample of /metrics by its name and labels, as the exposition writes them."""
    text = server.client.get("/metrics").text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def delta(after: dict[str, float], before: dict[str, float], name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


def sse_data(response: httpx.Response) -> list[str]:
    return [line[6:] for line in response.iter_lines() if line.startswith("data: ")]


def test_token_counters_and_latency_histograms_count_every_generation(server: Server) -> None:
    before = scrape(server)
    post = server.client.post
    text = post("/generate/text", json={"prompt": "ROMEO", "max_new_tokens": 7, "n": 2}).json()
    completion = post("/v1/completions", json={"model": MODEL, "prompt": "AB", "max_tokens": 4})
    chat_body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 5,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with server.client.stream("POST", "/v1/chat/completions", json=chat_body) as chat:
        chunks = [json.loads(d) for d in sse_data(chat) if d != "[DONE]"]
    scored = post("/score", json={"text": "To be, or not"}).json()
    after = scrape(server)

    usages = [text["usage"], completion.json()["usage"], chunks[-1]["usage"]]
    prompt = sum(u["prompt_tokens"] for u in usages) + len(scored["tokens"])
    generated = sum(u["completion_tokens"] for u in usages)
    assert text["usage"] == {"prompt_tokens": 5, "completion_tokens": 14, "total_tokens": 19}
    assert delta(after, before, f'genserve_prompt_tokens_total{{model="{MODEL}"}}') == prompt
    assert delta(after, before, f'genserve_completion_tokens_total{{model="{MODEL}"}}') == (
        generated
    )
    # one first token per request that generated any (scoring generates none), and a gap
    # before each later token of each choice
    per_choice = [7, 7, 4, chunks[-1]["usage"]["completion_tokens"]]
    first = 2 + (per_choice[-1] > 0)
    gaps = sum(t - 1 for t in per_choice if t)
    ttft = f'genserve_time_to_first_token_seconds_count{{model="{MODEL}"}}'
    itl = f'genserve_inter_token_latency_seconds_count{{model="{MODEL}"}}'
    assert delta(after, before, ttft) == first
    assert delta(after, before, itl) == gaps
    assert after[f'genserve_time_to_first_token_seconds_sum{{model="{MODEL}"}}'] > 0
    assert after[f'genserve_inter_token_latency_seconds_bucket{{le="+Inf",model="{MODEL}"}}'] > 0


def test_requests_are_counted_by_the_version_that_served_them(server: Server) -> None:
    version = server.client.get(f"/models/{MODEL}").json()["served_version"]
    name = f'genserve_model_requests_total{{model="{MODEL}",status="200",version="{version}"}}'
    before = scrape(server)
    for _ in range(3):
        assert server.client.post("/generate/text", json={"max_new_tokens": 2}).status_code == 200
    assert delta(scrape(server), before, name) == 3


def test_sequence_gauges_show_running_and_waiting_streams(server: Server) -> None:
    running = f'genserve_running_sequences{{model="{MODEL}",worker="0"}}'
    waiting = f'genserve_waiting_sequences{{model="{MODEL}",worker="0"}}'
    body = {"prompt": "A", "max_new_tokens": 100_000, "stream": True}
    clients = [httpx.Client(base_url=server.url, timeout=30) for _ in range(2)]
    try:
        streams = [
            c.send(c.build_request("POST", "/generate/text", json=body), stream=True)
            for c in clients
        ]
        # Kept referenced: a line iterator dropped mid-stream is closed by the garbage
        # collector, and httpcore closes the connection with it (the first stream would end).
        lines = streams[0].iter_lines()
        assert next(lines) == "event: token"  # the first is decoding
        samples = wait_for(server, lambda s: s.get(running) == 1 and s.get(waiting) == 1)
        assert (samples[running], samples[waiting]) == (1, 1)  # one slot: the other waits
    finally:
        for stream, client in zip(streams, clients, strict=True):
            stream.close()
            client.close()
    samples = wait_for(server, lambda s: s.get(running) == 0 and s.get(waiting) == 0)
    assert (samples[running], samples[waiting]) == (0, 0)


def test_job_gauges_and_finished_counter_come_from_the_database(server: Server) -> None:
    db = Database(f"sqlite:///{server.state_dir / 'genserve.db'}")
    statuses = ["queued"] * 2 + ["running"] + ["succeeded"] + ["failed"] * 2 + ["cancelled"]
    with db.session() as session:
        now = datetime.now(UTC)
        session.add_all(
            TrainingJob(kind="text-ngram", name=f"job-{s}", status=s, created_at=now)
            for s in statuses
        )
    db.dispose()
    expected = {
        'genserve_training_jobs{status="queued"}': 2,
        'genserve_training_jobs{status="running"}': 1,
        'genserve_training_jobs_finished_total{outcome="succeeded"}': 1,
        'genserve_training_jobs_finished_total{outcome="failed"}': 2,
        'genserve_training_jobs_finished_total{outcome="cancelled"}': 1,
        "genserve_training_jobs_up": 1,
    }
    # a scrape reuses a read younger than 2 s, so the new rows show within that
    samples = wait_for(server, lambda s: all(s.get(k) == v for k, v in expected.items()))
    assert {k: samples.get(k) for k in expected} == expected


def test_request_id_is_echoed_when_safe_and_replaced_when_not(server: Server) -> None:
    safe = "trace-01.abc:XYZ_9"
    answer = server.client.get("/healthz", headers={"X-Request-ID": safe})
    assert answer.headers["x-request-id"] == safe
    generated = re.compile(r"[0-9a-f]{32}")
    for hostile in ("has space", "x" * 129, "<script>", "a;b=c", ""):
        answer = server.client.get("/healthz", headers={"X-Request-ID": hostile})
        assert generated.fullmatch(answer.headers["x-request-id"]), hostile
    ids = {server.client.get("/healthz").headers["x-request-id"] for _ in range(3)}
    assert len(ids) == 3 and all(generated.fullmatch(i) for i in ids)
    # refusals by the middleware and the routers carry one too
    assert "x-request-id" in server.client.get("/no/such/path").headers
    too_big = server.client.post("/classify", content=b"x" * (128 * 1024))
    assert too_big.status_code == 413 and "x-request-id" in too_big.headers
    # and the access log line names it
    server.client.get("/healthz", headers={"X-Request-ID": "find-me-in-the-log"})
    wait_until(lambda: "request_id=find-me-in-the-log" in server.output())


def test_model_headers_on_png_sse_and_json_answers(server: Server) -> None:
    def version(model: str) -> str:
        return str(server.client.get(f"/models/{model}").json()["served_version"])

    png = server.client.post(
        "/generate/image", json={"n": 2, "label": 3}, headers={"Accept": "image/png"}
    )
    assert png.headers["content-type"] == "image/png"
    assert png.headers["x-model"] == "tiny-cvae"
    assert png.headers["x-model-version"] == version("tiny-cvae")

    body = {"prompt": "A", "max_new_tokens": 3, "stream": True}
    with server.client.stream("POST", "/generate/text", json=body) as sse:
        assert sse.headers["content-type"].startswith("text/event-stream")
        assert (sse.headers["x-model"], sse.headers["x-model-version"]) == (MODEL, version(MODEL))
        sse.read()

    classified = server.client.post("/classify", json={"inputs": ["a fine day"]})
    assert classified.headers["x-model"] == "sentiment"
    assert classified.headers["x-model-version"] == version("sentiment")
    assert "x-model" not in server.client.get("/healthz").headers  # no model served it


def wait_for(server: Server, done, timeout: float = 10) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Scrapes until `done(samples)`; the last samples either way, for the assertion."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(server)
        if done(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.2)


def wait_until(done, timeout: float = 5) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
