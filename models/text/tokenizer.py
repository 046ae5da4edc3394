"""Character tokenizer: one token per character seen in the training text.

Characters outside the vocabulary are refused (never silently mapped), so a prompt either
means exactly what the model was trained on or the caller is told which characters to drop.
"""

from collections.abc import Iterable


class UnknownCharacters(ValueError):
    def __init__(self, chars: Iterable[str]) -> None:
        self.chars = sorted(set(chars))
        super().__init__(f"characters outside the model's vocabulary: {self.chars!r}")


class CharTokenizer:
    def __init__(self, chars: Iterable[str]) -> None:
        self.chars = sorted(set(chars))
        self.stoi = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        return cls(set(text))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def unknown(self, text: str) -> list[str]:
        return sorted({c for c in text if c not in self.stoi})

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[c] for c in text]
        except KeyError:
            raise UnknownCharacters(self.unknown(text)) from None

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def to_config(self) -> dict[str, list[str]]:
        return {"chars": self.chars}
