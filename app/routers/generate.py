from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
from fastapi import APIRouter, Request, Response
from sse_starlette import EventSourceResponse

from app.deps import GenerateImageServiceDep, GenerateServiceDep, ReadScope
from app.errors import AppError
from app.pool.base import Event
from app.schemas.errors import SERVING_ERRORS
from app.schemas.generate import GenerateTextRequest, GenerateTextResponse
from app.schemas.images import GenerateImageRequest, GenerateImageResponse
from app.services.generate import Completion

router = APIRouter(prefix="/generate", tags=["generate"], dependencies=[ReadScope])


@router.post(
    "/text",
    response_model=GenerateTextResponse,
    responses={
        **SERVING_ERRORS,
        200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE if stream"},
    },
)
async def create_text(
    body: GenerateTextRequest, request: Request, service: GenerateServiceDep
) -> GenerateTextResponse | EventSourceResponse:
    """Sample text; with `stream: true`, one SSE `token` event per token, then `done`."""
    spec = service.resolve(body.model)
    request.state.model = spec.name
    events = service.start(spec, body.prompt, body.max_new_tokens, body)
    if not body.stream:
        return await service.collect(spec, events, body.n, body.prompt, body.logprobs)

    async def stream() -> AsyncIterator[dict[str, str]]:
        completion = Completion(body.n, len(body.prompt))
        try:
            async for event in events:
                completion.add(event)
                yield {"event": "token", "data": _token(event, body.logprobs)}
        except AppError as exc:
            error = {"code": exc.code, "message": exc.message, "details": exc.details}
            yield {"event": "error", "data": orjson.dumps({"error": error}).decode()}
            return
        done = {
            "model": spec.name,
            "version": spec.version,
            "choices": [
                {
                    "index": i,
                    "finish_reason": completion.finish[i] or "length",
                    "completion_tokens": completion.tokens[i],
                }
                for i in range(body.n)
            ],
            "usage": completion.usage().model_dump(),
        }
        yield {"event": "done", "data": orjson.dumps(done).decode()}

    return EventSourceResponse(stream(), ping=15)


def _token(event: Event, logprobs: bool) -> str:
    _, index, text, finish, tokens, logprob = event
    data = {"index": index, "text": text, "completion_tokens": tokens, "finish_reason": finish}
    if logprobs:
        data["logprob"] = logprob
    return orjson.dumps(data).decode()


@router.post(
    "/image",
    response_model=GenerateImageResponse,
    responses={
        **SERVING_ERRORS,
        200: {"content": {"image/png": {}}, "description": "JSON, or one PNG grid"},
    },
)
async def create_image(
    body: GenerateImageRequest, request: Request, service: GenerateImageServiceDep
) -> GenerateImageResponse | Response:
    """Generate images; with `Accept: image/png`, one PNG holding a grid of the n images."""
    spec = service.resolve(body.model)
    request.state.model = spec.name
    labels, pixels = await service.generate(spec, body)
    if "image/png" in request.headers.get("accept", ""):
        return Response(await service.to_png_grid(pixels), media_type="image/png")
    return await service.to_json(spec, labels, pixels)
