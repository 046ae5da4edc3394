"""Server-sent events written several to a write.

sse_starlette sends each item a stream yields as its own ASGI message: one pass through the
middleware and one socket write per token. A generation stream that fell behind its worker
has several events waiting; `frames` encodes them as one bytes item, which sse_starlette
sends as it is, so a busy server writes once per stream per catch-up instead of per token.
"""

from __future__ import annotations

import orjson
from sse_starlette import ServerSentEvent

from app.errors import AppError, http_error


def frames(data: list[str], event: str | None = None) -> bytes:
    """`data` as consecutive SSE events (each `data:` line and blank line), in one write."""
    return b"".join(ServerSentEvent(data=d, event=event).encode() for d in data)


def error_event(exc: Exception) -> dict[str, str]:
    """The `error` event that ends a stream which failed after it started (its status line
    was sent already): the same JSON body a 4xx or 5xx would have carried."""
    error = exc if isinstance(exc, AppError) else http_error(exc)
    payload = {"code": error.code, "message": error.message, "details": error.details}
    return {"event": "error", "data": orjson.dumps({"error": payload}).decode()}
