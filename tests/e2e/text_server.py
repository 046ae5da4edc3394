"""A real genserve serving text models behind an API key, for tests that drive it with
third-party OpenAI clients (lm-evaluation-harness, LangChain)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from models.artifacts import CONFIG_FILE, save_artifact
from models.data.builtin import load_shakespeare
from models.text.gpt import GPT, GPTConfig
from models.text.tokenizer import BPETokenizer, Tokenizer, load_tokenizer
from tests.conftest import DATA_DIR
from tests.e2e.server import Server
from tests.tiny_models import small_pretrained

API_KEY = "tools-read-key"  # a read-scoped key: all that generation and scoring need
AUTH = {"Authorization": f"Bearer {API_KEY}"}
CHAR_MODEL = "shakespeare-gpt"  # the committed default: trained, character tokens
BPE_MODEL = "tiny-bpe-gpt"  # untrained, byte-level BPE: tokens that span several characters


def make_tiny_bpe_gpt(path: Path, name: str = BPE_MODEL) -> Path:
    """An untrained GPT with a byte-level BPE tokenizer learnt from a slice of Shakespeare.

    Its logprobs are noise, but its tokens are not characters, so a client that tokenizes on
    its own side (as lm-eval does) is only right if its ids are exactly genserve's."""
    train, _ = load_shakespeare(DATA_DIR)
    tok = BPETokenizer.train(train[:100_000], vocab_size=512)
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=tok.vocab_size, block_size=128, n_layer=2, n_head=2, n_embd=32)
    meta = {
        "name": name,
        "kind": "text-gpt",
        "task": "text-generation",
        "tokenizer": tok.to_config(),
        "metrics": {},
    }
    save_artifact(path / name, meta, module=GPT(config), card=f"# {name}\n\nUntrained.\n")
    return path / name


def start_text_server(tmp: Path) -> Server:
    """genserve with the committed Shakespeare GPT and a tiny BPE GPT, keys required."""
    pretrained = small_pretrained(tmp / "pretrained", names=(CHAR_MODEL,), generators=False)
    make_tiny_bpe_gpt(pretrained)
    return Server(
        tmp,
        GENSERVE_PRETRAINED_DIR=str(pretrained),
        GENSERVE_DEFAULT_TEXT_MODEL=CHAR_MODEL,
        GENSERVE_API_KEYS=f"{API_KEY}:read",
    ).ready()


def artifact_dir(server: Server, model: str) -> Path:
    return server.state_dir / "pretrained" / model


def artifact_tokenizer(server: Server, model: str) -> tuple[Tokenizer, int]:
    """The model's own tokenizer and block size, read from its artifact as the server does."""
    meta = json.loads((artifact_dir(server, model) / CONFIG_FILE).read_text())
    return load_tokenizer(meta["tokenizer"]), meta["model_args"]["block_size"]
