"""Image generation: check the request against the model, batch it through the pool, encode PNGs."""

from __future__ import annotations

import asyncio

import numpy as np

from app.errors import InvalidInput
from app.pool.base import WorkerPool
from app.schemas.images import GeneratedImage, GenerateImageRequest, GenerateImageResponse
from app.services.images import encode_pngs
from app.services.registry import ModelRegistry
from app.settings import Settings
from app.worker.protocol import ModelSpec
from models.image.png import grid, png_bytes

SAMPLING_OPTIONS_KINDS = {"image-diffusion"}  # kinds whose generate() takes steps, guidance


class GenerateImageService:
    def __init__(self, settings: Settings, registry: ModelRegistry, pool: WorkerPool) -> None:
        self.settings = settings
        self.registry = registry
        self.pool = pool

    async def resolve(self, model: str | None, user: str | None = None) -> ModelSpec:
        ref = model or self.settings.default_image_model
        return await self.registry.serve(self.pool, ref, "image-generation", user)

    async def generate(
        self, spec: ModelSpec, request: GenerateImageRequest
    ) -> tuple[list[int] | None, np.ndarray]:
        """-> (labels or None, uint8 images (n, H, W))"""
        if request.n > self.settings.max_images:
            raise InvalidInput(
                f"n = {request.n} is above the limit of {self.settings.max_images} images"
            )
        classes = int(spec.config.get("num_classes", 0))
        if request.label is not None and not classes:
            raise InvalidInput(
                f"model {spec.name!r} is unconditional: it takes no label", code="invalid_label"
            )
        if request.label is not None and request.label >= classes:
            raise InvalidInput(
                f"label must be an integer from 0 to {classes - 1} for {spec.name!r}",
                code="invalid_label",
            )
        options = {"steps": request.steps, "guidance": request.guidance}
        options = {k: v for k, v in options.items() if v is not None}
        if options and spec.kind not in SAMPLING_OPTIONS_KINDS:
            raise InvalidInput(
                f"{'/'.join(options)} apply to image-diffusion models only; "
                f"{spec.name!r} is {spec.kind}",
                code="invalid_param",
            )
        if "guidance" in options and not classes:
            raise InvalidInput(
                f"guidance applies to class-conditional models only; {spec.name!r} is "
                "unconditional",
                code="invalid_param",
            )
        params = {"seed": request.seed, "label": request.label, "truncation": request.truncation}
        params.update(options)  # only when asked: the executor passes them to generate()
        return await self.pool.infer(self.pool.key(spec), params, request.n)

    async def to_json(
        self, spec: ModelSpec, labels: list[int] | None, pixels: np.ndarray
    ) -> GenerateImageResponse:
        pngs = await encode_pngs(pixels)
        return GenerateImageResponse(
            model=spec.name,
            version=spec.version,
            width=int(pixels.shape[2]),
            height=int(pixels.shape[1]),
            images=[
                GeneratedImage(png_base64=png, label=labels[i] if labels is not None else None)
                for i, png in enumerate(pngs)
            ],
        )

    async def to_png_grid(self, pixels: np.ndarray) -> bytes:
        return await asyncio.to_thread(lambda: png_bytes(grid(pixels)))
