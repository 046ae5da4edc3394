"""The dynamic batcher releases batches when full or when the oldest request is due."""

from __future__ import annotations

from app.worker.batching import DynamicBatcher, Request


def make(i: int, model: str = "m", rows: int = 1, at: float = 0.0) -> Request:
    return Request(i, model, ["x"] * rows, rows, arrived=at)


def test_waits_until_max_wait_then_releases_everything_queued() -> None:
    batcher = DynamicBatcher(max_batch_size=8, max_wait_s=0.010)
    for i in range(3):
        batcher.add(make(i, at=0.0))
    assert batcher.next_batch(now=0.005) is None
    assert batcher.timeout(now=0.005) == 0.005
    model, batch = batcher.next_batch(now=0.010)
    assert model == "m" and [r.id for r in batch] == [0, 1, 2]
    assert len(batcher) == 0 and batcher.timeout() is None


def test_full_batch_is_released_at_once_and_capped_at_max_rows() -> None:
    batcher = DynamicBatcher(max_batch_size=4, max_wait_s=10)
    for i in range(6):
        batcher.add(make(i, at=0.0))
    _, batch = batcher.next_batch(now=0.0)
    assert [r.id for r in batch] == [0, 1, 2, 3]
    assert batcher.next_batch(now=0.0) is None  # 2 rows left: not full, not due
    assert len(batcher) == 2


def test_oversized_request_runs_alone_instead_of_starving() -> None:
    batcher = DynamicBatcher(max_batch_size=4, max_wait_s=0)
    batcher.add(make(0, rows=10))
    batcher.add(make(1, rows=1))
    _, first = batcher.next_batch(now=1)
    _, second = batcher.next_batch(now=1)
    assert [r.id for r in first] == [0] and [r.id for r in second] == [1]


def test_models_are_batched_separately_oldest_first() -> None:
    batcher = DynamicBatcher(max_batch_size=8, max_wait_s=0)
    batcher.add(make(0, model="b", at=2.0))
    batcher.add(make(1, model="a", at=1.0))
    batcher.add(make(2, model="b", at=3.0))
    assert batcher.next_batch(now=5)[0] == "a"
    model, batch = batcher.next_batch(now=5)
    assert model == "b" and [r.id for r in batch] == [0, 2]
