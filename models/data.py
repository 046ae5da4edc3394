"""Real data sets with the official splits from ../shared/data/README.md.

Every benchmark and default model uses these loaders, so figures from different runs compare.
"""

from pathlib import Path

import numpy as np

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
