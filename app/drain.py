"""Graceful drain on SIGTERM: new work is refused with 503 while in-flight requests and streams
get `drain_timeout_s` to finish; past it, what is left ends with an error the client can read
(an SSE `error` event, a JSON 503) instead of a connection cut mid-response.

Work is cut by cancelling the task that waits for it, but only while it waits for the engine
(`guard`) or before its response started (`DrainGate`): a cancel that lands while a response
is being written would cut it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import Unavailable, error_response

log = logging.getLogger("genserve.drain")
T = TypeVar("T")
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})  # answer while draining
AFTER_EXPIRY_S = 5.0  # after the deadline: time for the error events and 503s to go out
RETRY_AFTER_S = 5


class ShuttingDown(Unavailable):
    """This replica is shutting down: the client should retry (another replica answers)."""

    code = "shutting_down"

    def __init__(self, message: str = "the server is shutting down; retry the request") -> None:
        super().__init__(message, retry_after=RETRY_AFTER_S)


class Drain:
    """What a drain needs to know: whether it began, the work in flight, and what to cut."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.draining = False
        self.expired = False
        self.inflight = 0  # requests admitted by DrainGate and not finished
        self._waiting: set[asyncio.Task[Any]] = set()  # tasks that may be cut right now
        self._cut: set[asyncio.Task[Any]] = set()

    async def run(self, state: Any) -> None:
        """Refuses new work at once, waits for in-flight work, cuts it at the deadline, and
        returns once nothing is in flight (or the cut had time to reach its clients)."""
        self.draining = state.draining = True
        log.info("draining %d request(s) for up to %g s", self.inflight, self.timeout_s)
        if not await self._settled(self.timeout_s):
            log.warning("drain timeout: ending %d request(s) with an error", self.inflight)
            self.expired = True
            await self._settled(AFTER_EXPIRY_S)
        log.info("drained")

    async def _settled(self, timeout_s: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.inflight > 0 and loop.time() < deadline:
            if self.expired:
                self.expire()  # again: a cancel can be lost (asyncio.wait_for in 3.11 drops
                # one that races with the result it waits for)
            await asyncio.sleep(0.05)
        return self.inflight == 0

    def expire(self) -> None:
        """Cancels every task waiting for work that may be cut."""
        self.expired = True
        for task in self._waiting:
            self._cut.add(task)
            task.cancel("drain timeout")

    def watch(self, task: asyncio.Task[Any]) -> None:
        if self.expired:
            self._cut.add(task)
            task.cancel("drain timeout")
        self._waiting.add(task)

    def unwatch(self, task: asyncio.Task[Any]) -> None:
        self._waiting.discard(task)

    def was_cut(self, task: asyncio.Task[Any]) -> bool:
        """True (and the cancels undone, the task no longer cuttable) when the drain
        cancelled `task`."""
        if task not in self._cut:
            return False
        self._cut.discard(task)
        self._waiting.discard(task)
        while task.cancelling():
            task.uncancel()
        return True

    async def guard(self, events: AsyncIterator[T]) -> AsyncIterator[T]:
        """`events`, or ShuttingDown once the drain deadline passes while waiting for one."""
        task = asyncio.current_task()
        assert task is not None
        try:
            while True:
                if self.expired:
                    self.was_cut(task)  # a cancel that was lost still counts on the task
                    raise ShuttingDown()
                self.watch(task)
                try:
                    event = await anext(events)
                except StopAsyncIteration:
                    return
                except asyncio.CancelledError:
                    if self.was_cut(task):
                        raise ShuttingDown() from None
                    raise
                finally:
                    self.unwatch(task)
                yield event
        finally:
            close = getattr(events, "aclose", None)
            if close is not None:
                await close()


class DrainGate:
    """Refuses new requests while draining (503, Retry-After), counts those in flight, and
    answers one that the drain cut before its response started with a JSON 503."""

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        drain = self.drain
        if drain.draining:
            await _refuse(scope, receive, send)
            return
        task = asyncio.current_task()
        assert task is not None
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if not started and message["type"] == "http.response.start":
                started = True
                drain.unwatch(task)  # from here on a cut would cut the response
            await send(message)

        drain.inflight += 1
        drain.watch(task)
        try:
            await self.app(scope, receive, tracking_send)
        except asyncio.CancelledError:
            if not drain.was_cut(task):
                raise
            if not started:
                await _refuse(scope, receive, send)
        finally:
            drain.unwatch(task)
            drain.inflight -= 1


async def _refuse(scope: Scope, receive: Receive, send: Send) -> None:
    error = ShuttingDown()
    headers = {**error.headers, "Connection": "close"}
    response = error_response(error.status, error.code, error.message, None, headers)
    await response(scope, receive, send)
