"""Real servers for the reliability tests: small pretrained dirs so each starts in seconds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.server import Server
from tests.tiny_models import small_pretrained


def start_server(
    state_dir: Path, pretrained: Path | None = None, access_log: bool = False, **env: str
) -> Server:
    """`genserve serve` on `state_dir`, ready to answer; the tiny models are the defaults."""
    state_dir.mkdir(parents=True, exist_ok=True)
    pretrained = pretrained or small_pretrained(state_dir.parent / f"{state_dir.name}-pretrained")
    settings = {
        "GENSERVE_PRETRAINED_DIR": str(pretrained),
        "GENSERVE_DEFAULT_TEXT_MODEL": "tiny-gpt",
        "GENSERVE_DEFAULT_IMAGE_MODEL": "tiny-cvae",
        "GENSERVE_DEFAULT_VAE_MODEL": "tiny-cvae",
        "GENSERVE_THREADS_PER_WORKER": "1",
        "GENSERVE_RUNNER_THREADS": "1",
        **env,
    }
    return Server(state_dir, access_log=access_log, **settings).ready()


# The limits of the shared server: small, so that no request (fuzzed or not) starts long work.
LIMITS = {
    "GENSERVE_RUNNER_SLOTS": "0",  # POST /train only queues
    "GENSERVE_MAX_NEW_TOKENS": "16",
    "GENSERVE_MAX_IMAGES": "4",
    "GENSERVE_MAX_INPUTS": "16",
    "GENSERVE_MAX_PROMPT_CHARS": "256",
    "GENSERVE_MAX_TEXT_CHARS": "1000",
    "GENSERVE_MAX_BODY_BYTES": str(256 * 1024),
    "GENSERVE_REQUEST_TIMEOUT_S": "10",
}


@pytest.fixture(scope="package")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the fuzzing, hostile input and hostile artifact tests (no job runner)."""
    srv = start_server(tmp_path_factory.mktemp("reliability") / "state", **LIMITS)
    yield srv
    srv.stop()
