"""The generation limits count sequences (n x prompts), not requests: a request of n = 16
used to count as one, so 30 of them queued 480 sequences past the documented 320 and their
clients got 504 after 30 s instead of a quick 429."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.e2e.server import Server
from tests.reliability.conftest import start_server

RUNNING, WAITING = 4, 28  # 32 sequences per model, then 429


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(
        tmp_path_factory.mktemp("sequences") / "state",
        GENSERVE_RUNNER_SLOTS="0",
        GENSERVE_MAX_RUNNING_SEQUENCES=str(RUNNING),
        GENSERVE_MAX_WAITING_SEQUENCES=str(WAITING),
        GENSERVE_MAX_NEW_TOKENS="100000",
        # the admitted request must not meet the timeout on a busy machine: a 504 here means
        # requests were queued past the limit, not a slow CPU
        GENSERVE_REQUEST_TIMEOUT_S="100",
    )
    yield server
    server.stop()


def generate(srv: Server, n: int, tokens: int, timeout: float = 60) -> httpx.Response:
    body = {"prompt": "A", "n": n, "max_new_tokens": tokens}
    return httpx.post(f"{srv.url}/generate/text", json=body, timeout=timeout)


def test_thirty_requests_of_n16_get_quick_429s_beyond_the_sequence_limit(srv: Server) -> None:
    started = time.monotonic()
    with ThreadPoolExecutor(30) as pool:
        answers = list(pool.map(lambda _: generate(srv, 16, 300, timeout=120), range(30)))
    statuses = [a.status_code for a in answers]
    refused = [a for a in answers if a.status_code == 429]
    assert 504 not in statuses, statuses
    assert statuses.count(200) <= (RUNNING + WAITING) // 16 and len(refused) >= 28, statuses
    assert all(a.headers["retry-after"] and a.elapsed.total_seconds() < 5 for a in refused)
    assert time.monotonic() - started < 110


def test_a_request_that_fits_is_admitted_once_the_sequences_finish(srv: Server) -> None:
    assert generate(srv, 16, 4).status_code == 200
    assert generate(srv, 16, 4).status_code == 200  # what the first held was released


def test_several_prompts_are_counted_whole_and_a_refusal_leaves_nothing_queued(
    srv: Server,
) -> None:
    body = {"prompt": ["A"] * 3, "n": 16, "max_tokens": 2}  # 48 sequences > 32
    refused = httpx.post(f"{srv.url}/v1/completions", json=body, timeout=30)
    assert refused.status_code == 429, refused.text
    assert generate(srv, 16, 2).status_code == 200
    body = {"prompt": ["A", "B"], "n": 16, "max_tokens": 2}  # exactly the limit
    assert httpx.post(f"{srv.url}/v1/completions", json=body, timeout=60).status_code == 200


def test_a_stream_of_several_prompts_left_early_frees_every_prompt_sequences(
    srv: Server,
) -> None:
    """The second prompt never streamed: its sequences must still be released."""
    body = {"prompt": ["A", "B"], "n": 16, "max_tokens": 5000, "stream": True}
    with (
        httpx.Client(base_url=srv.url, timeout=30) as client,
        client.stream("POST", "/v1/completions", json=body) as response,
    ):
        assert response.status_code == 200
        assert next(response.iter_lines()).startswith("data:")
    deadline = time.monotonic() + 10
    while generate(srv, 16, 2).status_code != 200:
        assert time.monotonic() < deadline, "the sequences of the prompt never streamed leaked"
        time.sleep(0.2)
