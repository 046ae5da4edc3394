"""Sampling controls: filtering, penalties, per-sequence determinism, stop handling."""

from __future__ import annotations

import torch

from models.text.sampling import (
    SamplingParams,
    apply_repetition_penalty,
    filter_logits,
    holdback,
    make_generator,
    sample,
    stop_index,
)


def test_top_k_and_top_p_keep_the_right_tokens() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.5, 0.3, 0.15, 0.05]]))
    kept = filter_logits(logits, torch.tensor([2, 0]), torch.tensor([1.0, 0.7]))
    assert torch.isfinite(kept[0]).tolist() == [True, True, False, False]  # top_k = 2
    assert torch.isfinite(kept[1]).tolist() == [True, True, False, False]  # 0.5 + 0.3 >= 0.7
    tiny = filter_logits(logits[:1], torch.tensor([0]), torch.tensor([0.01]))
    assert torch.isfinite(tiny[0]).tolist() == [True, False, False, False]  # best always kept


def test_repetition_penalty_lowers_seen_tokens_only() -> None:
    logits = torch.tensor([[2.0, -1.0, 2.0]])
    seen = torch.tensor([[True, True, False]])
    out = apply_repetition_penalty(logits, seen, torch.tensor([2.0]))
    assert out.tolist() == [[1.0, -2.0, 2.0]]


def test_each_row_draws_from_its_own_generator() -> None:
    logits = torch.randn(1, 50)
    params = SamplingParams(temperature=1.0)
    alone = [sample(logits, [params], [make_generator(7, 0)], torch.zeros(1, 50, dtype=bool))[0][0]
             for _ in range(3)]  # fmt: skip
    crowd = torch.cat([torch.randn(3, 50), logits])
    gens = [make_generator(s, 0) for s in (1, 2, 3)] + [make_generator(7, 0)]
    tokens, logprobs = sample(crowd, [params] * 4, gens, torch.zeros(4, 50, dtype=bool))
    assert tokens[3] == alone[0] == alone[1] == alone[2]
    assert bool((logprobs <= 0).all())


def test_greedy_picks_the_argmax() -> None:
    logits = torch.tensor([[0.1, 3.0, 0.2]])
    params = SamplingParams(temperature=0)
    tokens, _ = sample(logits, [params], [make_generator(None, 0)], torch.zeros(1, 3, dtype=bool))
    assert tokens == [1]


def test_stop_helpers() -> None:
    assert stop_index("hello world", ["wor", "lo"]) == 3
    assert stop_index("hello", ["xyz"]) == -1
    assert holdback("the end of th", ["the end!", "the"]) == 2  # "th" may become "the"
    assert holdback("abc", ["zzz"]) == 0


def test_logit_bias_and_openai_penalties_steer_greedy_choice() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    gen = [make_generator(None, 0)]
    no_seen = torch.zeros(1, 3, dtype=bool)
    banned = SamplingParams(temperature=0, logit_bias={0: -100.0})
    assert sample(logits, [banned], gen, no_seen, [{}])[0] == [1]
    forced = SamplingParams(temperature=0, logit_bias={2: 100.0})
    assert sample(logits, [forced], gen, no_seen, [{}])[0] == [2]
    # token 0 generated twice: 2.0 - 2 * 0.6 = 0.8 < 1.0, so token 1 wins
    freq = SamplingParams(temperature=0, frequency_penalty=0.6)
    assert sample(logits, [freq], gen, no_seen, [{0: 2}])[0] == [1]
    presence = SamplingParams(temperature=0, presence_penalty=1.5)
    assert sample(logits, [presence], gen, no_seen, [{0: 1}])[0] == [1]
    assert sample(logits, [presence], gen, no_seen, [{}])[0] == [0]
