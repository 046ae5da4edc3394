"""Fine-tuning as a library: every kind that can be fine-tuned, given a parent artifact in
TrainHooks.parent, starts from the parent's weights (read back by the artifact loader), not
from a fresh initialisation; a language model also keeps the parent's tokenizer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.artifacts import read_artifact, save_artifact
from models.data import ImageSet, TextCorpus, split
from models.kinds import KINDS, FineTunable
from models.training.hooks import TrainHooks

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 40).strip()
OTHER_TEXT = ("hear me speak, First Citizen:\nBefore we proceed any further.\n" * 40).strip()
TINY = {
    "text-gpt": {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16, "batch_size": 4},
    "text-lstm": {"hidden": 16, "n_embd": 8, "block_size": 16},
    "classify-cnn": {"hidden": 8, "epochs": 1},
    "image-vae": {"latent_dim": 4, "hidden": 16, "epochs": 1, "conditional": True},
    "image-diffusion": {"channels": 8, "batch_size": 16, "epochs": 1, "attention": False},
}
STEPS = {"max_steps": 2, "eval_every": 1}


def data(kind: str, which: int) -> tuple[object, object]:
    if KINDS[kind].data == "text":
        return split(TextCorpus(TEXT if which == 0 else OTHER_TEXT), 0.2, 0)
    images = np.random.default_rng(which).random((48, 8, 8), dtype=np.float32)
    return split(ImageSet(images, np.arange(48, dtype=np.int64) % 4, list("abcd")), 0.25, 0)


def fit(kind: str, which: int, hooks: TrainHooks, **params: object) -> object:
    extra = STEPS if KINDS[kind].data == "text" else {}
    p = KINDS[kind].params(**{**TINY[kind], **extra, **params})
    train, test = data(kind, which)
    return KINDS[kind].trainer()(kind, train, test, p, hooks, torch.device("cpu"))


def test_the_fine_tunable_kinds() -> None:
    tunable = {name for name, k in KINDS.items() if issubclass(k.params, FineTunable)}
    assert tunable == {*TINY, "text-gru"}
    for name in set(KINDS) - tunable:  # each says why not
        assert KINDS[name].params.not_fine_tunable


@pytest.mark.parametrize("kind", sorted(TINY))
def test_a_fine_tune_starts_from_its_parents_weights(kind: str, tmp_path: Path) -> None:
    parent = fit(kind, 0, TrainHooks(), seed=1)
    config = {**parent.config, "name": "p"}  # type: ignore[attr-defined]
    save_artifact(tmp_path / "parent", config, module=parent.module, card="# p\n")  # type: ignore[attr-defined]
    loaded = read_artifact(tmp_path / "parent")
    # other data, another seed, a learning rate too small to move the weights
    inherited = KINDS[kind].params.inherited(loaded[0])
    child = fit(kind, 1, TrainHooks(parent=loaded), **inherited, lr=1e-9, seed=2)
    fresh = fit(kind, 1, TrainHooks(), **inherited, lr=1e-9, seed=2)
    before = dict(parent.module.named_parameters())  # type: ignore[attr-defined]
    after = dict(child.module.named_parameters())  # type: ignore[attr-defined]
    scratch = dict(fresh.module.named_parameters())  # type: ignore[attr-defined]
    assert after.keys() == before.keys()
    for name, weight in after.items():
        assert torch.allclose(weight, before[name], atol=1e-5), name
    assert any(not torch.allclose(scratch[n], before[n], atol=1e-3) for n in before)
    if "tokenizer" in parent.config:  # type: ignore[attr-defined]
        assert child.config["tokenizer"] == parent.config["tokenizer"]  # type: ignore[attr-defined]


def test_a_text_fine_tune_reads_only_characters_its_parent_knows(tmp_path: Path) -> None:
    parent = fit("text-gpt", 0, TrainHooks())
    config = {**parent.config, "name": "p"}  # type: ignore[attr-defined]
    save_artifact(tmp_path / "p", config, module=parent.module, card="# p\n")  # type: ignore[attr-defined]
    train, test = split(TextCorpus("Zebras? Quickly!\n" * 200), 0.2, 0)
    p = KINDS["text-gpt"].params(**TINY["text-gpt"], **STEPS)
    hooks = TrainHooks(parent=read_artifact(tmp_path / "p"))
    with pytest.raises(ValueError, match="keeps its parent's tokenizer"):
        KINDS["text-gpt"].trainer()("text-gpt", train, test, p, hooks, torch.device("cpu"))
