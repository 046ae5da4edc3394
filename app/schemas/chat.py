"""The OpenAI chat completions API shapes, so existing OpenAI chat clients work unchanged."""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.schemas.common import RequestBody
from app.schemas.generate import TOP_LOGPROBS_MAX, SamplingFields, Usage
from app.schemas.openai import OpenAIResponse, StreamOptions

MESSAGES_MAX = 64
# Fields of OpenAI's API that a plain language model cannot honour: refused, not ignored.
UNSUPPORTED = ("tools", "tool_choice", "functions", "function_call", "response_format", "audio")


class TextPart(RequestBody):
    type: Literal["text"]
    text: str


class ChatMessage(RequestBody):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = Field(None, max_length=64, description="the speaker, for templates")

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class ChatCompletionRequest(SamplingFields):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send fields we do not use

    model: str | None = Field(None, max_length=266)  # name, name@3 or name@alias
    messages: list[ChatMessage] = Field(..., min_length=1, max_length=MESSAGES_MAX)
    max_tokens: int | None = Field(None, ge=1, description="default: the server's limit")
    max_completion_tokens: int | None = Field(None, ge=1, description="max_tokens' new name")
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=TOP_LOGPROBS_MAX)
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=256)  # keeps a traffic split's pick

    @model_validator(mode="before")
    @classmethod
    def _refuse_unsupported(cls, data: Any) -> Any:
        if isinstance(data, dict):
            given = [k for k in UNSUPPORTED if data.get(k) not in (None, [], "none", "auto")]
            if given:
                raise ValueError(f"{', '.join(given)}: not supported by genserve's models")
        return data

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed with stream: true")
        return self

    def limit(self, default: int) -> int:
        return self.max_completion_tokens or self.max_tokens or default


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class ChatTokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    content: list[ChatTokenLogprob] | None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: str


class ChatCompletionResponse(OpenAIResponse):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[ChatChoice]
    usage: Usage


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: Delta
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(OpenAIResponse):
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    choices: list[ChunkChoice]
    usage: Usage | None = None
