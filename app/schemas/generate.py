from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.schemas.common import RequestBody

STOP_MAX = 4


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

    @model_validator(mode="after")
    def _check_stop(self) -> Self:
        stops = [self.stop] if isinstance(self.stop, str) else self.stop or []
        if len(stops) > STOP_MAX:
            raise ValueError(f"at most {STOP_MAX} stop strings")
        if any(not s or len(s) > 64 for s in stops):
            raise ValueError("stop strings must have 1 to 64 characters")
        return self

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class GenerateTextRequest(SamplingFields):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"prompt": "ROMEO:", "max_new_tokens": 100, "seed": 1}]},
    )

    model: str | None = Field(None, max_length=200, description="Omit for the default model")
    prompt: str = Field("", description="Characters must be in the model's vocabulary")
    max_new_tokens: int = Field(64, ge=1, description="Limited by GENSERVE_MAX_NEW_TOKENS")
    logprobs: bool = Field(False, description="Return each generated token's log-probability")


class TextChoice(BaseModel):
    index: int
    text: str
    finish_reason: str
    completion_tokens: int
    logprobs: list[float] | None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class GenerateTextResponse(BaseModel):
    model: str
    version: int
    choices: list[TextChoice]
    usage: Usage
