"""Classification: validate inputs against the model, run them through the pool, rank labels."""

from __future__ import annotations

import numpy as np

from app.errors import BadRequest, InvalidInput
from app.pool.base import WorkerPool
from app.schemas.classify import ClassifyRequest, ClassifyResponse, ClassifyResult
from app.services.images import decode_pngs
from app.services.registry import ModelRegistry
from app.settings import Settings
from app.worker.protocol import ModelSpec


class ClassifyService:
    def __init__(self, settings: Settings, registry: ModelRegistry, pool: WorkerPool) -> None:
        self.settings = settings
        self.registry = registry
        self.pool = pool

    async def resolve(self, request: ClassifyRequest) -> ModelSpec:
        input_type = "text" if request.inputs is not None else "image"
        name = request.model or (
            self.settings.default_text_classifier
            if input_type == "text"
            else self.settings.default_image_classifier
        )
        spec = await self.registry.serve(self.pool, name, "classification", request.user)
        takes = spec.config.get("input", "text")
        if takes != input_type:
            field = "inputs" if takes == "text" else "images"
            raise BadRequest(
                f"model {name!r} classifies {takes}s: send `{field}`", code="wrong_input_type"
            )
        return spec

    async def classify(
        self, request: ClassifyRequest, spec: ModelSpec | None = None
    ) -> ClassifyResponse:
        spec = spec or await self.resolve(request)
        items = request.inputs if request.inputs is not None else request.images
        assert items is not None
        if len(items) > self.settings.max_inputs:
            raise InvalidInput(
                f"{len(items)} inputs in one request; the limit is {self.settings.max_inputs}"
            )
        if request.inputs is not None:
            inputs = self._check_texts(request.inputs)
        else:
            inputs = await decode_pngs(request.images or [], tuple(spec.config["image_size"]))
        probs = await self.pool.infer(self.pool.key(spec), inputs, len(items))
        labels: list[str] = spec.config["labels"]
        return ClassifyResponse(
            model=spec.name,
            version=spec.version,
            results=[rank(row, labels, request.top_k) for row in probs],
        )

    def _check_texts(self, texts: list[str]) -> list[str]:
        limit = self.settings.max_text_chars
        for i, text in enumerate(texts):
            if not text.strip():
                raise InvalidInput(f"inputs[{i}] is empty")
            if len(text) > limit:
                raise InvalidInput(f"inputs[{i}] has {len(text)} characters; the limit is {limit}")
        return texts


def rank(probs: np.ndarray, labels: list[str], top_k: int | None) -> ClassifyResult:
    order = np.argsort(-probs, kind="stable")[: top_k or len(labels)]
    best = int(order[0])
    return ClassifyResult(
        label=labels[best],
        score=float(probs[best]),
        scores={labels[int(i)]: float(probs[int(i)]) for i in order},
    )
