"""The pieces every classifier fit shares: label encoding, and the epoch loop of the torch ones.

Every fit is deterministic for a given seed on a given machine and returns the fitted model plus
metrics measured on the test arrays it is given (for the official splits: never used to choose
hyperparameters; the defaults in models/kinds.py came from cross-validation on the training
split only, see models/build/classifiers.py and the model cards).

The torch fits (cnn.py, text_rnn.py) share one loop, `train_epochs`, that a caller steers
through TrainHooks: progress per step and per epoch, cancellation, and checkpoints after every
epoch from which an interrupted fit resumes to the same weights as an uninterrupted one.
"""

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from models.training import distributed
from models.training.best import BestWeights
from models.training.checkpoint import load_checkpoint, save_checkpoint
from models.training.hooks import TrainHooks


def encode_labels(
    train_labels: Sequence[Any], test_labels: Sequence[Any], num_classes: int | None = None
) -> tuple[list[Any], np.ndarray, np.ndarray]:
    """Labels -> (classes, int64 class ids for train and test).

    Integer labels are class ids already (models/data/uploads.py makes 0..K-1 with names beside
    them), so they map to themselves and classes = 0..K-1, K = num_classes or the largest + 1:
    a class missing from a split never shifts the others. Any other labels (strings) become
    ids in sorted order of the training labels; a test label never seen in training is an
    error, since no model could predict it.
    """
    values = [*train_labels, *test_labels]
    ints = [isinstance(v, int | np.integer) and not isinstance(v, bool) for v in values]
    if all(ints):
        k = num_classes if num_classes is not None else int(max(values, default=-1)) + 1
        classes: list[Any] = list(range(k))
        if any(not 0 <= int(v) < k for v in values):
            raise ValueError(f"integer labels must be class ids 0..{k - 1}")
        index = {c: c for c in classes}
    elif any(ints) or num_classes is not None:
        raise ValueError("labels must be all integer class ids or all names (strings)")
    else:
        try:
            classes = sorted(set(train_labels))
        except TypeError as e:
            raise ValueError(f"labels must all be of one sortable type: {e}") from e
        index = {c: i for i, c in enumerate(classes)}
        unseen = sorted({str(c) for c in test_labels if c not in index})
        if unseen:
            raise ValueError(f"test labels not in the training labels: {unseen}")
    if len(classes) < 2:
        raise ValueError(f"need at least 2 classes, got {classes}")
    y_train = np.array([index[c] for c in train_labels], dtype=np.int64)
    y_test = np.array([index[c] for c in test_labels], dtype=np.int64)
    return classes, y_train, y_test


def check_lengths(
    train_texts: Sequence[Any], y_train: np.ndarray, test_texts: Sequence[Any], y_test: np.ndarray
) -> None:
    """One label per text, in both splits: a misaligned upload must fail, not train."""
    if len(train_texts) != len(y_train) or len(test_texts) != len(y_test):
        raise ValueError(
            f"{len(train_texts)} train / {len(test_texts)} test texts for "
            f"{len(y_train)} / {len(y_test)} labels"
        )


def data_digest(*arrays: Any) -> str:
    """sha256 of the training data, so a checkpoint is only resumed on the data it was made on."""
    h = hashlib.sha256()
    for a in arrays:
        if isinstance(a, np.ndarray):
            h.update(str((a.dtype, a.shape)).encode() + np.ascontiguousarray(a).tobytes())
        else:
            h.update(json.dumps(list(a)).encode())
    return h.hexdigest()


def train_epochs(
    model: nn.Module,
    *,
    batches: Callable[[torch.Generator], list[torch.Tensor]],
    loss_of: Callable[[nn.Module, torch.Tensor, torch.Generator], torch.Tensor],
    val_accuracy: Callable[[], float | None],
    steps_per_epoch: int,
    seed: int,
    epochs: int,
    lr: float,
    weight_decay: float,
    clip: float | None = None,
    hooks: TrainHooks | None = None,
    run: dict[str, Any] | None = None,
    val_loss: Callable[[], float | None] | None = None,
    patience: int = 0,
) -> dict[str, Any]:
    """AdamW with a per-step cosine decay of the learning rate, for `epochs` epochs.

    `batches(gen)` gives one epoch's index tensors, `loss_of(net, indices, gen)` a batch's
    mean loss, running `net` (the model, or its DDP wrapper in a data-parallel group, where
    the indices are the global batch's and each rank takes its share: see distributed.py).
    Every epoch draws its shuffling (and augmentation) from a generator seeded seed*1000+epoch
    and its dropout from a global seed derived the same way, so epoch k+1 computes the same
    thing whether or not the process restarted after epoch k. With hooks.work_dir the weights,
    optimizer moments and counters are saved after every epoch; a checkpoint there is resumed
    when its `run` (hyperparameters + data digest) equals this one's, refused otherwise.
    Per-epoch validation runs only for a caller with hooks: standalone fits score once, at the
    end. With `val_loss` the weights returned are those of the epoch with the lowest one (see
    best.py), and `patience` epochs in a row without a lower one end the fit. Returns the loop
    state: epoch, step, seconds (across restarts), history, stopped, resumed, best (its step
    and val_loss), stopped_reason ("early_stopping") when patience ended it.
    """
    watched = hooks is not None and distributed.is_main()
    hooks = distributed.rank_hooks(hooks or TrainHooks())
    device = next(model.parameters()).device
    run = json.loads(json.dumps(run or {}))  # the form it takes after a round trip through JSON
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    total = epochs * steps_per_epoch
    state: dict[str, Any] = {"epoch": 0, "step": 0, "seconds": 0.0, "history": [], "run": run}
    work_dir = Path(hooks.work_dir) if hooks.work_dir is not None else None
    if work_dir is not None:
        try:
            saved = load_checkpoint(work_dir, {"model": model}, {"optimizer": optimizer})
        except (RuntimeError, ValueError, KeyError) as e:
            raise ValueError(f"the checkpoint in {work_dir} does not fit this model: {e}") from e
        if saved is not None and saved.get("run") != run:
            raise ValueError(f"the checkpoint in {work_dir} was made by a different run")
        state = saved or state
    resumed = state["epoch"]
    stopped = early = bool(state.get("early_stopped"))  # it had stopped before a restart
    scored = watched and val_loss is not None
    best = BestWeights(model, work_dir if scored else None, state["history"], patience)
    net = distributed.wrap(model, device)  # a group's ranks average their gradients
    model.train()
    while state["epoch"] < epochs and not stopped:
        epoch = state["epoch"]
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(seed * 1000 + epoch)  # shuffling, augmentation
        # dropout: its own stream, as resumable
        torch.manual_seed(distributed.rank_seed(10**6 + seed * 1000 + epoch))
        loss_sum: torch.Tensor | float = 0.0  # summed on the device: no sync per step
        samples = rows = 0  # the global batches' rows; this rank's
        epoch_batches = batches(gen)  # the same global batches on every rank
        gen = distributed.fork(gen)
        for idx in epoch_batches:
            if distributed.stop_asked(hooks, device):
                stopped = True
                break
            for group in optimizer.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * state["step"] / total))
            shared = distributed.share(idx)
            if shared is None:
                continue  # a ragged last batch with fewer rows than ranks: skipped by all
            part, weight = shared
            loss = loss_of(net, part, gen)
            optimizer.zero_grad(set_to_none=True)
            (loss * weight).backward()
            if clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            state["step"] += 1
            loss_sum = loss_sum + loss.detach() * len(part)
            rows += len(part)
            samples += len(idx)
            if hooks.on_step is not None:
                hooks.on_step(state["step"], total, loss.detach())
        seconds = time.perf_counter() - t0
        state["seconds"] += seconds
        if stopped:
            break  # a partial epoch is never checkpointed: a resume redoes it whole
        state["epoch"] = epoch + 1
        accuracy = val_accuracy() if watched else None
        row = {
            "epoch": epoch + 1,
            "step": state["step"],
            "train_loss": round(float(loss_sum) / max(1, rows), 4),  # rank 0's rows
            "val_accuracy": None if accuracy is None else round(accuracy, 4),
            "samples_per_s": round(samples / max(seconds, 1e-9), 1),
            "seconds": round(state["seconds"], 2),
        }
        loss_now = val_loss() if scored and val_loss is not None else None
        if loss_now is not None:
            row["val_loss"] = round(loss_now, 4)
            row |= best.update(state["step"], row["val_loss"])
        state["history"].append(row)
        if patience:  # rank 0 decides; every rank ends at this epoch
            early = state["early_stopped"] = distributed.agree(scored and best.exhausted, device)
        distributed.checkpoint(
            hooks, lambda d: save_checkpoint(d, {"model": model}, {"optimizer": optimizer}, state)
        )
        if hooks.on_epoch is not None:
            hooks.on_epoch(row)
        if early:
            break
    kept = best.restore(state["history"][-1] if state["history"] else {}) if scored else None
    distributed.same_weights(model)
    model.eval()
    reason = {"stopped_reason": "early_stopping"} if early else {}
    return {**state, "stopped": stopped, "resumed": resumed, "best": kept, **reason}


def loop_metrics(loop: dict[str, Any], test_accuracy: float | None, **extra: Any) -> dict:
    """The fit's metrics; with a validation loss, the kept epoch's (the one its history row
    shows as best_val_loss)."""
    history = loop["history"]
    best = loop.get("best")
    scored = {"val_loss": best["val_loss"], "best_step": best["step"]} if best else {}
    reason = {k: loop[k] for k in ("stopped_reason",) if k in loop}
    return {
        "test_accuracy": test_accuracy,
        **scored,
        **reason,
        **extra,
        "train_seconds": round(loop["seconds"], 2),
        "final_train_loss": history[-1]["train_loss"] if history else None,
        "epochs_done": loop["epoch"],
        "steps": loop["step"],
        "stopped": loop["stopped"],
        "resumed_from_epoch": loop["resumed"],
        "history": history,
    }
