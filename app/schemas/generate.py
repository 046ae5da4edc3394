from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.schemas.common import RequestBody

STOP_MAX = 4
BIAS_MAX = 300  # as OpenAI
TOP_LOGPROBS_MAX = 20  # as OpenAI's chat API and vLLM


class SamplingFields(RequestBody):
    """Sampling controls shared by /generate/text and /v1/completions."""

    temperature: float = Field(1.0, ge=0, le=10, description="0 is greedy")
    top_k: int = Field(0, ge=0, le=1_000_000, description="0 turns it off")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus mass kept; 1 turns it off")
    repetition_penalty: float = Field(1.0, gt=0, le=10, description="1 turns it off")
    stop: list[str] | str | None = Field(None, description=f"up to {STOP_MAX} stop strings")
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="same seed, same text")
    n: int = Field(1, ge=1, le=16, description="independent choices")
    stream: bool = False
    presence_penalty: float = Field(0.0, ge=-2, le=2, description="OpenAI's; 0 turns it off")
    frequency_penalty: float = Field(0.0, ge=-2, le=2, description="OpenAI's; 0 turns it off")
    logit_bias: dict[str, float] | None = Field(
        None, description=f"token id -> bias in [-100, 100] added to its logit; {BIAS_MAX} at most"
    )

    @model_validator(mode="after")
    def _check_stop(self) -> Self:
        stops = [self.stop] if isinstance(self.stop, str) else self.stop or []
        if len(stops) > STOP_MAX:
            raise ValueError(f"at most {STOP_MAX} stop strings")
        if any(not s or len(s) > 64 for s in stops):
            raise ValueError("stop strings must have 1 to 64 characters")
        return self

    @field_validator("logit_bias")
    @classmethod
    def _check_bias(cls, bias: dict[str, float] | None) -> dict[str, float] | None:
        if not bias:
            return bias
        if len(bias) > BIAS_MAX:
            raise ValueError(f"{len(bias)} entries; at most {BIAS_MAX}")
        for key, value in bias.items():
            if not key.isdigit() or len(key) > 9:
                raise ValueError(f"keys are token ids (non-negative integers), not {key!r}")
            if not -100 <= value <= 100:
                raise ValueError(f"bias {value} for token {key} is outside [-100, 100]")
        return bias

    def token_bias(self) -> dict[int, float]:
        return {int(k): v for k, v in (self.logit_bias or {}).items()}

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class GenerateTextRequest(SamplingFields):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"prompt": "ROMEO:", "max_new_tokens": 100, "seed": 1}]},
    )

    model: str | None = Field(
        None, max_length=266, description="Omit for the default model; name@3, name@alias"
    )
    user: str | None = Field(
        None, max_length=256, description="Who asks: keeps a traffic split's pick per user"
    )
    prompt: str = Field("", description="Characters must be in the model's vocabulary")
    max_new_tokens: int = Field(64, ge=1, description="Limited by GENSERVE_MAX_NEW_TOKENS")
    logprobs: bool = Field(False, description="Return each generated token's log-probability")
    top_logprobs: int = Field(
        0,
        ge=0,
        le=TOP_LOGPROBS_MAX,
        description="Also return each generated token with its k most likely alternatives",
    )


class Alternative(BaseModel):
    token: str
    id: int
    logprob: float


class TokenLogprob(BaseModel):
    """A token with its log-probability given the text before it; `offset` is its first
    character in the text. A text's first token has no logprob: nothing predicts it."""

    token: str
    id: int
    logprob: float | None
    offset: int
    top_logprobs: list[Alternative] | None = None


class TextChoice(BaseModel):
    index: int
    text: str
    finish_reason: str
    completion_tokens: int
    logprobs: list[float] | None = None
    tokens: list[TokenLogprob] | None = Field(None, description="with top_logprobs")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class GenerateTextResponse(BaseModel):
    model: str
    version: int
    choices: list[TextChoice]
    usage: Usage


class ScoreRequest(RequestBody):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"text": "ROMEO:\nBut soft!"}]}
    )

    model: str | None = Field(
        None, max_length=266, description="Omit for the default model; name@3, name@alias"
    )
    user: str | None = Field(
        None, max_length=256, description="Who asks: keeps a traffic split's pick per user"
    )
    text: str = Field(..., min_length=1, description="The text to score")
    top_logprobs: int = Field(
        0, ge=0, le=TOP_LOGPROBS_MAX, description="Per token, the k most likely next tokens"
    )


class ScoreResponse(BaseModel):
    """How likely the model finds a text. The first token only conditions the rest, so the
    totals cover the tokens after it and `chars` counts their characters."""

    model: str
    version: int
    logprob: float = Field(description="total log-probability (nats) of the scored tokens")
    tokens_scored: int
    chars: int
    nats_per_char: float
    perplexity: float = Field(description="per token: exp(-logprob / tokens_scored)")
    tokens: list[TokenLogprob]
