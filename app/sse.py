"""Server-sent events written several to a write.

sse_starlette sends each item a stream yields as its own ASGI message: one pass through the
middleware and one socket write per token. A generation stream that fell behind its worker
has several events waiting; `frames` encodes them as one bytes item, which sse_starlette
sends as it is, so a busy server writes once per stream per catch-up instead of per token.
"""

from __future__ import annotations

from sse_starlette import ServerSentEvent


def frames(data: list[str], event: str | None = None) -> bytes:
    """`data` as consecutive SSE events (each `data:` line and blank line), in one write."""
    return b"".join(ServerSentEvent(data=d, event=event).encode() for d in data)
