"""The OpenAI completions API shapes, so existing OpenAI clients work unchanged."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.schemas.generate import SamplingFields, Usage

PROMPTS_MAX = 16  # a list of prompts is that many generations: bounded like `n`


class CompletionRequest(SamplingFields):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send fields we do not use

    model: str | None = Field(None, max_length=200)
    prompt: str | list[str] = Field(
        "", description=f"a prompt, or up to {PROMPTS_MAX} prompts (each gets `n` choices)"
    )
    max_tokens: int = Field(16, ge=1)
    logprobs: int | None = Field(None, ge=0, le=5)
    user: str | None = None

    @field_validator("prompt")
    @classmethod
    def _few_prompts(cls, prompt: str | list[str]) -> str | list[str]:
        if isinstance(prompt, list) and len(prompt) > PROMPTS_MAX:
            raise ValueError(f"{len(prompt)} prompts; at most {PROMPTS_MAX} in one request")
        return prompt


class CompletionChoice(BaseModel):
    text: str
    index: int
    logprobs: None = None
    finish_reason: str | None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "genserve"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
