"""GENSERVE_MAX_SPOOL_BYTES bounds the bytes of uploads being spooled at once, whatever their
number: an upload declaring a Content-Length that does not fit is refused (429, Retry-After,
the JSON error) before its body is read; a chunked one is counted as it streams and refused
once the total would pass the limit. What a finished upload held is free again.

Raw sockets, so that a slow upload can hold its share while the others arrive, and so that a
refusal can be seen to come before the body is sent.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.server import Server
from tests.reliability.conftest import start_server

pytestmark = pytest.mark.e2e
KB = 1024
SPOOL = 1024 * KB
BOUNDARY = "spool-test-boundary"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp("spool") / "state",
        GENSERVE_MAX_SPOOL_BYTES=str(SPOOL),
        GENSERVE_MAX_UPLOADS_IN_FLIGHT="16",  # the count never refuses here: the bytes do
        GENSERVE_RUNNER_SLOTS="0",
    )
    yield srv
    srv.stop()


def multipart(size: int, tag: str) -> bytes:
    """A POST /datasets body: a text corpus of about `size` bytes, distinct per `tag`."""
    line = f"{tag} shall I compare thee to a summer's day\n".encode()
    corpus = line * (size // len(line) + 1)
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{tag}.txt"'
        "\r\nContent-Type: text/plain\r\n\r\n"
    ).encode()
    return head + corpus + f"\r\n--{BOUNDARY}--\r\n".encode()


OPEN: list[socket.socket] = []  # closed after each test, so that a failure leaves no upload


@pytest.fixture(autouse=True)
def _close_sockets() -> Iterator[None]:
    yield
    while OPEN:
        OPEN.pop().close()


class Upload:
    """One POST /datasets over its own connection, sent piece by piece."""

    def __init__(self, srv: Server, body: bytes, chunked: bool = False) -> None:
        self.body, self.chunked, self.sent = body, chunked, 0
        self.sock = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
        OPEN.append(self.sock)
        length = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}"
        self.sock.sendall(
            f"POST /datasets HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n{length}\r\n\r\n".encode()
        )

    def send(self, size: int) -> bool:
        """Sends up to `size` more bytes of the body; False once the server answered (and
        stopped reading)."""
        if self.answered(0):
            return False
        piece = self.body[self.sent : self.sent + size]
        self.sent += len(piece)
        try:
            if self.chunked:
                self.sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                if self.sent == len(self.body):
                    self.sock.sendall(b"0\r\n\r\n")
            else:
                self.sock.sendall(piece)
        except OSError:  # the server closed after answering
            return False
        return True

    def finish(self) -> None:
        while self.sent < len(self.body) and self.send(64 * KB):
            pass

    def answered(self, timeout: float) -> bool:
        return bool(select.select([self.sock], [], [], timeout)[0])

    def response(self, timeout: float = 30) -> tuple[int, dict[str, str], dict]:
        assert self.answered(timeout), "no answer"
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
        self.sock.close()
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:])
        headers = {k.lower(): v for k, v in headers.items()}
        if headers.get("transfer-encoding") == "chunked":  # one chunk, as starlette sends
            body = body.split(b"\r\n", 1)[1].rsplit(b"\r\n0\r\n", 1)[0]
        return int(lines[0].split()[1]), headers, json.loads(body)


def assert_overloaded(status: int, headers: dict[str, str], body: dict) -> None:
    assert status == 429, body
    assert int(headers["retry-after"]) >= 1, headers
    assert body["error"]["code"] == "overloaded", body
    assert body["error"]["details"]["max_spool_bytes"] == SPOOL, body


def test_uploads_share_the_spool_limit(server: Server, tmp_path: Path) -> None:
    # A declares 600 KB and sends half: its 600 KB stay reserved while it is slow
    holder = Upload(server, multipart(600 * KB, "holder"))
    holder.send(300 * KB)
    time.sleep(0.3)

    # B declares 500 KB: 1100 KB > 1024 KB, refused before a byte of its body is sent
    started = time.monotonic()
    refused = Upload(server, multipart(500 * KB, "refused"))
    assert refused.answered(10), "B was not refused before sending its body"
    assert_overloaded(*refused.response())
    refused_in = time.monotonic() - started

    # C declares 300 KB: 900 KB fit
    fits = Upload(server, multipart(300 * KB, "fits"))
    fits.finish()
    assert fits.response()[0] == 201

    # D is chunked (no Content-Length): counted as it streams, refused past the limit
    chunked = Upload(server, multipart(500 * KB, "chunked"), chunked=True)
    sent = 0
    while chunked.send(32 * KB):
        sent = chunked.sent
        time.sleep(0.02)
    assert_overloaded(*chunked.response())
    assert sent < 500 * KB, "refused only after the whole body"

    # A finishes; its share is free again, and D's bytes fit
    holder.finish()
    assert holder.response()[0] == 201
    again = Upload(server, multipart(500 * KB, "chunked"), chunked=True)
    again.finish()
    assert again.response()[0] == 201
    print(f"refused by Content-Length in {refused_in * 1000:.0f} ms; chunked after {sent} B")

    # an upload bigger than the whole spool can never fit: 413, not a 429 to retry forever
    too_big = Upload(server, multipart(SPOOL + KB, "too-big"))
    status, _, body = too_big.response()
    assert status == 413 and body["error"]["code"] == "payload_too_large", body
    assert "Traceback" not in server.output(), server.output()
