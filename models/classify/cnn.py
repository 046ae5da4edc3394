"""Image classification with a small CNN for grayscale images.

References:
- The classic conv-conv-pool stages of LeCun et al. (1998), with dropout.
"""

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from models.artifacts import ArtifactError
from models.classify.base import Classifier, load_classifier_module


@dataclass
class ImageCNNConfig:
    image_size: tuple[int, int] = (8, 8)  # (H, W); each stage halves it, so H, W % 2**stages == 0
    in_channels: int = 1  # grayscale
    num_classes: int = 10
    channels: tuple[int, ...] = (32, 64)  # conv width per stage; a stage = 2 convs + 2x2 max-pool
    hidden: int = 128  # width of the fully connected layer before the logits
    dropout: float = 0.25  # before both linear layers; the digit data sets are small

    def __post_init__(self) -> None:
        # JSON turns tuples into lists; normalise so configs compare and rebuild identically
        self.image_size = tuple(self.image_size)
        self.channels = tuple(self.channels)
        h, w = self.image_size
        scale = 2 ** len(self.channels)
        if h % scale or w % scale:
            raise ValueError(f"image_size {self.image_size} must be divisible by {scale}")


class ConvStage(nn.Module):
    """conv3x3 -> ReLU -> conv3x3 -> ReLU -> max-pool 2x2: halves H and W."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(c_out, c_out, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))  # (B, c_out, H, W)
        x = F.relu(self.conv2(x))  # (B, c_out, H, W)
        return F.max_pool2d(x, 2)  # (B, c_out, H/2, W/2)


class ImageCNN(nn.Module):
    """Conv stages then a 2-layer head; 8x8 digits end at 2x2 maps, 28x28 MNIST at 7x7."""

    def __init__(self, config: ImageCNNConfig):
        super().__init__()
        self.config = config
        widths = (config.in_channels, *config.channels)
        self.stages = nn.ModuleList(ConvStage(a, b) for a, b in itertools.pairwise(widths))
        h, w = config.image_size
        scale = 2 ** len(config.channels)
        flat = config.channels[-1] * (h // scale) * (w // scale)
        self.fc = nn.Linear(flat, config.hidden)
        self.head = nn.Linear(config.hidden, config.num_classes)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, in_channels, H, W) in [0, 1] -> logits (B, num_classes)
        for stage in self.stages:
            x = stage(x)  # (B, C_i, H / 2**i, W / 2**i)
        x = self.drop(x.flatten(1))  # (B, C * h * w)
        x = self.drop(F.relu(self.fc(x)))  # (B, hidden)
        return self.head(x)  # (B, num_classes)


class TorchImageClassifier(Classifier):
    """An ImageCNN on a device; batches go through it in eval mode, chunked to bound memory."""

    input = "image"

    def __init__(
        self, module: ImageCNN, labels: list[str], device: str = "cpu", batch_size: int = 512
    ):
        if module.config.num_classes != len(labels):
            raise ValueError(
                f"model has {module.config.num_classes} classes, got {len(labels)} labels"
            )
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()
        self.labels = list(labels)
        self.image_size = module.config.image_size
        self.batch_size = batch_size

    def predict_proba(self, inputs: np.ndarray) -> np.ndarray:
        x = np.asarray(inputs, dtype=np.float32)
        if x.ndim != 3 or tuple(x.shape[1:]) != self.image_size:
            h, w = self.image_size
            raise ValueError(f"expected images of shape (N, {h}, {w}), got {x.shape}")
        out = []
        with torch.inference_mode():
            for i in range(0, len(x), self.batch_size):
                batch = torch.from_numpy(x[i : i + self.batch_size]).unsqueeze(1)  # (B, 1, H, W)
                logits = self.module(batch.to(self.device))  # (B, K)
                out.append(F.softmax(logits.float(), dim=-1).cpu().numpy())
        if not out:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return np.concatenate(out).astype(np.float32)

    @classmethod
    def from_artifact(
        cls, config: dict, payload: dict[str, bytes], device: Any = "cpu"
    ) -> "TorchImageClassifier":
        module, labels = load_classifier_module(
            config, payload, cls.input, ImageCNN, ImageCNNConfig
        )
        image_size = config.get("image_size")
        if image_size is None or tuple(image_size) != tuple(module.config.image_size):
            raise ArtifactError(f"image_size {image_size} != model_args {module.config.image_size}")
        return cls(module, labels, device=str(device))
