"""Executors: what a worker does with one dynamic batch, per task: one forward pass for all
requests, split back per request. Imported only inside worker processes (it pulls in torch)."""

from __future__ import annotations

from typing import Any, NamedTuple

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


class Code(NamedTuple):
    """One request's images encoded: mean, logvar (N, D), labels (N,) or None, neg_elbo (N,)."""

    mean: torch.Tensor
    logvar: torch.Tensor
    labels: torch.Tensor | None
    neg_elbo: torch.Tensor


class Decode(NamedTuple):
    """Latents (N, D) of one request to decode, with their labels (N,) or None."""

    z: torch.Tensor
    labels: torch.Tensor | None


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
        codes = self.encode_all(queries)
        plans: list[Decode | None] = []
        labels: list[int | None] = []  # the class each interpolation decodes
        for query, code in zip(queries, codes, strict=True):
            if isinstance(query, EncodeImages):
                assert code is not None
                plans.append(Decode(code.mean, code.labels) if query.reconstruct else None)
                labels.append(None)
            else:
                plan, label = self.line(query, code)
                plans.append(plan)
                labels.append(label)
        pixels = self.decode_all(plans)
        results: list[Any] = []
        for query, code, image, label in zip(queries, codes, pixels, labels, strict=True):
            if isinstance(query, EncodeImages):
                assert code is not None
                found = None if code.labels is None else code.labels.tolist()
                mean, logvar, nelbo = code.mean.numpy(), code.logvar.numpy(), code.neg_elbo.numpy()
                results.append(Encoded(mean, logvar, nelbo, found, image))
            else:
                results.append(Interpolated(image, label))
        return results

    def encode_all(self, queries: list[EncodeImages | Interpolate]) -> list[Code | None]:
        """Every image of the batch through the encoder at once; per query its codes (None for
        an interpolation between seeds). A class to find is -1."""
        with_images = [q for q in queries if q.images is not None]
        if not with_images:
            return [None] * len(queries)
        x = torch.from_numpy(np.concatenate([q.images for q in with_images]).astype(np.float32))
        y = None
        if self.generator.num_classes:
            wanted: list[int] = []
            for q in with_images:
                n = len(q.images)
                if isinstance(q, EncodeImages):
                    wanted.extend(q.labels if q.labels is not None else [-1] * n)
                else:
                    wanted.extend([-1 if q.label is None else q.label] * n)
            y = torch.tensor(wanted)
        mean, logvar, labels, nelbo = self.generator.encode(x, y)
        codes: list[Code | None] = []
        start = 0
        for q in queries:
            if q.images is None:
                codes.append(None)
                continue
            rows = slice(start, start + len(q.images))
            found = None if labels is None else labels[rows]
            codes.append(Code(mean[rows], logvar[rows], found, nelbo[rows]))
            start = rows.stop
        return codes

    def line(self, query: Interpolate, code: Code | None) -> tuple[Decode, int | None]:
        """The latents of an interpolation's strip, and the class it decodes: the asked-for
        one, else its first end's (found by the encoder, or drawn from the first seed)."""
        from models.image.vae import latent_line

        if code is not None:
            ends = code.mean  # (2, D)
            label = None if code.labels is None else int(code.labels[0])
        else:
            ends, label = self.seed_ends(query.seeds)  # type: ignore[arg-type]
        if query.label is not None:
            label = query.label
        z = latent_line(ends[0], ends[1], query.steps)  # (steps, D)
        return Decode(z, None if label is None else torch.full((query.steps,), label)), label

    def decode_all(self, plans: list[Decode | None]) -> list[np.ndarray | None]:
        """Every latent of the batch through the decoder at once; per plan its uint8 images."""
        todo = [p for p in plans if p is not None]
        if not todo:
            return [None] * len(plans)
        z = torch.cat([p.z for p in todo])
        y = None
        if self.generator.num_classes:  # every plan of a conditional VAE has its labels
            y = torch.cat([p.labels for p in todo if p.labels is not None])
        pixels = to_uint8(self.generator.generate(z, y))
        out: list[np.ndarray | None] = []
        start = 0
        for plan in plans:
            if plan is None:
                out.append(None)
                continue
            out.append(pixels[start : start + len(plan.z)])
            start += len(plan.z)
        return out

    def seed_ends(self, seeds: tuple[int, int]) -> tuple[torch.Tensor, int | None]:
        """The noise (2, D) of two seeds, drawn as /generate/image draws one image's (n = 1,
        truncation 1), and the class it would draw for the first seed (conditional VAEs)."""
        ends, label = [], None
        for i, seed in enumerate(seeds):
            gen = seeded(seed)
            ends.append(self.generator.noise.sample(1, gen)[0])
            if i == 0 and self.generator.num_classes:
                label = int(torch.randint(self.generator.num_classes, (1,), generator=gen))
        return torch.stack(ends), label
