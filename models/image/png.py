"""Generated images as PNG: one image, or a grid of many. Pillow and numpy only, so the API
process can encode without importing torch."""

import io

import numpy as np
from PIL import Image


def png_bytes(pixels: np.ndarray) -> bytes:
    """uint8 (H, W) -> grayscale PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def grid(images: np.ndarray, pad: int = 2, cols: int | None = None) -> np.ndarray:
    """uint8 (N, H, W) -> one uint8 image, `cols` (default ceil(sqrt(N))) columns, dark
    padding between; cols = N is a strip."""
    n, h, w = images.shape
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    out = np.zeros((rows * (h + pad) + pad, cols * (w + pad) + pad), dtype=np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        out[top : top + h, left : left + w] = image
    return out
