"""The job runner: a process that claims queued jobs and trains them, one at a time.

Training runs on the main thread; a heartbeat thread writes progress, metric history and
liveness to the database every `job_heartbeat_s` and reads back cancel requests, so the
training loop itself never waits on the database. Stops are cooperative: the loops ask
`should_stop()` before every step, which raises here to unwind them.

    cancel requested  -> JobCancelled  -> status cancelled, checkpoints deleted
    job_max_seconds   -> should_stop() is True: the loop ends early, the model as trained so
                         far is registered (succeeded, `stopped_reason` in its metrics)
    SIGTERM / SIGINT  -> JobInterrupted -> back to the queue, resumes from its checkpoint
    the API died      -> the same (EOF on the pipe the supervisor holds)
    SIGKILL, OOM, ... -> the supervisor requeues it; heartbeats going stale do as well

Transient faults cost no work. A checkpoint or artifact write failing because the disk is
full or the state dir unwritable is retried for `storage_retry_s`. The end of a job is
recorded with retries for as long as the database is down; the finished artifact is named
in `result.json` in the work dir first, so a job reclaimed before its end was recorded
registers that artifact instead of training again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

from app.db import Database, is_transient
from app.jobs.store import PARENT_PARAM, JobLost, JobStore, NewVersion, kind_params
from app.settings import Settings
from app.tables import Dataset, Model, ModelVersion, TrainingJob

log = logging.getLogger("genserve.runner")
T = TypeVar("T")
RESULT_FILE = "result.json"  # the finished artifact, before its version is registered


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
        self.deadline = math.inf  # monotonic time past which the job stops (job_max_seconds)
        self.stopped_reason: str | None = None
        self.parent: tuple[dict[str, Any], dict[str, bytes]] | None = None  # a fine-tune's
        self.placement: dict[str, Any] = {
            "backend": "local",
            "nodes": [socket.gethostname()],
            "devices": [_device_name(device)],
        }

    # -- hooks the training loops call ------------------------------------------------------

    def should_stop(self) -> bool:
        """Raises to abandon the job; True asks the loop to end early and keep its model."""
        if self.cancelled.is_set():
            raise JobCancelled
        if self.lost.is_set():
            raise JobLost(f"job {self.job.id} was taken over")
        if self.stop.is_set():
            raise JobInterrupted
        if self.stopped_reason is None and time.monotonic() >= self.deadline:
            limit = self.settings.job_max_seconds
            self.stopped_reason = f"time limit (GENSERVE_JOB_MAX_SECONDS={limit:g})"
            log.info(
                "job %d: %s: registering it as trained so far", self.job.id, self.stopped_reason
            )
            with self.lock:
                self.latest["stopped_reason"] = self.stopped_reason
        return self.stopped_reason is not None

    def on_step(self, done: int, total: int, loss: Any) -> None:
        self.progress = min(1.0, done / max(total, 1))
        self.latest["step"] = done
        self.loss = loss

    def on_restart(self) -> None:
        """The job's ranks started again from its checkpoint (Ray Train, after a failure)."""
        self.store.add_attempt(self.job.id, self.runner_id)
        self.job.attempts += 1
        job = self.job
        log.info("job %d: workers restarted from the checkpoint (attempt %d)", job.id, job.attempts)

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
                job_id, placement = self.job.id, dict(self.placement)
                if self.store.heartbeat(job_id, self.runner_id, progress, metrics, rows, placement):
                    self.cancelled.set()
            except JobLost:
                self.lost.set()
                return
            except Exception as exc:
                if not is_transient(exc):
                    log.exception("heartbeat for job %d failed; retrying", self.job.id)
                else:
                    log.warning("heartbeat for job %d failed (%s); retrying", self.job.id, exc)
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
            self._set_deadline()
            new = self._finished() or self._train()
            progress, metrics, rows = self._snapshot()  # with where it ran, then the version
            placement = dict(self.placement)
            last = (job.id, self.runner_id, progress, metrics, rows, placement)
            self._record(self.store.heartbeat, *last)
            version = self._record(self.store.complete, job.id, self.runner_id, new, [])
            if version is None:  # cancelled before its version was registered: recorded so
                self._discard_artifact()
                outcome = "cancelled"
            else:
                outcome = "succeeded"
                log.info("job %d succeeded: %s v%d", job.id, job.name, version)
        except JobCancelled:
            outcome = "cancelled"
            self._discard_artifact()  # a cancel during the save: what it wrote or uploaded
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

    def _set_deadline(self) -> None:
        """job_max_seconds counts from the job's first start by the database's clock, so a
        resumed job does not get a fresh budget (a database outage here: from now)."""
        limit = self.settings.job_max_seconds
        if not limit:
            return
        try:
            spent = self.store.running_for(self.job.id)
        except Exception as exc:
            log.warning(
                "job %d: its running time is unknown (%s); counting from now", self.job.id, exc
            )
            spent = 0.0
        self.deadline = time.monotonic() + limit - spent

    def _end(self, status: str, error: str) -> None:
        """Records a cancelled or failed end, through a database outage if need be."""
        _, metrics, rows = self._snapshot()
        self._quietly(
            self.store.heartbeat,
            self.job.id,
            self.runner_id,
            self.progress,
            metrics,
            rows,
            dict(self.placement),
        )
        self._quietly(self._record, self.store.finish, self.job.id, self.runner_id, status, error)

    def _quietly(self, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("could not record the end of job %d", self.job.id)

    def _record(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)`, retried with back-off while the database is unreachable: the end of a
        job is never lost to an outage. Gives up only when the runner is told to stop
        (JobInterrupted: the job is reclaimed later, and `result.json` spares it retraining)."""
        from models.artifacts import WriteRetry, retry

        def pause(seconds: float) -> None:
            if self.stop.wait(seconds):
                raise JobInterrupted

        what = f"job {self.job.id}: recording in the database"
        return retry(lambda: fn(*args), is_transient, what, WriteRetry(math.inf, pause=pause))

    def _pause(self, seconds: float) -> None:
        """Between storage retries: a cancel or a stop still ends the wait."""
        self.stop.wait(seconds)
        self.should_stop()

    def _finished(self) -> NewVersion | None:
        """The artifact an earlier attempt finished (and published) but could not register, if
        the store still holds it intact."""
        from app.storage import Published, open_store, store_fault
        from models.artifacts import WriteRetry, retry

        try:
            new = NewVersion(**json.loads((self.work_dir / RESULT_FILE).read_text()))
        except (OSError, ValueError, TypeError):
            return None
        store = open_store(self.settings)
        policy = WriteRetry(self.settings.storage_retry_s, pause=self._pause)
        what = f"job {self.job.id}: reading its published artifact"
        try:  # an unreachable bucket is waited for, as a full disk is: the training is done
            published = retry(lambda: store.published(new.artifact_path), store_fault, what, policy)
        except (JobCancelled, JobInterrupted, JobLost):
            raise
        except Exception:  # gone, altered, or the store unreachable for storage_retry_s
            log.warning("job %d: its finished artifact is unusable", self.job.id, exc_info=True)
            return None
        if published != Published(new.sha256, new.size):
            return None
        log.info("job %d: registering the artifact an earlier attempt finished", self.job.id)
        self.progress = 1.0
        return new

    def _train(self) -> NewVersion:
        import torch

        from models.artifacts import WriteRetry, write_retry
        from models.kinds import KINDS
        from models.training.hooks import TrainHooks

        job = self.job
        kind = KINDS[job.kind]
        params = kind.params(**kind_params(job.params))
        dataset = self._dataset()
        train, test = self._load(dataset, params)
        self.parent = self._parent()
        if self.settings.train_backend == "ray":
            from app.jobs.ray_train import train_on_ray

            return train_on_ray(self, kind, params, dataset, train, test)
        if getattr(params, "num_workers", 1) > 1:
            from app.jobs.local_ddp import train_data_parallel

            return train_data_parallel(self, kind, params, dataset, train, test)
        hooks = TrainHooks(
            on_step=self.on_step,
            on_epoch=self.on_epoch,
            should_stop=self.should_stop,
            work_dir=self.work_dir / "checkpoint",
            parent=self.parent,
        )
        torch.manual_seed(getattr(params, "seed", 0))
        with write_retry(WriteRetry(self.settings.storage_retry_s, pause=self._pause)):
            result = kind.trainer()(
                kind.name, train, test, params, hooks, torch.device(self.device)
            )
            self.should_stop()  # a cancel that came during the last step still counts
            return self._save(kind.task, dataset, result)

    def _save(self, task: str, dataset: Dataset, result: Any) -> NewVersion:
        """Writes the artifact (in place in the state dir, or in the work dir for a remote
        store), publishes it, then writes `result.json` naming it: from here on, no
        retraining."""
        from app.storage import job_artifact_key, open_store

        relative = job_artifact_key(self.job.name, self.job.id)
        remote = open_store(self.settings).remote
        target = self.work_dir / "artifact" if remote else self.settings.state_dir / relative
        for leftover in target.parent.glob(f".{target.name}.*"):  # an attempt died saving
            shutil.rmtree(leftover, ignore_errors=True)
        sha256, size, config = write_job_artifact(target, self.artifact_info(dataset), result)
        return self._publish(NewVersion(task, relative, sha256, size, config), target)

    def publish_dir(self, task: str, source: Path) -> NewVersion:
        """Publishes an artifact another process wrote at `source` (rank 0 of a data-parallel
        run): uploaded from there to a remote store, or moved to where `_save` writes it."""
        from app.storage import job_artifact_key, open_store
        from models.artifacts import artifact_digest

        relative = job_artifact_key(self.job.name, self.job.id)
        config = json.loads((source / "config.json").read_text())
        if open_store(self.settings).remote:
            sha256, size = artifact_digest(source)
            return self._publish(NewVersion(task, relative, sha256, size, config), source)
        target = self.settings.state_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(f".{target.name}.incoming")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(source, staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
        sha256, size = artifact_digest(target)
        return self._publish(NewVersion(task, relative, sha256, size, config))

    def _discard_artifact(self) -> None:
        """A cancelled job's artifact, published or half-written, is removed from the store."""
        from app.storage import job_artifact_key, open_store

        try:
            open_store(self.settings).delete(job_artifact_key(self.job.name, self.job.id))
        except Exception:
            log.warning("job %d: could not delete its artifact", self.job.id, exc_info=True)

    def artifact_info(self, dataset: Dataset) -> ArtifactInfo:
        job = self.job
        return ArtifactInfo(
            job.name,
            job.id,
            dict(job.params),
            dataset.name,
            dataset.sha256,
            self.device,
            self.stopped_reason,
        )

    def _publish(self, new: NewVersion, source: Path | None = None) -> NewVersion:
        """Uploads the artifact written at `source` (default: its place in the state dir) when
        the store is remote, then names it in `result.json`: a reclaimed job registers it. An
        unreachable store is retried as a full disk is."""
        from app.storage import open_store, store_fault
        from models.artifacts import WriteRetry, retry, retry_writes, write_durably

        store = open_store(self.settings)
        if store.remote:
            written = source or self.settings.state_dir / new.artifact_path
            policy = WriteRetry(self.settings.storage_retry_s, pause=self._pause)
            what = f"job {self.job.id}: publishing its artifact"
            retry(lambda: store.publish(written, new.artifact_path), store_fault, what, policy)
        marker = json.dumps(asdict(new)).encode()

        def write_marker() -> None:
            self.work_dir.mkdir(parents=True, exist_ok=True)  # kinds without checkpoints
            write_durably(self.work_dir / RESULT_FILE, marker)

        retry_writes(write_marker, "result.json")
        return new

    def _dataset(self) -> Dataset:
        with self.store.db.session() as session:
            dataset = session.get(Dataset, self.job.dataset_id)
        if dataset is None:
            raise ValueError(f"dataset {self.job.dataset_id} no longer exists")
        return dataset

    def _parent(self) -> tuple[dict[str, Any], dict[str, bytes]] | None:
        """A fine-tune's parent artifact (config, payload), read and verified against its
        registered sha256 from wherever it is stored; None for a job trained from scratch."""
        from sqlalchemy import select

        from app.services.versions import BUILTIN_PREFIX
        from app.storage import open_store
        from models.artifacts import read_artifact

        ref = self.job.params.get(PARENT_PARAM)
        if not ref:
            return None
        with self.store.db.session() as session:
            row = session.execute(
                select(ModelVersion.artifact_path, ModelVersion.sha256)
                .join(Model, Model.id == ModelVersion.model_id)
                .where(Model.name == ref["model"], ModelVersion.version == ref["version"])
            ).first()
        if row is None:
            raise ValueError(f"the parent version {ref['model']} v{ref['version']} is gone")
        path, sha256 = row
        if path.startswith(BUILTIN_PREFIX):
            directory = self.settings.pretrained_dir / path.removeprefix(BUILTIN_PREFIX)
        else:
            directory = open_store(self.settings).fetch(path, sha256)
        return read_artifact(directory, sha256)

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


def _device_name(device: str) -> str:
    """The device as placement shows it: cuda:<the physical GPU> for a runner given one."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    return f"cuda:{visible}" if device == "cuda" and visible.isdigit() else device


@dataclass
class ArtifactInfo:
    """What a job's artifact records of the job, beside what training returned: enough for
    whichever process finishes the training (a runner, or rank 0 of a Ray Train run)."""

    name: str
    job_id: int
    params: dict[str, Any]
    dataset: str
    dataset_sha256: str | None
    device: str
    stopped_reason: str | None = None


def write_job_artifact(target: Path, info: ArtifactInfo, result: Any) -> tuple[str, int, dict]:
    """Writes a finished job's artifact (config.json with its training record, payload, card)
    to `target`; returns its digest, size and config."""
    from models.artifacts import save_artifact
    from models.training.result import card

    config = {**result.config, "name": info.name}
    if info.stopped_reason is not None:  # in the version's metrics and model card too
        config["metrics"] = {**config.get("metrics", {}), "stopped_reason": info.stopped_reason}
    config["training"] = {
        "job": info.job_id,
        "dataset": info.dataset,
        "dataset_sha256": info.dataset_sha256,
        "params": info.params,
        "device": info.device,
    }
    sha256, size = save_artifact(
        target,
        config,
        module=result.module,
        estimator=result.estimator,
        card=card(info.name, config, info.dataset, info.params),
    )
    return sha256, size, config


def _describe(exc: Exception) -> str:
    """What a user reads in `error`: the message, with the type for anything unexpected, and
    no server path (an OSError names its file); the log has the traceback with paths."""
    from models.artifacts import without_paths

    if isinstance(exc, ValueError) and str(exc):
        return without_paths(str(exc))
    return without_paths(f"{type(exc).__name__}: {exc}")
