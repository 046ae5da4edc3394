"""The one interface every language model offers the generation engine.

A model keeps per-sequence state in numbered slots (a KV cache for the GPT, hidden states for
the RNNs, the recent history for the n-gram), so that sequences can join and leave a running
batch between decoding steps: `prefill` starts a sequence in a slot, `decode` advances many
slots by one token each in a single batched call, `release` frees a slot.
"""

from abc import ABC, abstractmethod

import torch

from models.artifacts import CONFIG_FILE, ArtifactError
from models.text.tokenizer import Tokenizer, load_tokenizer


class LanguageModel(ABC):
    tokenizer: Tokenizer
    name: str = ""
    needs_prompt: bool = False  # True when the model cannot start from an empty context
    chunked_prefill: bool = False  # prefill_batch may continue a prompt from `start` > 0

    @abstractmethod
    def allocate(self, slots: int) -> None:
        """Reserves state for `slots` concurrent sequences; drops any previous state."""

    @abstractmethod
    def prefill(self, slot: int, ids: list[int]) -> torch.Tensor:
        """Starts a sequence in `slot` from prompt `ids`; returns next-token logits (vocab,)."""

    @abstractmethod
    def decode(self, slots: list[int], ids: list[int]) -> torch.Tensor:
        """Appends ids[i] to the sequence in slots[i]; returns next-token logits (B, vocab)."""

    def context(self, ids: list[int]) -> list[int]:
        """The prompt as the model will read it (a family may cut it to its context)."""
        return ids

    def prefill_batch(
        self, slots: list[int], chunks: list[list[int]], starts: list[int]
    ) -> torch.Tensor:
        """Starts (or, with `chunked_prefill`, continues from `starts`) a sequence in each
        slot; returns each one's next-token logits (B, vocab). This fallback prefills whole
        prompts one by one; the GPT overrides it with one padded pass."""
        assert not any(starts), "this model prefills whole prompts"
        return torch.stack([self.prefill(s, c) for s, c in zip(slots, chunks, strict=True)])

    def prefill_scored(self, slot: int, ids: list[int]) -> torch.Tensor:
        """Like `prefill`, but returns the logits after every prompt token (T, vocab): row t
        predicts ids[t + 1], the last row the first new token. For echo and scoring; this
        fallback advances token by token, and families override it with one pass."""
        rows = [self.prefill(slot, ids[:1])]
        for token in ids[1:]:
            rows.append(self.decode([slot], [token])[0])
        return torch.stack(rows)

    def release(self, slot: int) -> None:  # noqa: B027 - most models need no clean-up
        """Frees `slot`; its state may be overwritten by the next prefill."""

    @abstractmethod
    def move(self, src: int, dst: int) -> None:
        """Moves the sequence in slot `src` to the free slot `dst`, so that the running
        sequences can stay in slots 0..B-1 and a batch reads its state without a gather."""


def artifact_tokenizer(config: dict, vocab_size: int) -> Tokenizer:
    """The tokenizer of a text artifact, refused unless it fits the model's vocabulary."""
    try:
        tokenizer = load_tokenizer(config["tokenizer"])
    except (KeyError, TypeError, ValueError) as e:
        raise ArtifactError(f"bad tokenizer in {CONFIG_FILE}: {e!r}") from e
    if tokenizer.vocab_size != vocab_size:
        raise ArtifactError(f"{tokenizer.vocab_size} tokenizer tokens for vocab_size {vocab_size}")
    return tokenizer
