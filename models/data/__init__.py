"""Datasets as three in-memory kinds (a corpus, labelled texts, images), and their splits.

uploads.py parses user files into these kinds, builtin.py loads the data sets that ship with
the service, and the trainers of models/training/ take a (train, test) pair of one kind.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class DatasetError(ValueError):
    """An upload that cannot be used; the message says what is wrong, for the user."""


class UnsupportedFormat(DatasetError):
    """The file's name (or magic bytes) matches none of the accepted formats."""


@dataclass
class TextCorpus:
    text: str


@dataclass
class LabelledTexts:
    texts: list[str]
    labels: np.ndarray  # int64 (N,), values 0..K-1
    label_names: list[str]  # K names, index = label


@dataclass
class ImageSet:
    images: np.ndarray  # float32 (N, H, W) in [0, 1]
    labels: np.ndarray | None  # int64 (N,) 0..K-1, or None when unlabelled
    label_names: list[str] | None


Data = TextCorpus | LabelledTexts | ImageSet
KIND_OF: dict[type, str] = {TextCorpus: "text", LabelledTexts: "labelled-text", ImageSet: "images"}


def kind_of(data: Data) -> str:
    """`text`, `labelled-text` or `images`."""
    return KIND_OF[type(data)]


def describe(data: Data) -> dict:
    """`num_records` (characters for a corpus, examples otherwise; `record` names which) and
    what a user checks first."""
    if isinstance(data, TextCorpus):
        return {
            "num_records": len(data.text),
            "record": "character",  # a corpus is one text: its records are its characters
            "chars": len(data.text),
            "lines": data.text.count("\n") + (not data.text.endswith("\n")),
            "vocab_size": len(set(data.text)),
        }
    counts = {} if data.label_names is None else _label_counts(data.labels, data.label_names)
    if isinstance(data, LabelledTexts):
        return {
            "num_records": len(data.texts),
            "record": "text",
            "labels": data.label_names,
            "label_counts": counts,
            "mean_chars": round(sum(map(len, data.texts)) / max(1, len(data.texts)), 1),
        }
    n, h, w = data.images.shape
    return {
        "num_records": n,
        "record": "image",
        "image_size": [h, w],
        "labelled": data.labels is not None,
        "labels": data.label_names,
        "label_counts": counts or None,
    }


def _label_counts(labels: np.ndarray | None, names: list[str]) -> dict[str, int]:
    counts = np.bincount(labels, minlength=len(names)) if labels is not None else []
    return {name: int(c) for name, c in zip(names, counts, strict=False)}


def split(data: Data, test_fraction: float = 0.2, seed: int = 0) -> tuple[Data, Data]:
    """(train, test): a corpus is cut at (1 - f) of its characters (no shuffling: text is
    sequential); examples are split stratified by label and seeded, plainly when a class is
    too small to stratify."""
    if not 0.0 < test_fraction < 1.0:
        raise DatasetError(f"test_fraction must be between 0 and 1, not {test_fraction}")
    if isinstance(data, TextCorpus):
        cut = int(len(data.text) * (1.0 - test_fraction))
        if cut == 0 or cut == len(data.text):
            raise DatasetError(f"a corpus of {len(data.text)} characters is too short to split")
        return TextCorpus(data.text[:cut]), TextCorpus(data.text[cut:])
    labels = data.labels
    n = len(labels) if labels is not None else len(data.images)  # type: ignore[union-attr]
    if n < 2:
        raise DatasetError(f"{n} example(s) cannot be split into train and test")
    from sklearn.model_selection import train_test_split

    index = np.arange(n)
    try:
        train, test = train_test_split(
            index, test_size=test_fraction, random_state=seed, stratify=labels
        )
    except ValueError:  # a class too small for stratification
        train, test = train_test_split(index, test_size=test_fraction, random_state=seed)
    return _take(data, np.sort(train)), _take(data, np.sort(test))


def _take(data: LabelledTexts | ImageSet, index: np.ndarray) -> Data:
    if isinstance(data, LabelledTexts):
        texts = [data.texts[i] for i in index]
        return LabelledTexts(texts, data.labels[index], list(data.label_names))
    labels = data.labels[index] if data.labels is not None else None
    return ImageSet(data.images[index], labels, data.label_names)
