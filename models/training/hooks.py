"""How a caller watches and steers a training loop: the one hook set every loop takes."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass
class TrainHooks:
    """How a caller watches and steers a training loop (the job runner; None = standalone).

    on_step gets the loss as a tensor, still on the device: calling .item() on it every step
    would stall a GPU, so the caller decides when to sync. on_epoch gets one history row:
    {"epoch", "step", "train_loss", "val_accuracy", "samples_per_s", "seconds"} (seconds of
    training so far, across restarts; val_accuracy on the test arrays given to the fit).
    """

    on_step: Callable[[int, int, torch.Tensor], None] | None = None  # (steps done, total, loss)
    on_epoch: Callable[[dict[str, Any]], None] | None = None  # one history row per epoch
    # checked every step: True ends the fit early, keeping the model trained so far (a time
    # limit); raising abandons it (a cancel)
    should_stop: Callable[[], bool] | None = None
    work_dir: Path | None = None  # checkpoint after every epoch here and resume from it
    # after every checkpoint, on every rank of a data-parallel group: the checkpoint dir on
    # rank 0, None elsewhere (Ray Train's report is collective)
    on_checkpoint: Callable[[Path | None], None] | None = None
    # fine-tuning: the verified parent artifact (config.json, payload bytes) whose weights
    # (and tokenizer, for text) the fit starts from instead of a fresh initialisation
    parent: tuple[dict[str, Any], dict[str, bytes]] | None = None
