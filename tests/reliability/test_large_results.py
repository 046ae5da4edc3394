"""A worker's answer larger than the pipe's buffer reaches the client whole. The server runs
under uvloop, whose add_reader makes the result pipe non-blocking: reading such a message
used to stop at the buffer's end with BlockingIOError, which the pool took for a dead worker
(503 worker_lost, the worker restarted)."""

from __future__ import annotations

from pathlib import Path

from tests.reliability.conftest import start_server


def test_a_thousand_images_in_one_answer(tmp_path: Path) -> None:
    server = start_server(tmp_path / "state", GENSERVE_MAX_IMAGES="1024")
    try:
        for seed in range(3):  # 1,024 x 28 x 28 pixels: ~800 KB in one message
            response = server.client.post("/generate/image", json={"n": 1024, "seed": seed})
            assert response.status_code == 200, response.text
            assert len(response.json()["images"]) == 1024
    finally:
        server.stop()
    assert "exited" not in server.output()
