"""Continuous batching for diffusion models: images join and leave between denoising steps.

A diffusion request is tens of U-Net passes, not one. Run as a dynamic batch, a request for
50 steps would hold back one for 20 that arrives a moment later, and a request arriving
mid-batch would wait for the whole batch. Here every image is its own sequence, as in a
language model's continuous batching: each step, waiting images take the free places (up to
`max_images`), one forward pass advances every running image by one step of its own schedule
(models/image/diffusion.py `UNet.denoise`: per-image time step, label and guidance), and an
image that took its last step leaves. A request is answered when its last image is done.

Each request draws its noise and labels from its own seeded generator, exactly as the dynamic
batch's ImageExecutor does, so a seed gives the same pixels alone or beside any neighbours
(up to float summation order). With `preview_every` k, a request also gets a Preview of its
images' current estimates of the clean image every k of its steps, for streaming.
Imported only inside worker processes (it pulls in torch).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from app.worker.batching import Request
from app.worker.executors import seeded, to_uint8
from app.worker.protocol import Preview


@dataclass
class _Job:
    """One request: its images' state, and how many are still denoising."""

    request: Request
    x: torch.Tensor  # (n, 1, H, W): x_t of every image, then the clean images
    labels: torch.Tensor  # (n,), the null label where unconditional
    names: list[int] | None  # the labels the response reports (None: unconditional model)
    schedule: list[int]
    guidance: float
    preview_every: int
    queued: deque[int] = field(default_factory=deque)  # images not started yet
    step: list[int] = field(default_factory=list)  # per image: steps taken
    left: int = 0


class DenoisingEngine:
    """The running images of one diffusion model on this worker, stepped together."""

    def __init__(self, generator: Any, max_images: int) -> None:
        self.generator = generator  # a DiffusionImageGenerator
        self.model = generator.model
        self.max_images = max_images
        self.waiting: deque[_Job] = deque()
        self.running: list[tuple[_Job, int]] = []  # (job, image index), in admission order

    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    def add(self, request: Request) -> None:
        """Queues a request ({seed, label, truncation, steps, guidance, preview_every})."""
        params, n, gen = request.inputs, request.rows, self.generator
        rng = seeded(params["seed"])
        x = gen.noise.sample(n, rng) * params["truncation"]  # drawn as ImageExecutor does
        steps = params.get("steps") or gen.steps
        guidance = params.get("guidance")
        guidance = gen.guidance if guidance is None else float(guidance)
        names = None  # the labels the response reports, drawn even when unused (guidance 0)
        labels = torch.full((n,), self.model.null_label, dtype=torch.long)
        if gen.num_classes:
            if params["label"] is None:
                drawn = torch.randint(gen.num_classes, (n,), generator=rng)
            else:
                drawn = torch.full((n,), params["label"])
            names = drawn.tolist()
            if guidance != 0:
                labels = drawn
        job = _Job(
            request,
            x.to(gen.device),
            labels.to(gen.device),
            names,
            self.model.schedule(int(steps)),
            guidance,
            int(params.get("preview_every") or 0),
            deque(range(n)),
            [0] * n,
            n,
        )
        self.waiting.append(job)

    def request_ids(self) -> list[int]:
        """Every request with images running or waiting."""
        ids = {job.request.id for job, _ in self.running}
        return sorted(ids | {job.request.id for job in self.waiting})

    def cancel(self, request_id: int) -> None:
        self.waiting = deque(j for j in self.waiting if j.request.id != request_id)
        self.running = [(j, i) for j, i in self.running if j.request.id != request_id]

    def _admit(self) -> None:
        """Waiting images take the free places, oldest request first."""
        while self.waiting and len(self.running) < self.max_images:
            job = self.waiting[0]
            while job.queued and len(self.running) < self.max_images:
                self.running.append((job, job.queued.popleft()))
            if not job.queued:
                self.waiting.popleft()

    @torch.no_grad()
    def step(self) -> tuple[int, list[tuple[int, Any]], list[Preview]]:
        """One forward pass over the running images: (images in it, the results of requests
        whose last image finished, previews due)."""
        self._admit()
        running = self.running
        if not running:
            return 0, [], []
        x = torch.cat([job.x[i : i + 1] for job, i in running])
        t, t_next = [], []
        for job, i in running:
            k = job.step[i]
            t.append(job.schedule[k])
            t_next.append(job.schedule[k + 1] if k + 1 < len(job.schedule) else -1)
        device = x.device
        labels = torch.stack([job.labels[i] for job, i in running])
        guidance = torch.tensor([job.guidance for job, _ in running], device=device)
        x = self.model.denoise(
            x,
            torch.tensor(t, device=device),
            torch.tensor(t_next, device=device),
            labels,
            guidance,
        )
        done: list[tuple[int, Any]] = []
        stepped: dict[int, _Job] = {}
        still: list[tuple[_Job, int]] = []
        for row, (job, i) in enumerate(running):
            job.x[i] = x[row]
            job.step[i] += 1
            stepped[id(job)] = job
            if job.step[i] < len(job.schedule):
                still.append((job, i))
                continue
            job.left -= 1
            if job.left == 0:
                done.append((job.request.id, self._result(job)))
        self.running = still
        previews = [p for job in stepped.values() if (p := self._preview(job)) is not None]
        return len(running), done, previews

    def _result(self, job: _Job) -> tuple[list[int] | None, np.ndarray]:
        """What ImageExecutor answers: the labels and uint8 images (n, H, W)."""
        return job.names, to_uint8(((job.x.float() + 1) / 2).squeeze(1).cpu())

    def _preview(self, job: _Job) -> Preview | None:
        """Every `preview_every` steps of the request's slowest image, until its last: the
        current x_t of each image (clean ones as they are), as pixels."""
        every = job.preview_every
        lowest = min(job.step)
        if not every or job.left == 0 or lowest == 0 or lowest % every:
            return None
        images = to_uint8(((job.x.float() + 1) / 2).clamp(0, 1).squeeze(1).cpu())
        return Preview(job.request.id, lowest, len(job.schedule), images)
