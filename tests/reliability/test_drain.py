"""SIGTERM drains: new work is refused with 503 at once, in-flight streams and requests finish
within GENSERVE_DRAIN_TIMEOUT_S, what is still running past it ends with an SSE `error` event
or a JSON 503 (never a cut stream or a plain-text 500), and the running job goes back to the
queue with its checkpoint."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.server import Server
from tests.reliability.conftest import start_server
from tests.tiny_models import TINY_GPT_PARAMS

STREAMS = 16
SHORT_DRAIN_S = 5  # the new-work check must run inside it, on a busy machine too
TOKENS = 1000  # long enough to be in flight at the SIGTERM, short enough for the drain


def stream(url: str, tokens: int, first: threading.Event, out: list[Any]) -> None:
    """One SSE generation: appends (last event name, its data), or the error that cut it."""
    body = {"prompt": "A", "max_new_tokens": tokens, "stream": True}
    last: tuple[str, Any] = ("none", None)
    try:
        with (
            httpx.Client(base_url=url, timeout=60) as client,
            client.stream("POST", "/generate/text", json=body) as response,
        ):
            assert response.status_code == 200, response.read()
            name = ""
            for line in response.iter_lines():
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    last = (name, json.loads(line[5:]))
                    first.set()
        out.append(last)
    except Exception as exc:  # a cut stream: the test says which
        out.append(("cut", f"{type(exc).__name__}: {exc} after {last[0]}"))
    finally:
        first.set()


def post(url: str, body: dict[str, Any], out: list[Any]) -> None:
    try:
        response = httpx.post(f"{url}/generate/text", json=body, timeout=60)
        out.append((response.status_code, response.headers.get("content-type", ""), response))
    except Exception as exc:
        out.append(("cut", type(exc).__name__, None))


def start_streams(srv: Server, tokens: int) -> tuple[list[threading.Thread], list[Any]]:
    results: list[Any] = []
    threads, started = [], []
    for _ in range(STREAMS):
        first = threading.Event()
        thread = threading.Thread(target=stream, args=(srv.url, tokens, first, results))
        thread.start()
        threads.append(thread)
        started.append(first)
    for first in started:
        assert first.wait(60), "a stream never produced a token"
    return threads, results


def sigterm(srv: Server) -> float:
    srv.process.send_signal(signal.SIGTERM)
    return time.monotonic()


def refused_while_draining(srv: Server) -> None:
    """New work gets 503 with Retry-After, readiness 503, while liveness still answers."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        response = httpx.post(
            f"{srv.url}/generate/text", json={"prompt": "A", "max_new_tokens": 2}, timeout=10
        )
        if response.status_code == 503:
            assert response.json()["error"]["code"] == "shutting_down"
            assert int(response.headers["retry-after"]) > 0
            assert httpx.get(f"{srv.url}/healthz", timeout=10).status_code == 200
            assert httpx.get(f"{srv.url}/readyz", timeout=10).status_code == 503
            return
        time.sleep(0.05)
    pytest.fail("new work was still accepted 5 s after SIGTERM")


def test_sigterm_lets_16_streams_and_a_request_finish_and_requeues_the_running_job(
    tmp_path: Path,
) -> None:
    srv = start_server(
        tmp_path / "state",
        GENSERVE_DRAIN_TIMEOUT_S="60",
        GENSERVE_RUNNER_SLOTS="1",
        GENSERVE_JOB_HEARTBEAT_S="0.2",
        GENSERVE_MAX_NEW_TOKENS="100000",
    )
    params = {**TINY_GPT_PARAMS, "max_steps": 1_000_000, "eval_every": 20}
    body = {"kind": "text-gpt", "dataset": "tinyshakespeare", "name": "drained", "params": params}
    job = srv.client.post("/train", json=body).json()
    deadline = time.monotonic() + 120
    while srv.client.get(f"/train/{job['id']}").json()["progress"] <= 0:
        assert time.monotonic() < deadline, srv.output()[-3000:]
        time.sleep(0.2)

    threads, results = start_streams(srv, tokens=TOKENS)
    answers: list[Any] = []
    plain = threading.Thread(
        target=post, args=(srv.url, {"prompt": "A", "max_new_tokens": TOKENS}, answers)
    )
    plain.start()
    time.sleep(1)
    assert not results and not answers, "the work finished before the SIGTERM: make it longer"
    sigterm(srv)
    refused_while_draining(srv)
    for thread in [*threads, plain]:
        thread.join(90)
    assert srv.process.wait(60) in (0, -signal.SIGTERM), srv.output()[-3000:]

    assert [name for name, _ in results] == ["done"] * STREAMS, results
    assert all(data["usage"]["completion_tokens"] == TOKENS for _, data in results)
    assert answers[0][0] == 200, answers
    log = srv.output()
    assert "Traceback" not in log, log[-3000:]
    assert "ASGI callable returned without completing response" not in log
    assert "timeout graceful shutdown exceeded" not in log

    again = start_server(
        tmp_path / "state", tmp_path / "state-pretrained", GENSERVE_RUNNER_SLOTS="0"
    )
    try:
        requeued = again.client.get(f"/train/{job['id']}").json()
        assert requeued["status"] == "queued" and requeued["progress"] > 0, requeued
        assert (tmp_path / "state" / "jobs" / str(job["id"]) / "checkpoint").is_dir()
    finally:
        again.stop()


def test_past_the_drain_timeout_streams_end_with_an_error_event_and_requests_with_503(
    tmp_path: Path,
) -> None:
    srv = start_server(
        tmp_path / "state",
        GENSERVE_DRAIN_TIMEOUT_S=str(SHORT_DRAIN_S),
        GENSERVE_RUNNER_SLOTS="0",
        GENSERVE_MAX_NEW_TOKENS="100000",
        GENSERVE_REQUEST_TIMEOUT_S="120",
    )
    threads, results = start_streams(srv, tokens=100_000)
    answers: list[Any] = []
    plain = threading.Thread(
        target=post, args=(srv.url, {"prompt": "A", "max_new_tokens": 100_000}, answers)
    )
    plain.start()
    time.sleep(0.5)
    signalled = sigterm(srv)
    refused_while_draining(srv)
    for thread in [*threads, plain]:
        thread.join(60)
    assert srv.process.wait(60) in (0, -signal.SIGTERM), srv.output()[-3000:]
    assert time.monotonic() - signalled < SHORT_DRAIN_S + 15

    assert [name for name, _ in results] == ["error"] * STREAMS, results
    assert {data["error"]["code"] for _, data in results} == {"shutting_down"}
    status, content_type, response = answers[0]
    assert (status, content_type) == (503, "application/json"), answers
    assert response.json()["error"]["code"] == "shutting_down"
    log = srv.output()
    assert "ASGI callable returned without completing response" not in log
    assert "timeout graceful shutdown exceeded" not in log, "uvicorn's backstop had to cut"
