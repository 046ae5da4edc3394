"""Test accuracy of the committed default classifiers on their official test splits.

    python bench/classify_quality.py [--data-dir ../shared/data] [--pretrained models/pretrained]

Loads each artifact exactly as the service does (`load_classifier`), so a figure here is the
figure the service delivers. Prints accuracy, per-class recall and the confusion matrix.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # run as a plain script from anywhere

from models.artifacts import load_classifier  # noqa: E402
from models.data import load_digits_split, load_sentiment  # noqa: E402


def report(name: str, labels: list[str], y_true: np.ndarray, proba: np.ndarray) -> float:
    """Print accuracy, per-class recall and the confusion matrix (rows = truth)."""
    y_pred = proba.argmax(axis=1)
    k = len(labels)
    confusion = np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)
    accuracy = float(np.trace(confusion) / confusion.sum())
    print(f"\n{name}: test accuracy {accuracy:.4f} ({np.trace(confusion)}/{confusion.sum()})")
    width = max(8, *(len(s) + 1 for s in labels))
    print(" " * width + "".join(f"{s:>{width}}" for s in labels) + f"{'recall':>{width}}")
    for i, label in enumerate(labels):
        recall = confusion[i, i] / max(1, confusion[i].sum())
        row = "".join(f"{n:>{width}}" for n in confusion[i])
        print(f"{label:>{width}}{row}{recall:>{width}.3f}")
    return accuracy


def main() -> None:
    default_data = os.environ.get("GENSERVE_DATA_DIR", REPO_ROOT.parent / "shared" / "data")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path(default_data))
    parser.add_argument("--pretrained", type=Path, default=REPO_ROOT / "models" / "pretrained")
    args = parser.parse_args()

    t0 = time.perf_counter()
    sentiment = load_classifier(args.pretrained / "sentiment")
    _, _, texts, labels = load_sentiment(args.data_dir)
    report("sentiment", sentiment.labels, np.asarray(labels), sentiment.predict_proba(texts))

    digits = load_classifier(args.pretrained / "digits")
    _, _, images, targets = load_digits_split()
    report("digits", digits.labels, targets, digits.predict_proba(images))
    print(f"\n({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
