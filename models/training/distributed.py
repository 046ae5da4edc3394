"""Data parallelism for the training loops: torch.distributed, whoever started it.

A loop runs as one process of a group (rank r of world w) when torch.distributed is
initialised: by Ray Train's TorchTrainer (app/jobs/ray_train.py) or by a test. Outside a group
every function here is the single-process identity, so the loops read the same either way.

Semantics, the same whatever w is: `batch_size` is the global batch. Every rank draws the
same global batch from the same generator and trains on its own contiguous slice of
batch_size / w rows; DistributedDataParallel averages the gradients, so one step of w ranks
is the step one process takes on the whole batch (up to float summation order), and the
learning rate needs no scaling. An epoch's ragged last batch need not split evenly: `share`
weights each rank's mean loss by its rows, so the average is still the whole batch's mean.
Rank 0 alone evaluates, checkpoints and reports; every rank takes part in each checkpoint's
`on_checkpoint` (Ray Train's report is collective). Randomness drawn per row (noise,
augmentation, dropout) comes from per-rank streams, so ranks do not repeat each other's.
"""

from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn

from models.training.hooks import TrainHooks


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
    every rank starts equal), itself otherwise. Gradients are averaged only for what runs
    through the wrapper's forward."""
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def rank_hooks(hooks: TrainHooks) -> TrainHooks:
    """The hooks this rank uses: all of them on rank 0; elsewhere only the work dir (to
    resume from) and the checkpoint report, which every rank must join."""
    if is_main():
        return hooks
    return TrainHooks(work_dir=hooks.work_dir, on_checkpoint=hooks.on_checkpoint)


def checkpoint(hooks: TrainHooks, save: Callable[[Path], None]) -> None:
    """Rank 0 saves into the work dir; then every rank reports the checkpoint."""
    if hooks.work_dir is None:
        return
    main = is_main()
    if main:
        save(Path(hooks.work_dir))
    if hooks.on_checkpoint is not None:
        hooks.on_checkpoint(Path(hooks.work_dir) if main else None)


def share(batch: torch.Tensor) -> tuple[torch.Tensor, float] | None:
    """This rank's rows of a global batch that may not split evenly, and the weight of its
    mean loss (rows here x world / rows in all): DDP's average of the weighted means is the
    mean over the whole batch. None for a batch with fewer rows than ranks, which would give
    some rank nothing: every rank skips it alike."""
    n = world_size()
    if n == 1:
        return batch, 1.0
    if len(batch) < n:
        return None
    part = torch.tensor_split(batch, n)[rank()]
    return part, len(part) * n / len(batch)


def stop_asked(hooks: TrainHooks, device: torch.device) -> bool:
    """Whether a stop was asked on any rank, agreed by all (see `agree`)."""
    return agree(hooks.should_stop is not None and hooks.should_stop(), device)


def fork(gen: torch.Generator) -> torch.Generator:
    """`gen` itself in one process; in a group, a stream of this rank's own seeded from it,
    for what is drawn per row (noise, augmentation) after the shared draws (the shuffle)."""
    if world_size() == 1:
        return gen
    seed = int(torch.randint(2**62, (1,), generator=gen))
    return torch.Generator().manual_seed(seed + 7919 * rank())


def rank_seed(seed: int) -> int:
    """A global seed of this rank's own (dropout, latent draws); rank 0 keeps `seed`."""
    return seed + 104_729 * rank()


def same_weights(model: nn.Module) -> None:
    """Every rank takes rank 0's weights: at the end of a run whose best evaluation's weights
    only rank 0 kept (it alone evaluates). Called by every rank of a group, or a no-op."""
    if not active():
        return
    for tensor in model.state_dict().values():
        dist.broadcast(tensor, src=0)


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
