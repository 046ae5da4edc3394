"""Dynamic batching: per-model queues that release a batch when full or when its oldest
request has waited `max_wait`. Pure Python, so it is tested without processes."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Request:
    id: int
    model: str
    inputs: Any  # list[str] or np.ndarray (N, H, W)
    rows: int
    arrived: float = field(default_factory=time.monotonic)


class DynamicBatcher:
    def __init__(self, max_batch_size: int, max_wait_s: float) -> None:
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.queues: dict[str, deque[Request]] = {}
        self.rows: dict[str, int] = {}

    def add(self, request: Request) -> None:
        self.queues.setdefault(request.model, deque()).append(request)
        self.rows[request.model] = self.rows.get(request.model, 0) + request.rows

    def __len__(self) -> int:
        return sum(len(q) for q in self.queues.values())

    def timeout(self, now: float | None = None) -> float | None:
        """Seconds until the next batch is due; None when nothing waits."""
        oldest = [q[0].arrived for q in self.queues.values() if q]
        if not oldest:
            return None
        now = time.monotonic() if now is None else now
        return max(0.0, min(oldest) + self.max_wait_s - now)

    def next_batch(self, now: float | None = None) -> tuple[str, list[Request]] | None:
        """The due batch whose oldest request came first, taken off its queue."""
        now = time.monotonic() if now is None else now
        due = [
            (q[0].arrived, model)
            for model, q in self.queues.items()
            if q
            and (self.rows[model] >= self.max_batch_size or now - q[0].arrived >= self.max_wait_s)
        ]
        if not due:
            return None
        _, model = min(due)
        queue, batch, rows = self.queues[model], [], 0
        # Always take one request, even one larger than a batch, so nothing starves.
        while queue and (not batch or rows + queue[0].rows <= self.max_batch_size):
            request = queue.popleft()
            batch.append(request)
            rows += request.rows
        self.rows[model] -= rows
        return model, batch
