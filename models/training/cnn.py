"""Fitting the image classifier (classify-cnn) with the shared epoch loop."""

import math
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from models.classify.cnn import ImageCNN, ImageCNNConfig
from models.data.uploads import ImageSet
from models.kinds import CNNParams
from models.training.epochs import data_digest, loop_metrics, train_epochs
from models.training.hooks import TrainHooks
from models.training.result import TrainResult, classifier_metrics, parent_module


def random_shift(x: torch.Tensor, generator: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Shift each image by up to `max_shift` pixels in H and W, filling with background (0)."""
    B, _, H, W = x.shape
    padded = F.pad(x, (max_shift,) * 4)  # (B, C, H + 2s, W + 2s)
    offsets = torch.randint(0, 2 * max_shift + 1, (B, 2), generator=generator)
    out = torch.empty_like(x)
    for i, (dy, dx) in enumerate(offsets.tolist()):
        out[i] = padded[i, :, dy : dy + H, dx : dx + W]
    return out


@torch.no_grad()
def image_logits(model: ImageCNN, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """(N, K) logits of (N, 1, H, W) images; restores the model's train/eval mode."""
    was_training = model.training
    model.eval()
    logits = torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    model.train(was_training)
    return logits


def evaluate(model: ImageCNN, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Accuracy of `model` on (N, 1, H, W) images."""
    return float((image_logits(model, x, batch_size).argmax(-1) == y).float().mean())


def validation_loss(model: ImageCNN, x: torch.Tensor, y: torch.Tensor) -> float | None:
    """Mean cross-entropy on held-out images (None when there are none)."""
    return F.cross_entropy(image_logits(model, x), y).item() if len(x) else None


def fit_image_cnn(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    p: CNNParams | None = None,
    *,
    device: str = "cpu",
    num_classes: int | None = None,
    hooks: TrainHooks | None = None,
    **architecture: Any,
) -> tuple[ImageCNN, ImageCNNConfig, dict[str, Any]]:
    """Train an ImageCNN on (N, H, W) images in [0, 1] and score it on (x_test, y_test).

    AdamW with a cosine learning-rate decay; `architecture` goes to ImageCNNConfig (channels).
    p.shift > 0 adds random pixel shifts, useful for 28x28 digits; on 8x8 digits a 1-pixel
    shift is 12 % of the width and did not beat no shift in cross-validation.
    """
    p = p or CNNParams()
    seed, batch_size, shift = p.seed, p.batch_size, p.shift
    torch.manual_seed(seed)
    np.random.seed(seed)
    xt = torch.from_numpy(x_train).unsqueeze(1).to(device)  # (N, 1, H, W)
    yt = torch.from_numpy(y_train).to(device)  # (N,)
    xv = torch.from_numpy(x_test).unsqueeze(1).to(device)
    yv = torch.from_numpy(y_test).to(device)

    if num_classes is None:
        num_classes = int(max(y_train.max(), y_test.max())) + 1
    config = ImageCNNConfig(
        image_size=x_train.shape[1:],
        num_classes=num_classes,
        hidden=p.hidden,
        dropout=p.dropout,
        **architecture,
    )
    parent = parent_module(hooks, ImageCNN, ImageCNNConfig)  # a fine-tune starts from it
    model = (ImageCNN(config) if parent is None else parent).to(device)
    config = model.config

    def loss_of(net: nn.Module, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        idx = idx.to(device)
        xb, yb = xt[idx], yt[idx]  # (B, 1, H, W), (B,)
        if shift:
            xb = random_shift(xb.cpu(), gen, shift).to(device)
        return F.cross_entropy(net(xb), yb)

    train_params = {
        "epochs": p.epochs,
        "batch_size": batch_size,
        "lr": p.lr,
        "weight_decay": p.weight_decay,
        "shift": shift,
    }
    loop = train_epochs(
        model,
        batches=lambda gen: list(torch.randperm(len(xt), generator=gen).split(batch_size)),
        loss_of=loss_of,
        val_accuracy=lambda: evaluate(model, xv, yv) if len(xv) else None,
        val_loss=lambda: validation_loss(model, xv, yv),
        patience=p.patience,
        steps_per_epoch=math.ceil(len(xt) / batch_size),
        seed=seed,
        epochs=p.epochs,
        lr=p.lr,
        weight_decay=p.weight_decay,
        hooks=hooks,
        run={
            "fit": "image-cnn",
            "seed": seed,
            **train_params,
            "model": asdict(config),
            "data": data_digest(x_train, y_train),
        },
    )
    metrics = loop_metrics(
        loop,
        evaluate(model, xv, yv) if len(xv) else None,
        test_examples=len(xv),
        train_examples=len(xt),
        params=train_params,
    )
    return model, config, metrics


def train_cnn(
    kind: str, train: ImageSet, test: ImageSet, p: CNNParams, hooks: TrainHooks, device
) -> TrainResult:
    if train.labels is None or test.labels is None:
        raise ValueError("classify-cnn needs a labelled image dataset")
    module, config, metrics = fit_image_cnn(
        train.images,
        train.labels,
        test.images,
        test.labels,
        p,
        device=str(device),
        hooks=hooks,
        num_classes=len(train.label_names or []),
    )
    return TrainResult(
        {
            "kind": kind,
            "task": "classification",
            "input": "image",
            "description": "Convolutional image classifier trained over HTTP.",
            "labels": list(train.label_names or []),
            "image_size": list(config.image_size),
            "model_args": asdict(config),
            "metrics": classifier_metrics(metrics),
        },
        module=module,
    )
