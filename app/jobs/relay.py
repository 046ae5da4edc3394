"""What a job's runner and the processes that train it for it tell each other, whichever
backend runs them (app/jobs/ray_train.py: Ray workers; app/jobs/local_ddp.py: local ranks).

Rank 0 sends steps, history rows and where each rank runs; the runner sends back a stop:
"finish" (the time limit: keep the model trained so far) or "abandon" (a cancel, a lost
claim, a shutdown). Both directions are polled every POLL_S, so the training loop never
waits on the runner.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.jobs.runner import JobExecution

POLL_S = 0.5
Step = tuple[int, int, float | None]  # (steps done, total, loss)
Ranks = dict[int, tuple[str, str, str]]  # rank -> (node, device, the process's run id)
Stop = tuple[str | None, str | None]  # ("finish" | "abandon" | None, reason)


class Mailbox:
    """The runner's side: what rank 0 sent since the last poll, and the stop asked for."""

    def __init__(self) -> None:
        self.step: Step = (0, 1, None)
        self.rows: list[dict[str, Any]] = []
        self.ranks: Ranks = {}
        self.stop: Stop = (None, None)

    def report_step(self, done: int, total: int, loss: float | None) -> None:
        self.step = (done, total, loss)

    def report_row(self, row: dict[str, Any]) -> None:
        self.rows.append(row)

    def started(self, rank: int, node: str, device: str, run_id: str = "") -> None:
        self.ranks[rank] = (node, device, run_id)

    def ask_stop(self, how: str, reason: str | None = None) -> None:
        if self.stop[0] != "abandon":
            self.stop = (how, reason)

    def stop_asked(self) -> Stop:
        return self.stop

    def take(self) -> tuple[Step, list[dict[str, Any]], Ranks]:
        rows, self.rows = self.rows, []
        return self.step, rows, dict(self.ranks)


def follow(
    execution: JobExecution,
    backend: str,
    take: Callable[[], tuple[Step, list[dict[str, Any]], Ranks]],
    ask_stop: Callable[[str, str | None], None],
    future: Future[Any],
) -> None:
    """Relays progress to the runner's heartbeat and its stops to the ranks until `future`
    (the run) is done; an abandoned run raises what the runner raised."""
    known: Ranks = {}
    # rank -> the processes that ran it: kept here, as the mailbox actor may be restarted
    runs: dict[int, set[str]] = {}
    starts = 1
    asked = False
    while True:
        done = future.done()
        step, rows, ranks = take()
        for rank, (_, _, run_id) in ranks.items():
            runs.setdefault(rank, set()).add(run_id)
        while starts < max(map(len, runs.values()), default=1):
            starts += 1  # the ranks started again (a node died): one more attempt, as locally
            execution.on_restart()
        if step[0]:
            execution.on_step(*step)
        for row in rows:
            execution.on_epoch(row)
        if ranks and ranks != known:
            known = ranks
            execution.placement = {
                "backend": backend,
                "nodes": sorted({node for node, _, _ in ranks.values()}),
                "devices": [ranks[r][1] for r in sorted(ranks)],
                "workers": len(ranks),
            }
        if done:
            return
        try:
            finish = execution.should_stop()
        except BaseException:
            ask_stop("abandon", None)
            raise
        if finish and not asked:
            asked = True
            ask_stop("finish", execution.stopped_reason)
        wait([future], timeout=POLL_S)


class RelayHooks:
    """TrainHooks for rank 0 of a run: sends to the runner, throttled to POLL_S."""

    def __init__(
        self,
        send_step: Callable[[int, int, float], None],
        send_row: Callable[[dict[str, Any]], None],
        stop_asked: Callable[[], Stop],
        work_dir: Path,
        on_checkpoint: Callable[[Path | None], None] | None = None,
    ) -> None:
        self.send_step, self.send_row, self.stop_asked = send_step, send_row, stop_asked
        self.work_dir, self.on_checkpoint = work_dir, on_checkpoint
        self.sent = self.asked = 0.0
        self.stop: Stop = (None, None)

    def on_step(self, done: int, total: int, loss: Any) -> None:
        now = time.monotonic()
        if now - self.sent >= POLL_S or done == total:
            self.sent = now
            self.send_step(done, total, round(float(loss), 4))

    def on_epoch(self, row: dict[str, Any]) -> None:
        self.send_row(dict(row))

    def should_stop(self) -> bool:
        now = time.monotonic()
        if now - self.asked >= POLL_S:
            self.asked = now
            self.stop = self.stop_asked()
        return self.stop[0] is not None

    def hooks(self) -> Any:
        from models.training.hooks import TrainHooks

        return TrainHooks(
            on_step=self.on_step,
            on_epoch=self.on_epoch,
            should_stop=self.should_stop,
            work_dir=self.work_dir,
            on_checkpoint=self.on_checkpoint,
        )


def train_and_write(
    config: dict[str, Any], train: Any, test: Any, relay: RelayHooks, device: Any, out: Path | None
) -> bool:
    """One process's share of a run, whichever backend started it: trains the job's kind
    with `relay`'s hooks, then writes the artifact to `out` (rank 0; None on the others)
    unless the run was abandoned. True when it wrote one."""
    import torch

    from app.jobs.runner import write_job_artifact
    from app.jobs.store import kind_params
    from models.kinds import KINDS

    kind = KINDS[config["kind"]]
    params = kind.params(**kind_params(config["params"]))
    torch.manual_seed(getattr(params, "seed", 0))
    hooks = relay.hooks()
    hooks.parent = config.get("parent")  # a fine-tune's (config, payload)
    result = kind.trainer()(kind.name, train, test, params, hooks, device)
    how, reason = relay.stop_asked()
    if out is None or how == "abandon":
        return False
    info = config["info"]
    info.stopped_reason = reason
    write_job_artifact(out, info, result)
    return True
