"""Errors a client can act on, and the handlers that give every error one JSON shape."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from app.db import is_transient
from app.pool.errors import (
    EngineError,
    EngineTimeout,
    InferenceFailed,
    LoadFailed,
    ModelLoadFailed,
    ModelLoading,
    ModelNotServed,
    NoRoom,
    OutOfMemory,
    QueueFull,
    WorkerLost,
)

log = logging.getLogger("genserve")
DATABASE_RETRY_AFTER_S = 5  # a restarting or failing-over database is back within seconds


class AppError(Exception):
    status: int = 400
    code: str = "bad_request"
    retry_after: int | None = None  # seconds, sent as Retry-After

    def __init__(
        self,
        message: str,
        *,
        details: Any = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers or {}
        retry_after = self.retry_after if retry_after is None else retry_after
        if retry_after is not None:
            self.headers["Retry-After"] = str(retry_after)
        if code:
            self.code = code


def error_type(name: str, status: int, code: str) -> type[AppError]:
    """An AppError subclass that only sets its status and code: the plain 4xx answers."""
    return type(name, (AppError,), {"status": status, "code": code, "__module__": __name__})


BadRequest = error_type("BadRequest", 400, "bad_request")
Unauthorized = error_type("Unauthorized", 401, "unauthorized")
Forbidden = error_type("Forbidden", 403, "forbidden")
NotFound = error_type("NotFound", 404, "not_found")
Conflict = error_type("Conflict", 409, "conflict")
PayloadTooLarge = error_type("PayloadTooLarge", 413, "payload_too_large")
UnsupportedMediaType = error_type("UnsupportedMediaType", 415, "unsupported_media_type")
InvalidInput = error_type("InvalidInput", 422, "invalid_input")
InsufficientStorage = error_type("InsufficientStorage", 507, "insufficient_storage")


class Overloaded(AppError):
    """The queue is full: the client should back off and retry."""

    status, code, retry_after = 429, "overloaded", 1


class Unavailable(AppError):
    """Not ready or a worker was lost: retrying later will work."""

    status, code, retry_after = 503, "unavailable", 1


GatewayTimeout = error_type("GatewayTimeout", 504, "timeout")


# The engine's errors (app/pool/errors.py) carry no HTTP status: this is what each answers,
# as (status, error code, Retry-After seconds or None).
ENGINE_ERRORS: dict[type[EngineError], tuple[int, str, int | None]] = {
    ModelNotServed: (404, "not_found", None),
    ModelLoading: (503, "unavailable", 2),
    ModelLoadFailed: (503, "unavailable", 30),
    QueueFull: (429, "overloaded", 1),
    WorkerLost: (503, "worker_lost", 1),
    OutOfMemory: (503, "out_of_memory", 1),
    InferenceFailed: (500, "inference_failed", None),
    EngineTimeout: (504, "timeout", None),
    LoadFailed: (409, "load_failed", None),
    NoRoom: (503, "no_room", 5),
}


def http_error(exc: EngineError) -> AppError:
    """The client's view of an engine error (also for errors raised mid-stream)."""
    status, code, retry_after = next(
        (ENGINE_ERRORS[cls] for cls in type(exc).__mro__ if cls in ENGINE_ERRORS),
        (500, "engine_error", None),
    )
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    error = AppError(exc.message, details=exc.details, code=code, headers=headers)
    error.status = status
    return error


OPENAI_PREFIX = "/v1"  # the OpenAI-compatible API, whose clients read OpenAI's error fields


def openai_error_type(status: int) -> str:
    """OpenAI's error `type` for a status, as its clients and SDKs expect it."""
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 429:
        return "rate_limit_error"
    return "server_error" if status >= 500 else "invalid_request_error"


class ErrorJSONResponse(JSONResponse):
    """genserve's error shape; under /v1 it also carries OpenAI's `type` and `param`, so that
    OpenAI clients fill `e.type` and `e.param` (`e.code` is genserve's code).

    The path is read when the response is sent: the middleware build their errors without
    a request, and this way every error takes the shape of the API it answers for.
    """

    def __init__(
        self,
        status: int,
        error: dict[str, Any],
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.error, self.param = error, param
        super().__init__({"error": error}, status_code=status, headers=headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if is_openai_path(scope):
            openai = {"type": openai_error_type(self.status_code), "param": self.param}
            self.body = self.render({"error": {**self.error, **openai}})
            self.headers["content-length"] = str(len(self.body))
        await super().__call__(scope, receive, send)


def is_openai_path(scope: Scope) -> bool:
    """Whether the request is for the OpenAI-compatible API, with or without a proxy prefix."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    if root and path.startswith(root):  # behind a proxy's prefix
        path = path[len(root) :]
    return path == OPENAI_PREFIX or path.startswith(OPENAI_PREFIX + "/")


def error_response(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
    param: str | None = None,
) -> JSONResponse:
    """The one error shape; `param` names the request field at fault, for OpenAI clients."""
    error = {"code": code, "message": message, "details": jsonable_encoder(details)}
    return ErrorJSONResponse(status, error, param, headers)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(_: Request, exc: AppError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(EngineError)
    async def _engine_error(request: Request, exc: EngineError) -> JSONResponse:
        return await _app_error(request, http_error(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"] if p != "body") or "body"
        # OpenAI's `param`: the top-level field at fault (none for the body as a whole).
        field = first["loc"][1] if len(first["loc"]) > 1 else None
        return error_response(
            422,
            "validation_error",
            f"{where}: {first['msg']}",
            errors,
            param=field if isinstance(field, str) else None,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), None, exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        rid = _request_id(request)
        log.exception(
            "unhandled error on %s %s (request %s)", request.method, request.url.path, rid
        )
        # Starlette answers this one outside every middleware, so the id is added here.
        return error_response(
            500, "internal_error", "internal server error", headers={"X-Request-ID": rid}
        )

    async def _database_error(request: Request, exc: Exception) -> JSONResponse:
        """An outage is the client's to retry (503); any other database error is a bug."""
        if not is_transient(exc):
            return await _unexpected(request, exc)
        cause = (str(getattr(exc, "orig", None) or exc) or type(exc).__name__).splitlines()[0]
        log.warning(
            "database unavailable on %s %s (request %s): %s",
            request.method,
            request.url.path,
            _request_id(request),
            cause,
        )
        return error_response(
            503,
            "database_unavailable",
            "the database is unavailable; retry later",
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)},
        )

    for db_error in (DBAPIError, DisconnectionError, PoolTimeout):
        app.add_exception_handler(db_error, _database_error)


def _request_id(request: Request) -> str:
    """The id app.middleware.RequestContext gave the request, for log lines."""
    return str(request.scope.get("state", {}).get("request_id", "-"))
