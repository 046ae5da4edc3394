"""Text and image generation: parse, call the generation services, return."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from sse_starlette import EventSourceResponse

from app.deps import GenerateImageServiceDep, GenerateServiceDep, ReadScope
from app.middleware import serve_model
from app.schemas.errors import serving_responses
from app.schemas.generate import GenerateTextRequest, GenerateTextResponse
from app.schemas.images import GenerateImageRequest, GenerateImageResponse

router = APIRouter(prefix="/generate", tags=["generate"], dependencies=[ReadScope])


@router.post(
    "/text",
    response_model=GenerateTextResponse,
    responses=serving_responses("JSON, or SSE if stream", "text/event-stream"),
)
async def create_text(
    body: GenerateTextRequest, request: Request, service: GenerateServiceDep
) -> GenerateTextResponse | EventSourceResponse:
    """Sample text; with `stream: true`, one SSE `token` event per token, then `done`."""
    spec = await service.resolve(body.model, body.user)
    serve_model(request, spec)
    events = service.start_text(spec, body)
    if body.stream:
        return EventSourceResponse(service.stream_text(spec, events, body), ping=15)
    return await service.collect(spec, events, body)


@router.post(
    "/image",
    response_model=GenerateImageResponse,
    responses=serving_responses(
        "JSON, one PNG grid, or SSE if stream", "image/png", "text/event-stream"
    ),
)
async def create_image(
    body: GenerateImageRequest, request: Request, service: GenerateImageServiceDep
) -> GenerateImageResponse | Response | EventSourceResponse:
    """Generate images; with `Accept: image/png`, one PNG holding a grid of the n images; with
    `stream: true`, a `preview` SSE event every `preview_every` denoising steps (diffusion
    models), then `done` with the JSON body."""
    spec = await service.resolve(body.model, body.user)
    serve_model(request, spec)
    if body.stream:
        return EventSourceResponse(await service.stream(spec, body), ping=15)
    labels, pixels = await service.generate(spec, body)
    if "image/png" in request.headers.get("accept", ""):
        return Response(await service.to_png_grid(pixels), media_type="image/png")
    return await service.to_json(spec, labels, pixels)
