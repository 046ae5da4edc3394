"""classify-rnn and the training hooks: vocabularies, artifact round trips, resumable fits,
cancellation, and the scikit-learn text fit on any labelled texts. Tiny runs, one thread."""

import json
import warnings
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

from models.artifacts import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    ArtifactError,
    artifact_digest,
    load_artifact,
    save_artifact,
)
from models.classify.text_pipeline import SklearnTextClassifier
from models.classify.text_rnn import (
    PAD,
    UNK,
    TextRNN,
    TextRNNConfig,
    TextVocab,
    TorchTextClassifier,
    pad_batch,
)
from models.kinds import KINDS, CNNParams, TextRNNParams
from models.training.cnn import fit_image_cnn
from models.training.epochs import encode_labels
from models.training.hooks import TrainHooks
from models.training.text_pipeline import fit_text_pipeline
from models.training.text_rnn import fit_text_rnn

TEXTS = [
    "great phone, works well",
    "terrible, broke in a day",
    "love it!",
    "awful waste of money",
    "really good value",
    "bad, very bad",
] * 4
LABELS = [1, 0, 1, 0, 1, 0] * 4
TEST_TEXTS = ["works great", "broke, awful", "good", "waste"]
TEST_LABELS = [1, 0, 1, 0]
TINY = TextRNNParams(epochs=3, batch_size=8, embed=8, hidden=8, max_len=32)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def rnn_config(tokenizer: dict, labels: list[str]) -> dict:
    return {
        "name": "tiny-rnn",
        "kind": "classify-rnn",
        "task": "classification",
        "input": "text",
        "labels": labels,
        "image_size": None,
        "tokenizer": tokenizer,
        "metrics": {},
        "training": {},
    }


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# -----------------------------------------------------------------------------
# vocabulary and model


def test_vocab_levels_specials_and_json_round_trip():
    words = TextVocab.build(["Good good movie!", "bad movie"], "word", min_freq=2)
    assert words.itos[:2] == ["<pad>", "<unk>"]
    assert words.itos[2:] == ["good", "movie"]  # lower-cased, most frequent first, then by name
    assert words.encode("GOOD film") == [2, UNK]
    chars = TextVocab.build(["abca"], "char")
    assert chars.encode("abz", max_len=2) == [2, 3] and chars.encode("z") == [UNK]
    assert words.encode("<pad>") == [UNK] * 3  # specials are names, never matched as text
    again = TextVocab.from_config(json.loads(json.dumps(words.to_config())))
    assert again.itos == words.itos and again.level == "word"
    with pytest.raises(ValueError):
        TextVocab("byte", ["a"])  # type: ignore[arg-type]


def test_padding_does_not_change_logits():
    torch.manual_seed(0)
    model = TextRNN(TextRNNConfig(vocab_size=20, embed=8, hidden=8, num_classes=3)).eval()
    short, long = [5, 6, 7], [3, 4, 5, 6, 7, 8, 9, 10]
    with torch.no_grad():
        alone = model(pad_batch([short]))  # (1, 3)
        batched = model(pad_batch([short, long, []]))  # (3, 3); an empty text is allowed
    assert batched.shape == (3, 3) and torch.isfinite(batched).all()
    torch.testing.assert_close(batched[0], alone[0], rtol=1e-5, atol=1e-6)
    assert pad_batch([short, long])[0, 3:].eq(PAD).all()


# -----------------------------------------------------------------------------
# artifacts


def test_rnn_artifact_round_trip_and_tampering(tmp_path):
    model, config, tokenizer, metrics = fit_text_rnn(
        TEXTS, LABELS, TEST_TEXTS, TEST_LABELS, replace(TINY, level="word"), min_freq=1
    )
    labels = ["negative", "positive"]
    digest, size = save_artifact(
        tmp_path / "rnn", rnn_config(tokenizer, labels), module=model, card="# card\n"
    )
    saved = json.loads((tmp_path / "rnn" / CONFIG_FILE).read_text())
    assert saved["model_args"] == asdict(config) and saved["tokenizer"] == tokenizer
    assert config.level == "word" and metrics["labels"] == ["0", "1"]
    loaded = load_artifact(tmp_path / "rnn", expected_sha256=digest)
    assert isinstance(loaded, TorchTextClassifier)
    assert loaded.labels == labels and loaded.input == "text" and loaded.image_size is None

    queries = ["works great", "broke, awful", "", "never seen words here at all"]
    proba = loaded.predict_proba(queries)
    assert proba.shape == (4, 2) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    fresh = TorchTextClassifier(model, TextVocab.from_config(tokenizer), labels)
    np.testing.assert_allclose(proba, fresh.predict_proba(queries), rtol=1e-5, atol=1e-6)
    assert loaded.predict_proba([]).shape == (0, 2)
    with pytest.raises(TypeError):
        loaded.predict_proba("a single string")

    weights = tmp_path / "rnn" / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one bit of the last tensor
    weights.write_bytes(bytes(data))
    assert artifact_digest(tmp_path / "rnn") != (digest, size)
    with pytest.raises(ArtifactError, match="sha256"):
        load_artifact(tmp_path / "rnn", expected_sha256=digest)
    weights.write_bytes(bytes(data[: len(data) // 2]))  # truncated: not safetensors any more
    with pytest.raises(ArtifactError, match="safetensors"):
        load_artifact(tmp_path / "rnn")


def test_rnn_artifact_config_must_match_weights(tmp_path):
    model, _, tokenizer, _ = fit_text_rnn(
        TEXTS, LABELS, [], [], replace(TINY, level="char", epochs=1), min_freq=1
    )
    save_artifact(tmp_path / "m", rnn_config(tokenizer, ["n", "p"]), module=model, card="")
    config = json.loads((tmp_path / "m" / CONFIG_FILE).read_text())
    short = {**tokenizer, "tokens": tokenizer["tokens"][:-1]}
    for change, match in [
        ({"tokenizer": None}, "tokenizer"),
        ({"tokenizer": short}, "tokenizer"),
        ({"tokenizer": {**tokenizer, "level": "word"}}, "tokenizer"),
        ({"model_args": {**config["model_args"], "hidden": 16}}, "weights do not fit"),
        ({"labels": ["a", "b", "c"]}, "labels"),
        ({"input": "image"}, "input"),
    ]:
        (tmp_path / "m" / CONFIG_FILE).write_text(json.dumps({**config, **change}))
        with pytest.raises(ArtifactError, match=match):
            load_artifact(tmp_path / "m")


# -----------------------------------------------------------------------------
# hooks: progress, cancellation, resume


class Interrupted(Exception):
    """Stands for a killed job runner."""


def test_text_rnn_hooks_and_stop():
    steps: list[tuple[int, int]] = []
    rows: list[dict] = []
    hooks = TrainHooks(
        on_step=lambda done, total, loss: steps.append((done, total)) or None,
        on_epoch=rows.append,
        should_stop=lambda: len(steps) >= 5,  # 3 steps per epoch: stop inside epoch 2
    )
    _, _, _, metrics = fit_text_rnn(
        TEXTS, LABELS, TEST_TEXTS, TEST_LABELS, TINY, hooks=hooks, min_freq=1
    )
    assert steps == [(i, 9) for i in range(1, 6)]
    assert [r["epoch"] for r in rows] == [1] and metrics["history"] == rows
    assert set(rows[0]) == {
        "epoch",
        "step",
        "train_loss",
        "val_accuracy",
        "val_loss",
        "best_val_loss",
        "best_step",
        "samples_per_s",
        "seconds",
    }
    assert metrics["stopped"] and metrics["epochs_done"] == 1 and metrics["steps"] == 5
    assert 0.0 <= metrics["test_accuracy"] <= 1.0

    def cancel() -> bool:
        raise Interrupted

    with pytest.raises(Interrupted):
        fit_text_rnn(TEXTS, LABELS, TEST_TEXTS, TEST_LABELS, hooks=TrainHooks(should_stop=cancel))


def test_text_rnn_resumes_to_the_same_weights(tmp_path):
    reference, *_ = fit_text_rnn(TEXTS, LABELS, TEST_TEXTS, TEST_LABELS, TINY, min_freq=1)

    def die_after_first_epoch(row: dict) -> None:
        if row["epoch"] == 1:
            raise Interrupted  # after the checkpoint of epoch 1 was written

    with pytest.raises(Interrupted):
        hooks = TrainHooks(on_epoch=die_after_first_epoch, work_dir=tmp_path)
        fit_text_rnn(TEXTS, LABELS, TEST_TEXTS, TEST_LABELS, TINY, hooks=hooks, min_freq=1)
    rows: list[dict] = []
    hooks = TrainHooks(on_epoch=rows.append, work_dir=tmp_path)
    model, *_, metrics = fit_text_rnn(
        TEXTS, LABELS, TEST_TEXTS, TEST_LABELS, TINY, hooks=hooks, min_freq=1
    )
    assert metrics["resumed_from_epoch"] == 1 and [r["epoch"] for r in rows] == [2, 3]
    assert [r["epoch"] for r in metrics["history"]] == [1, 2, 3]
    assert same_weights(model, reference)

    with pytest.raises(ValueError, match="different run"):  # other arguments: refused
        fit_text_rnn(
            TEXTS, LABELS, TEST_TEXTS, TEST_LABELS, replace(TINY, lr=1e-2), hooks=hooks, min_freq=1
        )


def test_image_cnn_resumes_to_the_same_weights(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((40, 8, 8), dtype=np.float32)  # (N, H, W)
    y = np.arange(40, dtype=np.int64) % 3
    p = CNNParams(epochs=2, batch_size=16, hidden=8, shift=1)
    kw = {"channels": (4, 8)}
    reference, _, ref_metrics = fit_image_cnn(x, y, x[:8], y[:8], p, **kw)
    assert [r["epoch"] for r in ref_metrics["history"]] == [1, 2]

    steps = []

    def die_in_second_epoch() -> bool:
        if len(steps) == 4:  # 3 steps per epoch
            raise Interrupted
        return False

    hooks = TrainHooks(
        on_step=lambda *a: steps.append(a), should_stop=die_in_second_epoch, work_dir=tmp_path
    )
    with pytest.raises(Interrupted):
        fit_image_cnn(x, y, x[:8], y[:8], p, hooks=hooks, **kw)
    model, _, metrics = fit_image_cnn(
        x, y, x[:8], y[:8], p, hooks=TrainHooks(work_dir=tmp_path), **kw
    )
    assert metrics["resumed_from_epoch"] == 1 and metrics["steps"] == 6
    assert same_weights(model, reference)


# -----------------------------------------------------------------------------
# scikit-learn text fits on any labelled texts


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("kind", ["classify-nb", "classify-logreg", "classify-mlp"])
def test_fit_text_pipeline_with_string_labels(tmp_path: Path, kind: str):
    texts = ["refund my order", "where is my parcel", "love the product", "cancel it now"] * 4
    labels = ["billing", "shipping", "praise", "billing"] * 4
    params = {"max_iter": 200} if kind == "classify-mlp" else {}
    pipeline, metrics = fit_text_pipeline(
        KINDS[kind].params(**params), texts, labels, texts[:4], labels[:4]
    )
    assert metrics["labels"] == ["billing", "praise", "shipping"]  # sorted, ids 0..2
    assert metrics["test_accuracy"] == 1.0 and metrics["params"]["min_df"] == 1
    config = {
        "name": "tickets",
        "kind": kind,
        "task": "classification",
        "input": "text",
        "labels": metrics["labels"],
        "image_size": None,
    }
    digest, _ = save_artifact(tmp_path / "t", config, estimator=pipeline, card="")
    loaded = load_artifact(tmp_path / "t", expected_sha256=digest)  # allowlist covers it
    assert isinstance(loaded, SklearnTextClassifier)
    proba = loaded.predict_proba(["where is my parcel", "love it"])
    assert proba.shape == (2, 3)
    assert loaded.labels[int(proba[0].argmax())] == "shipping"


def test_labels_are_checked():
    classes, y_train, y_test = encode_labels(["b", "a", "b"], ["a"])
    assert classes == ["a", "b"] and y_train.tolist() == [1, 0, 1] and y_test.tolist() == [0]
    with pytest.raises(ValueError, match="not in the training labels"):
        encode_labels(["a", "b"], ["c"])
    with pytest.raises(ValueError, match="2 classes"):
        encode_labels(["a", "a"], [])
    # integer labels are class ids: a class missing from training shifts nothing
    classes, y_train, _ = encode_labels(np.array([0, 2, 2]), np.array([1]), num_classes=4)
    assert classes == [0, 1, 2, 3] and y_train.tolist() == [0, 2, 2]
    with pytest.raises(ValueError, match="class ids"):
        encode_labels([0, 5], [], num_classes=3)
    with pytest.raises(ValueError, match="all integer"):
        encode_labels([1, "a"], [])
    with warnings.catch_warnings(), pytest.raises(ValueError, match="without training"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        fit_text_pipeline(KINDS["classify-nb"].params(), ["x y", "y z", "z x"], [0, 2, 0], [], [])
