"""What every classifier offers the service: labels, the input kind, and class probabilities.

Every classification family (text_pipeline.py, text_rnn.py, cnn.py) answers one question the
same way, `predict_proba(inputs) -> (N, num_labels)`, so the service never needs to know which
library is underneath, and rebuilds itself from its artifact with `from_artifact`.
"""

from abc import ABC, abstractmethod
from typing import Any, Literal

import numpy as np

from models.artifacts import ArtifactError, load_module


class Classifier(ABC):
    """What the service sees: labels, the input kind, and class probabilities."""

    labels: list[str]
    input: Literal["text", "image"]
    image_size: tuple[int, int] | None  # (H, W) for image models, None for text

    @abstractmethod
    def predict_proba(self, inputs: Any) -> np.ndarray:
        """float32 (N, len(labels)), rows sum to 1.

        Text models take Sequence[str]; image models float32 (N, H, W) in [0, 1], ink = 1.
        """

    @classmethod
    @abstractmethod
    def from_artifact(cls, config: dict, payload: dict[str, bytes], device: Any) -> "Classifier":
        """Rebuilds the classifier from a verified artifact (models/artifacts.py)."""


def artifact_labels(config: dict[str, Any], input: str) -> list[str]:
    """The labels of a classification artifact for `input`, checked before anything is built."""
    labels = config.get("labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(s, str) for s in labels):
        raise ArtifactError("labels must be a non-empty list of strings")
    if config.get("input") != input:
        raise ArtifactError(f"{config.get('kind')} needs input {input!r}")
    return labels


def load_classifier_module(
    config: dict[str, Any],
    payload: dict[str, bytes],
    input: str,
    module_class: type,
    config_class: type,
) -> tuple[Any, list[str]]:
    """A torch classifier's module and labels from its artifact, their counts checked."""
    labels = artifact_labels(config, input)
    module = load_module(module_class, config_class, config, payload)
    if module.config.num_classes != len(labels):
        raise ArtifactError(f"{len(labels)} labels for {module.config.num_classes} classes")
    return module, labels
