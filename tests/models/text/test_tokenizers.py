"""The tokenizer family: byte-level BPE encodes any UTF-8 text, round-trips it, is stored as
JSON in the artifact, and every text kind trains on it and generates from prompts holding
characters its corpus never had."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from app.worker.continuous_batching import GenerationEngine
from models.artifacts import CONFIG_FILE, artifact_digest, load_artifact, save_artifact
from models.data import TextCorpus, split
from models.kinds import KINDS
from models.text.tokenizer import BPETokenizer, CharTokenizer, UnknownCharacters, load_tokenizer
from models.training.hooks import TrainHooks
from models.training.result import card

CORPUS = (
    "Café au lait, s’il vous plaît — “naïve” crème brûlée.\n"  # noqa: RUF001 - curly quotes
    "Straße, ﬁnancé, 東京 and a smile 😀 at the end of the line.\n"
) * 60
UNSEEN = "Ωmega ☃ snowman, ñandú 🐍 — «quoted»"


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.train(CORPUS, vocab_size=300)


def test_bpe_round_trips_text_it_never_saw(bpe: BPETokenizer) -> None:
    assert bpe.vocab_size == 300
    for text in (CORPUS[:200], UNSEEN, "", "\n\n", "\x00\x7f"):
        ids = bpe.encode(text)
        assert bpe.decode(ids) == text
        assert b"".join(bpe.token_bytes[i] for i in ids) == text.encode("utf-8")
    assert bpe.unknown(UNSEEN) == []
    assert len(bpe.encode(CORPUS)) < 0.6 * len(CORPUS.encode())  # merges learnt from it


def test_bpe_is_stored_as_the_library_json(bpe: BPETokenizer) -> None:
    config = json.loads(json.dumps(bpe.to_config()))  # what config.json holds
    assert config["type"] == "bpe" and json.loads(config["json"])["model"]["type"] == "BPE"
    again = load_tokenizer(config)
    assert again.encode(UNSEEN) == bpe.encode(UNSEEN)
    assert isinstance(load_tokenizer({"chars": ["a", "b"]}), CharTokenizer)  # committed form


def test_char_tokenizer_still_refuses_unknown_characters() -> None:
    tok = CharTokenizer.from_text("abc\n")
    with pytest.raises(UnknownCharacters):
        tok.encode("abz")
    assert tok.start_id == tok.stoi["\n"]


TINY_BPE = {
    "text-gpt": {"n_layer": 1, "n_head": 2, "n_embd": 16, "batch_size": 4},
    "text-gru": {"hidden": 16, "n_embd": 8},
    "text-ngram": {"order": 3},
}


@pytest.mark.parametrize("kind", sorted(TINY_BPE))
def test_every_text_kind_trains_on_bpe_and_serves_unseen_characters(
    tmp_path: Path, kind: str
) -> None:
    train, test = split(TextCorpus(CORPUS), 0.2, 0)
    params = {"tokenizer": "bpe", "vocab_size": 300, **TINY_BPE[kind]}
    if kind != "text-ngram":
        params.update(max_steps=4, eval_every=2, block_size=16)
    p = KINDS[kind].params(**params)
    result = KINDS[kind].trainer()(kind, train, test, p, TrainHooks(), torch.device("cpu"))
    metrics = result.metrics
    # nats per character puts BPE and char models on one scale
    assert metrics["val_nats_per_char"] < metrics["val_loss"]
    assert metrics["val_tokens"] < metrics["val_chars"]
    config = {**result.config, "name": f"bpe-{kind}"}
    sha256, _ = save_artifact(
        tmp_path / "a", config, module=result.module, card=card("b", config, "d", {})
    )
    assert json.loads((tmp_path / "a" / CONFIG_FILE).read_text())["tokenizer"]["type"] == "bpe"
    assert artifact_digest(tmp_path / "a")[0] == sha256  # the tokenizer is in the digest

    lm = load_artifact(tmp_path / "a", expected_sha256=sha256, task="text-generation")
    engine = GenerationEngine(lm, max_running=2)
    engine.add(1, UNSEEN, {"max_new_tokens": 12, "seed": 1}, 2)
    texts: dict[int, str] = {}
    while engine.has_work():
        for event in engine.step():
            texts[event.index] = texts.get(event.index, "") + event.text
    assert set(texts) == {0, 1} and all(isinstance(t, str) for t in texts.values())
    for text in texts.values():
        text.encode("utf-8")  # whole characters only, even when split across tokens
