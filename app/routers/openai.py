"""The OpenAI-compatible API: parse, call the generation service, return."""

from __future__ import annotations

from fastapi import APIRouter, Request
from sse_starlette import EventSourceResponse

from app.deps import OpenAIServiceDep, ReadScope, RegistryDep
from app.errors import NotFound
from app.middleware import serve_model
from app.schemas.chat import ChatCompletionRequest, ChatCompletionResponse
from app.schemas.errors import error_responses, serving_responses
from app.schemas.openai import CompletionRequest, CompletionResponse, ModelCard, ModelList

router = APIRouter(prefix="/v1", tags=["openai"], dependencies=[ReadScope])


@router.post(
    "/completions",
    response_model=CompletionResponse,
    responses=serving_responses("JSON, or SSE if stream", "text/event-stream"),
)
async def create_completion(
    body: CompletionRequest, request: Request, service: OpenAIServiceDep
) -> CompletionResponse | EventSourceResponse:
    """OpenAI-compatible completions; `stream: true` ends with `data: [DONE]`. `echo` with
    `max_tokens: 0` and `logprobs` scores a prompt, as lm-evaluation-harness does."""
    spec = await service.resolve(body.model, body.user)
    serve_model(request, spec)
    if body.stream:
        return EventSourceResponse(service.stream_completion(spec, body), ping=15)
    return await service.complete(spec, body)


@router.post(
    "/chat/completions",
    response_model=ChatCompletionResponse,
    responses=serving_responses("JSON, or SSE if stream", "text/event-stream"),
)
async def create_chat_completion(
    body: ChatCompletionRequest, request: Request, service: OpenAIServiceDep
) -> ChatCompletionResponse | EventSourceResponse:
    """OpenAI-compatible chat: the messages become a prompt through the model's chat
    template (docs/api.md); the reply ends at the end of the assistant's turn."""
    spec = await service.resolve(body.model, body.user)
    serve_model(request, spec)
    if body.stream:
        return EventSourceResponse(service.stream_chat(spec, body), ping=15)
    return await service.chat(spec, body)


@router.get("/models", response_model=ModelList, responses=error_responses(401, 403))
async def read_models(registry: RegistryDep) -> ModelList:
    """Served text-generation models, as OpenAI's model list."""
    return ModelList(
        data=[
            ModelCard(id=name, created=registry.created(spec))
            for name, spec in sorted(registry.active.items())
            if spec.task == "text-generation"
        ]
    )


@router.get(
    "/models/{model}", response_model=ModelCard, responses=error_responses(401, 403, 404, 422)
)
async def read_model(model: str, registry: RegistryDep) -> ModelCard:
    """One served text-generation model (`models.retrieve`); any other name is unknown here,
    as it is absent from the list."""
    spec = registry.active.get(model)
    if spec is None or spec.task != "text-generation":
        raise NotFound(f"model {model!r} is not a served text-generation model")
    return ModelCard(id=model, created=registry.created(spec))
