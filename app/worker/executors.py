"""Executors: what a worker does with one dynamic batch, per task: one forward pass for all
requests, split back per request. Imported only inside worker processes (it pulls in torch)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from app.worker.batching import Request


def split_rows(values: np.ndarray, batch: list[Request]) -> list[np.ndarray]:
    out, start = [], 0
    for request in batch:
        out.append(values[start : start + request.rows])
        start += request.rows
    return out


class ClassifierExecutor:
    """Texts (lists of str) or images ((N, H, W) arrays) -> class probabilities per row."""

    def __init__(self, classifier: Any) -> None:
        self.classifier = classifier

    def run(self, batch: list[Request]) -> list[np.ndarray]:
        parts = [r.inputs for r in batch]
        if isinstance(parts[0], np.ndarray):
            inputs: Any = np.concatenate(parts) if len(parts) > 1 else parts[0]
        else:
            inputs = [item for part in parts for item in part]
        probs = np.asarray(self.classifier.predict_proba(inputs), dtype=np.float32)
        return split_rows(probs, batch)


SAMPLING_OPTIONS = ("steps", "guidance")  # image-diffusion's generate() options


class ImageExecutor:
    """{seed, label, truncation[, steps, guidance]} requests -> (labels, uint8 images (n, H, W))
    per request.

    Each request draws its latents (and labels, when none is asked for) from its own seeded
    CPU generator, so its pixels do not depend on what else shares the batch. Requests with
    sampling options (diffusion's steps and guidance) run in one generate() call per distinct
    set of options.
    """

    def __init__(self, generator: Any) -> None:
        self.generator = generator

    def run(self, batch: list[Request]) -> list[tuple[list[int] | None, np.ndarray]]:
        zs, labels = [], []
        for request in batch:
            params = request.inputs
            gen = torch.Generator()
            if params["seed"] is None:
                gen.seed()
            else:
                gen.manual_seed(params["seed"])
            z = self.generator.noise.sample(request.rows, gen)
            zs.append(z * params["truncation"])
            if self.generator.num_classes:
                if params["label"] is None:
                    classes = self.generator.num_classes
                    labels.append(torch.randint(classes, (request.rows,), generator=gen))
                else:
                    labels.append(torch.full((request.rows,), params["label"]))
        z = torch.cat(zs)
        y = torch.cat(labels) if labels else None
        groups: dict[tuple, list[int]] = {}  # options -> the batch's rows that asked for them
        start = 0
        for request in batch:
            params = request.inputs
            key = tuple((k, params[k]) for k in SAMPLING_OPTIONS if params.get(k) is not None)
            groups.setdefault(key, []).extend(range(start, start + request.rows))
            start += request.rows
        if len(groups) == 1:
            images = self.generator.generate(z, y, **dict(next(iter(groups))))  # (N, H, W)
        else:
            images = torch.empty(len(z), *self.generator.image_size)
            for key, rows in groups.items():
                idx = torch.tensor(rows)
                part = self.generator.generate(z[idx], None if y is None else y[idx], **dict(key))
                images[idx] = part
        pixels = (images.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
        names = y.tolist() if y is not None else None
        out, start = [], 0
        for request in batch:
            end = start + request.rows
            out.append((names[start:end] if names is not None else None, pixels[start:end]))
            start = end
        return out
