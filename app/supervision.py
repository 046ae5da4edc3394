"""Keeping child processes alive beside the API: worker processes and job runners alike.

A `SupervisedProcess` starts its process, learns of its exit the moment the kernel closes it
(the process sentinel on the event loop: no polling thread), lets its owner clean up, and
starts a new one after a back-off, so that a crash loop idles instead of spinning.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import time
from collections.abc import Callable, Sequence
from multiprocessing.process import BaseProcess

log = logging.getLogger("genserve")
spawn = mp.get_context("spawn")  # never fork a process that may hold torch or CUDA state


def restart_delay(started_at: float, restarts: int) -> float:
    """Seconds to wait before restarting a process that died: none after a long life, then
    0.5 s doubling to 30 s for one that dies right after starting, so a crash loop idles."""
    if time.monotonic() - started_at > 30:
        return 0.0
    return min(30.0, 0.5 * 2 ** min(restarts, 6))


class SupervisedProcess:
    """One process slot: `start` runs `launch` (which starts a process and returns it), and
    whenever that process exits, `on_exit(exitcode, restarting)` cleans up before a restart.
    `ask_stop` asks a process to finish (default SIGTERM) before `stop_all` kills it.

    `generation` bumps on every start and exit, so callbacks scheduled for an older process
    (its pipe readers, a pending restart) can tell that they are stale.
    """

    def __init__(
        self,
        name: str,
        launch: Callable[[], BaseProcess],
        on_exit: Callable[[int | None, bool], None],
        ask_stop: Callable[[BaseProcess], None] = BaseProcess.terminate,
    ) -> None:
        self.name = name  # for the logs; the owner may rename it per process
        self.launch = launch
        self.on_exit = on_exit
        self.ask_stop = ask_stop
        self.process: BaseProcess | None = None
        self.restarts = 0
        self.started_at = 0.0
        self.generation = 0
        self.stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.generation += 1
        self.process = self.launch()
        self.started_at = time.monotonic()
        self._loop.add_reader(self.process.sentinel, self.exited, self.generation)

    def exited(self, generation: int | None = None) -> None:
        """The process ended, or its owner saw its channel break: clean up and restart it.
        A `generation` other than the current one is a stale callback and does nothing."""
        process = self.process
        if process is None or generation not in (None, self.generation):
            return
        assert self._loop is not None
        self._loop.remove_reader(process.sentinel)
        process.join(timeout=1)
        self.process = None
        self.generation += 1
        restarting = not self.stopping
        if restarting:
            self.restarts += 1
        self.on_exit(process.exitcode, restarting)
        if not restarting:
            return
        log.error("%s exited with code %s; restarting", self.name, process.exitcode)
        delay = restart_delay(self.started_at, self.restarts)
        self._loop.call_later(delay, self._restart, self.generation)

    def _restart(self, generation: int) -> None:
        if not self.stopping and generation == self.generation:
            self.start()


async def stop_all(slots: Sequence[SupervisedProcess], timeout: float) -> None:
    """Asks every process to stop, waits for them together up to `timeout` seconds, then
    kills those still running. None is restarted."""
    for slot in slots:
        slot.stopping = True
        if slot.process is not None:
            slot.ask_stop(slot.process)
    deadline = time.monotonic() + timeout
    for slot in slots:
        process = slot.process  # exited() may clear it while we wait
        if process is None:
            continue
        await asyncio.to_thread(process.join, max(0.1, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            await asyncio.to_thread(process.join, 2)
        slot.exited()
