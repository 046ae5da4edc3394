"""Datasets users upload, parsed into the three in-memory kinds of models/data.

Uploads are hostile until proven otherwise: every parser checks sizes before it allocates
(zip entry sizes, IDX headers, PNG dimensions), never unpickles (`allow_pickle=False`), and
raises `DatasetError` with a message a user can act on (which line, which byte, which file).

Formats, chosen by file extension (IDX also by its magic bytes):

- `txt`: a UTF-8 text corpus (kind `text`).
- `csv` / `tsv`: labelled texts (kind `labelled-text`) with a header naming `text` and `label`
  columns (others ignored). A headerless file of exactly two columns (text, label) is accepted
  too, as the UCI sentiment files are; a header row is recognised by its names, so a file
  whose first row names other columns fails with that list. TSV has no quoting.
- `jsonl`: one JSON object per line with `text` (string) and `label` (string or integer).
- `npz`: `x` uint8 (N, H, W) or (N, H, W, 1), or float in [0, 1]; optional `y` labels, one
  per image (kind `images`).
- `idx`: an IDX images file (idx3, usually gzipped, as MNIST ships), unlabelled.
- `zip`: PNGs in one folder per label (`label/name.png`, optionally inside one top folder),
  converted to grayscale, all the same size.

Labels become int64 0..K-1 over the distinct label values as strings, sorted (numerically
when all are integers), so that "0".."9" map to 0..9.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath

import numpy as np

from models.data import Data, DatasetError, ImageSet, LabelledTexts, TextCorpus, UnsupportedFormat
from models.data.idx import parse_idx

FORMATS = ("txt", "csv", "tsv", "jsonl", "npz", "idx", "zip")
EXTENSIONS = {".txt": "txt", ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
EXTENSIONS |= {".npz": "npz", ".idx": "idx", ".gz": "idx", ".zip": "zip"}
MAX_TEXT_BYTES = 128 * 1024 * 1024  # decoded text is held in memory as one str
MAX_UNCOMPRESSED_BYTES = 512 * 1024 * 1024  # zip, npz and gzip bombs stop here
MAX_COMPRESSION_RATIO = 100  # real data compresses 2-10x; a bomb 1000x (zeros under deflate)
RATIO_FLOOR_BYTES = 1024 * 1024  # archives unpacking to less than this cannot hurt
MAX_LINE_BYTES = 1024 * 1024  # a text "line" longer than this is a binary or a mistake
MAX_ZIP_ENTRIES = 100_000
MAX_TOTAL_PIXELS = 2**27  # 134 M pixels: 512 MB as float32 (MNIST's 60,000 use 47 M)
MIN_SIDE, MAX_SIDE = 4, 256
MAX_LABELS = 1000
MIN_PER_LABEL = 2  # one example per label cannot be split into train and test
_INT = re.compile(r"-?\d+")
_UNSAFE_PATH = re.compile(r"^[/\\]|^[A-Za-z]:|\\|(^|/)\.\.(/|$)")  # /x, C:x, a\b, ../x, a/..


# ---- format detection -------------------------------------------------------------------------


def detect_format(path: Path, filename: str) -> str:
    """The format by extension; unknown extensions are sniffed for IDX magic bytes."""
    lower = filename.lower()
    if re.search(r"idx\d-ubyte(\.gz)?$", lower):
        return "idx"
    fmt = EXTENSIONS.get(PurePosixPath(lower).suffix)
    if fmt is not None:
        return fmt
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] == b"\x1f\x8b" or (len(head) == 4 and head[:2] == b"\0\0" and head[3] in (1, 3)):
        return "idx"
    accepted = ", ".join(sorted(EXTENSIONS))
    raise UnsupportedFormat(
        f"unsupported file type {PurePosixPath(filename).suffix or filename!r}; "
        f"accepted: {accepted} (IDX files such as train-images-idx3-ubyte.gz too)"
    )


def parse_upload(path: Path, filename: str) -> tuple[str, Data]:
    """(format, data) for an uploaded file, validated; raises DatasetError saying what is wrong."""
    fmt = detect_format(path, filename)
    return fmt, load_file(path, fmt)


def load_file(path: Path, format: str) -> Data:
    """Parses a file of a known format (a stored upload is re-parsed this way)."""
    parser = _PARSERS.get(format)
    if parser is None:
        raise UnsupportedFormat(f"unknown dataset format {format!r}; known: {', '.join(FORMATS)}")
    return parser(Path(path))


# ---- text --------------------------------------------------------------------------------------


def _read_text(path: Path) -> str:
    size = path.stat().st_size
    if size > MAX_TEXT_BYTES:
        raise DatasetError(f"text file of {size} bytes exceeds the {MAX_TEXT_BYTES}-byte limit")
    raw = path.read_bytes()
    _check_lines(raw)
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")  # a BOM is allowed
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DatasetError(
            f"not valid UTF-8: byte 0x{raw[e.start]:02x} at offset {e.start} (line {line}); "
            "save the file as UTF-8"
        ) from None
    if "\x00" in text:
        offset = raw.index(b"\x00")
        raise DatasetError(f"NUL byte at offset {offset}: this looks like a binary file")
    if not text.strip():
        raise DatasetError("the file is empty (or only whitespace)")
    return text.replace("\r\n", "\n")


def _check_lines(raw: bytes) -> None:
    """Refuses a line over MAX_LINE_BYTES, found without splitting (a copy) the whole file."""
    if len(raw) <= MAX_LINE_BYTES:
        return
    ends = np.flatnonzero(np.frombuffer(raw, dtype=np.uint8) == ord("\n"))
    bounds = np.concatenate(([-1], ends, [len(raw)]))
    lengths = np.diff(bounds) - 1  # bytes between newlines
    longest = int(np.argmax(lengths))
    if lengths[longest] > MAX_LINE_BYTES:
        raise DatasetError(
            f"line {longest + 1} is {int(lengths[longest])} bytes long; lines may have at most "
            f"{MAX_LINE_BYTES} bytes (is this really a text file?)"
        )


def _parse_txt(path: Path) -> TextCorpus:
    return TextCorpus(_read_text(path))


def _parse_delimited(path: Path, delimiter: str) -> LabelledTexts:
    text = _read_text(path)
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(text), delimiter=delimiter, quoting=quoting)
    rows: list[tuple[int, list[str]]] = []
    try:
        for row in reader:
            if any(cell.strip() for cell in row):
                rows.append((reader.line_num, [cell.strip() for cell in row]))
    except csv.Error as e:
        raise DatasetError(f"line {reader.line_num}: malformed {_name(delimiter)}: {e}") from None
    if not rows:
        raise DatasetError("the file has no rows")
    header = [cell.lower() for cell in rows[0][1]]
    if "text" in header and "label" in header:
        text_col, label_col, width = header.index("text"), header.index("label"), len(header)
        body = rows[1:]
        if not body:
            raise DatasetError("the file has a header but no rows after it")
    elif _looks_headerless(rows):
        text_col, label_col, width, body = 0, 1, 2, rows
    else:
        raise DatasetError(
            f"the first row needs `text` and `label` columns (found {rows[0][1][:10]}); "
            "a headerless file must have exactly two columns: text, label"
        )
    texts, labels = [], []
    for line, row in body:
        if len(row) != width:
            raise DatasetError(f"line {line}: {len(row)} columns, expected {width}")
        texts.append(_need(row[text_col], line, "text"))
        labels.append(_need(row[label_col], line, "label"))
    return _labelled(texts, labels)


def _looks_headerless(rows: list[tuple[int, list[str]]]) -> bool:
    """Two columns everywhere, and the first row's label recurs: it is data, not a header."""
    if any(len(row) != 2 for _, row in rows):
        return False
    first = rows[0][1][1]
    return any(row[1] == first for _, row in rows[1:])


def _need(value: str, line: int, column: str) -> str:
    if not value:
        raise DatasetError(f"line {line}: empty {column}")
    return value


def _name(delimiter: str) -> str:
    return "TSV" if delimiter == "\t" else "CSV"


def _parse_jsonl(path: Path) -> LabelledTexts:
    texts: list[str] = []
    labels: list[str | int] = []
    for line, raw in enumerate(_read_text(path).split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as e:
            raise DatasetError(f"line {line}: invalid JSON: {e.msg} (column {e.colno})") from None
        if not isinstance(record, dict):
            raise DatasetError(f"line {line}: expected a JSON object, got {type(record).__name__}")
        text, label = record.get("text"), record.get("label")
        if not isinstance(text, str) or not text.strip():
            raise DatasetError(f"line {line}: `text` must be a non-empty string")
        if isinstance(label, bool) or not isinstance(label, str | int) or label == "":
            raise DatasetError(f"line {line}: `label` must be a string or an integer")
        texts.append(text)
        labels.append(label)
    if not texts:
        raise DatasetError("the file has no records")
    return _labelled(texts, labels)


def _labelled(texts: list[str], labels: list[str | int]) -> LabelledTexts:
    encoded, names = _encode_labels(labels)
    return LabelledTexts(texts=texts, labels=encoded, label_names=names)


def _encode_labels(values: Iterable[str | int]) -> tuple[np.ndarray, list[str]]:
    """int64 indices into the sorted distinct names; checks count and examples per label."""
    strings = [str(v).strip() for v in values]
    counts = Counter(strings)
    if all(_INT.fullmatch(s) for s in counts):
        names = sorted(counts, key=lambda s: (int(s), s))
    else:
        names = sorted(counts)
    if len(names) < 2:
        raise DatasetError(f"need at least 2 distinct labels, found only {names}")
    if len(names) > MAX_LABELS:
        raise DatasetError(f"{len(names)} distinct labels, at most {MAX_LABELS} are allowed")
    rare = [name for name in names if counts[name] < MIN_PER_LABEL]
    if rare:
        raise DatasetError(
            f"every label needs at least {MIN_PER_LABEL} examples; "
            f"{len(rare)} have fewer: {rare[:10]}"
        )
    index = {name: i for i, name in enumerate(names)}
    return np.array([index[s] for s in strings], dtype=np.int64), names


# ---- images ------------------------------------------------------------------------------------


def _check_images(images: np.ndarray, source: str) -> np.ndarray:
    """(N, H, W[, 1]) uint8 or float in [0, 1] -> float32 (N, H, W) in [0, 1]."""
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3:
        raise DatasetError(
            f"{source}: expected grayscale images of shape (N, H, W) or (N, H, W, 1), "
            f"got shape {images.shape}"
        )
    n, h, w = images.shape
    if n < 1:
        raise DatasetError(f"{source}: no images")
    if not (MIN_SIDE <= h <= MAX_SIDE and MIN_SIDE <= w <= MAX_SIDE):
        raise DatasetError(
            f"{source}: images are {h}x{w}; height and width must be {MIN_SIDE}..{MAX_SIDE}"
        )
    if n * h * w > MAX_TOTAL_PIXELS:
        raise DatasetError(f"{source}: {n * h * w} pixels in all, at most {MAX_TOTAL_PIXELS}")
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0
    if images.dtype.kind != "f":
        raise DatasetError(f"{source}: pixels must be uint8 or float in [0, 1], not {images.dtype}")
    images = images.astype(np.float32)
    if not np.isfinite(images).all() or images.min() < 0.0 or images.max() > 1.0:
        raise DatasetError(f"{source}: float pixels must be finite and in [0, 1]")
    return images


def _check_archive(archive: zipfile.ZipFile, what: str) -> list[zipfile.ZipInfo]:
    """Entry count and declared sizes, before anything is decompressed (zipfile enforces them)."""
    entries = archive.infolist()
    if len(entries) > MAX_ZIP_ENTRIES:
        raise DatasetError(f"{what} has {len(entries)} entries, at most {MAX_ZIP_ENTRIES}")
    total = sum(e.file_size for e in entries)
    if total > MAX_UNCOMPRESSED_BYTES:
        raise DatasetError(
            f"{what} unpacks to {total} bytes, more than the {MAX_UNCOMPRESSED_BYTES}-byte limit"
        )
    packed = sum(e.compress_size for e in entries)
    if total > RATIO_FLOOR_BYTES and total > MAX_COMPRESSION_RATIO * packed:
        raise DatasetError(
            f"{what} unpacks to {total} bytes from {packed}, more than {MAX_COMPRESSION_RATIO}x: "
            "refusing a likely decompression bomb"
        )
    return entries


def _parse_npz(path: Path) -> ImageSet:
    try:
        with zipfile.ZipFile(path) as archive:
            names = {e.filename for e in _check_archive(archive, "the npz archive")}
        if "x.npy" not in names:
            found = sorted(n.removesuffix(".npy") for n in names)[:10]
            raise DatasetError(f"the npz file needs an array named `x` (found {found})")
        with np.load(path, allow_pickle=False) as npz:
            x = _npz_array(npz, "x")
            y = _npz_array(npz, "y") if "y.npy" in names else None
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"not a readable npz file: {e}") from None
    images = _check_images(x, "x")
    if y is None:
        return ImageSet(images, None, None)
    if y.ndim != 1 or len(y) != len(images):
        raise DatasetError(f"y: expected one label per image ({len(images)}), got {y.shape}")
    if y.dtype.kind not in "iuU":
        raise DatasetError(f"y: labels must be integers or strings, not {y.dtype}")
    labels, label_names = _encode_labels(y.tolist())
    return ImageSet(images, labels, label_names)


def _npz_array(npz: np.lib.npyio.NpzFile, key: str) -> np.ndarray:
    try:
        return npz[key]
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise DatasetError(
                f"{key}: holds Python objects, which would need unpickling; "
                "save plain numeric arrays"
            ) from None
        raise DatasetError(f"{key}: unreadable array: {e}") from None


def _parse_idx(path: Path) -> ImageSet:
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
        f.seek(0)
        size = path.stat().st_size
        limit = MAX_UNCOMPRESSED_BYTES
        if gzipped:  # no declared size to check first: stop reading at the ratio
            limit = min(limit, max(RATIO_FLOOR_BYTES, MAX_COMPRESSION_RATIO * size))
        try:
            stream = gzip.GzipFile(fileobj=f) if gzipped else f
            raw = stream.read(limit + 1)
        except (OSError, EOFError, zlib.error) as e:
            raise DatasetError(f"corrupt or truncated gzip stream: {e}") from None
    if len(raw) > MAX_UNCOMPRESSED_BYTES:
        raise DatasetError(f"the IDX file unpacks to more than {MAX_UNCOMPRESSED_BYTES} bytes")
    if len(raw) > limit:
        raise DatasetError(
            f"the gzip stream of {size} bytes unpacks to more than {limit} "
            f"({MAX_COMPRESSION_RATIO}x): refusing a likely decompression bomb"
        )
    if len(raw) >= 4 and raw[:2] == b"\0\0" and raw[3] == 1:
        raise DatasetError(
            "this is an IDX labels file (1 dimension); upload the images file (idx3)"
        )
    try:
        images = parse_idx(raw, "IDX file")
    except ValueError as e:
        raise DatasetError(str(e)) from None
    return ImageSet(_check_images(images, "IDX file"), None, None)


def _parse_zip(path: Path) -> ImageSet:
    try:
        with zipfile.ZipFile(path) as archive:
            entries = _check_archive(archive, "the zip file")
            for entry in entries:  # nothing is extracted, but such a name is never a label
                if _UNSAFE_PATH.search(entry.filename):
                    raise DatasetError(
                        f"{entry.filename!r}: absolute and `..` paths have no place in a dataset"
                    )
            files = [e for e in entries if not e.is_dir() and not _is_junk(e.filename)]
            by_label = _label_folders(files)
            images: list[np.ndarray] = []
            labels: list[str] = []
            size: tuple[int, int] | None = None
            for entry, label in by_label:
                image = _read_png(archive.read(entry), entry.filename)
                if size is None:
                    size = image.shape
                    if size[0] * size[1] * len(by_label) > MAX_TOTAL_PIXELS:
                        raise DatasetError(f"{len(by_label)} images of {size} pixels: too many")
                elif image.shape != size:
                    raise DatasetError(
                        f"{entry.filename}: {image.shape[0]}x{image.shape[1]} pixels, but the "
                        f"first image is {size[0]}x{size[1]}; all images must be the same size"
                    )
                images.append(image)
                labels.append(label)
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"not a readable zip file: {e}") from None
    stack = _check_images(np.stack(images), "zip")
    encoded, names = _encode_labels(labels)
    return ImageSet(stack, encoded, names)


def _is_junk(name: str) -> bool:
    parts = PurePosixPath(name).parts
    return parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts)


def _label_folders(files: list[zipfile.ZipInfo]) -> list[tuple[zipfile.ZipInfo, str]]:
    """(entry, label) for `label/x.png`, or `top/label/x.png` when one folder wraps them all."""
    if not files:
        raise DatasetError("the zip file holds no images; expected label/name.png entries")
    parts = [PurePosixPath(e.filename).parts for e in files]
    if all(len(p) == 3 for p in parts) and len({p[0] for p in parts}) == 1:
        parts = [p[1:] for p in parts]
    out = []
    for entry, p in zip(files, parts, strict=True):
        if len(p) != 2:
            raise DatasetError(
                f"{entry.filename}: expected one folder per label holding PNGs (label/name.png)"
            )
        if not p[1].lower().endswith(".png"):
            raise DatasetError(f"{entry.filename}: not a .png file; only PNG images are accepted")
        out.append((entry, p[0]))
    return out


def _read_png(data: bytes, name: str) -> np.ndarray:
    """uint8 (H, W) grayscale; the size is checked from the header before pixels are decoded."""
    from PIL import Image, UnidentifiedImageError  # imported on use: the API starts faster

    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
            w, h = image.size
            if not (MIN_SIDE <= h <= MAX_SIDE and MIN_SIDE <= w <= MAX_SIDE):
                raise DatasetError(
                    f"{name}: {h}x{w} pixels; height and width must be {MIN_SIDE}..{MAX_SIDE}"
                )
            return np.asarray(image.convert("L"), dtype=np.uint8)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as e:
        raise DatasetError(f"{name}: not a readable PNG image ({e})") from None


_PARSERS: dict[str, Callable[[Path], Data]] = {
    "txt": _parse_txt,
    "csv": lambda p: _parse_delimited(p, ","),
    "tsv": lambda p: _parse_delimited(p, "\t"),
    "jsonl": _parse_jsonl,
    "npz": _parse_npz,
    "idx": _parse_idx,
    "zip": _parse_zip,
}
