"""Quality of the committed MNIST image generators, judged by an independent digit classifier.

    python bench/image_quality.py [--data-dir ../shared/data] [--pretrained models/pretrained]
        [--retrain-evaluator] [--model mnist-diffusion ...]

The evaluator is a small CNN (models.classifiers.ImageCNN) trained ONLY on the held-out images
8,000-9,999, with random 2-pixel shifts; the generators trained on images 0-7,999, so neither
ever saw the other's data, and no discriminator is involved. Its weights are committed
(bench/evaluator/mnist-evaluator), so every card is measured on one scale; `--retrain-evaluator`
trains it again (and changes that scale: measure every model again after it).

For every models/pretrained/mnist-* artifact, loaded exactly as the service loads it:
- class accuracy (conditional models): 10 classes x 100 samples, the fraction the evaluator
  labels as the asked-for class (target >= 0.90; >= 0.98 for diffusion);
- Fréchet distance between 1,000 samples and the 2,000 held-out images in the evaluator's
  128-d penultimate-layer features, next to its floor: 1,000 real training images vs the same
  held-out images (what a perfect generator would score), and two held-out halves;
- negative ELBO in nats/image on the held-out images (VAEs).
z is drawn from N(0, I) with a fixed seed, temperature 1. A diffusion model (noise: x_T, a full
image) is sampled with its default DDIM steps, at its default guidance and again at guidance 0
(the unconditional model: class mix instead of class accuracy). The figures are written into each
model card (README.md, which the artifact digest does not cover; config.json is left alone).
"""

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # run as a plain script from anywhere

from models.artifacts import (  # noqa: E402
    CARD_FILE,
    load_artifact,
    save_artifact,
)
from models.classify.cnn import ImageCNN  # noqa: E402
from models.data.builtin import DIGIT_LABELS  # noqa: E402
from models.data.idx import load_mnist  # noqa: E402
from models.image.vae import held_out_negative_elbo  # noqa: E402
from models.kinds import CNNParams  # noqa: E402
from models.training.cnn import fit_image_cnn  # noqa: E402

EVALUATOR_PARAMS = {"seed": 0, "epochs": 30, "batch_size": 64, "lr": 3e-3, "shift": 2}
SECTION = "## Measured by bench/image_quality.py"
SAMPLES_PER_CLASS = 100
NUM_SAMPLES = 1000
SEED = 0
EVALUATOR_DIR = REPO_ROOT / "bench" / "evaluator" / "mnist-evaluator"


def evaluator(
    x_held: np.ndarray,
    y_held: np.ndarray,
    x_train: np.ndarray,
    y_train: np.ndarray,
    cache: Path,
    retrain: bool = False,
) -> tuple[ImageCNN, float]:
    """The independent classifier (trained on held-out images only) and its accuracy on the
    8,000 real training images, loaded from `cache` when it was trained with the same params."""
    if not retrain and (cache / "config.json").is_file():
        config = json.loads((cache / "config.json").read_text())
        if config["training"]["params"] == EVALUATOR_PARAMS:
            clf = load_artifact(cache)
            return clf.module.eval(), config["metrics"]["train_images_accuracy"]
    t0 = time.perf_counter()
    model, _, metrics = fit_image_cnn(
        x_held, y_held, x_train, y_train, CNNParams(**EVALUATOR_PARAMS)
    )
    accuracy = metrics["test_accuracy"]
    print(f"evaluator trained in {time.perf_counter() - t0:.0f} s", flush=True)
    config = {
        "name": "mnist-evaluator",
        "kind": "classify-cnn",
        "task": "classification",
        "input": "image",
        "labels": DIGIT_LABELS,
        "image_size": [28, 28],
        "description": "Independent MNIST digit classifier for bench/image_quality.py.",
        "metrics": {"train_images_accuracy": accuracy},
        "training": {"data": "MNIST t10k images 8,000-9,999 only", "params": EVALUATOR_PARAMS},
    }
    card = (
        "# mnist-evaluator\n\nThe independent judge of bench/image_quality.py: trained on the "
        "held-out MNIST images 8,000-9,999 only, never on what the generators saw.\n"
    )
    save_artifact(cache, config, module=model, card=card)
    return model.eval(), accuracy


@torch.no_grad()
def features(model: ImageCNN, images: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(penultimate-layer features (N, hidden), predicted class (N,)) for (N, 28, 28) images."""
    x = torch.as_tensor(np.asarray(images, dtype=np.float32)).unsqueeze(1)  # (N, 1, H, W)
    feats, preds = [], []
    for i in range(0, len(x), 500):
        h = x[i : i + 500]
        for stage in model.stages:
            h = stage(h)
        h = F.relu(model.fc(h.flatten(1)))  # (B, hidden): the layer before the logits
        feats.append(h.double().numpy())
        preds.append(model.head(h).argmax(-1).numpy())
    return np.concatenate(feats), np.concatenate(preds)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2) between Gaussians fitted to a and b."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # Tr (S_a S_b)^1/2 = Tr (S_a^1/2 S_b S_a^1/2)^1/2, a symmetric PSD matrix: use eigh
    w, v = np.linalg.eigh(s_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ s_b @ root_a), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * cross)


def save_grid(images: np.ndarray, path: Path, rows: int = 10, cols: int = 10) -> None:
    """A rows x cols mosaic of the first images, for eyeballing (var/eval/<name>-samples.png)."""
    from PIL import Image

    h, w = images.shape[1:]
    grid = np.zeros((rows * h, cols * w), dtype=np.float32)
    for i in range(min(len(images), rows * cols)):
        r, c = divmod(i, cols)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = images[i]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((grid * 255).round().astype(np.uint8)).save(path)


def write_card_section(path: Path, lines: list[str]) -> None:
    """Replace (or append) the measured section of README.md, atomically; config.json untouched."""
    card_path = path / CARD_FILE
    card = card_path.read_text(encoding="utf-8") if card_path.is_file() else ""
    section = SECTION + "\n\n" + "\n".join(lines) + "\n"
    pattern = re.compile(re.escape(SECTION) + r".*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(card):
        card = pattern.sub(lambda _: section + "\n", card).rstrip() + "\n"
    else:
        card = card.rstrip() + "\n\n" + section
    tmp = card_path.with_suffix(".md.tmp")
    tmp.write_text(card, encoding="utf-8")
    tmp.chmod(0o644)
    tmp.replace(card_path)


def measure(
    path: Path,
    gen: Any,  # an ImageGenerator
    setting: str,
    options: dict,
    model: ImageCNN,
    held_feats: np.ndarray,
    floor: float,
    halves: float,
    args: argparse.Namespace,
) -> list[str]:
    """Samples one setting of one generator; prints its figures, returns the card's lines."""
    z = gen.noise.sample(NUM_SAMPLES, torch.Generator().manual_seed(SEED))
    labels = None
    if gen.num_classes:
        labels = torch.arange(gen.num_classes).repeat_interleave(SAMPLES_PER_CLASS)
        z = z[: len(labels)]
    conditional = gen.num_classes and options.get("guidance", 1) != 0
    t1 = time.perf_counter()
    images = gen.generate(z, labels, **options).numpy()  # (N, 28, 28) in [0, 1]
    gen_seconds = time.perf_counter() - t1
    tag = f"-{setting.replace(' ', '')}" if setting else ""
    grid_path = args.eval_dir / f"{path.name}{tag}-samples.png"
    save_grid(images[:: max(1, len(images) // 100)], grid_path)
    feats, preds = features(model, images)
    fd = frechet_distance(feats, held_feats)
    target = 0.98 if gen.__class__.__name__ == "DiffusionImageGenerator" else 0.90
    head = f"{setting}: " if setting else ""
    lines = []
    print(
        f"{path.name}{' ' + setting if setting else ''} ({gen.__class__.__name__}, "
        f"{len(images)} samples in {gen_seconds:.2f} s)"
    )
    if conditional:
        asked = labels.numpy()
        accuracy = float((preds == asked).mean())
        per_class = [float((preds[asked == c] == c).mean()) for c in range(gen.num_classes)]
        status = "meets" if accuracy >= target else "BELOW"
        print(
            f"  class accuracy {accuracy:.3f} ({status} target {target:.2f}); per class "
            + " ".join(f"{c}:{a:.2f}" for c, a in enumerate(per_class))
        )
        lines.append(
            f"- {head}**Class accuracy**: **{accuracy:.3f}** of {len(images)} samples "
            f"({SAMPLES_PER_CLASS} per class) labelled as the asked-for class "
            f"(per class: {', '.join(f'{a:.2f}' for a in per_class)})."
        )
    else:
        counts = np.bincount(preds, minlength=10) / len(preds)
        print("  predicted class mix " + " ".join(f"{c}:{p:.2f}" for c, p in enumerate(counts)))
        lines.append(
            f"- {head}**Class mix** (evaluator's labels of the samples): "
            + ", ".join(f"{c}: {p:.2f}" for c, p in enumerate(counts))
            + "."
        )
    print(f"  Fréchet distance {fd:.2f} (floor {floor:.2f}, held-out halves {halves:.2f})")
    lines.append(
        f"- {head}**Fréchet distance** (evaluator's penultimate features, 1,000 samples "
        f"vs the 2,000 held-out images): **{fd:.2f}**; floor, 1,000 real training "
        f"images vs the same: {floor:.2f}; two held-out halves: {halves:.2f}."
    )
    return lines


def main() -> None:
    default_data = os.environ.get("GENSERVE_DATA_DIR", REPO_ROOT.parent / "shared" / "data")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path(default_data))
    parser.add_argument("--pretrained", type=Path, default=REPO_ROOT / "models" / "pretrained")
    parser.add_argument("--eval-dir", type=Path, default=REPO_ROOT / "var" / "eval")  # grids
    parser.add_argument("--evaluator", type=Path, default=EVALUATOR_DIR)
    parser.add_argument("--retrain-evaluator", action="store_true")
    parser.add_argument("--no-cards", action="store_true", help="print only, leave cards alone")
    parser.add_argument("--model", nargs="+", help="only these artifacts (default: every mnist-*)")
    args = parser.parse_args()

    t0 = time.perf_counter()
    torch.manual_seed(SEED)
    x_train, y_train, x_held, y_held = load_mnist(args.data_dir)
    model, eval_acc = evaluator(
        x_held, y_held, x_train, y_train, args.evaluator, args.retrain_evaluator
    )
    print(
        f"evaluator: ImageCNN trained on held-out images 8,000-9,999 only; "
        f"accuracy on the 8,000 real training images {eval_acc:.4f}"
    )
    held_feats, _ = features(model, x_held)
    rng = np.random.default_rng(SEED)
    real = x_train[rng.choice(len(x_train), NUM_SAMPLES, replace=False)]
    real_feats, _ = features(model, real)
    floor = frechet_distance(real_feats, held_feats)
    halves = frechet_distance(held_feats[:1000], held_feats[1000:])
    print(
        f"Fréchet floor: 1,000 real training images vs held-out {floor:.2f}; "
        f"held-out halves {halves:.2f}\n"
    )

    for path in sorted(args.pretrained.glob("mnist-*")):
        if not (path / "config.json").is_file() or (args.model and path.name not in args.model):
            continue
        gen = load_artifact(path)
        # a diffusion model is measured at its default guidance and, unguided, at guidance 0
        diffusion = gen.__class__.__name__ == "DiffusionImageGenerator"
        lines = [
            f"Run {time.strftime('%Y-%m-%d')}; `python bench/image_quality.py`. Evaluator: "
            f"a small CNN trained only on the held-out images 8,000-9,999 (random 2-pixel "
            f"shifts), {eval_acc:.4f} accuracy on the 8,000 real training images; "
            f"{'x_T (1x28x28)' if diffusion else 'z'} ~ N(0, I) with seed {SEED}, temperature 1.",
            "",
        ]
        settings: list[tuple[str, dict]] = [("", {})]
        if diffusion:
            lines[0] += f" DDIM, {gen.steps} steps."
            if gen.num_classes:
                settings = [(f"guidance {gen.guidance:g}", {}), ("guidance 0", {"guidance": 0.0})]
        for setting, options in settings:
            lines += measure(path, gen, setting, options, model, held_feats, floor, halves, args)
        if gen.__class__.__name__ == "VAEImageGenerator":
            nelbo = held_out_negative_elbo(gen.model, x_held, y_held, gen.device)
            print(f"  negative ELBO {nelbo:.2f} nats/image on the held-out images")
            lines.append(
                f"- **Negative ELBO**: **{nelbo:.2f} nats/image** on the 2,000 held-out "
                "images (10 draws of z per image)."
            )
        if not args.no_cards:
            write_card_section(path, lines)
    print(f"\n({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
