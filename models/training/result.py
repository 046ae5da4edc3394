"""What every kind's training function returns, and the pieces they share to build it.

A training function (named by its row in models/kinds.py) takes a train and a test split (the
types of models/data/), the job's params dataclass and TrainHooks, and returns a TrainResult:
the config.json and payload that models/artifacts.py:save_artifact writes.
"""

from dataclasses import dataclass
from typing import Any

import torch

from models.training.hooks import TrainHooks


@dataclass
class TrainResult:
    """An artifact to write: config.json (without the name) and one payload."""

    config: dict[str, Any]
    module: torch.nn.Module | None = None
    estimator: Any = None

    @property
    def metrics(self) -> dict[str, Any]:
        return self.config.get("metrics", {})


def parent_module(hooks: TrainHooks | None, module_class: type, config_class: type) -> Any:
    """A fine-tune's starting network: its parent artifact rebuilt by the artifact loader
    (model_args and weights, strictly); None for a fit from scratch."""
    if hooks is None or hooks.parent is None:
        return None
    from models.artifacts import load_module

    config, payload = hooks.parent
    return load_module(module_class, config_class, config, payload).train()


def check_stop(hooks: TrainHooks) -> None:
    if hooks.should_stop is not None:
        hooks.should_stop()


def one_step(hooks: TrainHooks, row: dict[str, Any], loss: float = 0.0) -> None:
    """Reports a fit that has no steps (n-gram counts, scikit-learn) as one finished step."""
    if hooks.on_step is not None:
        hooks.on_step(1, 1, torch.tensor(loss))
    if hooks.on_epoch is not None:
        hooks.on_epoch(row)


def rate(steps: int | None, batch: int, seconds: float | None) -> float | None:
    """Samples/s of the whole loop, evaluations and checkpoints included."""
    return round(steps * batch / seconds, 2) if steps and seconds else None


def classifier_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    keep = (
        "test_accuracy",
        "val_loss",
        "best_step",
        "stopped_reason",
        "test_examples",
        "train_examples",
        "train_seconds",
        "samples_per_s",
    )
    return {k: metrics[k] for k in keep if k in metrics}


def card(name: str, config: dict[str, Any], dataset: str, params: dict[str, Any]) -> str:
    """A short model card: what it is, what it was trained on, what it scored."""
    metrics = "\n".join(f"- {k}: {v}" for k, v in config.get("metrics", {}).items())
    settings = "\n".join(f"- {k}: {v}" for k, v in params.items())
    return f"""# {name} ({config["kind"]})

{config.get("description", "")}

Trained on dataset `{dataset}`.

## Metrics (held-out split)

{metrics or "- none"}

## Parameters

{settings}
"""
