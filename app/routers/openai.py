from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import orjson
from fastapi import APIRouter, Request
from sse_starlette import EventSourceResponse

from app.deps import GenerateServiceDep, ReadScope, RegistryDep
from app.errors import AppError
from app.schemas.errors import SERVING_ERRORS, error_responses
from app.schemas.generate import Usage
from app.schemas.openai import (
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    ModelCard,
    ModelList,
)

router = APIRouter(prefix="/v1", tags=["openai"], dependencies=[ReadScope])


@router.post(
    "/completions",
    response_model=CompletionResponse,
    responses={
        **SERVING_ERRORS,
        200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE if stream"},
    },
)
async def create_completion(
    body: CompletionRequest, request: Request, service: GenerateServiceDep
) -> CompletionResponse | EventSourceResponse:
    """OpenAI-compatible completions; `stream: true` ends with `data: [DONE]`."""
    spec = service.resolve(body.model)
    request.state.model = spec.name
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt or [""]
    for prompt in prompts:  # all of them before any starts: a refusal leaves no work behind
        service.check(spec, prompt, body.max_tokens)
    streams = [service.start(spec, p, body.max_tokens, body) for p in prompts]
    head = {"id": f"cmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": spec.name}
    if not body.stream:
        choices, usage = [], Usage(prompt_tokens=0, completion_tokens=0, total_tokens=0)
        for p, (prompt, events) in enumerate(zip(prompts, streams, strict=True)):
            result = await service.collect(spec, events, body.n, prompt, logprobs=False)
            for c in result.choices:
                choices.append(
                    CompletionChoice(
                        text=c.text, index=p * body.n + c.index, finish_reason=c.finish_reason
                    )
                )
            usage = Usage(
                prompt_tokens=usage.prompt_tokens + result.usage.prompt_tokens,
                completion_tokens=usage.completion_tokens + result.usage.completion_tokens,
                total_tokens=usage.total_tokens + result.usage.total_tokens,
            )
        return CompletionResponse(**head, choices=choices, usage=usage)

    async def stream() -> AsyncIterator[str]:
        try:
            for p, events in enumerate(streams):
                async for _, index, text, finish, _, _ in events:
                    choice = CompletionChoice(
                        text=text, index=p * body.n + index, finish_reason=finish
                    )
                    yield CompletionResponse(**head, choices=[choice]).model_dump_json()
        except AppError as exc:
            error = {"message": exc.message, "type": exc.code, "code": exc.status}
            yield orjson.dumps({"error": error}).decode()
        yield "[DONE]"

    return EventSourceResponse(stream(), ping=15)


@router.get("/models", response_model=ModelList, responses=error_responses(401, 403))
def read_models(registry: RegistryDep) -> ModelList:
    """Served text-generation models, as OpenAI's model list."""
    return ModelList(
        data=[
            ModelCard(id=name, created=0)
            for name, spec in sorted(registry.active.items())
            if spec.task == "text-generation"
        ]
    )
