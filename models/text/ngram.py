"""Character n-gram language model with interpolated modified Kneser-Ney smoothing.

References:
- Kneser & Ney, "Improved backing-off for m-gram language modeling", ICASSP 1995.
- Chen & Goodman, "An Empirical Study of Smoothing Techniques for Language Modeling", 1998:
  modified KN (three discounts per order, set from counts of counts) with interpolation.

For a context h of k - 1 characters (h' drops its oldest one) and the next character w:

    p_k(w | h) = (max(c_k(hw) - D_k(c_k(hw)), 0) + g_k(h) * p_{k-1}(w | h')) / sum_w c_k(hw)
    g_k(h)     = D_k1 * N1(h.) + D_k2 * N2(h.) + D_k3 * N3+(h.)

c_k is the raw count at the highest order and the continuation count N1+(. hw) (how many
distinct characters precede hw) below it; p_0 = 1 / vocab_size, so every character keeps a
nonzero probability. A context never seen at order k passes p_{k-1} through unchanged.
Contexts before the start of a text are newlines (the start of a line).

The artifact stores, per order k, the distinct k-grams in code order (code = the characters
as a base-vocab_size number, oldest first): `prefix_k` the row of the first k - 1 characters
in the order k - 1 table (int32), `last_k` the last token (uint8, int32 past 256 tokens),
`count_k` (int32).
Codes, discounts and per-context sums are rebuilt from these when loading.
"""

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load as load_safetensors

from models.artifacts import WEIGHTS_FILE, ArtifactError
from models.text.lm import LanguageModel, artifact_tokenizer
from models.text.tokenizer import Tokenizer


@dataclass
class NGramConfig:
    vocab_size: int = 65  # characters in the tokenizer
    order: int = 7  # longest n-gram: a character is predicted from the order - 1 before it


def kn_discounts(counts: np.ndarray) -> np.ndarray:
    """[0, D1, D2, D3+] from the counts of counts (Chen & Goodman's estimates)."""
    n = [int(np.sum(counts == i)) for i in range(5)]  # n[i]: n-grams seen exactly i times
    y = n[1] / (n[1] + 2 * n[2]) if n[1] + 2 * n[2] else 0.5
    d = [0.0]
    for i in (1, 2, 3):
        estimate = i - (i + 1) * y * n[i + 1] / n[i] if n[i] else 0.5 * i
        d.append(min(max(estimate, 0.01), float(i)))  # > 0 keeps g > 0; <= i keeps c - D >= 0
    return np.array(d)


class OrderTable(NamedTuple):
    """Everything needed to score order k, sorted by code for np.searchsorted."""

    codes: np.ndarray  # (G,) k-gram codes
    counts: np.ndarray  # (G,) raw (highest order) or continuation counts
    ctx: np.ndarray  # (C,) codes of the distinct (k-1)-character contexts
    total: np.ndarray  # (C,) sum of counts per context
    gamma: np.ndarray  # (C,) D1 N1 + D2 N2 + D3 N3+ per context
    discount: np.ndarray  # (4,) [0, D1, D2, D3+]


class NGramModel(nn.Module):
    """Count tables as integer buffers; an nn.Module only so that they travel through the same
    safetensors artifact code as the neural models. It has no parameters."""

    def __init__(self, config: NGramConfig, tables: dict[str, torch.Tensor]):
        super().__init__()
        V, n = config.vocab_size, config.order
        if n < 1 or V < 2 or n * math.log2(V) >= 63:
            raise ValueError(
                f"order {n} over {V} tokens: contexts must fit int64 codes (order * log2(vocab) "
                "< 63); lower order or vocab_size"
            )
        expected = {f"{part}_{k}" for k in range(1, n + 1) for part in ("prefix", "last", "count")}
        if set(tables) != expected:
            raise ValueError(f"tables {sorted(set(tables) ^ expected)} missing or unexpected")
        self.config = config
        for name, t in tables.items():
            self.register_buffer(name, t.cpu().contiguous())
        self.orders: list[OrderTable] = []  # lookup tables for orders 1..n, rebuilt here
        codes = np.zeros(1, np.int64)  # order 0: the one empty context
        for k in range(1, n + 1):
            prefix = tables[f"prefix_{k}"].numpy().astype(np.int64)
            last = tables[f"last_{k}"].numpy().astype(np.int64)
            count = tables[f"count_{k}"].numpy().astype(np.int64)
            if not (len(prefix) == len(last) == len(count) > 0):
                raise ValueError(f"order {k}: tables of different or zero lengths")
            if prefix.min() < 0 or prefix.max() >= len(codes) or last.max() >= V:
                raise ValueError(f"order {k}: index out of range")
            codes = codes[prefix] * V + last
            if np.any(np.diff(codes) <= 0) or count.min() < 0:
                raise ValueError(f"order {k}: codes not strictly increasing or negative counts")
            ctx = codes // V
            starts = np.flatnonzero(np.r_[True, ctx[1:] != ctx[:-1]])  # first row per context
            d = kn_discounts(count)
            per_row = d[np.minimum(count, 3)] * (count > 0)  # D(c) of each seen n-gram
            total, gamma = np.add.reduceat(count, starts), np.add.reduceat(per_row, starts)
            self.orders.append(OrderTable(codes, count, ctx[starts], total, gamma, d))

    @classmethod
    def fit(cls, ids: np.ndarray, config: NGramConfig) -> "NGramModel":
        """Counts every k-gram of `ids` for k = 1..order (np.unique on base-V codes)."""
        x = np.asarray(ids, dtype=np.int64)
        V, n = config.vocab_size, config.order
        grams, raw = [np.zeros(1, np.int64)], [np.zeros(1, np.int64)]
        codes = x
        for k in range(1, n + 1):
            if k > 1:
                codes = codes[:-1] * V + x[k - 1 :]  # k-gram starting at each position
            g, c = np.unique(codes, return_counts=True)
            grams.append(g)
            raw.append(c)
        tables = {}
        for k in range(1, n + 1):
            if k == n:
                count = raw[k]
            else:  # continuation count: distinct characters seen before the k-gram
                suffixes, c = np.unique(grams[k + 1] % V**k, return_counts=True)
                count = np.zeros(len(grams[k]), np.int64)
                count[np.searchsorted(grams[k], suffixes)] = c
            tables[f"prefix_{k}"] = torch.from_numpy(
                np.searchsorted(grams[k - 1], grams[k] // V).astype(np.int32)
            )
            last = np.uint8 if V <= 256 else np.int32  # characters fit a byte; BPE tokens not
            tables[f"last_{k}"] = torch.from_numpy((grams[k] % V).astype(last))
            tables[f"count_{k}"] = torch.from_numpy(count.astype(np.int32))
        return cls(config, tables)

    def probs(self, context: np.ndarray, next_ids: np.ndarray) -> np.ndarray:
        """context (B, order-1) ids, next_ids (B, W) -> p(next_ids | context) (B, W) float64."""
        V, B = self.config.vocab_size, context.shape[0]
        p = np.full(next_ids.shape, 1.0 / V)  # p_0: uniform
        ctx = np.zeros(B, np.int64)  # code of the last k - 1 characters
        for k, o in enumerate(self.orders, start=1):
            if k > 1:
                ctx = ctx + context[:, -(k - 1)].astype(np.int64) * V ** (k - 2)
            j = np.minimum(np.searchsorted(o.ctx, ctx), len(o.ctx) - 1)
            total = np.where(o.ctx[j] == ctx, o.total[j], 0)  # (B,) 0: context unseen
            code = ctx[:, None] * V + next_ids  # (B, W)
            i = np.minimum(np.searchsorted(o.codes, code), len(o.codes) - 1)
            c = np.where(o.codes[i] == code, o.counts[i], 0)  # (B, W)
            discounted = np.maximum(c - o.discount[np.minimum(c, 3)], 0.0)
            mixed = (discounted + o.gamma[j][:, None] * p) / np.maximum(total, 1)[:, None]
            p = np.where(total[:, None] > 0, mixed, p)
        return p

    def next_probs(self, context: np.ndarray) -> np.ndarray:
        """context (B, order-1) -> the whole next-character distribution (B, vocab)."""
        V = self.config.vocab_size
        return self.probs(context, np.broadcast_to(np.arange(V), (context.shape[0], V)))

    def contexts(self, ids: np.ndarray, pad_id: int) -> np.ndarray:
        """The order-1 characters before each of `ids` (B, order-1), newline-padded at the start."""
        w = self.config.order - 1
        if w == 0:
            return np.zeros((len(ids), 0), np.int64)
        padded = np.concatenate([np.full(w, pad_id, np.int64), np.asarray(ids, np.int64)])
        return np.stack([padded[j : j + len(ids)] for j in range(w)], axis=1)

    def cross_entropy(self, ids: np.ndarray, pad_id: int, batch: int = 1 << 16) -> float:
        """Mean -ln p (nats/char) over every character of `ids`, in vectorised batches."""
        ids = np.asarray(ids, np.int64)
        context = self.contexts(ids, pad_id)
        nll = 0.0
        for s in range(0, len(ids), batch):
            p = self.probs(context[s : s + batch], ids[s : s + batch, None])
            nll -= float(np.log(p).sum())
        return nll / len(ids)


# -- the slot interface for the generation engine ------------------------------------------


class NGramLanguageModel(LanguageModel):
    """Each slot keeps its last order-1 ids; logits are log-probabilities (every one finite).

    An empty prompt reads as the start of a line (newline history), so `needs_prompt` is False.
    """

    needs_prompt = False

    def __init__(
        self,
        model: NGramModel,
        tokenizer: Tokenizer,
        name: str = "",
        device: torch.device | str = "cpu",
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.device = torch.device(device)
        self.pad_id = tokenizer.start_id
        self.width = model.config.order - 1
        self.history = np.zeros((0, self.width), np.int64)  # (slots, order-1)

    def allocate(self, slots: int) -> None:
        self.history = np.full((slots, self.width), self.pad_id, np.int64)

    def prefill(self, slot: int, ids: list[int]) -> torch.Tensor:
        self.history[slot] = ([self.pad_id] * self.width + list(ids))[len(ids) :]
        return self._logits(self.history[[slot]])[0]  # (vocab,)

    def prefill_scored(self, slot: int, ids: list[int]) -> torch.Tensor:
        if not ids:
            return self.prefill(slot, ids)[None]
        padded = np.asarray([self.pad_id] * self.width + list(ids), np.int64)
        windows = np.lib.stride_tricks.sliding_window_view(padded, self.width)[1:]  # (T, width)
        self.history[slot] = windows[-1]
        return self._logits(np.ascontiguousarray(windows))  # (T, vocab)

    def move(self, src: int, dst: int) -> None:
        self.history[dst] = self.history[src]

    def decode(self, slots: list[int], ids: list[int]) -> torch.Tensor:
        step = np.asarray(ids, np.int64)[:, None]  # (B, 1)
        history = np.concatenate([self.history[slots], step], axis=1)[:, 1:]  # drop the oldest
        self.history[slots] = history
        return self._logits(history)  # (B, vocab)

    def _logits(self, history: np.ndarray) -> torch.Tensor:
        logp = np.log(self.model.next_probs(history)).astype(np.float32)
        return torch.from_numpy(logp).to(self.device)

    def validation_loss(self, text: str) -> float:
        """Mean cross-entropy in nats per token over every token of `text`."""
        return self.model.cross_entropy(np.array(self.tokenizer.encode(text)), self.pad_id)

    @classmethod
    def from_artifact(
        cls, config: dict, payload: dict[str, bytes], device: torch.device
    ) -> "NGramLanguageModel":
        try:
            model_config = NGramConfig(**config["model_args"])
            tables = load_safetensors(payload[WEIGHTS_FILE])  # tensors only, runs no code
            model = NGramModel(model_config, tables)
        except Exception as e:
            raise ArtifactError(f"not a valid n-gram artifact: {e}") from e
        tokenizer = artifact_tokenizer(config, model_config.vocab_size)
        return cls(model, tokenizer, name=config.get("name", ""), device=device)
