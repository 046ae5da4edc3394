"""Sampling controls for text generation, applied to a batch of next-token logits.

Every sequence has its own torch.Generator seeded from (seed, choice index), and draws exactly
one uniform number per token whatever else is in the batch, so the same seed and parameters
give the same text alone or inside a busy batch. Sampling runs on the CPU in float32: the
vocabularies are small and it keeps the random stream identical across devices.
"""

from dataclasses import dataclass, field

import torch


@dataclass
class SamplingParams:
    max_new_tokens: int = 64  # tokens to generate at most
    temperature: float = 1.0  # 0 = greedy
    top_k: int = 0  # keep the k most likely tokens; 0 = off
    top_p: float = 1.0  # keep the smallest set with this much probability; 1 = off
    repetition_penalty: float = 1.0  # >1 discourages tokens already in the sequence (CTRL)
    stop: list[str] = field(default_factory=list)  # end the text before any of these strings
    seed: int | None = None  # None: a fresh random seed
    presence_penalty: float = 0.0  # OpenAI's: subtracted once from every token generated so far
    frequency_penalty: float = 0.0  # OpenAI's: subtracted per occurrence in the generated text
    logit_bias: dict[int, float] = field(default_factory=dict)  # token id -> added to its logit
    logprobs: int | None = None  # None: none; k: the chosen token's and the k most likely
    echo: bool = False  # report the prompt's tokens with their logprobs before the completion

    @property
    def penalised(self) -> bool:
        return bool(self.presence_penalty or self.frequency_penalty or self.logit_bias)


def make_generator(seed: int | None, index: int) -> torch.Generator:
    gen = torch.Generator()
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed((seed * 1_000_003 + index) % (2**63))
    return gen


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: torch.Tensor):
    """CTRL-style: divide positive logits of seen tokens by the penalty, multiply negative ones.

    logits (B, V), seen (B, V) bool, penalty (B,)
    """
    p = penalty[:, None].expand_as(logits)
    penalised = torch.where(logits > 0, logits / p, logits * p)
    return torch.where(seen, penalised, logits)


def apply_openai_penalties(
    logits: torch.Tensor, params: list["SamplingParams"], counts: list[dict[int, int]]
) -> torch.Tensor:
    """logit_bias, then presence and frequency penalties over each row's generated tokens:
    logit - frequency * count - presence * (count > 0), as OpenAI documents them."""
    logits = logits.clone()
    for row, (p, seen) in enumerate(zip(params, counts, strict=True)):
        if p.logit_bias:
            ids = torch.tensor(list(p.logit_bias))
            logits[row, ids] += torch.tensor(list(p.logit_bias.values()))
        if seen and (p.presence_penalty or p.frequency_penalty):
            ids = torch.tensor(list(seen))
            n = torch.tensor(list(seen.values()), dtype=logits.dtype)
            logits[row, ids] -= p.frequency_penalty * n + p.presence_penalty
    return logits


def filter_logits(logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Masks tokens outside each row's top-k and nucleus (top-p) with -inf. top_k 0 = off."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
    rank = torch.arange(logits.size(-1))[None, :]  # (1, V)
    k = torch.where(top_k > 0, top_k, logits.size(-1))[:, None]  # (B, 1)
    drop = rank >= k
    probs = torch.softmax(sorted_logits.masked_fill(drop, float("-inf")), dim=-1)
    mass_before = torch.cumsum(probs, dim=-1) - probs  # probability of strictly better tokens
    drop |= mass_before >= top_p[:, None]  # the most likely token always survives
    mask = torch.zeros_like(drop).scatter(-1, order, drop)
    return logits.masked_fill(mask, float("-inf"))


def sample(
    logits: torch.Tensor,
    params: list[SamplingParams],
    generators: list[torch.Generator],
    seen: torch.Tensor | None,
    counts: list[dict[int, int]] | None = None,
) -> tuple[list[int], torch.Tensor]:
    """logits (B, V) -> one token per row, and every row's log-probabilities under the model
    (before penalties and temperature: what OpenAI's `logprobs` report).

    `seen` (B, V) marks each row's tokens for the repetition penalty (None: no row has one).
    What no row asks for is skipped, decided on the params rather than on tensors: at batch 1
    on a CPU each tensor op costs about what the model's step spends on a layer.
    """
    logits = logits.float().cpu()
    logprobs = torch.log_softmax(logits, dim=-1)
    if seen is not None and any(p.repetition_penalty != 1.0 for p in params):
        penalty = torch.tensor([p.repetition_penalty for p in params])
        logits = apply_repetition_penalty(logits, seen, penalty)
    if counts is not None and any(p.penalised for p in params):
        logits = apply_openai_penalties(logits, params, counts)
    if all(p.temperature == 0 for p in params):  # greedy needs no random draw
        return logits.argmax(dim=-1).tolist(), logprobs
    temperature = torch.tensor([p.temperature for p in params])
    greedy = temperature == 0
    scaled = logits / torch.where(greedy, 1.0, temperature)[:, None]
    if any(p.top_k > 0 or p.top_p < 1.0 for p in params):
        top_k = torch.tensor([p.top_k for p in params])
        top_p = torch.tensor([p.top_p for p in params])
        scaled = filter_logits(scaled, top_k, top_p)
    probs = torch.softmax(scaled, dim=-1)
    # One uniform per row from the row's own generator: inverse-CDF sampling.
    u = torch.cat([torch.rand(1, generator=g) for g in generators])  # (B,)
    cdf = torch.cumsum(probs, dim=-1)
    drawn = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).squeeze(1)
    drawn = drawn.clamp_(max=logits.size(-1) - 1)
    if not bool(greedy.any()):
        return drawn.tolist(), logprobs
    return torch.where(greedy, logits.argmax(dim=-1), drawn).tolist(), logprobs


def stop_index(text: str, stops: list[str]) -> int:
    """Where the earliest stop string starts in `text`, or -1."""
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(hits) if hits else -1


def holdback(text: str, stops: list[str]) -> int:
    """Characters at the end of `text` that could still become a stop string: not yet safe
    to stream."""
    longest = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), longest, -1):
            if text.endswith(s[:n]):
                longest = n
                break
    return longest
