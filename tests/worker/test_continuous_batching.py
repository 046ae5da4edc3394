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


@pytest.mark.parametrize("prefill_tokens", [0, 3])
@pytest.mark.parametrize("family", ["gpt", "lstm", "ngram"])
def test_slots_stay_dense_and_moved_sequences_continue_exactly(  # type: ignore[no-untyped-def]
    family, prefill_tokens, tmp_path
) -> None:
    """Sequences that finish early hand their slot to the highest one, whose state moves;
    every sequence still produces exactly the text it produces alone, whether its prompt was
    prefilled with others in one pass (budget 0) or in chunks of 3 tokens (the GPT) or one
    whole prompt a step (the models that cannot chunk)."""
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
        prompt = "ROMEO:" if rid % 2 else "KING RICHARD III:\nNow is the"
        engine.add(rid, prompt, {"max_new_tokens": n, "seed": rid}, 1)
        alone.update(run(engine))

    engine = GenerationEngine(lm, max_running=4, prefill_tokens=prefill_tokens)
    for rid, n in lengths.items():
        prompt = "ROMEO:" if rid % 2 else "KING RICHARD III:\nNow is the"
        engine.add(rid, prompt, {"max_new_tokens": n, "seed": rid}, 1)
    texts: dict[tuple[int, int], str] = {}
    while engine.has_work():
        for e in engine.step():
            texts[e.request_id, e.index] = texts.get((e.request_id, e.index), "") + e.text
        assert sorted(engine.running) == list(range(len(engine.running)))  # dense
        assert all(seq.slot == slot for slot, seq in engine.running.items())
    assert texts == alone


def test_a_burst_of_prompts_is_prefilled_in_one_pass(lm) -> None:  # type: ignore[no-untyped-def]
    """Prompts of different lengths admitted together go through the model once, and each
    gets the first token it gets alone."""
    prompts = {1: "ROMEO:", 2: "O", 3: "KING HENRY:\nWhat says", 4: "First Citizen:\nWe are"}
    alone = {}
    for rid, prompt in prompts.items():
        engine = GenerationEngine(lm, max_running=8)
        engine.add(rid, prompt, {"max_new_tokens": 8, "seed": rid}, 1)
        alone.update(run(engine))
    engine = GenerationEngine(lm, max_running=8, prefill_tokens=256)
    calls = []
    prefill_batch = lm.prefill_batch

    def counted(*args):  # type: ignore[no-untyped-def]
        calls.append(args[0])
        return prefill_batch(*args)

    lm.prefill_batch = counted
    try:
        for rid, prompt in prompts.items():
            engine.add(rid, prompt, {"max_new_tokens": 8, "seed": rid}, 1)
        first = engine.step()
        assert sorted(e.request_id for e in first) == [1, 2, 3, 4]  # all got a token at once
        assert calls == [[0, 1, 2, 3]]
        texts = {(e.request_id, 0): e.text for e in first}
        for k, v in run(engine).items():
            texts[k] += v
    finally:
        del lm.prefill_batch
    assert texts == alone


def test_a_long_prompt_is_prefilled_in_chunks_while_others_decode(lm) -> None:  # type: ignore[no-untyped-def]
    """With a budget of 4 tokens a step, a 22-token prompt takes 6 steps to read, and the
    sequence already running gets a token at every one of them."""
    solo = GenerationEngine(lm, max_running=1)  # first: engines share the fixture's model
    solo.add(2, "KING HENRY:\nWhat says", {"max_new_tokens": 5, "seed": 2}, 1)
    expected = run(solo)[2, 0]
    engine = GenerationEngine(lm, max_running=2, prefill_tokens=4)
    engine.add(1, "ROMEO:", {"max_new_tokens": 40, "seed": 1}, 1)
    engine.step()
    engine.step()  # "ROMEO:" took 2 steps (6 tokens) and its first token came on the second
    engine.add(2, "KING HENRY:\nWhat says", {"max_new_tokens": 5, "seed": 2}, 1)
    for _ in range(5):
        assert [e.request_id for e in engine.step()] == [1]  # 4 prompt tokens a step
    assert sorted(e.request_id for e in engine.step()) == [1, 2]  # the last 2, and a token
    texts = run(engine)
    assert len(texts[2, 0]) == 4 and expected.endswith(texts[2, 0])


def _pretrained(name: str):  # type: ignore[no-untyped-def]
    from app.settings import PRETRAINED_DIR

    return PRETRAINED_DIR / name
