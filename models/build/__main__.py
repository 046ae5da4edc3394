"""Retrain committed default models: `python -m models.build NAME [NAME ...] [options]`.

    python -m models.build sentiment digits          # the two classifiers (seconds)
    python -m models.build shakespeare-gpt --max-seconds 4200
    python -m models.build shakespeare-lstm --threads 1
    python -m models.build mnist-cgan --epochs 30 --fresh

Training checkpoints under --work (default var/train/<name>) and resumes from there.
"""

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch

from models.build import DEFAULT_DATA, DEFAULT_OUT, classifiers, images, text, text_rnn

RECIPES: dict[str, Callable[[str, argparse.Namespace, torch.device], object]] = {
    "sentiment": classifiers.build_sentiment,
    "digits": classifiers.build_digits,
    "shakespeare-gpt": text.build_gpt,
    "shakespeare-bpe-gpt": text.build_bpe_gpt,
    "shakespeare-lstm": text_rnn.build_rnn,
    "shakespeare-gru": text_rnn.build_rnn,
    "shakespeare-ngram": text_rnn.build_ngram,
    **dict.fromkeys(images.RECIPES, images.build),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", choices=sorted(RECIPES), metavar="NAME")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--work", type=Path, default=None, help="checkpoints (var/train/<name>)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--seed", type=int, default=None, help="override the recipe's seed")
    parser.add_argument("--max-seconds", type=float, default=None, help="training time limit")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    parser.add_argument("--max-steps", type=int, default=None, help="override the LM's steps")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--order", type=int, default=7, help="n-gram order")
    parser.add_argument("--fresh", action="store_true", help="ignore and delete checkpoints")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(auto if args.device == "auto" else args.device)
    for name in args.models:
        t0 = time.perf_counter()
        RECIPES[name](name, args, device)
        print(f"{name}: done in {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
