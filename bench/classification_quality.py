"""Test accuracy of every classifier kind on the shared splits, trained in one run, and of the
committed default artifacts.

    python bench/classification_quality.py [--data-dir ../shared/data]
        [--pretrained models/pretrained] [--seed 0] [--device cpu] [--skip-training]

Trains classify-nb, classify-logreg, classify-mlp and classify-rnn on the 2,400 sentiment
training sentences (scored on the 600 test ones) and classify-cnn on sklearn's digits
(1,437 / 360), each with its default hyperparameters, then loads the committed artifacts exactly
as the service does (`load_artifact`) and prints their confusion matrices. Ends with a table
and the targets: best sentiment >= 0.82, best digits >= 0.97. Set OMP_NUM_THREADS to share
the machine.
"""

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # run as a plain script from anywhere

from models.artifacts import load_artifact  # noqa: E402
from models.build.classifiers import train_digits, train_sentiment  # noqa: E402
from models.classify.text_rnn import TextVocab, TorchTextClassifier  # noqa: E402
from models.data.builtin import SENTIMENT_LABELS, load_digits_split, load_sentiment  # noqa: E402
from models.kinds import KINDS, TextPipelineParams, TextRNNParams  # noqa: E402
from models.training.text_rnn import fit_text_rnn  # noqa: E402

TARGETS = {"sentiment": 0.82, "digits": 0.97}
SKLEARN_KINDS = [k.name for k in KINDS.values() if issubclass(k.params, TextPipelineParams)]


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


def train_all(data_dir: Path, seed: int, device: str) -> list[tuple[str, str, float, float]]:
    """(kind, dataset, test accuracy, train seconds) for every kind, trained from scratch."""
    rows = []
    for kind in SKLEARN_KINDS:
        with warnings.catch_warnings():
            # classify-mlp stops at its CV-chosen 30 epochs on purpose, before "convergence"
            warnings.simplefilter("ignore", ConvergenceWarning)
            _, metrics = train_sentiment(data_dir, seed=seed, kind=kind)
        rows.append((kind, "sentiment", metrics["test_accuracy"], metrics["train_seconds"]))
        print(f"trained {kind:<16} sentiment {metrics['test_accuracy']:.4f}", flush=True)
    train_x, train_y, test_x, test_y = load_sentiment(data_dir)
    model, _, tokenizer, metrics = fit_text_rnn(
        train_x, train_y, test_x, test_y, TextRNNParams(seed=seed), device=device
    )
    # scored through the serving wrapper (length-sorted chunks), as the service would score it
    served = TorchTextClassifier(model, TextVocab.from_config(tokenizer), SENTIMENT_LABELS, device)
    accuracy = float(np.mean(served.predict_proba(test_x).argmax(1) == np.asarray(test_y)))
    rows.append(("classify-rnn", "sentiment", accuracy, metrics["train_seconds"]))
    print(f"trained {'classify-rnn':<16} sentiment {accuracy:.4f}", flush=True)
    *_, metrics = train_digits(seed=seed, device=device)
    rows.append(("classify-cnn", "digits", metrics["test_accuracy"], metrics["train_seconds"]))
    print(f"trained {'classify-cnn':<16} digits    {metrics['test_accuracy']:.4f}", flush=True)
    return rows


def measure_pretrained(pretrained: Path, data_dir: Path) -> list[tuple[str, str, float, float]]:
    """Re-measure the committed artifacts through load_artifact, as the service serves them."""
    rows = []
    sentiment = load_artifact(pretrained / "sentiment")
    _, _, texts, labels = load_sentiment(data_dir)
    proba = sentiment.predict_proba(texts)
    accuracy = report("pretrained sentiment", sentiment.labels, np.asarray(labels), proba)
    rows.append(
        (f"pretrained/sentiment ({_kind(pretrained / 'sentiment')})", "sentiment", accuracy)
    )

    digits = load_artifact(pretrained / "digits")
    _, _, images, targets = load_digits_split()
    accuracy = report("pretrained digits", digits.labels, targets, digits.predict_proba(images))
    rows.append((f"pretrained/digits ({_kind(pretrained / 'digits')})", "digits", accuracy))
    return [(*row, float("nan")) for row in rows]


def _kind(path: Path) -> str:
    return json.loads((path / "config.json").read_text())["kind"]


def main() -> None:
    default_data = os.environ.get("GENSERVE_DATA_DIR", REPO_ROOT.parent / "shared" / "data")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path(default_data))
    parser.add_argument("--pretrained", type=Path, default=REPO_ROOT / "models" / "pretrained")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-training", action="store_true", help="only the artifacts")
    args = parser.parse_args()

    t0 = time.perf_counter()
    rows = [] if args.skip_training else train_all(args.data_dir, args.seed, args.device)
    rows += measure_pretrained(args.pretrained, args.data_dir)

    width = max(len(r[0]) for r in rows) + 2
    print(f"\n{'kind':<{width}}{'dataset':<11}{'accuracy':>9}{'train s':>9}")
    for kind, dataset, accuracy, seconds in rows:
        train_s = "-" if np.isnan(seconds) else f"{seconds:.1f}"
        print(f"{kind:<{width}}{dataset:<11}{accuracy:>9.4f}{train_s:>9}")
    print()
    for dataset, target in TARGETS.items():
        best = max((r for r in rows if r[1] == dataset), key=lambda r: r[2])
        verdict = "met" if best[2] >= target else "MISSED"
        print(f"target {dataset} best >= {target}: {best[2]:.4f} ({best[0]}) {verdict}")
    print(f"\n({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
