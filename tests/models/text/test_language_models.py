"""Recurrent and n-gram language models: slot decoding against full forwards, smoothing,
artifact round trips, digests, and the committed Shakespeare artifacts when present."""

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from models.artifacts import (
    WEIGHTS_FILE,
    ArtifactError,
    artifact_digest,
    load_artifact,
    save_artifact,
)
from models.data.builtin import load_shakespeare
from models.text.ngram import NGramConfig, NGramLanguageModel, NGramModel, kn_discounts
from models.text.rnn import RNNConfig, RNNLanguageModel, RNNModel, stream_validation_loss
from models.text.tokenizer import CharTokenizer

REPO = Path(__file__).resolve().parents[3]
DATA_DIR = Path(os.environ.get("GENSERVE_DATA_DIR", REPO.parent / "shared" / "data"))
PRETRAINED = REPO / "models" / "pretrained"

CHARS = "\n abcdez"  # 'z' never occurs in TEXT: it must still get a nonzero probability
TEXT = (
    "a bad cab dabbed a dead bee\nbe a babe add a bead\ncede a deed dab a cad\n" * 3
    + "ebb a dace\n"
)


def tiny_rnn(cell: str) -> RNNLanguageModel:
    torch.manual_seed(0)
    config = RNNConfig(vocab_size=len(CHARS), cell=cell, n_embd=8, hidden=16, n_layer=2)
    return RNNLanguageModel(RNNModel(config).eval(), CharTokenizer(CHARS))


def tiny_ngram(order: int = 4) -> NGramLanguageModel:
    tok = CharTokenizer(CHARS)
    model = NGramModel.fit(np.array(tok.encode(TEXT)), NGramConfig(len(CHARS), order))
    return NGramLanguageModel(model, tok)


def text_artifact(tmp_path: Path, lm: RNNLanguageModel | NGramLanguageModel, kind: str) -> Path:
    config = {
        "name": f"tiny-{kind}",
        "kind": kind,
        "task": "text-generation",
        "tokenizer": lm.tokenizer.to_config(),
        "metrics": {},
    }
    path = tmp_path / config["name"]
    save_artifact(path, config, module=lm.model, card="# tiny\n\nUntrained, for tests.\n")
    return path


# -- RNN ------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_rnn_batched_decode_matches_full_forward(cell: str) -> None:
    lm = tiny_rnn(cell)
    gen = torch.Generator().manual_seed(1)
    seqs = {2: torch.randint(len(CHARS), (12,), generator=gen).tolist(), 0: [3, 4, 5, 6, 2, 1]}
    with torch.no_grad():
        full = {s: lm.model(torch.tensor([ids]))[0][0] for s, ids in seqs.items()}  # (T, vocab)
    lm.allocate(3)
    prompt = {2: 5, 0: 1}  # different prompt lengths: the slots sit at different positions
    for slot, n in prompt.items():
        torch.testing.assert_close(
            lm.prefill(slot, seqs[slot][:n]), full[slot][n - 1], atol=1e-4, rtol=0
        )
    pos = dict(prompt)
    while any(pos[s] < len(seqs[s]) for s in seqs):
        slots = [s for s in seqs if pos[s] < len(seqs[s])]  # both together, then slot 2 alone
        logits = lm.decode(slots, [seqs[s][pos[s]] for s in slots])
        assert logits.shape == (len(slots), len(CHARS))
        for row, s in zip(logits, slots, strict=True):
            torch.testing.assert_close(row, full[s][pos[s]], atol=1e-4, rtol=0)
            pos[s] += 1


def test_rnn_slots_are_isolated() -> None:
    reference = tiny_rnn("lstm")
    reference.allocate(1)
    reference.prefill(0, [4, 5])
    expected = reference.decode([0], [6])[0]
    lm = tiny_rnn("lstm")
    lm.allocate(2)
    lm.prefill(0, [1, 2, 3])
    lm.prefill(1, [4, 5])
    before = lm.state[:, :, 1].clone()
    for token in [2, 3, 4, 5]:
        lm.decode([0], [token])  # only slot 0 advances
    assert torch.equal(lm.state[:, :, 1], before)
    torch.testing.assert_close(lm.decode([1], [6])[0], expected, atol=1e-6, rtol=0)
    lm.release(0)
    lm.prefill(0, [4, 5])  # a reused slot starts over from a zero state
    torch.testing.assert_close(lm.decode([0], [6])[0], expected, atol=1e-6, rtol=0)


def test_rnn_empty_prompt_reads_a_newline() -> None:
    lm = tiny_rnn("gru")
    lm.allocate(1)
    with torch.no_grad():
        expected = lm.model(torch.tensor([[CHARS.index("\n")]]))[0][0, -1]
    torch.testing.assert_close(lm.prefill(0, []), expected)
    assert not lm.needs_prompt


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_rnn_artifact_round_trip(tmp_path: Path, cell: str) -> None:
    lm = tiny_rnn(cell)
    path = text_artifact(tmp_path, lm, f"text-{cell}")
    loaded = load_artifact(path, expected_sha256=artifact_digest(path)[0])
    assert isinstance(loaded, RNNLanguageModel) and loaded.model.config == lm.model.config
    for m in (lm, loaded):
        m.allocate(1)
    torch.testing.assert_close(loaded.prefill(0, [1, 2, 3]), lm.prefill(0, [1, 2, 3]))


def test_rnn_stream_loss_matches_forward() -> None:
    lm = tiny_rnn("lstm")
    ids = torch.tensor(CharTokenizer(CHARS).encode(TEXT[:300]))
    newline = torch.tensor([CHARS.index("\n")])
    with torch.no_grad():
        _, expected = lm.model(torch.cat((newline, ids[:-1]))[None], ids[None])
    got = stream_validation_loss(lm.model, ids, torch.device("cpu"), newline.item(), chunk=64)
    assert got == pytest.approx(expected.item(), abs=1e-5)


# -- n-gram ---------------------------------------------------------------------------------


def naive_kneser_ney(ids: list[int], V: int, n: int, context: tuple, w: int) -> float:
    """Interpolated modified Kneser-Ney straight from the formulas, with dictionaries."""
    raw = {
        k: Counter(tuple(ids[i : i + k]) for i in range(len(ids) - k + 1)) for k in range(1, n + 1)
    }
    cont = {k: Counter(g[1:] for g in raw[k + 1]) for k in range(1, n)}  # distinct predecessors

    p = 1.0 / V
    for k in range(1, n + 1):
        counts = raw[n] if k == n else cont[k]
        h = tuple(context[len(context) - (k - 1) :]) if k > 1 else ()
        row = [counts.get((*h, v), 0) for v in range(V)]
        if sum(row) == 0:
            continue  # unseen context: the lower order passes through
        d = kn_discounts(np.array(list(counts.values())))  # checked on its own below
        gamma = sum(d[min(c, 3)] for c in row if c > 0)
        p = (max(row[w] - d[min(row[w], 3)], 0) + gamma * p) / sum(row)
    return p


def test_ngram_matches_the_formulas() -> None:
    lm = tiny_ngram(order=3)
    ids = lm.tokenizer.encode(TEXT)
    rng = np.random.default_rng(0)
    contexts = np.concatenate(
        [lm.model.contexts(np.array(ids[:40]), lm.pad_id), rng.integers(0, len(CHARS), (10, 2))]
    )
    probs = lm.model.next_probs(contexts)
    for context, row in zip(contexts, probs, strict=True):
        expected = [
            naive_kneser_ney(ids, len(CHARS), 3, tuple(context), w) for w in range(len(CHARS))
        ]
        np.testing.assert_allclose(row, expected, rtol=1e-12)


def test_kn_discounts_follow_chen_and_goodman() -> None:
    counts = np.array([1] * 10 + [2] * 4 + [3] * 3 + [4] * 2 + [9, 0])  # n1..n4 = 10, 4, 3, 2
    y = 10 / (10 + 2 * 4)
    expected = [0, 1 - 2 * y * 4 / 10, 2 - 3 * y * 3 / 4, 3 - 4 * y * 2 / 3]
    np.testing.assert_allclose(kn_discounts(counts), expected)
    assert kn_discounts(np.array([1, 1, 5]))[1:].min() > 0  # no n2..n4: clipped, still positive


@pytest.mark.parametrize("order", [1, 2, 5])
def test_ngram_distributions_are_smoothed_and_sum_to_one(order: int) -> None:
    lm = tiny_ngram(order)
    rng = np.random.default_rng(order)
    contexts = rng.integers(0, len(CHARS), (200, order - 1))  # mostly never seen in TEXT
    seen = lm.model.contexts(np.array(lm.tokenizer.encode(TEXT)), lm.pad_id)[:100]
    probs = lm.model.next_probs(np.concatenate([contexts, seen]))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)
    assert (probs > 0).all()  # 'z' too, never seen in TEXT


def test_ngram_slots_and_scorer_agree() -> None:
    lm = tiny_ngram(order=4)
    ids = lm.tokenizer.encode("a bad cab\nebb")
    lm.allocate(3)
    logp = [lm.prefill(2, [])]  # empty prompt: newline history
    logp += [lm.decode([2], [t])[0] for t in ids[:-1]]
    lm.prefill(0, [1, 2])  # another slot in between changes nothing
    nll = -sum(row[t].item() for row, t in zip(logp, ids, strict=True)) / len(ids)
    assert nll == pytest.approx(lm.model.cross_entropy(np.array(ids), lm.pad_id), abs=1e-5)
    assert lm.decode([0, 2], [3, 4]).shape == (2, len(CHARS))
    torch.testing.assert_close(lm.prefill(1, ids[:5]), lm.prefill(1, [0, 0, 0, *ids[:5]]))


def test_ngram_artifact_round_trip(tmp_path: Path) -> None:
    lm = tiny_ngram(order=5)
    path = text_artifact(tmp_path, lm, "text-ngram")
    loaded = load_artifact(path, expected_sha256=artifact_digest(path)[0])
    assert isinstance(loaded, NGramLanguageModel) and loaded.model.config == lm.model.config
    assert not loaded.needs_prompt
    for m in (lm, loaded):
        m.allocate(2)
        m.prefill(1, [2, 3, 1])
    torch.testing.assert_close(loaded.decode([1], [4]), lm.decode([1], [4]), rtol=0, atol=0)
    assert loaded.validation_loss(TEXT) == lm.validation_loss(TEXT)


def test_ngram_refuses_altered_tables(tmp_path: Path) -> None:
    import safetensors.torch

    path = text_artifact(tmp_path, tiny_ngram(order=3), "text-ngram")
    tables = safetensors.torch.load_file(path / WEIGHTS_FILE)
    tables["last_2"] = tables["last_2"].flip(0)  # codes no longer sorted
    safetensors.torch.save_file(tables, path / WEIGHTS_FILE)
    with pytest.raises(ArtifactError, match="not a valid n-gram artifact"):
        load_artifact(path)


@pytest.mark.parametrize("kind", ["text-ngram", "text-lstm"])
def test_load_language_model_rejects_a_wrong_sha256(tmp_path: Path, kind: str) -> None:
    lm = tiny_ngram() if kind == "text-ngram" else tiny_rnn("lstm")
    path = text_artifact(tmp_path, lm, kind)
    digest, _ = artifact_digest(path)
    wrong = ("0" if digest[0] != "0" else "1") + digest[1:]
    with pytest.raises(ArtifactError, match="does not match"):
        load_artifact(path, expected_sha256=wrong)


# -- the committed Shakespeare artifacts ----------------------------------------------------


@pytest.mark.parametrize("name", ["shakespeare-ngram", "shakespeare-lstm"])
def test_pretrained_shakespeare_models(name: str) -> None:
    path = PRETRAINED / name
    if not (path / "config.json").is_file():
        pytest.skip(f"{name} is not built (python -m models.build {name})")
    if not (DATA_DIR / "tinyshakespeare.txt").is_file():
        pytest.skip(f"no tinyshakespeare at {DATA_DIR}")
    lm = load_artifact(path, expected_sha256=artifact_digest(path)[0])
    _, val_text = load_shakespeare(DATA_DIR)
    text = val_text[:3000]
    if isinstance(lm, NGramLanguageModel):
        loss = lm.validation_loss(text)
    else:
        ids = torch.tensor(lm.tokenizer.encode(text))
        loss = stream_validation_loss(lm.model, ids, torch.device("cpu"), lm.start_id)
    assert 1.0 < loss < 2.1, f"{name}: {loss:.3f} nats/char on 3,000 validation characters"
    lm.allocate(1)
    probs = lm.prefill(0, lm.tokenizer.encode("ROMEO:\nI")).softmax(-1)
    assert probs.shape == (lm.tokenizer.vocab_size,) and torch.isfinite(probs).all()
