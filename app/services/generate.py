"""Text generation: check the request against the model, then collect the worker's tokens
into one response or frame them as a stream: genserve's SSE events, or OpenAI's chunks."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import orjson

from app.drain import Drain
from app.errors import AppError, InvalidInput, http_error
from app.pool.base import WorkerPool
from app.pool.errors import EngineError
from app.schemas.generate import (
    GenerateTextRequest,
    GenerateTextResponse,
    SamplingFields,
    TextChoice,
    Usage,
)
from app.schemas.openai import CompletionChoice, CompletionRequest, CompletionResponse
from app.services.registry import ModelRegistry
from app.settings import Settings
from app.worker.protocol import ModelSpec, TokenEvent


@dataclass
class Completion:
    """What a generation produced so far, choice by choice."""

    n: int
    prompt_tokens: int
    texts: list[str] = field(default_factory=list)
    finish: list[str | None] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    logprobs: list[list[float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.texts = [""] * self.n
        self.finish = [None] * self.n
        self.tokens = [0] * self.n
        self.logprobs = [[] for _ in range(self.n)]

    def add(self, event: TokenEvent) -> None:
        index = event.index
        self.texts[index] += event.text
        self.finish[index] = event.finish_reason
        self.tokens[index] = event.completion_tokens
        if event.logprob is not None:
            self.logprobs[index].append(event.logprob)

    def usage(self) -> Usage:
        completion = sum(self.tokens)
        return Usage(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=completion,
            total_tokens=self.prompt_tokens + completion,
        )


class GenerateService:
    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry,
        pool: WorkerPool,
        drain: Drain | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.pool = pool
        self.drain = drain or Drain(settings.drain_timeout_s)

    def resolve(self, model: str | None) -> ModelSpec:
        return self.registry.spec(model or self.settings.default_text_model, "text-generation")

    def check(self, spec: ModelSpec, prompt: str, max_new_tokens: int) -> None:
        """The rules of DESIGN.md: characters outside the vocabulary are refused, not mapped."""
        limit = self.settings.max_prompt_chars
        if len(prompt) > limit:
            raise InvalidInput(f"prompt has {len(prompt)} characters; the limit is {limit}")
        if max_new_tokens > self.settings.max_new_tokens:
            raise InvalidInput(
                f"max_new_tokens {max_new_tokens} is above the limit of "
                f"{self.settings.max_new_tokens}"
            )
        if not prompt and spec.config.get("needs_prompt", False):
            raise InvalidInput(f"model {spec.name!r} needs a non-empty prompt")
        tokenizer = spec.config.get("tokenizer", {})
        if tokenizer.get("type", "char") != "char":
            return  # byte-level BPE encodes any UTF-8 text
        vocabulary = set(tokenizer.get("chars", []))
        unknown = sorted({c for c in prompt if c not in vocabulary})
        if unknown:
            raise InvalidInput(
                f"prompt has characters outside the vocabulary of {spec.name!r}: "
                + ", ".join(repr(c) for c in unknown[:20]),
                code="unknown_characters",
                details={"unknown": unknown},
            )

    def start(
        self, spec: ModelSpec, prompt: str, max_new_tokens: int, sampling: SamplingFields
    ) -> AsyncIterator[TokenEvent]:
        self.check(spec, prompt, max_new_tokens)
        params = {
            "max_new_tokens": max_new_tokens,
            "temperature": sampling.temperature,
            "top_k": sampling.top_k,
            "top_p": sampling.top_p,
            "repetition_penalty": sampling.repetition_penalty,
            "stop": sampling.stops(),
            "seed": sampling.seed,
        }
        return self.pool.generate(spec.name, prompt, params, sampling.n)

    async def collect(
        self,
        spec: ModelSpec,
        events: AsyncIterator[TokenEvent],
        n: int,
        prompt: str,
        logprobs: bool,
    ) -> GenerateTextResponse:
        completion = Completion(n, len(prompt))
        async for event in events:
            completion.add(event)
        return GenerateTextResponse(
            model=spec.name,
            version=spec.version,
            choices=[
                TextChoice(
                    index=i,
                    text=completion.texts[i],
                    finish_reason=completion.finish[i] or "length",
                    completion_tokens=completion.tokens[i],
                    logprobs=completion.logprobs[i] if logprobs else None,
                )
                for i in range(n)
            ],
            usage=completion.usage(),
        )

    async def stream_text(
        self, spec: ModelSpec, events: AsyncIterator[TokenEvent], body: GenerateTextRequest
    ) -> AsyncIterator[dict[str, str]]:
        """/generate/text's SSE events: one `token` per token, then `done` with the usage, or
        an `error` event when the generation fails after the stream started."""
        completion = Completion(body.n, len(body.prompt))
        try:
            async for event in self.drain.guard(events):
                completion.add(event)
                yield {"event": "token", "data": _token(event, body.logprobs)}
        except (AppError, EngineError) as exc:
            error = client_error(exc)
            payload = {"code": error.code, "message": error.message, "details": error.details}
            yield {"event": "error", "data": orjson.dumps({"error": payload}).decode()}
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

    # -- the OpenAI completions API ----------------------------------------------------------

    def _start_completion(
        self, spec: ModelSpec, body: CompletionRequest
    ) -> tuple[dict[str, Any], list[str], list[AsyncIterator[TokenEvent]]]:
        """Checks every prompt before any starts, so a refusal leaves no work behind."""
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt or [""]
        for prompt in prompts:
            self.check(spec, prompt, body.max_tokens)
        self.pool.check_room(spec.name, len(prompts) * body.n)
        streams = [self.start(spec, p, body.max_tokens, body) for p in prompts]
        head = {"id": f"cmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": spec.name}
        return head, prompts, streams

    async def complete(self, spec: ModelSpec, body: CompletionRequest) -> CompletionResponse:
        """One OpenAI completion response: `n` choices per prompt, usage summed over prompts."""
        head, prompts, streams = self._start_completion(spec, body)
        choices, usage = [], Usage(prompt_tokens=0, completion_tokens=0, total_tokens=0)
        try:
            results = [
                await self.collect(spec, events, body.n, prompt, logprobs=False)
                for prompt, events in zip(prompts, streams, strict=True)
            ]
        finally:
            await close_streams(streams)
        for p, result in enumerate(results):
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

    def stream_completion(self, spec: ModelSpec, body: CompletionRequest) -> AsyncIterator[str]:
        """OpenAI's streaming chunks, ending with `[DONE]`; starts every prompt now, so that a
        refusal is an HTTP error rather than a stream that fails."""
        head, _, streams = self._start_completion(spec, body)
        return _completion_chunks(head, [self.drain.guard(s) for s in streams], body.n)


async def _completion_chunks(
    head: dict[str, Any], streams: list[AsyncIterator[TokenEvent]], n: int
) -> AsyncIterator[str]:
    try:
        for p, events in enumerate(streams):
            async for event in events:
                choice = CompletionChoice(
                    text=event.text, index=p * n + event.index, finish_reason=event.finish_reason
                )
                yield CompletionResponse(**head, choices=[choice]).model_dump_json()
    except (AppError, EngineError) as exc:
        error = client_error(exc)
        yield orjson.dumps(
            {"error": {"message": error.message, "type": error.code, "code": error.status}}
        ).decode()
    finally:
        await close_streams(streams)
    yield "[DONE]"


async def close_streams(streams: list[AsyncIterator[TokenEvent]]) -> None:
    """Ends every generation of a request, even those never iterated: each was submitted when
    its stream was created, and an async generator that never started would not run the code
    that frees its sequences (they would count against the limits for good)."""
    with anyio.CancelScope(shield=True):  # also when the client went away
        for stream in streams:
            step = asyncio.ensure_future(anext(stream))  # enters the generator's body
            await asyncio.sleep(0)
            if not step.done():
                step.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await step
            await stream.aclose()  # type: ignore[attr-defined]


def _token(event: TokenEvent, logprobs: bool) -> str:
    data: dict[str, Any] = {
        "index": event.index,
        "text": event.text,
        "completion_tokens": event.completion_tokens,
        "finish_reason": event.finish_reason,
    }
    if logprobs:
        data["logprob"] = event.logprob
    return orjson.dumps(data).decode()


def client_error(exc: AppError | EngineError) -> AppError:
    return exc if isinstance(exc, AppError) else http_error(exc)
