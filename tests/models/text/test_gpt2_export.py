"""A text-gpt artifact converted to Hugging Face GPT-2 gives the same logits in transformers'
GPT2LMHeadModel as in genserve: the check that peers (vLLM) serve the same model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.artifacts import load_artifact
from models.text.hf_export import export_gpt2
from tests.tiny_models import make_tiny_gpt

transformers = pytest.importorskip("transformers")
PRETRAINED = Path(__file__).resolve().parents[3] / "models" / "pretrained"


@pytest.mark.parametrize("source", ["tiny-bpe-gpt", "shakespeare-gpt"])
def test_converted_logits_match(tmp_path: Path, source: str) -> None:
    if source == "shakespeare-gpt":
        artifact = PRETRAINED / source
    else:
        artifact = make_tiny_gpt(tmp_path / "artifacts", source, bpe=True)
    out = export_gpt2(artifact, tmp_path / "gpt2")
    ours = load_artifact(artifact, task="text-generation").model.eval()
    theirs = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    ids = torch.randint(0, ours.config.vocab_size, (2, ours.config.block_size))
    with torch.no_grad():
        expected, _ = ours(ids)
        got = theirs(ids).logits
    assert (got - expected).abs().max().item() < 1e-4
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    lm = load_artifact(artifact, task="text-generation")
    text = "ROMEO:\nBut soft, what light"
    assert tokenizer(text)["input_ids"] == lm.tokenizer.encode(text)
