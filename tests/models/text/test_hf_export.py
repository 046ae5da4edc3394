"""An artifact's tokenizer, exported for Hugging Face clients, gives genserve's own ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.text.hf_export import export_artifact_tokenizer, save_hf_tokenizer
from models.text.tokenizer import BPETokenizer, Tokenizer, load_tokenizer
from tests.conftest import DATA_DIR
from tests.tiny_models import make_tiny_gpt

TEXT = "ROMEO:\nBut soft! what light through yonder window breaks?\n  It is the east, & 3$."


def hf_tokenizer(directory: Path):  # type: ignore[no-untyped-def]
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(directory))


def check_same(ours: Tokenizer, directory: Path, text: str) -> None:
    theirs = hf_tokenizer(directory)
    ids = ours.encode(text)
    assert theirs(text, add_special_tokens=False).input_ids == ids
    assert theirs.decode(ids) == text
    assert len(theirs) == ours.vocab_size  # no token added that the model does not have


def test_character_tokenizer_exports_one_token_per_character(tmp_path: Path) -> None:
    artifact = make_tiny_gpt(tmp_path / "artifacts")
    out = export_artifact_tokenizer(artifact, tmp_path / "hf")
    assert hf_tokenizer(out).model_max_length == 32  # the model's block size
    ours = load_tokenizer(json.loads((artifact / "config.json").read_text())["tokenizer"])
    check_same(ours, out, TEXT)


def test_bpe_tokenizer_exports_as_is(tmp_path: Path) -> None:
    text = (DATA_DIR / "tinyshakespeare.txt").read_text()[:50_000]
    ours = BPETokenizer.train(text, vocab_size=300)
    out = save_hf_tokenizer(ours.to_config(), tmp_path / "hf")
    check_same(ours, out, TEXT + " naïve café, 日本")


def test_refuses_what_is_not_a_text_artifact(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown tokenizer type"):
        save_hf_tokenizer({"type": "sentencepiece"}, tmp_path)
    from app.settings import PRETRAINED_DIR

    with pytest.raises(ValueError, match="not a text model"):
        export_artifact_tokenizer(PRETRAINED_DIR / "sentiment", tmp_path)
