"""Training jobs on a Ray cluster (GENSERVE_TRAIN_BACKEND=ray).

A runner claims the job as ever (app/jobs/runner.py) and keeps its heartbeat; the training
itself runs on the cluster:

    torch kinds (language models, image generators, neural classifiers)
                                   Ray Train's TorchTrainer, `num_workers` ranks under
                                   DistributedDataParallel (gloo on CPU, nccl with `use_gpu`);
                                   batch_size is the global batch (models/training/distributed.py)
    scikit-learn and n-gram kinds  one Ray task

The workers talk to the runner through a `JobChannel` actor: rank 0 sends steps, history
rows and where each rank runs; the runner sends back a stop (a cancel, a lost claim or a
shutdown abandon the run; the time limit finishes it). Checkpoints are reported to Ray Train,
which keeps them under `<state dir>/ray-train/job-<id>` (or the store's, below), so when a
node dies Ray Train restarts the worker group from the last one, and a job reclaimed after
its runner died resumes from there too: the run's name is the job's. Each restart counts as
an attempt, as a runner's does, against `job_max_attempts`. Rank 0 writes the finished
artifact and reports it as the last checkpoint; the runner registers it. With
GENSERVE_ARTIFACT_URL the checkpoints go to `<url>/ray-train/job-<id>`, so no node needs
the state dir.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
from ray.exceptions import NodeDiedError, WorkerCrashedError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from app.jobs.relay import Mailbox, RelayHooks, follow, train_and_write
from app.jobs.store import NewVersion

if TYPE_CHECKING:
    from app.jobs.runner import JobExecution
    from app.tables import Dataset
    from models.kinds import Kind

log = logging.getLogger("genserve.ray_train")


# the mailbox as an actor: restarted if its node dies (losing at most one poll's progress)
JobChannel = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(Mailbox)


def connect(address: str) -> None:
    """Joins the cluster once per runner process (`address` empty: a local Ray instance)."""
    if not ray.is_initialized():
        ray.init(address=address or None, namespace="genserve", log_to_driver=False)


def train_on_ray(
    execution: JobExecution, kind: Kind, params: Any, dataset: Dataset, train: Any, test: Any
) -> NewVersion:
    """Runs the job's training on the cluster and registers nothing: returns the artifact,
    published as a local run's would be."""
    settings, job = execution.settings, execution.job
    connect(settings.ray_address)
    # beside the runner when it can be: a dead worker node must not take the mailbox along
    here = ray.get_runtime_context().get_node_id()
    channel = JobChannel.options(  # type: ignore[attr-defined]
        scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=True)
    ).remote()
    config = {
        "kind": kind.name,
        "params": job.params,
        "parent": execution.parent,
        "data": ray.put((train, test)),
        "channel": channel,
        "info": execution.artifact_info(dataset),
    }
    workers = int(getattr(params, "num_workers", 1))
    use_gpu = bool(getattr(params, "use_gpu", False))
    if kind.torch:
        run = _torch_trainer(execution, config, workers, use_gpu)
    else:
        run = _one_task(execution, config)
    with ThreadPoolExecutor(1, thread_name_prefix=f"ray-job-{job.id}") as pool:
        future: Future[Path | None] = pool.submit(run)
        try:
            follow(
                execution,
                "ray",
                lambda: ray.get(channel.take.remote()),
                lambda how, reason: ray.get(channel.ask_stop.remote(how, reason)),
                future,
            )
        except BaseException:
            with contextlib.suppress(Exception):
                future.result()  # the workers stop at their next step
            raise
        result_dir = future.result()
    if result_dir is None:
        raise RuntimeError("the Ray run ended without an artifact")
    try:
        return execution.publish_dir(kind.task, result_dir)
    finally:
        shutil.rmtree(result_dir, ignore_errors=True)


def _torch_trainer(
    execution: JobExecution, config: dict[str, Any], workers: int, use_gpu: bool
) -> Any:
    from ray.train import (
        CheckpointConfig,
        FailureConfig,
        RunConfig,
        ScalingConfig,
        TrainingFailedError,
    )
    from ray.train.torch import TorchConfig, TorchTrainer

    settings = execution.settings
    storage, filesystem = _checkpoint_storage(settings)
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config=config,
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": 1, **({"GPU": 1} if use_gpu else {})},
        ),
        run_config=RunConfig(
            name=f"job-{execution.job.id}",
            storage_path=storage,
            storage_filesystem=filesystem,
            # the attempts left: Ray Train's restarts count as the runners' do
            failure_config=FailureConfig(max_failures=_attempts_left(execution)),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )

    def run() -> Path | None:
        try:
            result = trainer.fit()
        except TrainingFailedError as exc:
            raise _out_of_attempts(execution, exc) from exc
        if result.checkpoint is None:
            return None
        out = Path(tempfile.mkdtemp(prefix=f"genserve-job-{execution.job.id}-"))
        result.checkpoint.to_directory(str(out / "artifact"))
        marker = out / "artifact" / FINAL_MARKER
        if not marker.exists():  # the last checkpoint is a training one: no artifact
            shutil.rmtree(out, ignore_errors=True)
            return None
        marker.unlink()
        return out / "artifact"

    return run


def _checkpoint_storage(settings: Any) -> tuple[str, Any]:
    """Where Ray Train keeps a job's checkpoints: beside the artifacts in the store (a
    bucket every node reaches, through fsspec), or under the state dir without one."""
    from app.storage import open_store

    store = open_store(settings)
    if not store.remote:
        return str(settings.state_dir / "ray-train"), None
    import pyarrow.fs
    from fsspec.core import url_to_fs

    fs, root = url_to_fs(store.url("ray-train"), **settings.storage_options())
    return root, pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs))


def _attempts_left(execution: JobExecution) -> int:
    """Ray's retries of the job's workers: each counts as an attempt, as a runner's does."""
    return max(0, execution.settings.job_max_attempts - execution.job.attempts)


def _out_of_attempts(execution: JobExecution, exc: Exception) -> RuntimeError:
    limit, attempts = execution.settings.job_max_attempts, execution.job.attempts
    return RuntimeError(
        f"the job's Ray workers failed in {attempts} attempt(s) (limit {limit}, "
        f"GENSERVE_JOB_MAX_ATTEMPTS): {str(exc).strip().splitlines()[-1]}"
    )


def _one_task(execution: JobExecution, config: dict[str, Any]) -> Any:
    """scikit-learn and n-gram kinds: one Ray task that returns the artifact's files."""

    def run() -> Path | None:
        task = _train_task.options(max_retries=_attempts_left(execution))
        try:
            files = ray.get(task.remote(config))
        except (WorkerCrashedError, NodeDiedError) as exc:
            raise _out_of_attempts(execution, exc) from exc
        if files is None:
            return None
        out = Path(tempfile.mkdtemp(prefix="genserve-task-")) / "artifact"
        out.mkdir()
        for name, data in files.items():
            (out / name).write_bytes(data)
        return out

    return run


FINAL_MARKER = "genserve-final"  # in the checkpoint that carries the finished artifact


def _relay(channel: Any, work_dir: Path, report: Any = None) -> RelayHooks:
    """Rank 0's hooks, sending to the job's channel actor."""
    return RelayHooks(
        lambda done, total, loss: channel.report_step.remote(done, total, loss),
        lambda row: channel.report_row.remote(row),
        lambda: ray.get(channel.stop_asked.remote()),
        work_dir,
        report,
    )


def _train_worker(config: dict[str, Any]) -> None:
    """One rank of a TorchTrainer run: resumes from Ray Train's last checkpoint, trains the
    kind's own function, and (rank 0) reports the finished artifact."""
    import ray.train
    import ray.train.torch
    from ray.train import Checkpoint

    context = ray.train.get_context()
    rank = context.get_world_rank()
    device = ray.train.torch.get_device()
    channel = config["channel"]
    node = ray.get_runtime_context().get_node_id()
    channel.started.remote(rank, node, str(device), uuid.uuid4().hex)
    scratch = Path(tempfile.mkdtemp(prefix=f"genserve-rank{rank}-"))
    work_dir = scratch / "checkpoint"
    saved = ray.train.get_checkpoint()
    if saved is not None:
        saved.to_directory(str(work_dir))
        (work_dir / FINAL_MARKER).unlink(missing_ok=True)

    def report(path: Path | None) -> None:
        checkpoint = Checkpoint.from_directory(str(path)) if path is not None else None
        ray.train.report({"rank": rank}, checkpoint=checkpoint)

    relay = _relay(channel, work_dir, report)
    out = scratch / "artifact" if rank == 0 else None
    final = None
    wrote = train_and_write(config, *ray.get(config["data"]), relay, device, out)
    if wrote and out is not None:
        (out / FINAL_MARKER).write_text("")
        final = Checkpoint.from_directory(str(out))
    ray.train.report({"rank": rank, "final": True}, checkpoint=final)
    shutil.rmtree(scratch, ignore_errors=True)


@ray.remote(num_cpus=1)
def _train_task(config: dict[str, Any]) -> dict[str, bytes] | None:
    """A kind without steps or ranks, trained in one task: the artifact's files come back."""
    import torch

    channel = config["channel"]
    channel.started.remote(0, ray.get_runtime_context().get_node_id(), "cpu", uuid.uuid4().hex)
    scratch = Path(tempfile.mkdtemp(prefix="genserve-task-"))
    try:
        relay = _relay(channel, scratch / "checkpoint")
        out = scratch / "artifact"
        cpu = torch.device("cpu")
        if not train_and_write(config, *ray.get(config["data"]), relay, cpu, out):
            return None
        return {p.name: p.read_bytes() for p in out.iterdir()}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
