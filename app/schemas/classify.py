from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.schemas.common import RequestBody


class ClassifyRequest(RequestBody):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"inputs": ["What a great phone!"]}]},
    )

    model: str | None = Field(
        None, max_length=266, description="Omit for the default model; name@3, name@alias"
    )
    user: str | None = Field(
        None, max_length=256, description="Who asks: keeps a traffic split's pick per user"
    )
    inputs: list[str] | None = Field(None, min_length=1, description="Texts to classify")
    images: list[str] | None = Field(None, min_length=1, description="Base64-encoded PNGs")
    top_k: int | None = Field(None, ge=1, le=1000, description="Labels per result in `scores`")

    @model_validator(mode="after")
    def _one_kind_of_input(self) -> Self:
        if (self.inputs is None) == (self.images is None):
            raise ValueError("give exactly one of `inputs` (texts) or `images` (base64 PNGs)")
        return self


class ClassifyResult(BaseModel):
    label: str
    score: float
    scores: dict[str, float]


class ClassifyResponse(BaseModel):
    model: str
    version: int
    results: list[ClassifyResult]
