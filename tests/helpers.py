"""Real held-out examples for the tests, taken from the official test splits."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from models.data.builtin import load_digits_split, load_sentiment
from models.data.idx import load_mnist
from tests.conftest import DATA_DIR


def png_base64(pixels: np.ndarray) -> str:
    """float (H, W) in [0, 1] -> base64 PNG, ink bright on dark as the API expects."""
    image = Image.fromarray(np.clip(pixels * 255 + 0.5, 0, 255).astype(np.uint8), mode="L")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def held_out_digits(count: int) -> tuple[list[str], list[str]]:
    _, _, images, labels = load_digits_split()
    return [png_base64(x) for x in images[:count]], [str(int(y)) for y in labels[:count]]


def held_out_mnist(count: int) -> tuple[list[str], list[int]]:
    """The first `count` held-out MNIST digits (28x28, never trained on) as PNGs, and labels."""
    _, _, images, labels = load_mnist(DATA_DIR)
    return [png_base64(x) for x in images[:count]], [int(y) for y in labels[:count]]


def held_out_sentences(count: int) -> tuple[list[str], list[str]]:
    _, _, texts, labels = load_sentiment(DATA_DIR)
    names = ["negative", "positive"]
    return texts[:count], [names[y] for y in labels[:count]]


def accuracy(predicted: list[str], expected: list[str]) -> float:
    return sum(p == e for p, e in zip(predicted, expected, strict=True)) / len(expected)


def tar_members(archive: bytes) -> dict[str, bytes]:
    """The regular files of a tar (an exported model version), by name, in archive order."""
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]
