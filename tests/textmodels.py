"""A tiny, untrained GPT artifact with the Shakespeare vocabulary, for fast serving tests.

Its text is noise, but everything the API promises about generation (seeds, stop strings,
streaming, batching, cancellation, vocabulary checks) can be tested on it in seconds.
"""

from __future__ import annotations

from pathlib import Path

import torch

from models.artifacts import save_artifact
from models.data import load_shakespeare
from models.gpt import GPT, GPTConfig
from models.tokenizer import CharTokenizer
from tests.conftest import DATA_DIR


def make_tiny_gpt(path: Path, name: str = "tiny-gpt") -> Path:
    train, val = load_shakespeare(DATA_DIR)
    tok = CharTokenizer.from_text(train + val)
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


def pretrained_with_tiny_gpt(tmp: Path) -> Path:
    """A pretrained dir holding the committed defaults (linked) plus tiny-gpt."""
    from app.settings import PRETRAINED_DIR

    tmp.mkdir(parents=True, exist_ok=True)
    for artifact in PRETRAINED_DIR.iterdir():
        if artifact.is_dir():
            (tmp / artifact.name).symlink_to(artifact)
    make_tiny_gpt(tmp)
    return tmp
