"""PNG in and out: model inputs decoded with limits checked before any pixel is
decompressed; generated images encoded, alone or as a grid."""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import warnings

import numpy as np
from PIL import Image

from app.errors import BadRequest
from models.image.png import png_bytes

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_PIXELS = 4096 * 4096
INLINE_DECODE_BYTES = 64 * 1024  # bigger image payloads are decoded off the event loop
INLINE_ENCODE_IMAGES = 16  # more PNGs than this are encoded off the event loop


def decode_png(data: str, index: int, size: tuple[int, int]) -> np.ndarray:
    """Base64 PNG -> float32 (H, W) in [0, 1], ink bright on a dark background."""
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"images[{index}] is not valid base64", code="invalid_image") from None
    if not raw.startswith(PNG_SIGNATURE):
        raise BadRequest(f"images[{index}] is not a PNG", code="invalid_image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw), formats=["PNG"])
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise BadRequest(f"images[{index}] is {width}x{height}: too many pixels")
            if (height, width) != size:
                raise BadRequest(
                    f"images[{index}] is {width}x{height}; this model takes "
                    f"{size[1]}x{size[0]} grayscale PNGs",
                    code="invalid_image_size",
                    details={"expected": {"width": size[1], "height": size[0]}},
                )
            pixels = np.asarray(image.convert("L"), dtype=np.float32)
    except BadRequest:
        raise
    except Exception as exc:  # truncated or corrupt data, bombs, odd modes
        raise BadRequest(
            f"images[{index}] could not be decoded as a PNG: {exc}", code="invalid_image"
        ) from None
    return pixels / 255.0


def encode_png(pixels: np.ndarray) -> str:
    """uint8 (H, W) -> base64 PNG."""
    return base64.b64encode(png_bytes(pixels)).decode("ascii")


async def decode_pngs(images: list[str], size: tuple[int, int]) -> np.ndarray:
    """Base64 PNGs -> float32 (N, H, W), off the event loop when the payload is large."""

    def decode() -> np.ndarray:
        return np.stack([decode_png(data, i, size) for i, data in enumerate(images)])

    if sum(len(data) for data in images) <= INLINE_DECODE_BYTES:
        return decode()
    return await asyncio.to_thread(decode)


async def encode_pngs(pixels: np.ndarray) -> list[str]:
    """uint8 (N, H, W) -> base64 PNGs, off the event loop when there are many."""

    def encode() -> list[str]:
        return [encode_png(image) for image in pixels]

    return encode() if len(pixels) <= INLINE_ENCODE_IMAGES else await asyncio.to_thread(encode)
