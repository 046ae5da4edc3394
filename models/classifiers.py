"""The classification family: TF-IDF text pipelines (scikit-learn), a GRU over characters or
words and a small image CNN (torch).

Every classifier answers one question the same way, `predict_proba(inputs) -> (N, num_labels)`,
so the service never needs to know which library is underneath. Kinds map to builders through
the registries at the bottom; artifacts.py uses them to rebuild a model from its config.json.

References:
- TF-IDF + linear models as a strong sentence baseline: Wang & Manning, "Baselines and Bigrams"
  (ACL 2012).
- The GRU is Cho et al. (2014); max + mean pooling over its states, as in the sentence
  encoders of Conneau et al., "Supervised Learning of Universal Sentence Representations" (2017).
- The CNN follows the classic conv-conv-pool stages of LeCun et al. (1998), with dropout.
"""

import itertools
import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.sparse
import sklearn
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.base import ClassifierMixin
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import MultinomialNB
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import FeatureUnion, Pipeline
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


class Classifier(ABC):
    """What the service sees: labels, the input kind, and class probabilities."""

    labels: list[str]
    input: Literal["text", "image"]
    image_size: tuple[int, int] | None  # (H, W) for image models, None for text

    @abstractmethod
    def predict_proba(self, inputs: Any) -> np.ndarray:
        """float32 (N, len(labels)), rows sum to 1.

        Text models take Sequence[str]; image models float32 (N, H, W) in [0, 1], ink = 1.
        """


# -----------------------------------------------------------------------------
# text: TF-IDF features -> scikit-learn estimator


def _logreg(seed: int, C: float = 10.0, max_iter: int = 2000) -> LogisticRegression:
    return LogisticRegression(C=C, max_iter=max_iter, random_state=seed)


def _naive_bayes(seed: int, alpha: float = 0.3) -> MultinomialNB:
    return MultinomialNB(alpha=alpha)  # deterministic, seed unused


def _mlp(seed: int, hidden: int = 64, alpha: float = 1e-3, max_iter: int = 30) -> MLPClassifier:
    # a few epochs are enough: sparse TF-IDF inputs are nearly separable and MLPs overfit fast
    return MLPClassifier(
        hidden_layer_sizes=(hidden,), alpha=alpha, max_iter=max_iter, random_state=seed
    )


TEXT_ESTIMATORS: dict[str, Callable[..., ClassifierMixin]] = {
    "classify-nb": _naive_bayes,
    "classify-logreg": _logreg,
    "classify-mlp": _mlp,
}


def build_text_pipeline(
    kind: str,
    seed: int = 0,
    *,
    word_ngrams: tuple[int, int] = (1, 2),
    char_ngrams: tuple[int, int] | None = (2, 5),
    min_df: int = 2,
    **params: Any,
) -> Pipeline:
    """An unfitted TF-IDF pipeline. `params` go to the estimator (C, alpha, hidden, ...).

    Word n-grams catch "not good"; char_wb n-grams catch misspellings and word stems
    ("disappoint-ed/-ing"), which matters with only 2,400 training sentences. min_df=2 drops
    n-grams seen once: same CV accuracy, 2.5x smaller vocabulary, so faster to load.
    """
    if kind not in TEXT_ESTIMATORS:
        raise ValueError(
            f"unknown text classifier kind {kind!r}, expected {sorted(TEXT_ESTIMATORS)}"
        )
    word = TfidfVectorizer(ngram_range=tuple(word_ngrams), min_df=min_df, sublinear_tf=True)
    features: list[tuple[str, TfidfVectorizer]] = [("word", word)]
    if char_ngrams is not None:
        char = TfidfVectorizer(
            analyzer="char_wb", ngram_range=tuple(char_ngrams), min_df=min_df, sublinear_tf=True
        )
        features.append(("char", char))
    estimator = TEXT_ESTIMATORS[kind](seed, **params)
    return Pipeline([("features", FeatureUnion(features)), ("clf", estimator)])


class SklearnTextClassifier(Classifier):
    """A fitted text pipeline whose classes are 0..K-1, named by `labels`."""

    input = "text"
    image_size = None

    def __init__(self, pipeline: Pipeline, labels: list[str]):
        classes = list(pipeline.classes_)
        if classes != list(range(len(labels))):
            raise ValueError(f"pipeline classes {classes} do not match {len(labels)} labels")
        self.pipeline = pipeline
        self.labels = list(labels)

    def predict_proba(self, inputs: Sequence[str]) -> np.ndarray:
        if isinstance(inputs, str):
            raise TypeError("expected a sequence of strings, got a single string")
        if len(inputs) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        # The inputs are ours and checked: skip scikit-learn's per-call validation, which
        # costs a fifth of a small batch.
        with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
            features = self.features(list(inputs))  # (N, F) sparse
            proba = self.pipeline[-1].predict_proba(features)  # (N, K), ordered by classes_
        return proba.astype(np.float32)

    def features(self, texts: list[str]) -> Any:
        """The pipeline's features without FeatureUnion's joblib machinery, which costs more
        than the TF-IDF itself on the small batches a server sees (same result)."""
        steps = self.pipeline[:-1]
        if len(steps) == 1 and isinstance(steps[0], FeatureUnion):
            parts = [t.transform(texts) for _, t in steps[0].transformer_list]
            return scipy.sparse.hstack(parts).tocsr()
        return steps.transform(texts)


# -----------------------------------------------------------------------------
# text: a GRU over characters or lower-cased words

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


# -----------------------------------------------------------------------------
# image: a small CNN for grayscale digits


@dataclass
class ImageCNNConfig:
    image_size: tuple[int, int] = (8, 8)  # (H, W); each stage halves it, so H, W % 2**stages == 0
    in_channels: int = 1  # grayscale
    num_classes: int = 10
    channels: tuple[int, ...] = (32, 64)  # conv width per stage; a stage = 2 convs + 2x2 max-pool
    hidden: int = 128  # width of the fully connected layer before the logits
    dropout: float = 0.25  # before both linear layers; the digit data sets are small

    def __post_init__(self) -> None:
        # JSON turns tuples into lists; normalise so configs compare and rebuild identically
        self.image_size = tuple(self.image_size)
        self.channels = tuple(self.channels)
        h, w = self.image_size
        scale = 2 ** len(self.channels)
        if h % scale or w % scale:
            raise ValueError(f"image_size {self.image_size} must be divisible by {scale}")


class ConvStage(nn.Module):
    """conv3x3 -> ReLU -> conv3x3 -> ReLU -> max-pool 2x2: halves H and W."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(c_out, c_out, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))  # (B, c_out, H, W)
        x = F.relu(self.conv2(x))  # (B, c_out, H, W)
        return F.max_pool2d(x, 2)  # (B, c_out, H/2, W/2)


class ImageCNN(nn.Module):
    """Conv stages then a 2-layer head; 8x8 digits end at 2x2 maps, 28x28 MNIST at 7x7."""

    def __init__(self, config: ImageCNNConfig):
        super().__init__()
        self.config = config
        widths = (config.in_channels, *config.channels)
        self.stages = nn.ModuleList(ConvStage(a, b) for a, b in itertools.pairwise(widths))
        h, w = config.image_size
        scale = 2 ** len(config.channels)
        flat = config.channels[-1] * (h // scale) * (w // scale)
        self.fc = nn.Linear(flat, config.hidden)
        self.head = nn.Linear(config.hidden, config.num_classes)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, in_channels, H, W) in [0, 1] -> logits (B, num_classes)
        for stage in self.stages:
            x = stage(x)  # (B, C_i, H / 2**i, W / 2**i)
        x = self.drop(x.flatten(1))  # (B, C * h * w)
        x = self.drop(F.relu(self.fc(x)))  # (B, hidden)
        return self.head(x)  # (B, num_classes)


class TorchImageClassifier(Classifier):
    """An ImageCNN on a device; batches go through it in eval mode, chunked to bound memory."""

    input = "image"

    def __init__(
        self, module: ImageCNN, labels: list[str], device: str = "cpu", batch_size: int = 512
    ):
        if module.config.num_classes != len(labels):
            raise ValueError(
                f"model has {module.config.num_classes} classes, got {len(labels)} labels"
            )
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()
        self.labels = list(labels)
        self.image_size = module.config.image_size
        self.batch_size = batch_size

    def predict_proba(self, inputs: np.ndarray) -> np.ndarray:
        x = np.asarray(inputs, dtype=np.float32)
        if x.ndim != 3 or tuple(x.shape[1:]) != self.image_size:
            h, w = self.image_size
            raise ValueError(f"expected images of shape (N, {h}, {w}), got {x.shape}")
        out = []
        with torch.inference_mode():
            for i in range(0, len(x), self.batch_size):
                batch = torch.from_numpy(x[i : i + self.batch_size]).unsqueeze(1)  # (B, 1, H, W)
                logits = self.module(batch.to(self.device))  # (B, K)
                out.append(F.softmax(logits.float(), dim=-1).cpu().numpy())
        if not out:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return np.concatenate(out).astype(np.float32)


# -----------------------------------------------------------------------------
# registries: kind -> how to rebuild it (artifacts.py), rebuild is Config(**config["model_args"])

TORCH_MODELS: dict[str, tuple[type[Any], type[nn.Module]]] = {
    "classify-cnn": (ImageCNNConfig, ImageCNN),
    "classify-rnn": (TextRNNConfig, TextRNN),
}
TORCH_INPUTS: dict[str, Literal["text", "image"]] = {
    "classify-cnn": "image",
    "classify-rnn": "text",
}
SKLEARN_KINDS: tuple[str, ...] = tuple(TEXT_ESTIMATORS)
