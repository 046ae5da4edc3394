"""The data sets that ship with the service, with the official splits of ../shared/data/README.md.

Every benchmark and default model uses these loaders, so figures from different runs compare.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.data import Data, DatasetError, ImageSet, LabelledTexts, TextCorpus, split
from models.data.idx import IMAGES_FILE, LABELS_FILE, load_mnist

SENTIMENT_LABELS = ["negative", "positive"]  # label 0, label 1
DIGIT_LABELS = [str(i) for i in range(10)]
SENTIMENT_FILES = ["amazon_cells_labelled.txt", "imdb_labelled.txt", "yelp_labelled.txt"]


def load_sentiment(data_dir: Path) -> tuple[list[str], list[int], list[str], list[int]]:
    """UCI sentiment sentences: within each file, line index % 5 == 4 is test (2,400 / 600)."""
    train_texts: list[str] = []
    train_labels: list[int] = []
    test_texts: list[str] = []
    test_labels: list[int] = []
    for name in SENTIMENT_FILES:
        path = Path(data_dir) / "sentiment" / name
        lines = path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            # the imdb file pads sentences with spaces before the tab, so split on the last tab
            text, label = line.rsplit("\t", 1)
            texts, labels = (test_texts, test_labels) if i % 5 == 4 else (train_texts, train_labels)
            texts.append(text.strip())
            labels.append(int(label.strip()))
    return train_texts, train_labels, test_texts, test_labels


def load_digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """sklearn's 8x8 digits as float32 (N, 8, 8) in [0, 1] (ink = 1), labels int64; 1,437 / 360."""
    from sklearn.datasets import load_digits  # scikit-learn loads slowly: only when used
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)  # (1797, 8, 8), raw pixel values are 0..16
    y = digits.target.astype(np.int64)  # (1797,)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, random_state=0, stratify=y
    )
    return x_train, y_train, x_test, y_test


def load_shakespeare(data_dir: Path) -> tuple[str, str]:
    """tinyshakespeare: the first 90 % of the characters train, the last 10 % validate."""
    text = (Path(data_dir) / "tinyshakespeare.txt").read_text(encoding="utf-8")
    cut = int(len(text) * 0.9)
    return text[:cut], text[cut:]


@dataclass(frozen=True)
class Builtin:
    """A dataset that ships with the service, loaded with its official split
    (../shared/data/README.md) so that figures compare across runs."""

    name: str
    kind: str
    description: str
    available: Callable[[Path], bool]
    load: Callable[[Path], tuple[Data, Data]]  # data_dir -> (train, test)
    files: Callable[[Path], list[Path]]  # data_dir -> the files it is read from (its size)
    # what the committed default models' config.json calls it (training.dataset)
    trained_as: tuple[str, ...] = ()


def _shakespeare(data_dir: Path) -> tuple[Data, Data]:
    train, test = load_shakespeare(data_dir)
    return TextCorpus(train), TextCorpus(test)


def _sentiment(data_dir: Path) -> tuple[Data, Data]:
    x_train, y_train, x_test, y_test = load_sentiment(data_dir)
    names = list(SENTIMENT_LABELS)
    return (
        LabelledTexts(x_train, np.asarray(y_train, dtype=np.int64), names),
        LabelledTexts(x_test, np.asarray(y_test, dtype=np.int64), list(names)),
    )


def _digits_file() -> Path:
    """scikit-learn ships the 8x8 digits as one gzipped CSV inside the package."""
    from importlib.resources import files

    return Path(str(files("sklearn.datasets") / "data" / "digits.csv.gz"))


def _images(x_train, y_train, x_test, y_test) -> tuple[Data, Data]:  # type: ignore[no-untyped-def]
    names = list(DIGIT_LABELS)
    return ImageSet(x_train, y_train, names), ImageSet(x_test, y_test, list(names))


BUILTIN_DATASETS: dict[str, Builtin] = {
    b.name: b
    for b in (
        Builtin(
            "tinyshakespeare",
            "text",
            "Tiny Shakespeare, 1.1 M characters; first 90 % train, last 10 % validation.",
            lambda d: (Path(d) / "tinyshakespeare.txt").is_file(),
            _shakespeare,
            lambda d: [Path(d) / "tinyshakespeare.txt"],
        ),
        Builtin(
            "sentiment",
            "labelled-text",
            "UCI sentiment sentences (amazon, imdb, yelp), 2,400 train / 600 test.",
            lambda d: all((Path(d) / "sentiment" / f).is_file() for f in SENTIMENT_FILES),
            _sentiment,
            lambda d: [Path(d) / "sentiment" / f for f in SENTIMENT_FILES],
            ("uci-sentiment-labelled-sentences",),
        ),
        Builtin(
            "mnist",
            "images",
            "MNIST t10k, 28x28 digits; images 0-7,999 train, 8,000-9,999 held out.",
            lambda d: all((Path(d) / "mnist" / f).is_file() for f in (IMAGES_FILE, LABELS_FILE)),
            lambda d: _images(*load_mnist(d)),
            lambda d: [Path(d) / "mnist" / f for f in (IMAGES_FILE, LABELS_FILE)],
            ("mnist-t10k",),
        ),
        Builtin(
            "digits",
            "images",
            "scikit-learn 8x8 digits (1,797); stratified 80/20 split, random_state=0.",
            lambda d: True,
            lambda d: _images(*load_digits_split()),
            lambda d: [_digits_file()],
            ("sklearn-digits",),
        ),
    )
}


def load_split(
    format: str,
    path: Path | None,
    name: str,
    data_dir: Path,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[Data, Data]:
    """(train, test) for a dataset record: the trainer's one entry point.

    `format` is the record's format; `"builtin"` loads built-in `name` from `data_dir` with
    its official split (`test_fraction` and `seed` are then ignored). Any other format parses
    the stored file at `path` and splits it with `split(data, test_fraction, seed)`.
    """
    if format == "builtin":
        builtin = BUILTIN_DATASETS.get(name)
        if builtin is None:
            raise DatasetError(f"unknown built-in dataset {name!r}")
        if not builtin.available(data_dir):
            raise DatasetError(f"built-in dataset {name!r} has no data under {data_dir}")
        return builtin.load(data_dir)
    if path is None:
        raise DatasetError(f"dataset {name!r} has no stored file")
    from models.data.uploads import load_file

    return split(load_file(path, format), test_fraction, seed)
