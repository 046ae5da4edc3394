"""Pure ASGI middleware, cheap on the hot path: body size limit, uploads in flight, text that
no database stores (NUL) in the path or query, per-endpoint metrics, and each response's
request id and model headers."""

from __future__ import annotations

import contextvars
import logging
import re
import time
import uuid
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import metrics
from app.errors import AppError, Overloaded, error_response
from app.schemas.common import BAD_TEXT
from app.worker.protocol import ModelSpec

# A client's X-Request-ID is kept when it cannot forge a log line or a header: short, and
# only characters that need no quoting anywhere. Anything else is replaced, not cleaned.
SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class HTTPMiddleware:
    """Pure ASGI middleware that acts on HTTP requests only: lifespan and other scopes pass
    straight through, and subclasses write `handle` for the rest."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.handle(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class BodyTooLarge(HTTPException):
    """An HTTPException so that FastAPI's body parsing re-raises it (as a 413), not a 400."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request body exceeds the {max_bytes}-byte limit")


class BodySizeLimit(HTTPMiddleware):
    """Refuses bodies over the limit by Content-Length, or while streaming chunked ones.

    `path_limits` maps a path prefix, or a pattern the whole path matches, to its own limit
    (uploads get more than JSON requests).
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        path_limits: dict[str | re.Pattern[str], int] | None = None,
    ) -> None:
        super().__init__(app)
        self.max_bytes = max_bytes
        self.path_limits = path_limits or {}

    def limit_for(self, path: str) -> int:
        for prefix, limit in self.path_limits.items():
            if isinstance(prefix, re.Pattern):
                if prefix.fullmatch(path):
                    return limit
            elif path == prefix or path.startswith(prefix + "/"):
                return limit
        return self.max_bytes

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        max_bytes = self.limit_for(scope["path"])
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > max_bytes:
                    await self._refuse(scope, receive, send, max_bytes)
                    return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise BodyTooLarge(max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(scope, receive, send, max_bytes)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, max_bytes: int) -> None:
        response = error_response(
            413,
            "payload_too_large",
            f"request body exceeds the {max_bytes}-byte limit",
            {"max_bytes": max_bytes},
        )
        await response(scope, receive, send)


class SpoolFull(HTTPException):
    """Raised by UploadGate's receive when a streamed upload passes the spool limit: an
    HTTPException, so that FastAPI's body parsing re-raises it; UploadGate answers it."""

    def __init__(self) -> None:
        super().__init__(429, "the upload spool is full")


class UploadGate:
    """Refuses an upload with 429 while `limit` are in flight, or while the bytes being
    received by all uploads would pass `max_bytes`: a parsed upload may hold its whole file in
    memory, so the bytes bound the memory that the count alone does not.

    A declared Content-Length is reserved whole and refused before the body is read: reading
    one only to refuse it costs the bandwidth and disk the limit protects. A chunked upload is
    counted as it streams and refused once it would pass the limit. An upload larger than
    `max_bytes` on its own is left to BodySizeLimit (413): waiting would never help it.
    """

    def __init__(
        self,
        app: ASGIApp,
        paths: set[str],
        limit: int,
        max_bytes: int,
        patterns: tuple[re.Pattern[str], ...] = (),
    ) -> None:
        self.app = app
        self.paths = paths
        self.patterns = patterns  # upload paths with a parameter, matched whole
        self.limit = limit
        self.max_bytes = max_bytes
        self.inflight = 0
        self.spooling = 0  # bytes reserved by the uploads in flight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not self._upload(scope["path"]):
            await self.app(scope, receive, send)
            return
        if self.inflight >= self.limit:
            refusal = Overloaded(
                f"{self.limit} upload(s) are being processed; retry shortly",
                details={"max_uploads_in_flight": self.limit},
                retry_after=5,  # the connection lives on: what is sent is discarded
            )
            await _answer(refusal, scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared <= self.max_bytes:
            if self.spooling + declared > self.max_bytes:
                await _answer(self._full(), scope, receive, send)
                return
            reserved = declared
        else:
            reserved = 0  # counted as it arrives (or too large: BodySizeLimit refuses it)
        self.inflight += 1
        self.spooling += reserved
        refused = started = False

        async def counting_receive() -> Message:
            nonlocal reserved, refused
            message = await receive()
            if declared is None and message["type"] == "http.request":
                size = len(message.get("body", b""))
                # past the limit on its own: BodySizeLimit's 413, not a 429 to retry forever
                if self.spooling + size > self.max_bytes and reserved + size <= self.max_bytes:
                    refused = True
                    raise SpoolFull
                reserved += size
                self.spooling += size
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused and not started:
                return  # the app's answer to SpoolFull: UploadGate answers instead
            started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except SpoolFull:
            pass
        finally:
            self.inflight -= 1
            self.spooling -= reserved
        if refused and not started:
            await _answer(self._full(), scope, receive, send)

    def _upload(self, path: str) -> bool:
        return path in self.paths or any(p.fullmatch(path) for p in self.patterns)

    def _full(self) -> Overloaded:
        return Overloaded(
            f"uploads being received hold {self.spooling} of the {self.max_bytes} bytes "
            "they may; retry shortly",
            details={"max_spool_bytes": self.max_bytes, "spooling_bytes": self.spooling},
            retry_after=5,
        )


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _answer(error: AppError, scope: Scope, receive: Receive, send: Send) -> None:
    response = error_response(error.status, error.code, error.message, error.details, error.headers)
    await response(scope, receive, send)


class TextGuard(HTTPMiddleware):
    """Refuses a path or query string holding a NUL with 422: PostgreSQL cannot store one and
    answered 500. (Bodies are checked by the schemas: app/schemas/common.py.)"""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        query = scope.get("query_string", b"")
        if BAD_TEXT.search(scope["path"]) or b"\x00" in query or b"%00" in query:
            message = "the path or query holds a NUL character"
            await error_response(422, "invalid_text", message)(scope, receive, send)
            return
        await self.app(scope, receive, send)


class RequestMetrics(HTTPMiddleware):
    """Counts and times requests by route template and by the model the handler resolved."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            endpoint = _route_template(scope)
            if endpoint != "/metrics":
                state = scope.get("state", {})
                model = state.get("model", "")
                method = scope["method"]
                metrics.REQUESTS.labels(method, endpoint, model, str(status)).inc()
                metrics.LATENCY.labels(method, endpoint, model).observe(
                    time.perf_counter() - started
                )
                if "version" in state:
                    version = str(state["version"])
                    metrics.MODEL_REQUESTS.labels(model, version, str(status)).inc()


def _route_template(scope: Scope) -> str:
    route: Any = scope.get("route")
    if route is not None:
        return route.path
    app = scope.get("app")
    for candidate in getattr(getattr(app, "router", None), "routes", []):
        match, _ = candidate.matches(scope)
        if match == Match.FULL and hasattr(candidate, "path"):  # FastAPI's included routers
            return candidate.path  # have none; a refused body never reached routing to say
    return "unmatched"  # keeps label cardinality bounded for 404s


def serve_model(request: Request, spec: ModelSpec) -> None:
    """Names the model version that serves this request: the per-version request counters
    and the X-Model / X-Model-Version response headers read it."""
    request.state.model = spec.name
    request.state.version = spec.version


def request_id(scope: Scope) -> str:
    """The client's X-Request-ID when it is safe to echo and log, else a new uuid4."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if SAFE_REQUEST_ID.fullmatch(candidate):
                return candidate
            break
    return uuid.uuid4().hex


class RequestContext(HTTPMiddleware):
    """Outermost: gives every request an id (scope state `request_id`, and REQUEST_ID for log
    lines written while it runs), and every response `X-Request-ID`, plus `X-Model` and
    `X-Model-Version` once a handler named the version serving it (`serve_model`): the
    headers exist before a stream's body, so they are on SSE and PNG answers too."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        rid = request_id(scope)
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        REQUEST_ID.set(rid)  # each request runs in its own task: no reset needed, and the
        # access log line, written as the response starts, still sees it

        async def add_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"x-request-id" for name, _ in headers):
                    headers.append((b"x-request-id", rid.encode()))
                if "model" in state and "version" in state:
                    headers.append((b"x-model", str(state["model"]).encode()))
                    headers.append((b"x-model-version", str(state["version"]).encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, add_headers)


class RequestIdFilter(logging.Filter):
    """Gives a log record `request_id`, the id of the request it was written for ("-" outside
    one), for a format that shows it (uvicorn's access log: app/cli/server.py)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True
