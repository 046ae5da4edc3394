"""A state dir that fails writes for a while (disk full, unwritable, I/O errors) then
recovers: checkpoint and artifact writes are retried, the job completes in its first attempt
with no step redone, and the last good checkpoint survives every failed write.

The fault is injected at `open()` for paths under the state dir, the one call every write of
a file goes through (a loop device or tmpfs needs privileges CI machines do not give)."""

from __future__ import annotations

import builtins
import errno
import io
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import models.training.result
from app.db import Database
from app.jobs.store import JobStore
from models.artifacts import WriteRetry, write_retry
from models.training.checkpoint import load_checkpoint, save_checkpoint
from tests.jobs.harness import (
    Run,
    assert_no_work_lost,
    job_row,
    queue_job,
    run_one,
    settings_for,
    version_count,
)


class FailingDisk:
    """While `failing`, opening a file for writing under `root` raises OSError(`code`)."""

    def __init__(self, root: Path, code: int, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root, self.code = str(root), code
        self.failing = False
        self.refused: list[str] = []
        real = builtins.open

        def fake_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            writing = any(c in mode for c in "wax+")
            if self.failing and writing and str(os.fspath(file)).startswith(self.root):
                self.refused.append(str(file))
                raise OSError(self.code, os.strerror(self.code), str(file))
            return real(file, mode, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", fake_open)
        monkeypatch.setattr(io, "open", fake_open)  # pathlib's write_text goes through io.open

    def fail_for(self, seconds: float, when: Callable[[], bool]) -> threading.Thread:
        """Starts failing once `when()` is true, for `seconds`; then the disk recovers."""

        def run() -> None:
            deadline = time.monotonic() + 60  # a job that ended first never gets the fault
            while not when():
                if time.monotonic() > deadline:
                    return
                time.sleep(0.005)
            self.failing = True
            time.sleep(seconds)
            self.failing = False

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread


@pytest.mark.parametrize(
    ("code", "phase"),
    [(errno.ENOSPC, "checkpoint"), (errno.EACCES, "checkpoint"), (errno.EIO, "artifact")],
)
def test_a_job_rides_out_a_failing_disk(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, phase: str
) -> None:
    settings = settings_for(tmp_path, db.url, storage_retry_s=60)
    store = JobStore(db, settings)
    job_id = queue_job(db)
    work = settings.state_dir / "jobs" / str(job_id) / "checkpoint"
    disk = FailingDisk(settings.state_dir, code, monkeypatch)
    run = Run()
    if phase == "checkpoint":  # from just after the first checkpoint
        fault = disk.fail_for(1.5, (work / "checkpoint.json").is_file)
    else:  # from the moment the model card is written: the artifact write comes next
        saving = threading.Event()
        card = models.training.result.card

        def card_then_fail(*args: Any) -> str:
            saving.set()
            time.sleep(0.05)
            return card(*args)

        monkeypatch.setattr(models.training.result, "card", card_then_fail)
        fault = disk.fail_for(1.5, saving.is_set)
    kept: list[dict[str, Any] | None] = []

    def watch_checkpoint() -> None:  # the last good checkpoint stays loadable throughout
        while fault.is_alive():
            if disk.failing:
                kept.append(load_checkpoint(work, {}, {}))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch_checkpoint, daemon=True)
    watcher.start()
    run_one(store, run=run)
    fault.join()
    watcher.join()
    job = job_row(db, job_id)
    assert job.status == "succeeded", job.error
    assert job.attempts == 1
    assert_no_work_lost(run)
    where = "/checkpoint/" if phase == "checkpoint" else "/artifacts/"
    assert any(where in path for path in disk.refused), disk.refused
    assert kept and all(state is not None for state in kept)
    assert version_count(db, "faulty-gpt") == 1


def test_a_failed_checkpoint_write_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = torch.nn.Linear(4, 2)
    save_checkpoint(tmp_path, {"m": model}, {}, {"step": 1})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)
    # the disk fills up between the new weights and the metadata that commits them
    disk = FailingDisk(tmp_path / "checkpoint.json", errno.ENOSPC, monkeypatch)
    disk.failing = True
    with pytest.raises(OSError), write_retry(WriteRetry(total_s=0)):
        save_checkpoint(tmp_path, {"m": model}, {}, {"step": 2})
    disk.failing = False
    restored = torch.nn.Linear(4, 2)
    assert load_checkpoint(tmp_path, {"m": restored}, {}) == {"step": 1}
    assert all(torch.equal(before[k], v) for k, v in restored.state_dict().items())
    assert len(list(tmp_path.glob("*.safetensors*"))) == 1  # nothing half-written left over


def test_writes_are_retried_only_for_storage_faults_and_only_so_long(tmp_path: Path) -> None:
    from models.artifacts import retry_writes

    tries: list[float] = []

    def write(code: int) -> Callable[[], None]:
        def attempt() -> None:
            tries.append(time.monotonic())
            raise OSError(code, os.strerror(code))

        return attempt

    policy = WriteRetry(total_s=0.3, first_delay_s=0.05, max_delay_s=0.1)
    with write_retry(policy), pytest.raises(OSError):
        retry_writes(write(errno.ENOSPC), "x")
    assert len(tries) >= 3 and tries[-1] - tries[0] <= 0.5
    tries.clear()
    with write_retry(policy), pytest.raises(OSError):
        retry_writes(write(errno.ENOENT), "x")  # a bug, not a fault: no retry
    assert len(tries) == 1
