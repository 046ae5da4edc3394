"""The GPT's decoding step (functional, for speed) against its cached forward pass."""

from __future__ import annotations

import pytest
import torch

from models.text.gpt import GPT, GPTConfig


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("lengths", [[9], [3, 17, 1, 30]])
def test_decode_step_equals_the_cached_forward(bias: bool, lengths: list[int]) -> None:
    """Same logits and same cache writes, for one sequence (no mask) and for several of
    different lengths (each masked to its own prefix), from slots that start past 0."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=40, block_size=32, n_layer=2, n_head=4, n_embd=32, bias=bias))
    model.eval()
    if bias:  # biases start at zero: give them values, so that a dropped one shows
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("bias"):
                    p.normal_(0, 0.5)
    first, B = 2, len(lengths)
    caches = [model.new_cache(B + first) for _ in range(2)]
    for cache in caches:
        for row, n in enumerate(lengths):
            prompt = torch.randint(0, 40, (1, n), generator=torch.Generator().manual_seed(row))
            slot = torch.tensor([first + row])
            model.forward_cached(prompt, cache, slot, torch.tensor([0]))
    tokens = torch.tensor([5, 7, 11, 13][:B])
    fast = model.decode_step(tokens, caches[0], first, lengths)
    slots = torch.arange(first, first + B)
    slow = model.forward_cached(tokens[:, None], caches[1], slots, torch.tensor(lengths), first)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(caches[0].k, caches[1].k)
    torch.testing.assert_close(caches[0].v, caches[1].v)
