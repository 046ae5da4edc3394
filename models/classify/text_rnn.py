"""Text classification with a GRU over characters or lower-cased words.

References:
- The GRU is Cho et al. (2014); max + mean pooling over its states, as in the sentence
  encoders of Conneau et al., "Supervised Learning of Universal Sentence Representations" (2017).
"""

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from models.artifacts import CONFIG_FILE, ArtifactError
from models.classify.base import Classifier, load_classifier_module

PAD, UNK = 0, 1  # ids of <pad> and <unk> in every TextVocab
WORD_PATTERN = re.compile(r"\w+|[^\w\s]")  # words and single punctuation marks: "!" is signal


class TextVocab:
    """Characters or lower-cased words -> ids: <pad> = 0, <unk> = 1, then by training frequency.

    Unlike the language models' CharTokenizer, unseen tokens become <unk> instead of an error:
    a classifier must answer for any sentence a user sends. Stored as plain JSON (to_config).
    """

    def __init__(self, level: Literal["char", "word"], tokens: Sequence[str], lower: bool = True):
        if level not in ("char", "word"):
            raise ValueError(f"level must be 'char' or 'word', not {level!r}")
        if len(set(tokens)) != len(tokens) or not all(isinstance(t, str) for t in tokens):
            raise ValueError("vocabulary tokens must be distinct strings")
        self.level = level
        self.lower = lower
        self.itos = ["<pad>", "<unk>", *tokens]
        self.stoi = {t: i for i, t in enumerate(self.itos) if i >= 2}  # specials never match

    @classmethod
    def build(
        cls,
        texts: Iterable[str],
        level: Literal["char", "word"] = "char",
        min_freq: int = 1,
        lower: bool = True,
    ) -> "TextVocab":
        """Every token seen at least `min_freq` times, most frequent first (ties by name)."""
        counts = Counter(t for text in texts for t in split_text(text, level, lower))
        kept = sorted(
            (t for t, n in counts.items() if n >= min_freq), key=lambda t: (-counts[t], t)
        )
        return cls(level, kept, lower)

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, text: str, max_len: int | None = None) -> list[int]:
        ids = [self.stoi.get(t, UNK) for t in split_text(text, self.level, self.lower)]
        return ids[:max_len] if max_len is not None else ids

    def to_config(self) -> dict[str, Any]:
        return {"level": self.level, "lower": self.lower, "tokens": self.itos[2:]}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "TextVocab":
        return cls(config["level"], config["tokens"], config.get("lower", True))


def split_text(text: str, level: str, lower: bool = True) -> list[str]:
    text = text.lower() if lower else text
    return list(text) if level == "char" else WORD_PATTERN.findall(text)


@dataclass
class TextRNNConfig:
    level: str = "word"  # "char" or "word": what one token of the vocabulary is
    vocab_size: int = 2048  # tokens in the TextVocab, <pad> and <unk> included
    embed: int = 128  # token embedding width
    hidden: int = 128  # GRU state width per direction
    num_layers: int = 1  # stacked GRU layers
    bidirectional: bool = True  # a backward GRU too: the end of a sentence sees its start
    dropout: float = 0.3  # on embeddings, between GRU layers and before the head (training)
    num_classes: int = 2
    max_len: int = 256  # tokens kept per text; longer texts are truncated

    def __post_init__(self) -> None:
        if self.level not in ("char", "word"):
            raise ValueError(f"level must be 'char' or 'word', not {self.level!r}")
        if self.vocab_size < 3 or self.num_classes < 2 or self.max_len < 1:
            raise ValueError("need vocab_size >= 3, num_classes >= 2 and max_len >= 1")


class TextRNN(nn.Module):
    """Embedding -> GRU over the real tokens -> max + mean pooling -> linear logits.

    Sequences are packed, so padding never enters the GRU: a text gets the same logits alone or
    in a batch with longer ones (up to float rounding).
    """

    def __init__(self, config: TextRNNConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.embed, padding_idx=PAD)
        self.gru = nn.GRU(
            config.embed,
            config.hidden,
            config.num_layers,
            batch_first=True,
            bidirectional=config.bidirectional,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )
        width = config.hidden * (2 if config.bidirectional else 1)
        self.head = nn.Linear(2 * width, config.num_classes)  # [max; mean] pooled states
        self.drop = nn.Dropout(config.dropout)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """idx (B, T) token ids, right-padded with PAD -> logits (B, num_classes)."""
        T = idx.shape[1]
        lengths = (idx != PAD).sum(1).clamp(min=1)  # (B,); an empty text reads one <pad>
        x = self.drop(self.wte(idx))  # (B, T, embed)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)  # (B, T, D)
        mask = (torch.arange(T, device=idx.device)[None] < lengths[:, None])[..., None]  # (B,T,1)
        mean = (out * mask).sum(1) / lengths[:, None]  # (B, D)
        peak = out.masked_fill(~mask, float("-inf")).amax(1)  # (B, D)
        return self.head(self.drop(torch.cat((peak, mean), dim=-1)))  # (B, num_classes)


def pad_batch(ids: Sequence[Sequence[int]], device: torch.device | str = "cpu") -> torch.Tensor:
    """Token id lists -> (B, T) right-padded with PAD, T = the longest (at least 1)."""
    T = max(1, *(len(s) for s in ids)) if ids else 1
    out = torch.full((len(ids), T), PAD, dtype=torch.long)
    for i, s in enumerate(ids):
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out.to(device)


class TorchTextClassifier(Classifier):
    """A TextRNN and its vocabulary on a device; texts are length-sorted into padded chunks."""

    input = "text"
    image_size = None

    def __init__(
        self,
        module: TextRNN,
        vocab: TextVocab,
        labels: list[str],
        device: str = "cpu",
        batch_size: int = 256,
    ):
        config = module.config
        if config.num_classes != len(labels):
            raise ValueError(f"model has {config.num_classes} classes, got {len(labels)} labels")
        if config.vocab_size != vocab.vocab_size or config.level != vocab.level:
            raise ValueError(
                f"{vocab.level} vocabulary of {vocab.vocab_size} does not fit "
                f"a {config.level} model of {config.vocab_size}"
            )
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()
        self.vocab = vocab
        self.labels = list(labels)
        self.batch_size = batch_size

    def predict_proba(self, inputs: Sequence[str]) -> np.ndarray:
        if isinstance(inputs, str):
            raise TypeError("expected a sequence of strings, got a single string")
        ids = [self.vocab.encode(text, self.module.config.max_len) for text in inputs]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths together
        out = np.zeros((len(ids), len(self.labels)), dtype=np.float32)
        with torch.inference_mode():
            for i in range(0, len(order), self.batch_size):
                rows = order[i : i + self.batch_size]
                idx = pad_batch([ids[r] for r in rows], self.device)  # (B, T)
                logits = self.module(idx)  # (B, K)
                out[rows] = F.softmax(logits.float(), dim=-1).cpu().numpy()
        return out

    @classmethod
    def from_artifact(
        cls, config: dict, payload: dict[str, bytes], device: Any = "cpu"
    ) -> "TorchTextClassifier":
        module, labels = load_classifier_module(config, payload, cls.input, TextRNN, TextRNNConfig)
        try:
            vocab = TextVocab.from_config(config.get("tokenizer"))  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError) as e:
            raise ArtifactError(f"bad tokenizer in {CONFIG_FILE}: {e!r}") from e
        if vocab.vocab_size != module.config.vocab_size or vocab.level != module.config.level:
            raise ArtifactError(
                f"tokenizer ({vocab.level}, {vocab.vocab_size} tokens) does not fit model_args "
                f"({module.config.level}, vocab_size {module.config.vocab_size})"
            )
        return cls(module, vocab, labels, device=str(device))
