"""Tiny, untrained artifacts (a GPT with the Shakespeare vocabulary, conditional and
unconditional VAEs for 28x28 images) for fast serving tests.

Their outputs are noise, but everything the API promises about generation (seeds, stop
strings, streaming, batching, cancellation, labels, PNGs) can be tested on them in seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from app.settings import Settings
from models.artifacts import save_artifact
from models.data.builtin import load_shakespeare
from models.image.vae import VAE, VAEConfig
from models.text.gpt import GPT, GPTConfig
from models.text.tokenizer import BPETokenizer, CharTokenizer
from tests.conftest import DATA_DIR, make_settings


def tiny_settings(tmp: Path, **overrides: Any) -> Settings:
    """Settings serving the committed defaults plus the tiny models (tiny-gpt and tiny-cvae
    the defaults), with no job runners: what the in-process API tests start."""
    values: dict[str, Any] = {
        "pretrained_dir": pretrained_with_tiny_models(tmp / "pretrained"),
        "default_text_model": "tiny-gpt",
        "default_image_model": "tiny-cvae",
        "runner_slots": 0,
    }
    return make_settings(tmp, **(values | overrides))


def make_tiny_gpt(path: Path, name: str = "tiny-gpt", bpe: bool = False) -> Path:
    """`bpe`: over byte-level BPE tokens learnt from a slice of the corpus (any UTF-8 text)."""
    train, val = load_shakespeare(DATA_DIR)
    tok = BPETokenizer.train(train[:100_000], 320) if bpe else CharTokenizer.from_text(train + val)
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=32)
    model = GPT(config)
    meta = {
        "name": name,
        "kind": "text-gpt",
        "task": "text-generation",
        "tokenizer": tok.to_config(),
        "metrics": {},
    }
    save_artifact(path / name, meta, module=model, card=f"# {name}\n\nUntrained, for tests.\n")
    return path / name


def make_tiny_vae(path: Path, name: str, num_classes: int) -> Path:
    torch.manual_seed(0)
    config = VAEConfig(latent_dim=8, channels=(8, 16), hidden=32, num_classes=num_classes)
    meta = {
        "name": name,
        "kind": "image-vae",
        "task": "image-generation",
        "image_size": [28, 28],
        "num_classes": num_classes,
        "latent_dim": 8,
        "metrics": {},
    }
    save_artifact(path / name, meta, module=VAE(config), card=f"# {name}\n\nUntrained.\n")
    return path / name


def pretrained_with_tiny_models(tmp: Path) -> Path:
    """A pretrained dir holding the committed defaults (linked) plus the tiny models."""
    from app.settings import PRETRAINED_DIR

    tmp.mkdir(parents=True, exist_ok=True)
    for artifact in PRETRAINED_DIR.iterdir():
        if artifact.is_dir():
            (tmp / artifact.name).symlink_to(artifact)
    make_tiny_gpt(tmp)
    make_tiny_gpt(tmp, "tiny-bpe-gpt", bpe=True)
    make_tiny_vae(tmp, "tiny-cvae", num_classes=10)
    make_tiny_vae(tmp, "tiny-vae", num_classes=0)
    return tmp


# /train params for a GPT small enough to train in seconds on one CPU thread
TINY_GPT_PARAMS = {
    "n_layer": 1,
    "n_head": 2,
    "n_embd": 32,
    "block_size": 32,
    "batch_size": 8,
    "eval_batches": 2,
}


def small_pretrained(
    path: Path, names: tuple[str, ...] = ("sentiment", "digits"), generators: bool = True
) -> Path:
    """A pretrained dir that loads in seconds: committed defaults `names` (linked), plus an
    untrained tiny GPT and conditional VAE when `generators`."""
    from app.settings import PRETRAINED_DIR

    path.mkdir(parents=True, exist_ok=True)
    for name in names:
        (path / name).symlink_to(PRETRAINED_DIR / name)
    if generators:
        make_tiny_gpt(path)
        make_tiny_vae(path, "tiny-cvae", num_classes=10)
    return path
