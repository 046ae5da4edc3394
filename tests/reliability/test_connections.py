"""Connection hygiene against a real server: half-sent headers and silent bodies time out with
408, uploads past the in-flight limit are refused before their bodies are read, and 1,100 slow
clients under `ulimit -n 1024` leave the service answering everyone else."""

from __future__ import annotations

import contextlib
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import Server
from tests.reliability.conftest import LIMITS, start_server
from tests.tiny_models import small_pretrained

HALF = b"POST /classify HTTP/1.1\r\nHost: genserve\r\nContent-Type: application/json\r\n"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(
        tmp_path_factory.mktemp("connections") / "state",
        GENSERVE_RUNNER_SLOTS="0",
        GENSERVE_HEADER_TIMEOUT_S="1",
        GENSERVE_BODY_TIMEOUT_S="1",
        GENSERVE_MAX_UPLOADS_IN_FLIGHT="1",
    )
    yield server
    server.stop()


def connect(srv: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", srv.port), timeout=10)


def answer_and_close(sock: socket.socket) -> bytes:
    """What the server sends before closing; fails if it keeps the connection open."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_half_sent_headers_get_408_and_are_closed(srv: Server) -> None:
    with connect(srv) as sock:
        sock.sendall(HALF)
        started = time.monotonic()
        reply = answer_and_close(sock)
    assert reply.startswith(b"HTTP/1.1 408"), reply
    assert time.monotonic() - started < 5


def test_headers_trickled_a_byte_at_a_time_still_time_out(srv: Server) -> None:
    started = time.monotonic()
    with connect(srv) as sock:
        with contextlib.suppress(OSError):
            for byte in HALF:
                sock.sendall(bytes([byte]))
                time.sleep(0.2)
                if time.monotonic() - started > 8:
                    break
        reply = answer_and_close(sock)
    assert reply.startswith(b"HTTP/1.1 408"), reply
    assert time.monotonic() - started < 5


def test_headers_past_64_kib_get_431(srv: Server) -> None:
    with connect(srv) as sock:
        with contextlib.suppress(OSError):
            for i in range(100):
                sock.sendall(f"X-Filler-{i}: {'a' * 1000}\r\n".encode() if i else HALF)
        reply = answer_and_close(sock)
    assert reply.startswith(b"HTTP/1.1 431"), reply[:200]


def test_a_body_that_goes_silent_times_out(srv: Server) -> None:
    with connect(srv) as sock:
        sock.sendall(HALF + b"Content-Length: 100\r\n\r\n" + b'{"inputs": ')
        started = time.monotonic()
        reply = answer_and_close(sock)
    assert b" 408 " in reply.split(b"\r\n")[0] or reply == b"", reply
    assert time.monotonic() - started < 5
    assert srv.client.get("/healthz").status_code == 200


def test_an_upload_past_the_in_flight_limit_is_refused_before_its_body(srv: Server) -> None:
    head = (
        b"POST /datasets HTTP/1.1\r\nHost: genserve\r\n"
        b"Content-Type: multipart/form-data; boundary=B\r\nContent-Length: 10000000\r\n\r\n"
    )
    with connect(srv) as first, connect(srv) as second:
        part = b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.txt"'
        first.sendall(head + part)
        # the first upload is in flight, sending its body slowly
        time.sleep(0.3)
        first.sendall(b"\r\n\r\nsome text")
        second.sendall(head)  # no body at all: a refusal must not wait for it
        second.settimeout(5)
        reply = second.recv(65536)
    assert reply.startswith(b"HTTP/1.1 429"), reply
    assert b"retry-after" in reply.lower()


def spawn_with_fd_limit(tmp_path: Path, limit: int, **env: str) -> Server:
    """A server whose open-file limit is `limit` (this process keeps its own)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        server = Server(tmp_path / "state", **env)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return server.ready()


def test_1100_slow_clients_under_ulimit_1024_leave_others_served(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 1400:
        pytest.skip(f"the test needs 1,400 open files here (hard limit {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1400), hard))
    (tmp_path / "state").mkdir()
    srv = spawn_with_fd_limit(
        tmp_path,
        1024,
        GENSERVE_PRETRAINED_DIR=str(small_pretrained(tmp_path / "pretrained")),
        GENSERVE_DEFAULT_TEXT_MODEL="tiny-gpt",
        GENSERVE_DEFAULT_IMAGE_MODEL="tiny-cvae",
        GENSERVE_HEADER_TIMEOUT_S="60",  # the slow clients outlive the test: eviction serves
        **LIMITS,
    )
    slow: list[socket.socket] = []
    try:
        for _ in range(1100):
            try:
                sock = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
                sock.sendall(HALF)
                slow.append(sock)
            except OSError:
                pass
        served = 0
        with httpx.Client(base_url=srv.url, timeout=10) as client:
            for _ in range(20):
                body = {"inputs": ["a fine film"]}
                r = client.post("/classify", json=body, headers={"Connection": "close"})
                served += r.status_code == 200
                assert client.get("/healthz", headers={"Connection": "close"}).status_code == 200
        assert served == 20
        assert srv.process.poll() is None
        assert "connections open: closing the oldest idle ones" in srv.output()
    finally:
        for sock in slow:
            sock.close()
        srv.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
