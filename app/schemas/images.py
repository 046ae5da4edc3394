from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.common import RequestBody


class GenerateImageRequest(RequestBody):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"n": 8, "seed": 1, "label": 3}]}
    )

    model: str | None = Field(
        None, max_length=266, description="Omit for the default model; name@3, name@alias"
    )
    user: str | None = Field(
        None, max_length=256, description="Who asks: keeps a traffic split's pick per user"
    )
    n: int = Field(1, ge=1, description="Images to generate; limited by GENSERVE_MAX_IMAGES")
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="same seed, same pixels")
    label: int | None = Field(
        None, ge=0, description="Class for conditional models; omitted: sampled per image"
    )
    truncation: float = Field(
        1.0, gt=0, le=2, description="Scales the latent noise: lower is tamer, higher is wilder"
    )
    steps: int | None = Field(
        None, ge=1, le=1000, description="image-diffusion only: DDIM denoising steps (default 50)"
    )
    guidance: float | None = Field(
        None,
        ge=0,
        le=20,
        description="image-diffusion only, class-conditional: classifier-free guidance scale "
        "(default 1.5; 0 = unconditional, the label is then ignored)",
    )


class GeneratedImage(BaseModel):
    png_base64: str
    label: int | None = None


class GenerateImageResponse(BaseModel):
    model: str
    version: int
    width: int
    height: int
    images: list[GeneratedImage]
