"""Data parallelism for the training loops: torch.distributed, whoever started it.

A loop runs as one process of a group (rank r of world w) when torch.distributed is
initialised: by Ray Train's TorchTrainer (app/jobs/ray_train.py) or by a test. Outside a group
every function here is the single-process identity, so the loops read the same either way.

Semantics, the same whatever w is: `batch_size` is the global batch. Every rank draws the
same global batch from the same generator and trains on its own contiguous slice of
batch_size / w rows; DistributedDataParallel averages the gradients, so one step of w ranks
is the step one process takes on the whole batch (up to float summation order), and the
learning rate needs no scaling. Rank 0 alone evaluates, checkpoints and reports.
"""

import torch
import torch.distributed as dist
import torch.nn as nn


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` under DistributedDataParallel in a group (it broadcasts rank 0's weights, so
    every rank starts equal), itself otherwise."""
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


def local_slice(batch: torch.Tensor) -> torch.Tensor:
    """This rank's rows of a global batch."""
    n = world_size()
    if n == 1:
        return batch
    if len(batch) % n:
        raise ValueError(f"batch_size {len(batch)} must be a multiple of num_workers {n}")
    per = len(batch) // n
    return batch[rank() * per : (rank() + 1) * per]


def agree(flag: bool, device: torch.device) -> bool:
    """True on every rank when it is True on any: a stop asked on rank 0 ends every rank at
    the same step, instead of leaving the others waiting in an all-reduce."""
    if not active():
        return flag
    t = torch.tensor([int(flag)], device=device if device.type == "cuda" else None)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())
