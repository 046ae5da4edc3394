from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorResponse(BaseModel):
    """The one error shape every endpoint answers with."""

    error: ErrorBody


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries so clients see the error shape on each documented status."""
    return {status: {"model": ErrorResponse} for status in statuses}


# Every status a model-serving endpoint can answer with besides 200.
# 409: a version named in the request (name@3, an alias) would not load
SERVING_ERRORS = error_responses(400, 401, 403, 404, 409, 413, 422, 429, 503, 504)


def serving_responses(description: str, *media_types: str) -> dict[int | str, dict[str, Any]]:
    """The serving errors, and a 200 that may also come as each of `media_types` (SSE, PNG)."""
    content: dict[str, Any] = {media_type: {} for media_type in media_types}
    return {**SERVING_ERRORS, 200: {"content": content, "description": description}}
