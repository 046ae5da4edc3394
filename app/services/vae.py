"""A VAE's encoder put to use: encode images to latents, reconstruct them with an anomaly
score (the negative ELBO), and interpolate between two images or two seeds, batched in the
worker with the model's other requests."""

from __future__ import annotations

import asyncio

import numpy as np

from app.errors import InvalidInput
from app.pool.base import WorkerPool
from app.schemas.images import (
    EncodeRequest,
    EncodeResponse,
    GeneratedImage,
    InterpolateRequest,
    InterpolateResponse,
    LatentCode,
    Reconstruction,
    ReconstructResponse,
)
from app.services.images import decode_pngs, encode_pngs
from app.services.registry import ModelRegistry
from app.settings import Settings
from app.worker.protocol import Encoded, EncodeImages, Interpolate, Interpolated, ModelSpec
from models.image.png import grid, png_bytes

ENCODER_KINDS = {"image-vae"}  # image generators with an encoder


def image_size(spec: ModelSpec) -> tuple[int, int]:
    height, width = spec.config["image_size"]
    return int(height), int(width)


class VAEService:
    def __init__(self, settings: Settings, registry: ModelRegistry, pool: WorkerPool) -> None:
        self.settings = settings
        self.registry = registry
        self.pool = pool

    async def resolve(self, model: str | None, user: str | None = None) -> ModelSpec:
        """The VAE version asked for (or the default VAE); 422 for a model without encoder."""
        ref = model or self.settings.default_vae_model
        spec = await self.registry.serve(self.pool, ref, "image-generation", user)
        if spec.kind not in ENCODER_KINDS:
            raise InvalidInput(
                f"model {spec.name!r} is {spec.kind}: it has no encoder; encode, reconstruct "
                f"and interpolate take {', '.join(sorted(ENCODER_KINDS))} models",
                code="no_encoder",
                details={"model": spec.name, "kind": spec.kind},
            )
        return spec

    async def encode(self, spec: ModelSpec, request: EncodeRequest, reconstruct: bool) -> Encoded:
        """Latent means, log-variances and negative ELBOs (and reconstructions) of the images."""
        self._check_count(len(request.images), "images")
        if request.labels is not None:
            if len(request.labels) != len(request.images):
                raise InvalidInput(
                    f"{len(request.labels)} labels for {len(request.images)} images",
                    code="invalid_label",
                )
            for label in request.labels:
                self._check_label(spec, label)
        pixels = await decode_pngs(request.images, image_size(spec))
        labels = request.labels
        if labels is None and self._classes(spec):
            labels = [-1] * len(request.images)  # the worker finds the best-fitting classes
        inputs = EncodeImages(pixels, labels, reconstruct)
        return await self.pool.infer(self.pool.key(spec), inputs, len(request.images))

    async def interpolate(self, spec: ModelSpec, request: InterpolateRequest) -> Interpolated:
        """`steps` images along the latent line between two images or two seeds."""
        self._check_count(request.steps, "steps")
        if request.label is not None:
            self._check_label(spec, request.label)
        images = None
        if request.images is not None:
            images = await decode_pngs(request.images, image_size(spec))
        seeds = (request.seeds[0], request.seeds[1]) if request.seeds is not None else None
        inputs = Interpolate(request.steps, images, seeds, request.label)
        return await self.pool.infer(self.pool.key(spec), inputs, request.steps)

    def _check_count(self, count: int, what: str) -> None:
        if count > self.settings.max_images:
            raise InvalidInput(
                f"{count} {what} in one request; the limit is {self.settings.max_images}"
            )

    @staticmethod
    def _classes(spec: ModelSpec) -> int:
        return int(spec.config.get("num_classes", 0))

    def _check_label(self, spec: ModelSpec, label: int) -> None:
        classes = self._classes(spec)
        if not classes:
            raise InvalidInput(
                f"model {spec.name!r} is unconditional: it takes no label", code="invalid_label"
            )
        if label >= classes:
            raise InvalidInput(
                f"label must be an integer from 0 to {classes - 1} for {spec.name!r}",
                code="invalid_label",
            )

    @staticmethod
    def to_codes(spec: ModelSpec, encoded: Encoded) -> EncodeResponse:
        labels = encoded.labels or [None] * len(encoded.mean)
        return EncodeResponse(
            model=spec.name,
            version=spec.version,
            latent_dim=int(encoded.mean.shape[1]),
            codes=[
                LatentCode(mean=m.tolist(), logvar=v.tolist(), label=y)
                for m, v, y in zip(encoded.mean, encoded.logvar, labels, strict=True)
            ],
        )

    @staticmethod
    async def to_reconstructions(spec: ModelSpec, encoded: Encoded) -> ReconstructResponse:
        pixels: np.ndarray = encoded.pixels
        labels = encoded.labels or [None] * len(pixels)
        pngs = await encode_pngs(pixels)
        return ReconstructResponse(
            model=spec.name,
            version=spec.version,
            width=int(pixels.shape[2]),
            height=int(pixels.shape[1]),
            images=[
                Reconstruction(png_base64=png, neg_elbo=round(float(score), 3), label=y)
                for png, score, y in zip(pngs, encoded.neg_elbo, labels, strict=True)
            ],
        )

    @staticmethod
    async def to_strip(spec: ModelSpec, result: Interpolated) -> InterpolateResponse:
        pixels: np.ndarray = result.pixels
        pngs = await encode_pngs(pixels)
        return InterpolateResponse(
            model=spec.name,
            version=spec.version,
            width=int(pixels.shape[2]),
            height=int(pixels.shape[1]),
            label=result.label,
            images=[GeneratedImage(png_base64=png, label=result.label) for png in pngs],
        )

    @staticmethod
    async def to_png(pixels: np.ndarray, strip: bool = False) -> bytes:
        """One PNG: a grid of the images, or with `strip` one row of them."""
        cols = len(pixels) if strip else None
        return await asyncio.to_thread(lambda: png_bytes(grid(pixels, cols=cols)))
