"""The worker's continuous-batching engine, driven directly on a tiny untrained GPT."""

from __future__ import annotations

import pytest

from app.worker.continuous_batching import GenerationEngine
from models.artifacts import load_artifact
from tests.tiny_models import make_tiny_gpt


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return load_artifact(make_tiny_gpt(tmp_path_factory.mktemp("lm")))


def run(engine: GenerationEngine, max_steps: int = 10_000) -> dict[tuple[int, int], str]:
    texts: dict[tuple[int, int], str] = {}
    for _ in range(max_steps):
        if not engine.has_work():
            break
        for e in engine.step():
            texts[e.request_id, e.index] = texts.get((e.request_id, e.index), "") + e.text
    return texts


def test_sequences_join_and_leave_between_steps(lm) -> None:  # type: ignore[no-untyped-def]
    engine = GenerationEngine(lm, max_running=2)
    engine.add(1, "ROMEO:", {"max_new_tokens": 5, "seed": 1}, 1)
    engine.add(2, "KING:", {"max_new_tokens": 50, "seed": 2}, 1)
    engine.add(3, "", {"max_new_tokens": 5, "seed": 3}, 1)  # waits for a free slot
    engine.step()
    assert len(engine.running) == 2 and len(engine.waiting) == 1
    for _ in range(5):
        engine.step()
    assert {s.request_id for s in engine.running.values()} == {2, 3}  # 1 left, 3 joined
    texts = run(engine)
    assert {k: len(v) for k, v in texts.items()} == {(2, 0): 44, (3, 0): 4}  # after 6 steps
    assert engine.free == engine.max_running and not engine.running


def test_batch_composition_does_not_change_a_seeded_sequence(lm) -> None:  # type: ignore[no-untyped-def]
    alone = GenerationEngine(lm, max_running=4)
    alone.add(1, "ROMEO:", {"max_new_tokens": 60, "seed": 42}, 1)
    expected = run(alone)[1, 0]
    busy = GenerationEngine(lm, max_running=4)
    busy.add(7, "KING:", {"max_new_tokens": 20, "seed": 1}, 2)
    busy.step()
    busy.add(1, "ROMEO:", {"max_new_tokens": 60, "seed": 42}, 1)  # joins a running batch
    busy.add(8, "Q", {"max_new_tokens": 90, "seed": 3, "temperature": 0.5}, 1)
    assert run(busy)[1, 0] == expected


def test_runs_past_the_context_window(lm) -> None:  # type: ignore[no-untyped-def]
    engine = GenerationEngine(lm, max_running=1)
    engine.add(1, "ROMEO:", {"max_new_tokens": 100, "seed": 1}, 1)  # block_size is 32
    assert len(run(engine)[1, 0]) == 100


def test_cancel_frees_slots(lm) -> None:  # type: ignore[no-untyped-def]
    engine = GenerationEngine(lm, max_running=2)
    engine.add(1, "A", {"max_new_tokens": 1000}, 2)
    engine.add(2, "B", {"max_new_tokens": 1000}, 1)
    engine.step()
    engine.cancel(1)
    engine.cancel(2)
    assert not engine.has_work() and engine.free == 2


@pytest.mark.parametrize("family", ["gpt", "lstm", "ngram"])
def test_slots_stay_dense_and_moved_sequences_continue_exactly(family, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Sequences that finish early hand their slot to the highest one, whose state moves;
    every sequence still produces exactly the text it produces alone."""
    path = {
        "gpt": lambda: make_tiny_gpt(tmp_path),
        "lstm": lambda: _pretrained("shakespeare-lstm"),
        "ngram": lambda: _pretrained("shakespeare-ngram"),
    }[family]()
    lm = load_artifact(path)
    lengths = {1: 5, 2: 40, 3: 12, 4: 60, 5: 3, 6: 25}
    alone = {}
    for rid, n in lengths.items():
        engine = GenerationEngine(lm, max_running=8)
        engine.add(rid, "ROMEO:", {"max_new_tokens": n, "seed": rid}, 1)
        alone.update(run(engine))

    engine = GenerationEngine(lm, max_running=4)
    for rid, n in lengths.items():
        engine.add(rid, "ROMEO:", {"max_new_tokens": n, "seed": rid}, 1)
    texts: dict[tuple[int, int], str] = {}
    while engine.has_work():
        for e in engine.step():
            texts[e.request_id, e.index] = texts.get((e.request_id, e.index), "") + e.text
        assert sorted(engine.running) == list(range(len(engine.running)))  # dense
        assert all(seq.slot == slot for slot, seq in engine.running.items())
    assert texts == alone


def _pretrained(name: str):  # type: ignore[no-untyped-def]
    from app.settings import PRETRAINED_DIR

    return PRETRAINED_DIR / name
