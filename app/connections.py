"""Connection hygiene uvicorn lacks: a deadline for a request's headers, a silence limit while
its body arrives, and a bound on open connections below the open-file limit.

Neither of uvicorn's parsers times out headers: `timeout_keep_alive` stops once the first byte
arrives, so clients sending half a request (slowloris) held their sockets for good, and 1,100
of them under `ulimit -n 1024` left no descriptor for anyone else. Here, a connection past the
bound evicts the oldest one that has no request in progress (half-sent headers, or idle between
requests); when every connection has one, the newcomer gets a 503 and is closed.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.settings import Settings

log = logging.getLogger("genserve.connections")
FD_HEADROOM = 128  # descriptors kept for worker pipes, the database, logs and artifacts
MAX_HEADER_BYTES = 64 * 1024  # a request line and headers; httptools itself has no limit


def connection_limit(settings: Settings) -> int:
    """GENSERVE_MAX_CONNECTIONS, or the open-file limit less the headroom."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    auto = max(16, soft - FD_HEADROOM) if soft != resource.RLIM_INFINITY else 65536
    return min(settings.max_connections or auto, auto)


def _reply(status: bytes, message: bytes, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\nconnection: close\r\n"
        + extra
        + b"content-length: " + str(len(message)).encode() + b"\r\n\r\n" + message
    )  # fmt: skip


TIMEOUT_408 = _reply(
    b"408 Request Timeout",
    b'{"error":{"code":"request_timeout","message":"the request was not sent in time",'
    b'"details":null}}',
)
TOO_LARGE_431 = _reply(
    b"431 Request Header Fields Too Large",
    b'{"error":{"code":"headers_too_large","message":"the request line and headers exceed '
    b'64 KiB","details":null}}',
)
FULL_503 = _reply(
    b"503 Service Unavailable",
    b'{"error":{"code":"too_many_connections","message":"too many open connections; retry '
    b'shortly","details":null}}',
    b"retry-after: 1\r\n",
)


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with the header and body timeouts and the connection bound
    (the class attributes are set by `guarded_protocol`)."""

    header_timeout_s = 10.0
    body_timeout_s = 30.0
    max_connections = 1000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timer: asyncio.TimerHandle | None = None
        self._header_bytes = 0  # received while waiting for the current request's headers
        self._refused = False  # answered and half-closed: what still arrives is dropped
        # Between a request's headers and the end of its body: what arrives is body, even
        # after an early answer (a 413 sent before the body was read), not the next headers.
        self._in_body = False
        # Connections with no request in progress, oldest first (shared by the server's).
        idle: dict[GuardedHttpTools, None] | None = getattr(self.server_state, "idle", None)
        if idle is None:
            idle = {}
            self.server_state.idle = idle  # type: ignore[attr-defined]
        self._idle = idle

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.max_connections and not self._evict_one():
            self.transport = transport
            _warn(f"{len(self.connections)} connections open, all busy: refusing new ones")
            transport.write(FULL_503)
            transport.close()
            return
        super().connection_made(transport)
        self._waiting_for_request()

    def _evict_one(self) -> bool:
        """Closes the oldest connection with no request in progress; False if none has."""
        _warn(f"{len(self.connections)} connections open: closing the oldest idle ones")
        while self._idle:
            oldest = next(iter(self._idle))
            self._idle.pop(oldest)
            if not oldest.transport.is_closing():
                oldest.transport.write(TIMEOUT_408)
                oldest.transport.close()
                oldest.connections.discard(oldest)  # its descriptor goes now, not next tick
                return True
        return False

    def _waiting_for_request(self) -> None:
        self._idle[self] = None
        self._header_bytes = 0
        self._arm(self.header_timeout_s)

    def _arm(self, seconds: float | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None if seconds is None else self.loop.call_later(seconds, self._expire)

    def _expire(self) -> None:
        """Headers not complete in time, or the body went silent: 408 unless a response has
        started, then close (the application sees a disconnect)."""
        self._timer = None
        if self.transport.is_closing() or self._refused:
            self.transport.close()
            return
        cycle = self.cycle
        if cycle is None or cycle.response_complete or not cycle.response_started:
            self.transport.write(TIMEOUT_408)
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._idle.pop(self, None)
        self._arm(None)
        if self.flow is None:  # refused in connection_made: nothing else to release
            self.connections.discard(self)
            return
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)
        if self in self._idle:  # still no complete headers
            self._header_bytes += len(data)
            if self._header_bytes > MAX_HEADER_BYTES and not self.transport.is_closing():
                self._refuse(TOO_LARGE_431)

    def _refuse(self, reply: bytes) -> None:
        """Answers, then half-closes: closing with the client's bytes unread would reset the
        connection and lose the answer. The header timer closes it for good."""
        self._refused = True
        self._idle.pop(self, None)
        self.transport.write(reply)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        else:
            self.transport.close()
        self._arm(self.header_timeout_s)

    def on_headers_complete(self) -> None:
        self._idle.pop(self, None)
        self._in_body = True
        super().on_headers_complete()
        self._arm(self.body_timeout_s)  # cancelled once the body is complete

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self._arm(self.body_timeout_s)

    def on_message_complete(self) -> None:
        self._in_body = False
        super().on_message_complete()
        self._arm(None)
        cycle = self.cycle
        answered = cycle is not None and cycle.response_complete
        if answered and self not in self._idle and not self.transport.is_closing():
            self._waiting_for_request()  # answered early: the body's end starts the wait

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self._in_body:
            self._waiting_for_request()


_warned = {"at": 0.0}


def _warn(message: str) -> None:
    """At most one warning every 10 s: a flood of connections must not flood the log."""
    now = time.monotonic()
    if now - _warned["at"] >= 10:
        _warned["at"] = now
        log.warning(message)


def guarded_protocol(settings: Settings) -> type[GuardedHttpTools]:
    """The protocol class for uvicorn's `http` option, with these settings' limits."""
    attrs = {
        "header_timeout_s": settings.header_timeout_s,
        "body_timeout_s": settings.body_timeout_s,
        "max_connections": connection_limit(settings),
    }
    return type("GenserveHttp", (GuardedHttpTools,), attrs)
