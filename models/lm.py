"""The one interface every language model offers the generation engine.

A model keeps per-sequence state in numbered slots (a KV cache for the GPT, hidden states for
the RNNs, the recent history for the n-gram), so that sequences can join and leave a running
batch between decoding steps: `prefill` starts a sequence in a slot, `decode` advances many
slots by one token each in a single batched call, `release` frees a slot.
"""

import importlib
import json
from abc import ABC, abstractmethod
from pathlib import Path

import torch

from models.checksum import CONFIG_FILE, ArtifactError, digest_payload, read_payload
from models.tokenizer import CharTokenizer


class LanguageModel(ABC):
    tokenizer: CharTokenizer
    name: str = ""
    needs_prompt: bool = False  # True when the model cannot start from an empty context

    @abstractmethod
    def allocate(self, slots: int) -> None:
        """Reserves state for `slots` concurrent sequences; drops any previous state."""

    @abstractmethod
    def prefill(self, slot: int, ids: list[int]) -> torch.Tensor:
        """Starts a sequence in `slot` from prompt `ids`; returns next-token logits (vocab,)."""

    @abstractmethod
    def decode(self, slots: list[int], ids: list[int]) -> torch.Tensor:
        """Appends ids[i] to the sequence in slots[i]; returns next-token logits (B, vocab)."""

    def release(self, slot: int) -> None:  # noqa: B027 - most models need no clean-up
        """Frees `slot`; its state may be overwritten by the next prefill."""

    @abstractmethod
    def move(self, src: int, dst: int) -> None:
        """Moves the sequence in slot `src` to the free slot `dst`, so that the running
        sequences can stay in slots 0..B-1 and a batch reads its state without a gather."""


def load_language_model(path: Path, expected_sha256: str | None = None, device: str = "cpu"):
    """Reads and verifies an artifact, then builds its family's LanguageModel."""
    payload = read_payload(Path(path))
    if expected_sha256 is not None:
        actual, _ = digest_payload(payload)
        if actual != expected_sha256:
            raise ArtifactError(f"{path}: sha256 {actual} does not match {expected_sha256}")
    try:
        config = json.loads(payload[CONFIG_FILE])
    except ValueError as e:
        raise ArtifactError(f"{path}/{CONFIG_FILE} is not valid JSON: {e}") from e
    kind = config.get("kind") if isinstance(config, dict) else None
    if kind not in FAMILIES:
        raise ArtifactError(f"{path}: unknown language model kind {kind!r}")
    module, name = FAMILIES[kind]
    family = getattr(importlib.import_module(module), name)
    try:
        return family.from_artifact(config, payload, torch.device(device))
    except ArtifactError:
        raise
    except Exception as e:  # bad model_args, unparsable or ill-fitting weights
        raise ArtifactError(f"{path}: cannot build {kind} from its artifact: {e}") from e


# kind -> (module, LanguageModel class); imported on use, so a family loads only its own code
FAMILIES = {
    "text-gpt": ("models.gpt", "GPTLanguageModel"),
    "text-lstm": ("models.rnn", "RNNLanguageModel"),
    "text-gru": ("models.rnn", "RNNLanguageModel"),
    "text-ngram": ("models.ngram", "NGramLanguageModel"),
}
