"""Executors: what a worker does with one dynamic batch, per task: one forward pass for all
requests, split back per request. Imported only inside worker processes (it pulls in torch)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from app.worker.batching import Request
from app.worker.protocol import Encoded, EncodeImages, Interpolate, Interpolated


def split_rows(values: np.ndarray, batch: list[Request]) -> list[np.ndarray]:
    out, start = [], 0
    for request in batch:
        out.append(values[start : start + request.rows])
        start += request.rows
    return out


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float (N, H, W) in [0, 1] -> uint8 pixels."""
    return (images.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()


def seeded(seed: int | None) -> torch.Generator:
    """A CPU generator seeded per request (from the OS when no seed is given)."""
    gen = torch.Generator()
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(seed)
    return gen


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
            gen = seeded(params["seed"])
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
        pixels = to_uint8(images)
        names = y.tolist() if y is not None else None
        out, start = [], 0
        for request in batch:
            end = start + request.rows
            out.append((names[start:end] if names is not None else None, pixels[start:end]))
            start = end
        return out


class VAEExecutor(ImageExecutor):
    """A VAE's batches: sampling requests as ImageExecutor's, and EncodeImages / Interpolate.

    Every image to encode in the batch goes through one encoder pass, then every latent to
    decode (reconstructions and interpolation strips) through one decoder pass.
    """

    def run(self, batch: list[Request]) -> list[Any]:
        out: list[Any] = [None] * len(batch)
        sampling = [i for i, r in enumerate(batch) if isinstance(r.inputs, dict)]
        if sampling:
            done = super().run([batch[i] for i in sampling])
            for i, result in zip(sampling, done, strict=True):
                out[i] = result
        latent = [i for i, r in enumerate(batch) if not isinstance(r.inputs, dict)]
        if latent:
            done = self.run_latent([batch[i].inputs for i in latent])
            for i, result in zip(latent, done, strict=True):
                out[i] = result
        return out

    def run_latent(self, queries: list[EncodeImages | Interpolate]) -> list[Any]:
        from models.image.vae import latent_line

        gen = self.generator
        conditional = gen.num_classes > 0
        # 1. one encoder pass over every image of the batch
        images, labels, spans = [], [], []  # spans: each query's rows in the pass
        start = 0
        for q in queries:
            if q.images is None:
                spans.append((start, start))
                continue
            n = len(q.images)
            images.append(torch.from_numpy(np.asarray(q.images, dtype=np.float32)))
            if isinstance(q, EncodeImages):
                labels.extend(q.labels if q.labels is not None else [-1] * n)
            else:
                labels.extend([-1 if q.label is None else q.label] * n)
            spans.append((start, start + n))
            start += n
        if images:
            x = torch.cat(images)
            y = torch.tensor(labels) if conditional else None
            mean, logvar, found, nelbo = gen.encode(x, y)
        # 2. one decoder pass over every latent to decode
        zs: list[torch.Tensor] = []
        ys: list[torch.Tensor] = []
        decoded_label: list[int | None] = []
        for q, (a, b) in zip(queries, spans, strict=True):
            if isinstance(q, EncodeImages):
                decoded_label.append(None)
                if q.reconstruct:
                    zs.append(mean[a:b])
                    ys.append(found[a:b] if conditional else torch.empty(0))
                continue
            if q.images is not None:
                ends = mean[a:b]  # (2, D)
                label = int(found[a]) if conditional else None
            else:
                ends, label = self.seed_ends(q.seeds, q.label)  # type: ignore[arg-type]
            if conditional and q.label is not None:
                label = q.label
            zs.append(latent_line(ends[0], ends[1], q.steps))
            ys.append(torch.full((q.steps,), label or 0) if conditional else torch.empty(0))
            decoded_label.append(label)
        pixels = None
        if zs:
            z = torch.cat(zs)
            pixels = to_uint8(gen.generate(z, torch.cat(ys).long() if conditional else None))
        # 3. split back per query
        results: list[Any] = []
        row = 0
        for q, (a, b), label in zip(queries, spans, decoded_label, strict=True):
            if isinstance(q, EncodeImages):
                rows = b - a if q.reconstruct else 0
                results.append(
                    Encoded(
                        mean=mean[a:b].numpy(),
                        logvar=logvar[a:b].numpy(),
                        neg_elbo=nelbo[a:b].numpy(),
                        labels=found[a:b].tolist() if conditional else None,
                        pixels=pixels[row : row + rows] if rows else None,  # type: ignore[index]
                    )
                )
            else:
                rows = q.steps
                results.append(Interpolated(pixels[row : row + rows], label))  # type: ignore[index]
            row += rows
        return results

    def seed_ends(
        self, seeds: tuple[int, int], label: int | None
    ) -> tuple[torch.Tensor, int | None]:
        """The noise of two seeds, drawn as /generate/image draws one image's (n = 1,
        truncation 1), and the first seed's class when none is asked for."""
        ends, drawn = [], None
        for i, seed in enumerate(seeds):
            gen = seeded(seed)
            ends.append(self.generator.noise.sample(1, gen)[0])
            if i == 0 and self.generator.num_classes and label is None:
                drawn = int(torch.randint(self.generator.num_classes, (1,), generator=gen))
        return torch.stack(ends), drawn if label is None else label
