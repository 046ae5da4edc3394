"""Image generation: check the request against the model, batch it through the pool, encode PNGs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from app.errors import AppError, InvalidInput
from app.pool.base import Progress, WorkerPool
from app.pool.errors import EngineError
from app.schemas.images import (
    DEFAULT_PREVIEW_EVERY,
    GeneratedImage,
    GenerateImageRequest,
    GenerateImageResponse,
    ImagePreview,
)
from app.services.images import encode_pngs
from app.services.registry import ModelRegistry
from app.settings import Settings
from app.sse import error_event
from app.worker.protocol import ModelSpec, Preview
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
        self, spec: ModelSpec, request: GenerateImageRequest, progress: Progress | None = None
    ) -> tuple[list[int] | None, np.ndarray]:
        """-> (labels or None, uint8 images (n, H, W)); `progress` gets the previews."""
        params = self.params(spec, request)
        return await self.pool.infer(self.pool.key(spec), params, request.n, progress)

    def params(self, spec: ModelSpec, request: GenerateImageRequest) -> dict[str, Any]:
        """What the worker gets; 422 for options the model does not take."""
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
        options = {
            "steps": request.steps,
            "guidance": request.guidance,
            "preview_every": request.preview_every,
        }
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
        if "preview_every" in options and not request.stream:
            raise InvalidInput("preview_every applies with stream: true", code="invalid_param")
        if request.stream and spec.kind in SAMPLING_OPTIONS_KINDS:
            options.setdefault("preview_every", DEFAULT_PREVIEW_EVERY)
        params = {"seed": request.seed, "label": request.label, "truncation": request.truncation}
        params.update(options)  # only when asked: the executor passes them to generate()
        return params

    async def stream(
        self, spec: ModelSpec, request: GenerateImageRequest
    ) -> AsyncIterator[dict[str, str]]:
        """Starts the request and returns its SSE events: a `preview` every `preview_every`
        denoising steps (diffusion models), then `done` with the response body, or `error`.
        Bad options and a full queue are refused (4xx) before the stream starts."""
        previews: asyncio.Queue[Preview] = asyncio.Queue()
        result = asyncio.ensure_future(self.generate(spec, request, previews.put_nowait))
        await asyncio.sleep(0)  # submitted: a refusal raises here, before any event
        if result.done():
            result.result()
        return self._events(spec, result, previews)

    async def _events(
        self,
        spec: ModelSpec,
        result: asyncio.Future[tuple[list[int] | None, np.ndarray]],
        previews: asyncio.Queue[Preview],
    ) -> AsyncIterator[dict[str, str]]:
        try:
            while True:
                waiting = asyncio.ensure_future(previews.get())
                await asyncio.wait({waiting, result}, return_when=asyncio.FIRST_COMPLETED)
                if not waiting.done():
                    waiting.cancel()
                    break
                yield await self._preview_event(waiting.result())
            while not previews.empty():
                yield await self._preview_event(previews.get_nowait())
            try:
                labels, pixels = result.result()
            except (AppError, EngineError) as exc:
                yield error_event(exc)
                return
            body = await self.to_json(spec, labels, pixels)
            yield {"event": "done", "data": body.model_dump_json()}
        finally:
            result.cancel()  # the client left: the pool cancels the worker's steps

    @staticmethod
    async def _preview_event(preview: Preview) -> dict[str, str]:
        pngs = await encode_pngs(preview.pixels)
        event = ImagePreview(step=preview.step, steps=preview.steps, images=pngs)
        return {"event": "preview", "data": event.model_dump_json()}

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
