"""The best evaluation of a training run, kept: every loop with a validation loss registers
the weights of its lowest one, not its last, and may stop early on it (`patience`).

The weights are copied in memory when an evaluation improves on the best so far, and with a
work dir also saved beside the run's checkpoint (`<work_dir>/best`, the same atomic format),
so a run restarted from its checkpoint still returns them. The best so far and the count of
evaluations since are read back from the history the checkpoint holds.
"""

import copy
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from models.training.checkpoint import load_checkpoint, save_checkpoint


class BestWeights:
    """The lowest `val_loss` row of a run's history and the weights it was scored with."""

    def __init__(
        self,
        model: nn.Module,
        work_dir: Path | None,
        history: list[dict[str, Any]],
        patience: int = 0,
    ) -> None:
        self.model, self.patience = model, patience
        self.dir = Path(work_dir) / "best" if work_dir is not None else None
        scored = [r for r in history if r.get("val_loss") is not None]
        best = min(scored, key=lambda r: r["val_loss"], default=None)
        self.best = None if best is None else {"step": best["step"], "val_loss": best["val_loss"]}
        self.since = sum(1 for r in scored if best is not None and r["step"] > best["step"])
        self.state = self._saved() if self.best is not None else None

    def _saved(self) -> dict[str, torch.Tensor] | None:
        """The weights a run saved before it restarted (None: none saved)."""
        if self.dir is None:
            return None
        shadow = copy.deepcopy(self.model)
        if load_checkpoint(self.dir, {"model": shadow}, {}) is None:
            return None
        return shadow.state_dict()

    def update(self, step: int, val_loss: float) -> dict[str, Any]:
        """Records an evaluation; its row's `best_val_loss` and `best_step`."""
        if self.best is None or val_loss < self.best["val_loss"]:
            self.best, self.since = {"step": step, "val_loss": val_loss}, 0
            self.state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            if self.dir is not None:  # a restarted run still knows them
                save_checkpoint(self.dir, {"model": self.model}, {}, dict(self.best))
        else:
            self.since += 1
        return {"best_val_loss": self.best["val_loss"], "best_step": self.best["step"]}

    @property
    def exhausted(self) -> bool:
        """`patience` evaluations in a row have not improved on the best (never at 0)."""
        return bool(self.patience) and self.since >= self.patience

    def restore(self, last: dict[str, Any]) -> dict[str, Any] | None:
        """Loads the best weights into the model unless the `last` row is the best; returns
        the best {"step", "val_loss"}: the last row's when the best weights were lost (a
        checkpoint from before they were kept)."""
        if self.best is None or self.best["step"] == last.get("step"):
            return self.best
        if self.state is None:
            self.best = {"step": last["step"], "val_loss": last.get("val_loss")}
        else:
            self.model.load_state_dict(self.state)
        return self.best
