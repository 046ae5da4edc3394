"""The OpenAI completions API shapes, so existing OpenAI clients work unchanged."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.schemas.common import RequestBody
from app.schemas.generate import TOP_LOGPROBS_MAX, SamplingFields, Usage

PROMPTS_MAX = 16  # a list of prompts is that many generations: bounded like `n`


class StreamOptions(RequestBody):
    include_usage: bool = False


Prompt = str | list[str] | list[int] | list[list[int]]


class CompletionRequest(SamplingFields):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send fields we do not use

    model: str | None = Field(None, max_length=266)  # name, name@3 or name@alias
    prompt: Prompt = Field(
        "",
        description=f"a prompt, token ids, or up to {PROMPTS_MAX} of either (each gets `n` "
        "choices)",
    )
    max_tokens: int = Field(16, ge=0, description="0 with echo scores the prompt")
    logprobs: int | None = Field(None, ge=0, le=TOP_LOGPROBS_MAX)
    echo: bool = Field(False, description="return the prompt, with its logprobs, too")
    best_of: int | None = Field(None, ge=1, le=16, description="only equal to n: no reranking")
    suffix: str | None = Field(None, description="not supported: the models write left to right")
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=256)  # keeps a traffic split's pick

    @field_validator("prompt")
    @classmethod
    def _few_prompts(cls, prompt: Prompt) -> Prompt:
        several = isinstance(prompt, list) and prompt and not isinstance(prompt[0], int)
        if several and len(prompt) > PROMPTS_MAX:
            raise ValueError(f"{len(prompt)} prompts; at most {PROMPTS_MAX} in one request")
        return prompt

    @model_validator(mode="after")
    def _no_silent_gaps(self) -> Self:
        """What genserve cannot do is refused, never accepted and ignored."""
        if self.suffix:
            raise ValueError("suffix is not supported: the models only write left to right")
        if self.best_of is not None and self.best_of != self.n:
            raise ValueError("best_of is not supported (no reranking); leave it out or set n")
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed with stream: true")
        return self

    def prompts(self) -> list[str | list[int]]:
        """One entry per prompt: text or token ids."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if not p:
            return [""]
        if isinstance(p[0], int):
            return [p]  # type: ignore[list-item]
        return list(p)  # type: ignore[arg-type]


class CompletionLogprobs(BaseModel):
    """OpenAI's legacy logprobs: parallel lists, one entry per token."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    text: str
    index: int
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None


class OpenAIResponse(BaseModel):
    """What every OpenAI generation response and chunk starts with."""

    id: str
    created: int  # unix seconds
    model: str


class CompletionResponse(OpenAIResponse):
    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(description="when the served version was registered, unix seconds")
    owned_by: str = "genserve"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
