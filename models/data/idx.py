"""MNIST from IDX files, with the split every genserve benchmark uses.

IDX (LeCun's format): two zero bytes, a type code, the number of dimensions, then one big-endian
uint32 per dimension and the values in C order. Files are usually gzipped. The reader checks the
header against the file's length before trusting it, so a truncated or foreign file fails with a
ValueError that says what is wrong instead of a reshape error or a silently short array.

The shared copy is the official t10k set (10,000 digits); ../shared/data/README.md fixes the
split: images 0-7,999 train, 8,000-9,999 held out.
"""

import gzip
import zlib
from pathlib import Path

import numpy as np

# IDX type code -> big-endian numpy dtype
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
IMAGES_FILE = "t10k-images-idx3-ubyte.gz"
LABELS_FILE = "t10k-labels-idx1-ubyte.gz"
NUM_TRAIN = 8_000  # images 0-7,999 train, the rest (8,000-9,999) held out


def parse_idx(data: bytes, name: str = "IDX data") -> np.ndarray:
    """Decode an uncompressed IDX buffer into a native-endian array of its declared shape."""
    if len(data) < 4:
        raise ValueError(f"{name}: {len(data)} bytes, too short for an IDX header")
    if data[0] != 0 or data[1] != 0:
        raise ValueError(f"{name}: bad magic number {data[:4].hex()}, not an IDX file")
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        raise ValueError(f"{name}: unknown IDX type code 0x{code:02x}")
    if ndim == 0:
        raise ValueError(f"{name}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{name}: truncated header ({len(data)} of {header} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise ValueError(
            f"{name}: {what}: shape {shape} of {dtype.name} needs {expected} bytes, "
            f"file has {len(data)}"
        )
    values = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return values.astype(f"{dtype.kind}{dtype.itemsize}")  # a native-endian, writable copy


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file, gzipped (detected by its magic bytes) or plain."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
            raise ValueError(f"{path}: corrupt or truncated gzip stream: {e}") from e
    return parse_idx(raw, str(path))


def load_mnist(data_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_held, y_held): float32 (N, 28, 28) in [0, 1] with ink = 1, int64.

    8,000 training and 2,000 held-out images from the t10k files under `data_dir`/mnist.
    """
    folder = Path(data_dir) / "mnist"
    images = read_idx(folder / IMAGES_FILE)  # (10000, 28, 28) uint8, ink = 255
    labels = read_idx(folder / LABELS_FILE)  # (10000,) uint8
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise ValueError(f"{IMAGES_FILE}: expected uint8 (N, 28, 28), got {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"{LABELS_FILE}: {labels.shape} labels for {len(images)} images")
    if len(images) <= NUM_TRAIN:
        raise ValueError(f"{IMAGES_FILE}: {len(images)} images, the split needs > {NUM_TRAIN}")
    if labels.max() > 9:
        raise ValueError(f"{LABELS_FILE}: label {labels.max()} outside 0-9")
    x = images.astype(np.float32) / 255.0
    y = labels.astype(np.int64)
    return x[:NUM_TRAIN], y[:NUM_TRAIN], x[NUM_TRAIN:], y[NUM_TRAIN:]
