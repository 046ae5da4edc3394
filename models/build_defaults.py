"""Retrain the two default classifiers and write them to models/pretrained/.

    python -m models.build_defaults [--data-dir ../shared/data] [--out models/pretrained] [--seed 0]

sentiment/: TF-IDF + logistic regression on the UCI sentiment sentences (classify-logreg)
digits/:    ImageCNN on scikit-learn's 8x8 digits (classify-cnn)
"""

import argparse
import os
import platform
from dataclasses import asdict
from pathlib import Path
from typing import Any

import sklearn
import torch

from models.artifacts import save_artifact
from models.data import DIGIT_LABELS, SENTIMENT_LABELS
from models.training import train_digits, train_sentiment

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "models" / "pretrained"
COMMAND = "python -m models.build_defaults --seed {seed}"
SENTIMENT_SPLIT = (
    "amazon_cells, imdb, yelp files concatenated in that order; within each file line index "
    "% 5 == 4 is test: 2,400 train / 600 test"
)
DIGITS_SPLIT = "sklearn load_digits, train_test_split(test_size=0.2, random_state=0, stratify=y)"


def default_data_dir() -> Path:
    """GENSERVE_DATA_DIR if set, else ../shared/data beside the repository."""
    env = os.environ.get("GENSERVE_DATA_DIR")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


def environment() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "sklearn": sklearn.__version__,
    }


def sentiment_card(config: dict[str, Any]) -> str:
    m, t = config["metrics"], config["training"]
    return f"""# sentiment — {config["kind"]}

Binary sentiment of one English sentence: `negative` or `positive`.

- **Model**: TF-IDF features (word 1-2-grams and char_wb 2-5-grams seen at least twice,
  sublinear tf) feeding a scikit-learn logistic regression (C = {t["params"]["C"]}). Stored as
  `model.skops`; loading refuses any type outside `models.artifacts.TRUSTED_SKOPS_TYPES`.
- **Data**: UCI "Sentiment Labelled Sentences" (Kotzias et al., KDD 2015, CC BY 4.0): 3 x 1,000
  sentences from Amazon reviews, IMDb and Yelp.
- **Split**: {t["split"]}.
- **Test accuracy**: **{m["test_accuracy"]:.4f}** on {m["test_examples"]} test sentences.
- **Tuning**: C and the n-gram ranges were chosen by 5-fold cross-validation on the training
  split only (about 0.84 CV accuracy); the test split was used once, for the figure above.
- **Limits**: short review sentences only; sarcasm, negation across clauses and domains far from
  product/film/restaurant reviews are weak spots.

Reproduce (seed {t["seed"]}, {t["seconds"]} s to fit):

```
{COMMAND.format(seed=t["seed"])}
python bench/classification_quality.py
```
"""


def digits_card(config: dict[str, Any]) -> str:
    m, t, a = config["metrics"], config["training"], config["model_args"]
    p = t["params"]
    return f"""# digits — {config["kind"]}

Handwritten digit `0`-`9` from an 8x8 grayscale image, values in [0, 1], ink = 1 on a 0
background (like MNIST).

- **Model**: `ImageCNN` ({len(a["channels"])} stages of two 3x3 convs + 2x2 max-pool, widths
  {list(a["channels"])}, then a {a["hidden"]}-wide linear layer, dropout {a["dropout"]}).
  Weights in `weights.safetensors`, rebuilt from `model_args` in `config.json`.
- **Data**: scikit-learn's `load_digits()` (1,797 images, UCI optical digits), pixel values
  0-16 scaled to [0, 1].
- **Split**: {t["split"]}.
- **Training**: AdamW (lr {p["lr"]}, weight decay {p["weight_decay"]}, batch {p["batch_size"]}),
  {p["epochs"]} epochs with cosine decay, seed {t["seed"]}, {t["seconds"]} s on {t["device"]}.
- **Test accuracy**: **{m["test_accuracy"]:.4f}** on {m["test_examples"]} test images.
- **Tuning**: epochs, lr, weight decay, dropout and shift augmentation were compared by 5-fold
  cross-validation on the training split only (about 0.990 CV accuracy); the test split was
  used once, for the figure above.
- **Limits**: 8x8 inputs only; larger images must be downscaled the same way (centred digit,
  bright ink on dark background).

Reproduce:

```
{COMMAND.format(seed=t["seed"])}
python bench/classification_quality.py
```
"""


def build_sentiment(data_dir: Path, out: Path, seed: int) -> float:
    pipeline, metrics = train_sentiment(data_dir, seed=seed, kind="classify-logreg")
    config = {
        "name": "sentiment",
        "description": "Sentiment of an English review sentence: negative or positive.",
        "kind": "classify-logreg",
        "task": "classification",
        "input": "text",
        "labels": SENTIMENT_LABELS,
        "image_size": None,
        "metrics": {k: metrics[k] for k in ("test_accuracy", "test_examples")},
        "training": {
            "seed": seed,
            "dataset": "uci-sentiment-labelled-sentences",
            "split": SENTIMENT_SPLIT,
            "params": metrics["params"],
            "seconds": metrics["train_seconds"],
            "environment": environment(),
        },
    }
    save_artifact(out / "sentiment", config, estimator=pipeline, card=sentiment_card(config))
    return metrics["test_accuracy"]


def build_digits(out: Path, seed: int, device: str) -> float:
    model, model_config, metrics = train_digits(seed=seed, device=device)
    config = {
        "name": "digits",
        "description": "Handwritten digit 0-9 in an 8x8 grayscale image (ink bright on dark).",
        "kind": "classify-cnn",
        "task": "classification",
        "input": "image",
        "labels": DIGIT_LABELS,
        "image_size": list(model_config.image_size),
        "model_args": asdict(model_config),
        "metrics": {k: metrics[k] for k in ("test_accuracy", "test_examples")},
        "training": {
            "seed": seed,
            "dataset": "sklearn-digits",
            "split": DIGITS_SPLIT,
            "params": metrics["params"],
            "seconds": metrics["train_seconds"],
            "device": device,
            "environment": environment(),
        },
    }
    save_artifact(out / "digits", config, module=model.cpu(), card=digits_card(config))
    return metrics["test_accuracy"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    sentiment = build_sentiment(args.data_dir, args.out, args.seed)
    print(f"sentiment (classify-logreg) test accuracy: {sentiment:.4f} -> {args.out / 'sentiment'}")
    digits = build_digits(args.out, args.seed, args.device)
    print(f"digits    (classify-cnn)    test accuracy: {digits:.4f} -> {args.out / 'digits'}")


if __name__ == "__main__":
    main()
