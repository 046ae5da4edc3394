"""Keeps `runner_slots` job runner processes alive beside the API.

A runner that dies (SIGKILL, OOM, a crash in native code) has its job requeued at once, so
the restarted runner resumes it from the last checkpoint instead of waiting for the
heartbeat to go stale. Each runner holds the read end of a pipe whose write end only this
process holds: if the API dies, the runners see EOF and put their jobs back in the queue.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import socket
import time
import uuid
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from app.jobs.runner import runner_main
from app.jobs.store import JobStore
from app.pool.base import restart_delay
from app.settings import Settings

log = logging.getLogger("genserve.jobs")
_ctx = mp.get_context("spawn")


@dataclass
class RunnerInfo:
    slot: int
    pid: int | None
    runner_id: str | None
    restarts: int


@dataclass
class _Slot:
    slot: int
    process: Any = None
    runner_id: str | None = None
    alive: Connection | None = None  # our end of the parent-death pipe
    restarts: int = 0
    started_at: float = 0.0
    generation: int = 0


class RunnerSupervisor:
    def __init__(self, settings: Settings, store: JobStore) -> None:
        self.settings = settings
        self.store = store
        self._slots = [_Slot(i) for i in range(settings.runner_slots)]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for slot in self._slots:
            self._spawn(slot)

    def _spawn(self, slot: _Slot) -> None:
        assert self._loop is not None
        slot.generation += 1
        reader, writer = _ctx.Pipe(duplex=False)
        token = uuid.uuid4().hex[:8]
        # The runner's id names its host and pid, so an operator can find it from a job.
        process = _ctx.Process(
            target=_run,
            args=(self.settings, token, reader),
            name=f"genserve-runner-{slot.slot}",
            daemon=False,  # a runner saves its state on SIGTERM; daemons are killed outright
        )
        process.start()
        reader.close()
        slot.process, slot.alive = process, writer
        slot.runner_id = runner_id(process.pid, token)
        slot.started_at = time.monotonic()
        self._loop.add_reader(process.sentinel, self._on_exit, slot, slot.generation)
        log.info("started job runner %s", slot.runner_id)

    def _on_exit(self, slot: _Slot, generation: int) -> None:
        if generation != slot.generation or slot.process is None:
            return
        assert self._loop is not None
        self._loop.remove_reader(slot.process.sentinel)
        slot.process.join(timeout=1)
        exitcode = slot.process.exitcode
        if slot.alive is not None:
            slot.alive.close()
        dead = slot.runner_id
        slot.process, slot.alive, slot.runner_id = None, None, None
        slot.generation += 1
        if dead is not None:
            try:
                self.store.requeue_runner(dead)
            except Exception:
                log.exception("could not requeue the jobs of %s; they wait for staleness", dead)
        if self._stopping:
            return
        log.error("job runner %s exited with code %s; restarting", dead, exitcode)
        slot.restarts += 1
        delay = restart_delay(slot.started_at, slot.restarts)
        self._loop.call_later(delay, self._respawn, slot, slot.generation)

    def _respawn(self, slot: _Slot, generation: int) -> None:
        if not self._stopping and generation == slot.generation:
            self._spawn(slot)

    async def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM: each runner puts its job back in the queue (it resumes on the next start)."""
        self._stopping = True
        for slot in self._slots:
            if slot.process is not None:
                slot.process.terminate()
        deadline = time.monotonic() + timeout
        for slot in self._slots:
            process = slot.process
            if process is None:
                continue
            await asyncio.to_thread(process.join, max(0.1, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                await asyncio.to_thread(process.join, 2)
            self._on_exit(slot, slot.generation)

    def runners(self) -> list[RunnerInfo]:
        return [
            RunnerInfo(
                slot=s.slot,
                pid=s.process.pid if s.process is not None else None,
                runner_id=s.runner_id,
                restarts=s.restarts,
            )
            for s in self._slots
        ]


def runner_id(pid: int | None, token: str) -> str:
    return f"{socket.gethostname()}:{pid}:{token}"


def _run(settings: Settings, token: str, alive: Connection) -> None:
    import os

    runner_main(settings, runner_id(os.getpid(), token), alive)
