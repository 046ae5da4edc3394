"""Tokenizers, the one family every text kind uses: characters, or byte-level BPE.

- `char`: one token per character seen in the training text. Characters outside the
  vocabulary are refused (never silently mapped), so a prompt either means exactly what the
  model was trained on or the caller is told which characters to drop. The committed
  character models use it.
- `bpe`: byte-level BPE (Sennrich et al. 2016, over bytes as in GPT-2) trained on the job's
  training split with Hugging Face `tokenizers`. Every UTF-8 text encodes, so nothing is
  refused. It is stored in config.json as the library's own JSON, never pickled, and so
  covered by the artifact's sha256.

Every token also has its bytes (`token_bytes`), so a generation engine can stream text token
by token through an incremental UTF-8 decoder: a character split across two BPE tokens
appears once both have arrived.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any


class UnknownCharacters(ValueError):
    def __init__(self, chars: Iterable[str]) -> None:
        self.chars = sorted(set(chars))
        super().__init__(f"characters outside the model's vocabulary: {self.chars!r}")


class Tokenizer(ABC):
    vocab_size: int
    token_bytes: list[bytes]  # id -> the UTF-8 bytes it stands for

    @abstractmethod
    def encode(self, text: str) -> list[int]: ...

    @abstractmethod
    def decode(self, ids: Iterable[int]) -> str: ...

    def unknown(self, text: str) -> list[str]:
        """Characters of `text` it cannot encode (none for byte-level tokenizers)."""
        return []

    @property
    @abstractmethod
    def start_id(self) -> int:
        """The token a model reads when a prompt is empty: the newline, as the corpus starts."""

    @abstractmethod
    def to_config(self) -> dict[str, Any]: ...


class CharTokenizer(Tokenizer):
    def __init__(self, chars: Iterable[str]) -> None:
        self.chars = sorted(set(chars))
        self.stoi = {c: i for i, c in enumerate(self.chars)}
        self.token_bytes = [c.encode("utf-8", "surrogatepass") for c in self.chars]

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls(set(text))

    @property
    def vocab_size(self) -> int:  # type: ignore[override]
        return len(self.chars)

    @property
    def start_id(self) -> int:
        return self.stoi.get("\n", 0)

    def unknown(self, text: str) -> list[str]:
        return sorted({c for c in text if c not in self.stoi})

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[c] for c in text]
        except KeyError:
            raise UnknownCharacters(self.unknown(text)) from None

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def to_config(self) -> dict[str, Any]:
        return {"chars": self.chars}  # no "type": the committed artifacts' form


def _byte_alphabet() -> dict[str, int]:
    """GPT-2's byte-level alphabet: each byte 0-255 as a printable character, and back."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


class BPETokenizer(Tokenizer):
    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = tokenizer.get_vocab_size()
        alphabet = _byte_alphabet()
        self.token_bytes = [b""] * self.vocab_size
        for token, i in tokenizer.get_vocab().items():
            self.token_bytes[i] = bytes(alphabet[c] for c in token)
        self._start = tokenizer.token_to_id(self._newline())

    @staticmethod
    def _newline() -> str:
        return next(c for c, b in _byte_alphabet().items() if b == ord("\n"))

    @classmethod
    def train(cls, text: str, vocab_size: int, chunk: int = 8192) -> BPETokenizer:
        """Learns `vocab_size` tokens (the 256 bytes included) from `text`."""
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        tokenizer = HFTokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        pieces = (text[i : i + chunk] for i in range(0, len(text), chunk))
        tokenizer.train_from_iterator(pieces, trainer, length=len(text) // chunk + 1)
        return cls(tokenizer)

    @property
    def start_id(self) -> int:
        return self._start if self._start is not None else 0

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def decode(self, ids: Iterable[int]) -> str:
        return b"".join(self.token_bytes[i] for i in ids).decode("utf-8", "replace")

    def to_config(self) -> dict[str, Any]:
        return {"type": "bpe", "json": self.tokenizer.to_str()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> BPETokenizer:
        from tokenizers import Tokenizer as HFTokenizer

        json.loads(config["json"])  # plain JSON: a parse error names the problem
        return cls(HFTokenizer.from_str(config["json"]))


def load_tokenizer(config: dict[str, Any]) -> Tokenizer:
    """The tokenizer an artifact's config.json describes (`char` when it names no type)."""
    kind = config.get("type", "char")
    if kind == "char":
        return CharTokenizer(config["chars"])
    if kind == "bpe":
        return BPETokenizer.from_config(config)
    raise ValueError(f"unknown tokenizer type {kind!r}, expected 'char' or 'bpe'")


def train_tokenizer(kind: str, text: str, vocab_size: int) -> Tokenizer:
    """A tokenizer of `kind` learnt from a training split."""
    if kind == "bpe":
        return BPETokenizer.train(text, vocab_size)
    return CharTokenizer.from_text(text)
