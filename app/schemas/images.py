from __future__ import annotations

from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.schemas.common import RequestBody

DEFAULT_PREVIEW_EVERY = 10  # denoising steps between two previews of a stream


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
    stream: bool = Field(
        False,
        description="Server-sent events: `preview` events as a diffusion model denoises, "
        "then `done` with the response body (or `error`)",
    )
    preview_every: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="image-diffusion only, with stream: a `preview` event every k denoising "
        f"steps (default {DEFAULT_PREVIEW_EVERY})",
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


class ImagePreview(BaseModel):
    """A streamed `preview` event: the request's images part-way through denoising."""

    step: int = Field(description="Denoising steps taken")
    steps: int = Field(description="Denoising steps in all")
    images: list[str] = Field(description="Base64-encoded PNGs of the current noisy images")


MODEL_FIELD_DOC = "Omit for the default VAE (GENSERVE_DEFAULT_VAE_MODEL); name@3, name@alias"
LABELS_DOC = (
    "Conditional VAEs only: the class of each image, which the encoder is given; omitted: "
    "the best-fitting class of each image is found and returned"
)


class EncodeRequest(RequestBody):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, max_length=266, description=MODEL_FIELD_DOC)
    user: str | None = Field(
        None, max_length=256, description="Who asks: keeps a traffic split's pick per user"
    )
    images: list[str] = Field(
        min_length=1,
        description="Base64-encoded PNGs at the model's size; limited by GENSERVE_MAX_IMAGES",
    )
    labels: list[Annotated[int, Field(ge=0)]] | None = Field(None, description=LABELS_DOC)


class LatentCode(BaseModel):
    mean: list[float] = Field(description="Mean of q(z|x): the image's point in latent space")
    logvar: list[float] = Field(description="Natural log of the variance of q(z|x), per unit")
    label: int | None = Field(None, description="Conditional VAEs: the class encoded with")


class EncodeResponse(BaseModel):
    model: str
    version: int
    latent_dim: int
    codes: list[LatentCode]


class ReconstructRequest(EncodeRequest):
    """The same inputs as encode."""


class Reconstruction(BaseModel):
    png_base64: str = Field(description="The decoded mean of q(z|x): the model's redrawing")
    neg_elbo: float = Field(
        description="Negative ELBO in nats, an upper bound on -log p(x): an anomaly score "
        "(an image unlike the training data scores high)"
    )
    label: int | None = None


class ReconstructResponse(BaseModel):
    model: str
    version: int
    width: int
    height: int
    images: list[Reconstruction]


class InterpolateRequest(RequestBody):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"seeds": [1, 2], "steps": 8}]}
    )

    model: str | None = Field(None, max_length=266, description=MODEL_FIELD_DOC)
    user: str | None = Field(
        None, max_length=256, description="Who asks: keeps a traffic split's pick per user"
    )
    images: list[str] | None = Field(
        None, min_length=2, max_length=2, description="The two ends: base64 PNGs, encoded"
    )
    seeds: list[Annotated[int, Field(ge=0, le=2**63 - 1)]] | None = Field(
        None,
        min_length=2,
        max_length=2,
        description="The two ends: the noise /generate/image draws for each seed",
    )
    steps: int = Field(
        8,
        ge=2,
        description="Images along the line, both ends included; limited by GENSERVE_MAX_IMAGES",
    )
    label: int | None = Field(
        None,
        ge=0,
        description="Conditional VAEs only: the class decoded; omitted: the first end's",
    )

    @model_validator(mode="after")
    def _one_pair_of_ends(self) -> Self:
        if (self.images is None) == (self.seeds is None):
            raise ValueError("give exactly one of `images` (two PNGs) or `seeds` (two seeds)")
        return self


class InterpolateResponse(BaseModel):
    model: str
    version: int
    width: int
    height: int
    label: int | None = Field(None, description="Conditional VAEs: the class decoded")
    images: list[GeneratedImage]
