"""Adding a kind is a family, a training function, a row in models/kinds.py and a test row.

This file plays all four parts for a small kind, `classify-centroid` (nearest class mean over
pixels): nothing else in models/ or app/ changes, yet the kind trains through the registry,
saves and loads through the one artifact path, serves predictions and is listed and
validated by the API. See docs/architecture.md, "How to add a model kind".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import torch
import torch.nn as nn
from annotated_types import Ge, Le

from models.artifacts import load_artifact, save_artifact
from models.classify.base import Classifier, load_classifier_module
from models.data import ImageSet
from models.kinds import Kind, doc
from models.training.hooks import TrainHooks
from models.training.result import TrainResult, card, one_step

# ---- 1. the family file: a module and the class that serves it --------------------------------


@dataclass
class CentroidConfig:
    image_size: tuple[int, int] = (8, 8)
    num_classes: int = 10

    def __post_init__(self) -> None:
        self.image_size = tuple(self.image_size)  # JSON gives a list


class Centroids(nn.Module):
    def __init__(self, config: CentroidConfig):
        super().__init__()
        self.config = config
        self.means = nn.Parameter(torch.zeros(config.num_classes, *config.image_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W) -> logits (B, K)
        return -torch.cdist(x.flatten(1), self.means.flatten(1))


class CentroidClassifier(Classifier):
    input = "image"

    def __init__(self, module: Centroids, labels: list[str]):
        self.module, self.labels = module.eval(), labels
        self.image_size = module.config.image_size

    def predict_proba(self, inputs: Any) -> np.ndarray:
        with torch.inference_mode():
            logits = self.module(torch.as_tensor(np.asarray(inputs, np.float32)))
        return torch.softmax(logits, -1).numpy()

    @classmethod
    def from_artifact(cls, config: dict, payload: dict[str, bytes], device: Any):
        module, labels = load_classifier_module(
            config, payload, cls.input, Centroids, CentroidConfig
        )
        return cls(module, labels)


# ---- 2. the training function ------------------------------------------------------------------


@dataclass
class CentroidParams:
    shrink: Annotated[float, Ge(0), Le(1)] = doc(0.0, "pull every mean towards the global mean")
    test_fraction: Annotated[float, Ge(0.01), Le(0.5)] = doc(0.2, "uploads: held-out fraction")


def train_centroid(
    kind: str, train: ImageSet, test: ImageSet, p: CentroidParams, hooks: TrainHooks, device
) -> TrainResult:
    names = list(train.label_names or [])
    x, y = torch.from_numpy(train.images), torch.from_numpy(train.labels)
    module = Centroids(CentroidConfig(tuple(train.images.shape[1:]), len(names)))
    with torch.no_grad():
        means = torch.stack([x[y == k].mean(0) for k in range(len(names))])
        module.means.copy_((1 - p.shrink) * means + p.shrink * x.mean(0))
        pred = module(torch.from_numpy(test.images)).argmax(-1).numpy()
    accuracy = float(np.mean(pred == test.labels))
    one_step(hooks, {"step": 1, "val_accuracy": accuracy})
    return TrainResult(
        {
            "kind": kind,
            "task": "classification",
            "input": "image",
            "labels": names,
            "image_size": list(module.config.image_size),
            "metrics": {"test_accuracy": accuracy},
        },
        module=module,
    )


# ---- 3. its row in models/kinds.py (added for the test only) ----------------------------------

CENTROID = Kind(
    "classify-centroid",
    "classification",
    "images",
    CentroidParams,
    f"{__name__}:CentroidClassifier",
    f"{__name__}:train_centroid",
    "Nearest class mean over pixels.",
    needs_labels=True,
)


# tests/conftest.py's `centroid_kind` fixture puts it in KINDS for one test.


# ---- 4. its test row -----------------------------------------------------------------------------


def test_a_new_kind_trains_saves_loads_and_serves(tmp_path, centroid_kind: Kind) -> None:
    from models.data.builtin import BUILTIN_DATASETS

    train, test = BUILTIN_DATASETS["digits"].load(tmp_path)
    rows: list[dict] = []
    result = centroid_kind.trainer()(
        centroid_kind.name, train, test, CentroidParams(), TrainHooks(on_epoch=rows.append), "cpu"
    )
    assert rows and result.metrics["test_accuracy"] > 0.85  # a fair baseline on 8x8 digits
    config = {**result.config, "name": "centroids"}
    digest, _ = save_artifact(
        tmp_path / "art", config, module=result.module, card=card("c", config, "digits", {})
    )

    served = load_artifact(tmp_path / "art", expected_sha256=digest, task="classification")
    assert isinstance(served, CentroidClassifier) and served.name == "centroids"
    proba = served.predict_proba(test.images[:5])
    assert proba.shape == (5, 10) and np.allclose(proba.sum(1), 1, atol=1e-5)
    assert (proba.argmax(1) == test.labels[:5]).mean() >= 0.8
