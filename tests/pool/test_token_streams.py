"""The local pool's token streams, driven directly: batching of queued steps, failures and the
whole-generation deadline."""

from __future__ import annotations

import asyncio
from pathlib import Path

from app.pool.base import StreamMeter
from app.pool.errors import EngineTimeout, WorkerLost
from app.pool.local import LocalPool, _Pending, _Worker
from app.worker.protocol import TokenEvent
from tests.conftest import make_settings


def event(i: int, finish: str | None = None) -> TokenEvent:
    return TokenEvent(1, 0, f"t{i}", finish, i + 1, None)


async def collect(pool: LocalPool, steps: list, deadline_in: float) -> list:
    """The batches a stream yields when `steps` are already queued (the API fell behind)."""
    queue: asyncio.Queue = asyncio.Queue()
    for step in steps:
        queue.put_nowait(step)
    pending = _Pending("m", 1, events=queue, remaining=1)
    deadline = asyncio.get_running_loop().time() + deadline_in
    stream = pool._events(_Worker(0, "cpu"), 1, pending, deadline, StreamMeter("m"))
    got = []
    try:
        async for batch in stream:
            got.append(batch)
            if batch[-1].finish_reason:
                pending.remaining = 0
    except Exception as e:
        got.append(e)
    return got


def test_queued_steps_come_as_one_batch_and_a_failure_after_them(tmp_path: Path) -> None:
    pool = LocalPool(make_settings(tmp_path))
    steps = [[event(0)], [event(1)], [event(2, "length")]]
    assert asyncio.run(collect(pool, steps, 30)) == [[event(0), event(1), event(2, "length")]]
    failed = asyncio.run(collect(pool, [[event(0)], WorkerLost("gone")], 30))
    assert failed[0] == [event(0)] and isinstance(failed[1], WorkerLost)


def test_the_generation_deadline_holds_while_steps_are_queued(tmp_path: Path) -> None:
    """A stream that is behind its worker always has a step waiting; past the whole
    generation's deadline it still ends with the timeout."""
    pool = LocalPool(make_settings(tmp_path))
    got = asyncio.run(collect(pool, [[event(0)], [event(1)]], -1))
    assert len(got) == 1 and isinstance(got[0], EngineTimeout)
