"""OpenAI's completions and chat completions over genserve's generation service: the same
worker streams, framed as OpenAI's responses and chunks."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson

from app.errors import AppError
from app.pool.errors import EngineError
from app.schemas.chat import (
    AssistantMessage,
    ChatChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatLogprobs,
    ChatTokenLogprob,
    ChunkChoice,
    Delta,
    TopLogprob,
)
from app.schemas.generate import Usage
from app.schemas.openai import (
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
)
from app.services.chat import chat_prompt
from app.services.generate import (
    Completion,
    GenerateService,
    add_usage,
    client_error,
    close_streams,
)
from app.sse import frames
from app.worker.protocol import ModelSpec, TokenEvent, TokenInfo

NO_USAGE = Usage(prompt_tokens=0, completion_tokens=0, total_tokens=0)


def legacy_logprobs(infos: list[TokenInfo], shift: int = 0) -> CompletionLogprobs:
    """/v1/completions' logprobs: parallel lists; `shift` moves the offsets past an echo."""
    return CompletionLogprobs(
        tokens=[t.text for t in infos],
        token_logprobs=[t.logprob for t in infos],
        top_logprobs=[None if t.top is None else {s: lp for _, s, lp in t.top} for t in infos],
        text_offset=[t.offset + shift for t in infos],
    )


def chat_logprobs(infos: list[TokenInfo]) -> ChatLogprobs:
    def utf8(text: str) -> list[int]:
        return list(text.encode())

    return ChatLogprobs(
        content=[
            ChatTokenLogprob(
                token=t.text,
                logprob=t.logprob if t.logprob is not None else 0.0,
                bytes=utf8(t.text),
                top_logprobs=[
                    TopLogprob(token=s, logprob=lp, bytes=utf8(s)) for _, s, lp in t.top or []
                ],
            )
            for t in infos
        ]
    )


def _head(prefix: str, spec: ModelSpec) -> dict[str, Any]:
    return {"id": f"{prefix}-{uuid.uuid4().hex}", "created": int(time.time()), "model": spec.name}


def _error_chunk(exc: AppError | EngineError) -> str:
    error = client_error(exc)
    body = {"message": error.message, "type": "server_error", "code": error.code}
    return orjson.dumps({"error": body}).decode()


class OpenAIService:
    def __init__(self, generate: GenerateService) -> None:
        self.generate = generate
        self.settings = generate.settings

    async def resolve(self, model: str | None, user: str | None = None) -> ModelSpec:
        return await self.generate.resolve(model, user)

    # -- completions -------------------------------------------------------------------------

    def _start_completion(
        self, spec: ModelSpec, body: CompletionRequest
    ) -> tuple[dict[str, Any], list[str | list[int]], list[AsyncIterator[list[TokenEvent]]]]:
        """Checks every prompt before any starts, so a refusal leaves no work behind."""
        prompts = body.prompts()
        bias = body.token_bias()
        for prompt in prompts:
            self.generate.check(spec, prompt, body.max_tokens, bias)
        pool = self.generate.pool
        pool.check_room(pool.key(spec), len(prompts) * body.n)
        streams = [
            self.generate.start(
                spec, p, body.max_tokens, body, logprobs=body.logprobs, echo=body.echo
            )
            for p in prompts
        ]
        return _head("cmpl", spec), prompts, streams

    def _choices(
        self, body: CompletionRequest, p: int, prompt: str | list[int], completion: Completion
    ) -> list[CompletionChoice]:
        echoed = _echo(body, prompt, completion)
        choices = []
        for i in range(body.n):
            logprobs = None
            if body.logprobs is not None:
                infos = [_shift(t, len(echoed)) for t in completion.infos[i]]
                logprobs = legacy_logprobs((completion.prompt or []) + infos)
            choices.append(
                CompletionChoice(
                    text=echoed + completion.texts[i],
                    index=p * body.n + i,
                    logprobs=logprobs,
                    finish_reason=completion.finish[i] or "length",
                )
            )
        return choices

    async def complete(self, spec: ModelSpec, body: CompletionRequest) -> CompletionResponse:
        """One OpenAI completion response: `n` choices per prompt, usage summed over prompts."""
        head, prompts, streams = self._start_completion(spec, body)
        choices: list[CompletionChoice] = []
        usage = NO_USAGE
        try:
            for p, (prompt, events) in enumerate(zip(prompts, streams, strict=True)):
                completion = Completion(body.n)
                async for batch in events:
                    completion.extend(batch)
                choices += self._choices(body, p, prompt, completion)
                usage = add_usage(usage, completion.usage())
        finally:
            await close_streams(streams)
        return CompletionResponse(**head, choices=choices, usage=usage)

    def stream_completion(
        self, spec: ModelSpec, body: CompletionRequest
    ) -> AsyncIterator[str | bytes]:
        """OpenAI's streaming chunks, ending with `[DONE]`; starts every prompt now, so that a
        refusal is an HTTP error rather than a stream that fails."""
        head, prompts, streams = self._start_completion(spec, body)
        guarded = [self.generate.drain.guard(s) for s in streams]
        return self._completion_chunks(head, body, prompts, guarded)

    async def _completion_chunks(
        self,
        head: dict[str, Any],
        body: CompletionRequest,
        prompts: list[str | list[int]],
        streams: list[AsyncIterator[list[TokenEvent]]],
    ) -> AsyncIterator[str | bytes]:
        usage = NO_USAGE
        try:
            for p, events in enumerate(streams):
                completion, started = Completion(body.n), set()
                echoed: str | None = None  # known from the first event (it carries the prompt)
                async for batch in events:
                    chunks = []
                    for event in batch:
                        completion.add(event)
                        if echoed is None:
                            echoed = _echo(body, prompts[p], completion)
                        infos = [] if event.token is None else [_shift(event.token, len(echoed))]
                        text = event.text
                        if event.index not in started:  # the echo goes before the first text
                            started.add(event.index)
                            text, infos = echoed + text, (completion.prompt or []) + infos
                        choice = CompletionChoice(
                            text=text,
                            index=p * body.n + event.index,
                            logprobs=None if body.logprobs is None else legacy_logprobs(infos),
                            finish_reason=event.finish_reason,
                        )
                        chunk = CompletionResponse(**head, choices=[choice])
                        chunks.append(chunk.model_dump_json())
                    yield frames(chunks)
                usage = add_usage(usage, completion.usage())
            if body.stream_options and body.stream_options.include_usage:
                yield CompletionResponse(**head, choices=[], usage=usage).model_dump_json()
        except (AppError, EngineError) as exc:
            yield _error_chunk(exc)
        finally:
            await close_streams(streams)
        yield "[DONE]"

    # -- chat completions --------------------------------------------------------------------

    def _start_chat(
        self, spec: ModelSpec, body: ChatCompletionRequest
    ) -> tuple[dict[str, Any], AsyncIterator[list[TokenEvent]]]:
        prompt, stops = chat_prompt(spec.config, body.messages)
        limit = body.limit(min(self.settings.max_new_tokens, 256))
        logprobs = (body.top_logprobs or 0) if body.logprobs else None
        stops = stops + [s for s in body.stops() if s not in stops]
        events = self.generate.start(spec, prompt, limit, body, logprobs=logprobs, stops=stops)
        return _head("chatcmpl", spec), events

    async def chat(self, spec: ModelSpec, body: ChatCompletionRequest) -> ChatCompletionResponse:
        head, events = self._start_chat(spec, body)
        completion = Completion(body.n)
        try:
            async for batch in events:
                completion.extend(batch)
        finally:
            await close_streams([events])
        return ChatCompletionResponse(
            **head,
            choices=[
                ChatChoice(
                    index=i,
                    message=AssistantMessage(content=completion.texts[i]),
                    logprobs=chat_logprobs(completion.infos[i]) if body.logprobs else None,
                    finish_reason=completion.finish[i] or "length",
                )
                for i in range(body.n)
            ],
            usage=completion.usage(),
        )

    def stream_chat(
        self, spec: ModelSpec, body: ChatCompletionRequest
    ) -> AsyncIterator[str | bytes]:
        head, events = self._start_chat(spec, body)
        return self._chat_chunks(head, body, self.generate.drain.guard(events))

    async def _chat_chunks(
        self,
        head: dict[str, Any],
        body: ChatCompletionRequest,
        events: AsyncIterator[list[TokenEvent]],
    ) -> AsyncIterator[str | bytes]:
        """A first chunk per choice with the role, then content deltas, then usage if asked."""
        completion = Completion(body.n)
        try:
            for i in range(body.n):
                choice = ChunkChoice(index=i, delta=Delta(role="assistant", content=""))
                yield ChatCompletionChunk(**head, choices=[choice]).model_dump_json()
            async for batch in events:
                chunks = []
                for event in batch:
                    completion.add(event)
                    logprobs = None
                    if body.logprobs and event.token is not None:
                        logprobs = chat_logprobs([event.token])
                    choice = ChunkChoice(
                        index=event.index,
                        delta=Delta(content=event.text),
                        logprobs=logprobs,
                        finish_reason=event.finish_reason,
                    )
                    chunks.append(ChatCompletionChunk(**head, choices=[choice]).model_dump_json())
                yield frames(chunks)
            if body.stream_options and body.stream_options.include_usage:
                yield ChatCompletionChunk(
                    **head, choices=[], usage=completion.usage()
                ).model_dump_json()
        except (AppError, EngineError) as exc:
            yield _error_chunk(exc)
        finally:
            await close_streams([events])
        yield "[DONE]"


def _echo(body: CompletionRequest, prompt: str | list[int], completion: Completion) -> str:
    """The prompt's text as echoed: as sent, or token ids decoded by the worker."""
    if not body.echo:
        return ""
    return prompt if isinstance(prompt, str) else "".join(t.text for t in completion.prompt or [])


def _shift(info: TokenInfo, by: int) -> TokenInfo:
    return TokenInfo(info.id, info.text, info.logprob, info.offset + by, info.top)
