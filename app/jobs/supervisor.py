"""Keeps `runner_slots` job runner processes alive beside the API.

A runner that dies (SIGKILL, OOM, a crash in native code) has its job requeued at once, so
the restarted runner resumes it from the last checkpoint instead of waiting for the
heartbeat to go stale. Each runner holds the read end of a pipe whose write end only this
process holds: if the API dies, the runners see EOF and put their jobs back in the queue.
"""

from __future__ import annotations

import functools
import logging
import socket
import uuid
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from app.jobs.runner import runner_main
from app.jobs.store import JobStore
from app.settings import Settings
from app.supervision import SupervisedProcess, spawn, stop_all

log = logging.getLogger("genserve.jobs")


@dataclass
class RunnerInfo:
    slot: int
    pid: int | None
    runner_id: str | None
    restarts: int


@dataclass
class _Slot:
    slot: int
    process: SupervisedProcess = field(init=False)
    runner_id: str | None = None
    alive: Connection | None = None  # our end of the parent-death pipe


class RunnerSupervisor:
    def __init__(self, settings: Settings, store: JobStore) -> None:
        self.settings = settings
        self.store = store
        self._slots = [_Slot(i) for i in range(settings.runner_slots)]
        for slot in self._slots:
            slot.process = SupervisedProcess(
                f"job runner slot {slot.slot}",
                functools.partial(self._launch, slot),
                functools.partial(self._on_exit, slot),
            )

    async def start(self) -> None:
        for slot in self._slots:
            slot.process.start()

    def _launch(self, slot: _Slot) -> BaseProcess:
        reader, writer = spawn.Pipe(duplex=False)
        token = uuid.uuid4().hex[:8]
        process = spawn.Process(
            target=_run,
            args=(self.settings, token, reader, self.settings.runner_gpu(slot.slot)),
            name=f"genserve-runner-{slot.slot}",
            daemon=False,  # a runner saves its state on SIGTERM; daemons are killed outright
        )
        process.start()
        reader.close()
        slot.alive = writer
        # The runner's id names its host and pid, so an operator can find it from a job.
        slot.runner_id = runner_id(process.pid, token)
        slot.process.name = f"job runner {slot.runner_id}"
        log.info("started job runner %s", slot.runner_id)
        return process

    def _on_exit(self, slot: _Slot, exitcode: int | None, restarting: bool) -> None:
        """Requeues the dead runner's jobs now, not when its heartbeat goes stale."""
        if slot.alive is not None:
            slot.alive.close()
        dead, slot.alive, slot.runner_id = slot.runner_id, None, None
        if dead is not None:
            try:
                self.store.requeue_runner(dead)
            except Exception:
                log.exception("could not requeue the jobs of %s; they wait for staleness", dead)

    async def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM: each runner puts its job back in the queue (it resumes on the next start)."""
        await stop_all([slot.process for slot in self._slots], timeout)

    def runners(self) -> list[RunnerInfo]:
        return [
            RunnerInfo(
                slot=s.slot,
                pid=s.process.pid,
                runner_id=s.runner_id,
                restarts=s.process.restarts,
            )
            for s in self._slots
        ]


def runner_id(pid: int | None, token: str) -> str:
    return f"{socket.gethostname()}:{pid}:{token}"


def _run(settings: Settings, token: str, alive: Connection, gpu: str | None) -> None:
    import os

    if gpu is not None:  # before torch is imported: this runner sees its own GPU only
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    runner_main(settings, runner_id(os.getpid(), token), alive)
