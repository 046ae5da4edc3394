"""The job runner: a process that claims queued jobs and trains them, one at a time.

Training runs on the main thread; a heartbeat thread writes progress, metric history and
liveness to the database every `job_heartbeat_s` and reads back cancel requests, so the
training loop itself never waits on the database. Stops are cooperative: the loops ask
`should_stop()` before every step, which raises here to unwind them.

    cancel requested  -> JobCancelled  -> status cancelled, checkpoints deleted
    SIGTERM / SIGINT  -> JobInterrupted -> back to the queue, resumes from its checkpoint
    the API died      -> the same (EOF on the pipe the supervisor holds)
    SIGKILL, OOM, ... -> the supervisor requeues it; heartbeats going stale do as well
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import threading
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

from app.db import Database
from app.jobs.store import JobLost, JobStore, NewVersion
from app.settings import Settings
from app.tables import Dataset, TrainingJob

log = logging.getLogger("genserve.runner")


class JobCancelled(Exception):
    pass


class JobInterrupted(Exception):
    pass


def runner_main(settings: Settings, runner_id: str, alive: Connection) -> None:
    """Entry point of a runner process; `alive` reaches EOF when the API process is gone."""
    threads = settings.runner_torch_threads()
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s runner %(name)s %(message)s")
    import torch

    torch.set_num_threads(threads)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def watch_parent() -> None:
        with contextlib.suppress(EOFError, OSError):
            alive.recv()
        stop.set()

    threading.Thread(target=watch_parent, daemon=True).start()
    db = Database.from_settings(settings)
    store = JobStore(db, settings)
    device = settings.runner_device_name()
    log.info("runner %s on %s with %d thread(s)", runner_id, device, threads)
    while not stop.is_set():
        try:
            job = store.claim(runner_id)
        except Exception:
            log.exception("could not claim a job; retrying")
            job = None
        if job is None:
            stop.wait(0.5)
            continue
        JobExecution(job, store, settings, runner_id, device, stop).run()
    db.dispose()


class JobExecution:
    """One claimed job from data to registered model version."""

    def __init__(
        self,
        job: TrainingJob,
        store: JobStore,
        settings: Settings,
        runner_id: str,
        device: str,
        stop: threading.Event,
    ) -> None:
        self.job, self.store, self.settings = job, store, settings
        self.runner_id, self.device, self.stop = runner_id, device, stop
        self.work_dir = settings.state_dir / "jobs" / str(job.id)
        self.cancelled = threading.Event()
        self.lost = threading.Event()
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.rows: list[tuple[int, dict[str, Any]]] = []  # history not yet written
        self.latest: dict[str, Any] = dict(job.metrics or {})
        self.progress = float(job.progress or 0.0)
        self.loss: Any = None  # the last step's loss tensor, read once per heartbeat
        self.started = time.monotonic()

    # -- hooks the training loops call ------------------------------------------------------

    def should_stop(self) -> bool:
        if self.cancelled.is_set():
            raise JobCancelled
        if self.lost.is_set():
            raise JobLost(f"job {self.job.id} was taken over")
        if self.stop.is_set():
            raise JobInterrupted
        return False

    def on_step(self, done: int, total: int, loss: Any) -> None:
        self.progress = min(1.0, done / max(total, 1))
        self.latest["step"] = done
        self.loss = loss

    def on_epoch(self, row: dict[str, Any]) -> None:
        step = int(row.get("step") or row.get("epoch") or 0)
        with self.lock:
            self.rows.append((step, dict(row)))
            self.latest.update(row)

    # -- heartbeat thread -------------------------------------------------------------------

    def _snapshot(self) -> tuple[float, dict[str, Any], list[tuple[int, dict[str, Any]]]]:
        with self.lock:
            rows, self.rows = self.rows, []
            metrics = dict(self.latest)
        if self.loss is not None:
            metrics["loss"] = round(float(self.loss), 4)
        return self.progress, metrics, rows

    def _beat(self) -> None:
        while not self.done.wait(self.settings.job_heartbeat_s):
            progress, metrics, rows = self._snapshot()
            try:
                if self.store.heartbeat(self.job.id, self.runner_id, progress, metrics, rows):
                    self.cancelled.set()
            except JobLost:
                self.lost.set()
                return
            except Exception:
                log.exception("heartbeat for job %d failed; retrying", self.job.id)
                with self.lock:
                    self.rows = rows + self.rows

    # -- the job ----------------------------------------------------------------------------

    def run(self) -> None:
        job = self.job
        saved = self.work_dir / "checkpoint" / "checkpoint.json"
        if saved.is_file():
            log.info("resuming job %d from its checkpoint (attempt %d)", job.id, job.attempts)
        beat = threading.Thread(target=self._beat, name=f"heartbeat-{job.id}", daemon=True)
        beat.start()
        outcome = "failed"
        try:
            version = self._train()
            outcome = "succeeded"
            log.info("job %d succeeded: %s v%d", job.id, job.name, version)
        except JobCancelled:
            outcome = "cancelled"
            self._end("cancelled", "cancelled by request")
        except JobInterrupted:
            outcome = "interrupted"
            log.info("job %d interrupted; back to the queue", job.id)
            self._quietly(self.store.release, job.id, self.runner_id)
        except JobLost:
            outcome = "lost"
            log.warning("job %d was taken over by another runner", job.id)
        except Exception as exc:
            log.error("job %d failed:\n%s", job.id, traceback.format_exc())
            self._end("failed", _describe(exc))
        finally:
            self.done.set()
            beat.join()
        if outcome in ("succeeded", "cancelled", "failed"):
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def _end(self, status: str, error: str) -> None:
        _, metrics, rows = self._snapshot()
        self._quietly(
            self.store.heartbeat, self.job.id, self.runner_id, self.progress, metrics, rows
        )
        self._quietly(self.store.finish, self.job.id, self.runner_id, status, error)

    def _quietly(self, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("could not record the end of job %d", self.job.id)

    def _train(self) -> int:
        import torch

        from models.artifacts import save_artifact
        from models.kinds import KINDS
        from models.training.hooks import TrainHooks
        from models.training.result import card

        job = self.job
        kind = KINDS[job.kind]
        params = kind.params(**job.params)
        dataset = self._dataset()
        train, test = self._load(dataset, params)
        hooks = TrainHooks(
            on_step=self.on_step,
            on_epoch=self.on_epoch,
            should_stop=self.should_stop,
            work_dir=self.work_dir / "checkpoint",
        )
        torch.manual_seed(getattr(params, "seed", 0))
        result = kind.trainer()(kind.name, train, test, params, hooks, torch.device(self.device))
        self.should_stop()  # a cancel that came during the last step still counts
        config = {**result.config, "name": job.name}
        config["training"] = {
            "job": job.id,
            "dataset": dataset.name,
            "dataset_sha256": dataset.sha256,
            "params": job.params,
            "device": self.device,
        }
        relative = f"artifacts/{job.name}/job-{job.id}"
        target = self.settings.state_dir / relative
        for leftover in target.parent.glob(f".{target.name}.*"):  # an attempt died saving
            shutil.rmtree(leftover, ignore_errors=True)
        sha256, size = save_artifact(
            target,
            config,
            module=result.module,
            estimator=result.estimator,
            card=card(job.name, config, dataset.name, job.params),
        )
        self.done.set()  # no heartbeat may race the final transaction
        _, _, rows = self._snapshot()
        new = NewVersion(kind.task, relative, sha256, size, config)
        return self.store.complete(job.id, self.runner_id, new, rows)

    def _dataset(self) -> Dataset:
        with self.store.db.session() as session:
            dataset = session.get(Dataset, self.job.dataset_id)
        if dataset is None:
            raise ValueError(f"dataset {self.job.dataset_id} no longer exists")
        return dataset

    def _load(self, dataset: Dataset, params: Any) -> tuple[Any, Any]:
        from models.data.builtin import load_split

        path = None if dataset.builtin else self.settings.state_dir / dataset.path
        # (an absolute path stays itself: `/` drops the left side)
        return load_split(
            dataset.format,
            path,
            dataset.name,
            self.settings.data_dir,
            getattr(params, "test_fraction", 0.2),
            getattr(params, "seed", 0),
        )


def _describe(exc: Exception) -> str:
    """What a user reads in `error`: the message, with the type for anything unexpected."""
    if isinstance(exc, ValueError) and str(exc):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
