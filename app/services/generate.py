"""Text generation and scoring: check the request against the model, then collect the
worker's tokens into one response or frame them as genserve's SSE events. OpenAI's framing
of the same streams is in app/services/openai.py."""

from __future__ import annotations

import asyncio
import contextlib
import math
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
    Alternative,
    GenerateTextRequest,
    GenerateTextResponse,
    SamplingFields,
    ScoreRequest,
    ScoreResponse,
    TextChoice,
    TokenLogprob,
    Usage,
)
from app.services.registry import ModelRegistry
from app.settings import Settings
from app.sse import error_event, frames
from app.worker.protocol import ModelSpec, TokenEvent, TokenInfo


@dataclass
class Completion:
    """What a generation produced so far, choice by choice."""

    n: int
    prompt_tokens: int = 0  # reported by the worker on each choice's first event
    texts: list[str] = field(default_factory=list)
    finish: list[str | None] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    logprobs: list[list[float]] = field(default_factory=list)
    infos: list[list[TokenInfo]] = field(default_factory=list)  # with logprobs
    prompt: list[TokenInfo] | None = None  # with echo: the prompt's tokens, scored

    def __post_init__(self) -> None:
        self.texts = [""] * self.n
        self.finish = [None] * self.n
        self.tokens = [0] * self.n
        self.logprobs = [[] for _ in range(self.n)]
        self.infos = [[] for _ in range(self.n)]

    def add(self, event: TokenEvent) -> None:
        index = event.index
        self.texts[index] += event.text
        self.finish[index] = event.finish_reason
        self.tokens[index] = event.completion_tokens
        if event.logprob is not None:
            self.logprobs[index].append(event.logprob)
        if event.token is not None:
            self.infos[index].append(event.token)
        if event.prompt_tokens:
            self.prompt_tokens = event.prompt_tokens
        if event.prompt is not None:
            self.prompt = event.prompt

    def extend(self, events: list[TokenEvent]) -> None:
        for event in events:
            self.add(event)

    def usage(self) -> Usage:
        completion = sum(self.tokens)
        return Usage(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=completion,
            total_tokens=self.prompt_tokens + completion,
        )


def add_usage(a: Usage, b: Usage) -> Usage:
    return Usage(
        prompt_tokens=a.prompt_tokens + b.prompt_tokens,
        completion_tokens=a.completion_tokens + b.completion_tokens,
        total_tokens=a.total_tokens + b.total_tokens,
    )


def token_logprobs(infos: list[TokenInfo], shift: int = 0) -> list[TokenLogprob]:
    """Tokens as genserve's API shows them; `shift` moves the offsets (echoed prompts)."""
    return [
        TokenLogprob(
            token=t.text,
            id=t.id,
            logprob=t.logprob,
            offset=t.offset + shift,
            top_logprobs=None
            if t.top is None
            else [Alternative(id=i, token=text, logprob=lp) for i, text, lp in t.top],
        )
        for t in infos
    ]


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

    async def resolve(self, model: str | None, user: str | None = None) -> ModelSpec:
        ref = model or self.settings.default_text_model
        return await self.registry.serve(self.pool, ref, "text-generation", user)

    def check(
        self,
        spec: ModelSpec,
        prompt: str | list[int],
        max_new_tokens: int,
        bias: dict[int, float] | None = None,
    ) -> None:
        """The rules of DESIGN.md: characters outside the vocabulary are refused, not mapped;
        so are token ids the model does not have."""
        limit = self.settings.max_prompt_chars
        if len(prompt) > limit:
            unit = "characters" if isinstance(prompt, str) else "tokens"
            raise InvalidInput(f"prompt has {len(prompt)} {unit}; the limit is {limit}")
        if max_new_tokens > self.settings.max_new_tokens:
            raise InvalidInput(
                f"max_new_tokens {max_new_tokens} is above the limit of "
                f"{self.settings.max_new_tokens}"
            )
        if not prompt and spec.config.get("needs_prompt", False):
            raise InvalidInput(f"model {spec.name!r} needs a non-empty prompt")
        vocab = spec.config.get("model_args", {}).get("vocab_size")
        ids = list(bias or {}) + ([] if isinstance(prompt, str) else prompt)
        if vocab is not None and any(i >= vocab for i in ids):
            raise InvalidInput(
                f"token ids must be below {spec.name!r}'s vocabulary size of {vocab}",
                code="unknown_tokens",
                details={"unknown": sorted({i for i in ids if i >= vocab})[:20]},
            )
        tokenizer = spec.config.get("tokenizer", {})
        if not isinstance(prompt, str) or tokenizer.get("type", "char") != "char":
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
        self,
        spec: ModelSpec,
        prompt: str | list[int],
        max_new_tokens: int,
        sampling: SamplingFields,
        *,
        logprobs: int | None = None,
        echo: bool = False,
        stops: list[str] | None = None,
    ) -> AsyncIterator[list[TokenEvent]]:
        """Submits `sampling.n` generations. `logprobs` k: each token with its k most likely
        alternatives; `echo`: the prompt's tokens scored first; `stops` replace the body's."""
        bias = sampling.token_bias()
        self.check(spec, prompt, max_new_tokens, bias)
        params = {
            "max_new_tokens": max_new_tokens,
            "temperature": sampling.temperature,
            "top_k": sampling.top_k,
            "top_p": sampling.top_p,
            "repetition_penalty": sampling.repetition_penalty,
            "stop": sampling.stops() if stops is None else stops,
            "seed": sampling.seed,
            "presence_penalty": sampling.presence_penalty,
            "frequency_penalty": sampling.frequency_penalty,
            "logit_bias": bias,
            "logprobs": logprobs,
            "echo": echo,
        }
        return self.pool.generate(self.pool.key(spec), prompt, params, sampling.n)

    def start_text(
        self, spec: ModelSpec, body: GenerateTextRequest
    ) -> AsyncIterator[list[TokenEvent]]:
        """/generate/text's generations: `top_logprobs` asks the worker for alternatives."""
        logprobs = body.top_logprobs if body.top_logprobs else None
        return self.start(spec, body.prompt, body.max_new_tokens, body, logprobs=logprobs)

    async def collect(
        self, spec: ModelSpec, events: AsyncIterator[list[TokenEvent]], body: GenerateTextRequest
    ) -> GenerateTextResponse:
        completion = Completion(body.n)
        async for batch in events:
            completion.extend(batch)
        return GenerateTextResponse(
            model=spec.name,
            version=spec.version,
            choices=[
                TextChoice(
                    index=i,
                    text=completion.texts[i],
                    finish_reason=completion.finish[i] or "length",
                    completion_tokens=completion.tokens[i],
                    logprobs=completion.logprobs[i] if body.logprobs else None,
                    tokens=token_logprobs(completion.infos[i]) if body.top_logprobs else None,
                )
                for i in range(body.n)
            ],
            usage=completion.usage(),
        )

    async def score(self, spec: ModelSpec, body: ScoreRequest) -> ScoreResponse:
        """The text's tokens scored in one prefill on a worker, batched with generations."""
        sampling = SamplingFields()
        events = self.start(spec, body.text, 0, sampling, logprobs=body.top_logprobs, echo=True)
        completion = Completion(1)
        async for batch in events:
            completion.extend(batch)
        scored = completion.prompt or []
        logprob = sum(t.logprob for t in scored if t.logprob is not None)
        count = max(len(scored) - 1, 0)
        chars = len(body.text) - (scored[1].offset if len(scored) > 1 else len(body.text))
        return ScoreResponse(
            model=spec.name,
            version=spec.version,
            logprob=logprob,
            tokens_scored=count,
            chars=chars,
            nats_per_char=-logprob / chars if chars else 0.0,
            perplexity=math.exp(-logprob / count) if count else 1.0,
            tokens=token_logprobs(scored),
        )

    async def stream_text(
        self, spec: ModelSpec, events: AsyncIterator[list[TokenEvent]], body: GenerateTextRequest
    ) -> AsyncIterator[dict[str, str] | bytes]:
        """/generate/text's SSE events: one `token` per token, then `done` with the usage, or
        an `error` event when the generation fails after the stream started."""
        completion = Completion(body.n)
        try:
            async for batch in self.drain.guard(events):
                completion.extend(batch)
                yield frames([_token(event, body) for event in batch], "token")
        except (AppError, EngineError) as exc:
            yield error_event(exc)
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


async def close_streams(streams: list[AsyncIterator[list[TokenEvent]]]) -> None:
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


def _token(event: TokenEvent, body: GenerateTextRequest) -> str:
    data: dict[str, Any] = {
        "index": event.index,
        "text": event.text,
        "completion_tokens": event.completion_tokens,
        "finish_reason": event.finish_reason,
    }
    if body.logprobs:
        data["logprob"] = event.logprob
    if body.top_logprobs and event.token is not None:
        data["token"] = token_logprobs([event.token])[0].model_dump()
    return orjson.dumps(data).decode()


def client_error(exc: AppError | EngineError) -> AppError:
    return exc if isinstance(exc, AppError) else http_error(exc)
