"""The language models' loop keeps its best evaluation: with `patience` it stops once that
many evaluations in a row have not improved, the weights it returns are the best ones (not
the last), and the metrics, the last history row and the weights agree on one number; a run
restarted after an early stop stays stopped and still returns the best weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.data import TextCorpus, split
from models.kinds import KINDS
from models.training.hooks import TrainHooks
from models.training.lm import TrainConfig, evaluate

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 60).strip()
TINY = {
    "text-gpt": {"n_layer": 1, "n_head": 2, "n_embd": 16},
    "text-lstm": {"hidden": 16, "n_embd": 8},
}
# a learning rate this high makes the loss jump about: some evaluation fails to improve
DIVERGING = {"max_steps": 200, "eval_every": 4, "block_size": 16, "batch_size": 4, "lr": 1.0}


def fit(kind: str, hooks: TrainHooks, **params: object) -> tuple[object, list[dict]]:
    rows: list[dict] = []
    hooks.on_epoch = rows.append
    train, test = split(TextCorpus(TEXT), 0.2, 0)
    p = KINDS[kind].params(**{**TINY[kind], **DIVERGING, **params})
    return KINDS[kind].trainer()(kind, train, test, p, hooks, torch.device("cpu")), rows


@pytest.mark.parametrize("kind", sorted(TINY))
def test_patience_stops_and_the_best_weights_are_kept(kind: str) -> None:
    result, rows = fit(kind, TrainHooks(), patience=2, warmup_steps=0)
    metrics = result.metrics  # type: ignore[attr-defined]
    assert metrics["stopped_reason"] == "early_stopping"
    assert metrics["steps"] == rows[-1]["step"] < 200
    best = min(rows, key=lambda r: r["val_loss"])
    assert metrics["best_step"] == best["step"] == rows[-1]["best_step"]
    assert metrics["val_loss"] == best["val_loss"] == rows[-1]["best_val_loss"]
    assert [r["step"] for r in rows if r["step"] > best["step"]] == [
        rows[-2]["step"],
        rows[-1]["step"],
    ]
    # the weights returned are the best evaluation's: scored again, the same number
    _train, test = split(TextCorpus(TEXT), 0.2, 0)
    tok = {c: i for i, c in enumerate(sorted(set(TEXT)))}
    val = torch.tensor([tok[c] for c in test.text])  # type: ignore[attr-defined]
    cfg = TrainConfig(batch_size=4, block_size=16, eval_batches=10)
    if kind == "text-lstm":
        cfg.eval_window = 256
    module = result.module  # type: ignore[attr-defined]
    assert round(evaluate(module, val, cfg, torch.device("cpu"), 10), 4) == metrics["val_loss"]


def test_without_patience_every_step_runs_and_the_numbers_agree() -> None:
    result, rows = fit("text-gpt", TrainHooks(), max_steps=12, lr=1e-3)
    metrics = result.metrics  # type: ignore[attr-defined]
    assert "stopped_reason" not in metrics and metrics["steps"] == 12
    assert [r["step"] for r in rows] == [4, 8, 12]
    # the registered number is an evaluation of the loop, not a second, different one
    assert metrics["val_loss"] == rows[-1]["best_val_loss"]
    assert metrics["val_loss"] in {r["val_loss"] for r in rows}


def test_a_run_restarted_after_an_early_stop_stays_stopped(tmp_path: Path) -> None:
    work = tmp_path / "checkpoint"
    first, _rows = fit("text-gpt", TrainHooks(work_dir=work), patience=2, warmup_steps=0)
    assert (work / "best" / "checkpoint.json").is_file()
    again, more = fit("text-gpt", TrainHooks(work_dir=work), patience=2, warmup_steps=0)
    assert more == []  # nothing trained or evaluated after the stop
    a, b = first.metrics, again.metrics  # type: ignore[attr-defined]
    assert (b["stopped_reason"], b["best_step"], b["val_loss"]) == (
        "early_stopping",
        a["best_step"],
        a["val_loss"],
    )
    weights = [first.module.state_dict(), again.module.state_dict()]  # type: ignore[attr-defined]
    for k, v in weights[0].items():
        assert torch.equal(v, weights[1][k]), k


CLASSIFIERS = {
    "classify-cnn": {"hidden": 8, "batch_size": 8},
    "classify-rnn": {"embed": 8, "hidden": 8, "batch_size": 8},
}


def classifier_data(kind: str) -> tuple[object, object]:
    from models.data import ImageSet, LabelledTexts

    rng = np.random.default_rng(0)
    if kind == "classify-rnn":
        texts = ["good fun great", "great good film", "bad dull awful", "awful bad film"] * 12
        labels = np.array([1, 1, 0, 0] * 12, dtype=np.int64)
        return split(LabelledTexts(texts, labels, ["bad", "good"]), 0.25, 0)
    images = rng.random((64, 8, 8), dtype=np.float32)  # noise: held-out loss soon rises
    return split(ImageSet(images, np.arange(64, dtype=np.int64) % 4, list("abcd")), 0.25, 0)


@pytest.mark.parametrize("kind", sorted(CLASSIFIERS))
def test_torch_classifiers_stop_on_validation_loss_and_keep_the_best_epoch(
    kind: str, tmp_path: Path
) -> None:
    train, test = classifier_data(kind)
    p = KINDS[kind].params(**CLASSIFIERS[kind], epochs=60, lr=0.05, patience=2)
    rows: list[dict] = []
    hooks = TrainHooks(on_epoch=rows.append, work_dir=tmp_path / "checkpoint")
    result = KINDS[kind].trainer()(kind, train, test, p, hooks, torch.device("cpu"))
    metrics = result.metrics
    assert metrics["stopped_reason"] == "early_stopping" and len(rows) < 60
    best = min(rows, key=lambda r: r["val_loss"])
    assert metrics["best_step"] == best["step"] == rows[-1]["best_step"] < rows[-1]["step"]
    assert metrics["val_loss"] == best["val_loss"] == rows[-1]["best_val_loss"]
    # the test accuracy is the kept epoch's: the returned weights score as that epoch did
    assert metrics["test_accuracy"] == pytest.approx(best["val_accuracy"], abs=1e-4)


GENERATORS = {
    "image-vae": {"latent_dim": 4, "hidden": 16},
    "image-diffusion": {"channels": 8, "batch_size": 16, "blocks": 1, "attention": False},
}


@pytest.mark.parametrize("kind", sorted(GENERATORS))
def test_image_generators_score_every_epoch_held_out_and_keep_the_best(kind: str) -> None:
    from models.data import ImageSet
    from models.image.vae import held_out_negative_elbo
    from models.training.diffusion import held_out_loss

    images = np.random.default_rng(0).random((48, 8, 8), dtype=np.float32)
    train, test = split(ImageSet(images, np.arange(48, dtype=np.int64) % 4, list("abcd")), 0.25)
    p = KINDS[kind].params(**GENERATORS[kind], epochs=60, lr=0.05, patience=2, conditional=False)
    rows: list[dict] = []
    result = KINDS[kind].trainer()(
        kind, train, test, p, TrainHooks(on_epoch=rows.append), torch.device("cpu")
    )
    metrics = result.metrics
    assert metrics["stopped_reason"] == "early_stopping" and len(rows) < 60
    best = min(rows, key=lambda r: r["val_loss"])
    assert metrics["best_step"] == best["step"] == rows[-1]["best_step"] < rows[-1]["step"]
    assert metrics["val_loss"] == best["val_loss"] == rows[-1]["best_val_loss"]
    module = result.module.eval()
    with torch.no_grad():
        if kind == "image-vae":
            again = held_out_negative_elbo(module, test.images, None, torch.device("cpu"))
        else:
            again = held_out_loss(module, test.images, None, torch.device("cpu"))
    assert round(again, 4) == metrics["val_loss"]  # the kept weights are the best epoch's
