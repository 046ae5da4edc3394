"""Database outages a test controls: a TCP proxy in front of PostgreSQL (connections cut and
refused while down, as when the server stops), and for SQLite, which has no server, every
statement failing as SQLite fails when its file cannot be read or locked."""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import make_url


class TcpProxy:
    """127.0.0.1:<port> forwarding to `target`; `down()` cuts every connection and refuses
    (accepts and closes) new ones until `up()`."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.is_down = False
        self.lock = threading.Lock()
        self.open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.is_down:
                client.close()
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def down(self) -> None:
        self.is_down = True
        with self.lock:
            sockets, self.open = self.open, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def up(self) -> None:
        self.is_down = False

    def close(self) -> None:
        self.down()
        self.listener.close()


class Outage:
    """`url` is what the code under test connects to; `down()` / `up()` switch the outage.
    SQLite needs `watch(engine)` on each engine that should see it."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        self.proxy: TcpProxy | None = None
        self.is_down = False
        self.url = url
        if parsed.get_backend_name() != "sqlite":
            self.proxy = TcpProxy(parsed.host or "127.0.0.1", parsed.port or 5432)
            self.url = parsed.set(host="127.0.0.1", port=self.proxy.port).render_as_string(
                hide_password=False
            )

    def watch(self, engine: Engine) -> None:
        if self.proxy is not None:
            return

        @event.listens_for(engine, "before_cursor_execute")
        def _fail(*_: Any) -> None:
            if self.is_down:
                raise sqlite3.OperationalError("disk I/O error")

    def down(self) -> None:
        self.is_down = True
        if self.proxy is not None:
            self.proxy.down()

    def up(self) -> None:
        self.is_down = False
        if self.proxy is not None:
            self.proxy.up()

    @contextlib.contextmanager
    def during(self, seconds: float) -> Iterator[threading.Thread]:
        """Down now, up again after `seconds` (on a timer thread, which is yielded)."""
        self.down()
        timer = threading.Timer(seconds, self.up)
        timer.start()
        try:
            yield timer
        finally:
            timer.join()

    def close(self) -> None:
        if self.proxy is not None:
            self.proxy.close()
