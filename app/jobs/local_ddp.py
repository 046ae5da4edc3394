"""Data-parallel training on the runner's own machine: a local job with `num_workers > 1`.

The runner spawns `num_workers` rank processes that form a torch.distributed group (NCCL
over the GPUs this runner sees, one per rank; gloo on CPU) and train the kind's own function
under DistributedDataParallel (models/training/distributed.py: batch_size is the global
batch). The ranks share the job's work dir, so they resume from the checkpoint rank 0
writes; rank 0 reports through a queue (app/jobs/relay.py) and writes the artifact, which
the runner publishes as a local run's.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.jobs.relay import Mailbox, RelayHooks, Stop, follow, train_and_write
from app.jobs.store import NewVersion

if TYPE_CHECKING:
    from app.jobs.runner import JobExecution
    from app.tables import Dataset
    from models.kinds import Kind


def train_data_parallel(
    execution: JobExecution, kind: Kind, params: Any, dataset: Dataset, train: Any, test: Any
) -> NewVersion:
    import torch.multiprocessing as mp

    workers = int(params.num_workers)
    gpus = _gpus(execution.device)
    if gpus and gpus < workers:
        raise ValueError(f"num_workers {workers} needs one GPU each; this runner sees {gpus}")
    out = execution.work_dir / "ddp-artifact"
    shutil.rmtree(out, ignore_errors=True)
    ctx = mp.get_context("spawn")
    inbox = ctx.Queue()
    stop = ctx.Array("c", 256)  # "<how>:<reason>", empty while none is asked
    config = {
        "kind": kind.name,
        "params": execution.job.params,
        "parent": execution.parent,
        "data": (train, test),
        "info": execution.artifact_info(dataset),
        "work_dir": str(execution.work_dir / "checkpoint"),
        "out": str(out),
        "port": _free_port(),
        "world": workers,
        "cuda": bool(gpus),
        "threads": max(1, execution.settings.runner_torch_threads() // workers),
    }
    ranks = [ctx.Process(target=_rank_main, args=(r, config, inbox, stop)) for r in range(workers)]
    for process in ranks:
        process.start()
    mailbox = Mailbox()

    def take() -> Any:
        with contextlib.suppress(queue.Empty):
            while True:
                what, *args = inbox.get_nowait()
                getattr(mailbox, what)(*args)
        return mailbox.take()

    def ask_stop(how: str, reason: str | None) -> None:
        stop.value = f"{how}:{reason or ''}".encode()[:255]

    def join() -> list[int | None]:
        for process in ranks:
            process.join()
        return [p.exitcode for p in ranks]

    with ThreadPoolExecutor(1, thread_name_prefix=f"ddp-job-{execution.job.id}") as pool:
        future = pool.submit(join)
        try:
            follow(execution, "local", take, ask_stop, future)
        except BaseException:
            with contextlib.suppress(Exception):
                future.result(timeout=60)  # the ranks stop at their next step
            for process in ranks:
                if process.is_alive():
                    process.kill()
            raise
        codes = future.result()
    if any(codes):
        raise RuntimeError(f"a data-parallel rank failed (exit codes {codes})")
    return execution.publish_dir(kind.task, out)


def _stop(raw: bytes) -> Stop:
    if not raw:
        return None, None
    how, _, reason = raw.decode().partition(":")
    return how, reason or None


def _rank_main(rank: int, config: dict[str, Any], inbox: Any, stop: Any) -> None:
    """One rank: joins the group, trains, and (rank 0) writes the artifact."""
    import torch
    import torch.distributed as dist

    torch.set_num_threads(config["threads"])
    backend = "nccl" if config["cuda"] else "gloo"
    address = f"tcp://127.0.0.1:{config['port']}"
    dist.init_process_group(backend, init_method=address, rank=rank, world_size=config["world"])
    try:
        device = torch.device(f"cuda:{rank}") if config["cuda"] else torch.device("cpu")
        if config["cuda"]:
            torch.cuda.set_device(device)
        inbox.put(("started", rank, socket.gethostname(), _device_name(device)))
        relay = RelayHooks(
            lambda done, total, loss: inbox.put(("report_step", done, total, loss)),
            lambda row: inbox.put(("report_row", row)),
            lambda: _stop(stop.value),
            Path(config["work_dir"]),
        )
        out = Path(config["out"]) if rank == 0 else None
        train_and_write(config, *config["data"], relay, device, out)
    finally:
        dist.destroy_process_group()


def _device_name(device: Any) -> str:
    if device.type != "cuda":
        return "cpu"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    ids = [d for d in visible.split(",") if d.strip()]
    return f"cuda:{ids[device.index]}" if device.index < len(ids) else str(device)


def _gpus(device: str) -> int:
    if device != "cuda":
        return 0
    import torch

    return torch.cuda.device_count()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
