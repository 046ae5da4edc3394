"""Text generation: check the request against the model, stream or collect the worker's tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from app.errors import InvalidInput
from app.pool.base import Event, ModelSpec, WorkerPool
from app.schemas.generate import GenerateTextResponse, SamplingFields, TextChoice, Usage
from app.services.registry import ModelRegistry
from app.settings import Settings


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

    def add(self, event: Event) -> None:
        _, index, text, finish, tokens, logprob = event
        self.texts[index] += text
        self.finish[index] = finish
        self.tokens[index] = tokens
        if logprob is not None:
            self.logprobs[index].append(logprob)

    def usage(self) -> Usage:
        completion = sum(self.tokens)
        return Usage(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=completion,
            total_tokens=self.prompt_tokens + completion,
        )


class GenerateService:
    def __init__(self, settings: Settings, registry: ModelRegistry, pool: WorkerPool) -> None:
        self.settings = settings
        self.registry = registry
        self.pool = pool

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
        vocabulary = set(spec.config.get("tokenizer", {}).get("chars", []))
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
    ) -> AsyncIterator[Event]:
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
        self, spec: ModelSpec, events: AsyncIterator[Event], n: int, prompt: str, logprobs: bool
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
