"""Every trainable kind, end to end as a library: tiny params on tiny data, the artifact
saved and loaded back by the loader the workers use, then used."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.artifacts import load_artifact, save_artifact
from models.data import ImageSet, LabelledTexts, TextCorpus, split
from models.kinds import KINDS
from models.training.hooks import TrainHooks
from models.training.result import card

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 40).strip()
TINY: dict[str, dict] = {
    "text-ngram": {"order": 3},
    "text-lstm": {"max_steps": 6, "eval_every": 3, "hidden": 16, "n_embd": 8, "block_size": 16},
    "text-gru": {"max_steps": 6, "eval_every": 3, "hidden": 16, "n_embd": 8, "block_size": 16},
    "text-gpt": {
        "max_steps": 6,
        "eval_every": 3,
        "n_layer": 1,
        "n_head": 2,
        "n_embd": 16,
        "block_size": 16,
        "batch_size": 4,
    },
    "image-vae": {"epochs": 1, "latent_dim": 4, "hidden": 16, "conditional": True},
    "image-gan": {"epochs": 1, "latent_dim": 4, "channels": 8, "batch_size": 16},
    "image-diffusion": {"epochs": 1, "channels": 8, "batch_size": 16},
    "classify-nb": {"min_df": 1},
    "classify-logreg": {"min_df": 1},
    "classify-mlp": {"min_df": 1, "max_iter": 5},
    "classify-rnn": {"epochs": 1, "embed": 8, "hidden": 8},
    "classify-cnn": {"epochs": 1, "hidden": 16},
}


def data_for(kind: str) -> tuple[object, object]:
    rng = np.random.default_rng(0)
    if KINDS[kind].data == "text":
        return split(TextCorpus(TEXT), 0.2, 0)
    if KINDS[kind].data == "labelled-text":
        texts = ["good fun great", "great good film", "bad dull awful", "awful bad film"] * 10
        labels = np.array([1, 1, 0, 0] * 10, dtype=np.int64)
        return split(LabelledTexts(texts, labels, ["bad", "good"]), 0.25, 0)
    images = rng.random((64, 8, 8), dtype=np.float32)
    labels = np.arange(64, dtype=np.int64) % 4
    return split(ImageSet(images, labels, ["a", "b", "c", "d"]), 0.25, 0)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_trains_saves_and_serves(kind: str, tmp_path: Path) -> None:
    spec = KINDS[kind]
    train, test = data_for(kind)
    rows: list[dict] = []
    steps: list[int] = []
    hooks = TrainHooks(
        on_step=lambda done, total, loss: steps.append(done),
        on_epoch=rows.append,
        should_stop=lambda: False,
        work_dir=tmp_path / "work",
    )
    params = spec.params(**TINY[kind])
    result = spec.trainer()(kind, train, test, params, hooks, torch.device("cpu"))
    assert steps and rows, "progress and history reach the caller"
    config = {**result.config, "name": f"t-{kind}"}
    sha256, _ = save_artifact(
        tmp_path / "art",
        config,
        module=result.module,
        estimator=result.estimator,
        card=card("t", config, "d", {}),
    )

    if spec.task == "text-generation":
        lm = load_artifact(tmp_path / "art", expected_sha256=sha256)
        assert lm.tokenizer.vocab_size == len(set(TEXT))
        assert np.isfinite(config["metrics"]["val_loss"])
    elif spec.task == "image-generation":
        gen = load_artifact(tmp_path / "art", expected_sha256=sha256)
        labels = torch.tensor([1, 2]) if gen.num_classes else None
        assert gen.generate(gen.noise.sample(2), labels).shape == (2, 8, 8)
    else:
        clf = load_artifact(tmp_path / "art", expected_sha256=sha256)
        sample = test.texts[:3] if clf.input == "text" else test.images[:3]
        proba = clf.predict_proba(sample)
        assert proba.shape == (3, len(clf.labels))
        assert np.allclose(proba.sum(1), 1, atol=1e-5)
        assert 0 <= config["metrics"]["test_accuracy"] <= 1


def test_a_raising_should_stop_aborts_training(tmp_path: Path) -> None:
    class Stop(Exception):
        pass

    def stop() -> bool:
        raise Stop

    train, test = data_for("text-gpt")
    hooks = TrainHooks(should_stop=stop, work_dir=tmp_path)
    with pytest.raises(Stop):
        params = KINDS["text-gpt"].params(**TINY["text-gpt"])
        KINDS["text-gpt"].trainer()("text-gpt", train, test, params, hooks, torch.device("cpu"))
