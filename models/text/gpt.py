"""A small GPT decoder for character-level language modelling, after nanoGPT.

References:
- Radford et al., "Language Models are Unsupervised Multitask Learners" (GPT-2), 2019.
- Karpathy, nanoGPT (github.com/karpathy/nanoGPT): the layout and the training recipe.

Generation keeps a slot-based KV cache: each running sequence owns a slot of fixed-size
key/value tensors, so sequences can join and leave a decoding batch between steps
(continuous batching) without copying anyone else's cache.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.artifacts import load_module
from models.text.lm import LanguageModel, artifact_tokenizer
from models.text.tokenizer import Tokenizer


@dataclass
class GPTConfig:
    vocab_size: int = 65  # characters in the tokenizer
    block_size: int = 256  # longest context the model attends over
    n_layer: int = 6  # transformer blocks
    n_head: int = 6  # attention heads per block
    n_embd: int = 192  # residual stream width; divisible by n_head
    dropout: float = 0.1  # on attention weights, residual branches and embeddings (training)
    bias: bool = False  # biases in Linear and LayerNorm; off is slightly better and faster


class KVCache:
    """Keys and values for `slots` sequences: (n_layer, slots + 1, n_head, block_size, head_dim).

    The extra row (`scratch`) takes the writes of padding in a batched prefill, so that the
    padding never lands in a sequence's own slot.
    """

    def __init__(self, config: GPTConfig, slots: int, device: torch.device, dtype: torch.dtype):
        head_dim = config.n_embd // config.n_head
        shape = (config.n_layer, slots + 1, config.n_head, config.block_size, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.scratch = slots


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.dropout = config.dropout

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, T, C) -> (B, nh, T, hs)
        return tuple(t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self._heads(x)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))

    def forward_cached(
        self,
        x: torch.Tensor,
        layer_k: torch.Tensor,
        layer_v: torch.Tensor,
        where: "CacheIndex",
    ) -> torch.Tensor:
        """x (B, T, C): writes its keys and values where `where` says, then attends each
        query over its own sequence's cached prefix."""
        B, T, C = x.shape
        q, k, v = self._heads(x)  # (B, nh, T, hs)
        layer_k[where.write_slots, :, where.write_pos] = k.transpose(1, 2).to(layer_k.dtype)
        layer_v[where.write_slots, :, where.write_pos] = v.transpose(1, 2).to(layer_v.dtype)
        keys = layer_k[where.rows, :, : where.length].to(q.dtype)  # (B, nh, L, hs)
        values = layer_v[where.rows, :, : where.length].to(q.dtype)
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=where.mask)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


@dataclass
class CacheIndex:
    """Where a cached forward pass writes and reads, computed once for every layer.

    Row b's token t sits at position start[b] + t of slot slots[b]; with `lengths`, tokens
    past lengths[b] are padding and are written to the scratch slot instead.
    """

    write_slots: torch.Tensor  # (B, T) or (B, 1)
    write_pos: torch.Tensor  # (B, T)
    rows: slice | torch.Tensor  # the slots read: a view when they are consecutive
    length: int  # positions read: 0..length-1
    mask: torch.Tensor  # (B, 1, T, length): query at position p sees keys 0..p of its own slot
    pos: torch.Tensor  # (B, T) positions for the embedding (padding clamped into the block)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))

    def forward_cached(
        self, x: torch.Tensor, layer_k: torch.Tensor, layer_v: torch.Tensor, where: CacheIndex
    ) -> torch.Tensor:
        x = x + self.attn.forward_cached(self.ln_1(x), layer_k, layer_v, where)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying
        self.apply(self._init_weights)
        # GPT-2: scale residual projections by 1/sqrt(2 * n_layer)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters()) - self.wpe.weight.numel()

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) -> logits (B, T, vocab), and the mean cross-entropy if targets are given."""
        T = idx.shape[1]
        assert self.config.block_size >= T, f"sequence of {T} > block_size"
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))  # (B, T, vocab)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    # -- generation with a KV cache -------------------------------------------------------

    def new_cache(self, slots: int) -> KVCache:
        p = next(self.parameters())
        return KVCache(self.config, slots, p.device, p.dtype)

    @torch.inference_mode()
    def forward_cached(
        self,
        idx: torch.Tensor,
        cache: KVCache,
        slots: torch.Tensor,
        start: torch.Tensor,
        first: int | None = None,
        every: bool = False,
        lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """idx (B, T) continuing each slot at `start` -> logits of the last position (B, vocab)
        (the last before padding, with `lengths`), or of every position (B, T, vocab) with
        `every`.

        `first`: the slots are first..first+B-1, so the cache is read as a view.
        `lengths` (B,): row b holds lengths[b] tokens and then padding (a batched prefill of
        prompts of different lengths); its padding is neither stored nor seen.
        """
        where = self.cache_index(idx, cache, slots, start, first, lengths)
        x = self.wte(idx) + self.wpe(where.pos)
        for i, block in enumerate(self.blocks):
            x = block.forward_cached(x, cache.k[i], cache.v[i], where)
        if lengths is not None and not every:  # each row's last real token, not padding
            x = x[torch.arange(x.shape[0], device=x.device), lengths - 1]
        elif not every:
            x = x[:, -1]
        return self.lm_head(self.ln_f(x))  # (B, [T,] vocab)

    def cache_index(
        self,
        idx: torch.Tensor,
        cache: KVCache,
        slots: torch.Tensor,
        start: torch.Tensor,
        first: int | None,
        lengths: torch.Tensor | None,
    ) -> CacheIndex:
        B, T = idx.shape
        pos = start[:, None] + torch.arange(T, device=idx.device)  # (B, T)
        write_slots = slots[:, None]
        if lengths is None:
            last = pos[:, -1]
        else:
            real = torch.arange(T, device=idx.device)[None, :] < lengths[:, None]
            write_slots = torch.where(real, write_slots, cache.scratch)
            last = start + lengths - 1
            pos = torch.where(real, pos, pos.clamp(max=self.config.block_size - 1))
        length = int(last.max()) + 1
        rows = slice(first, first + B) if first is not None else slots  # a view, or a gather
        mask = torch.arange(length, device=idx.device)[None, None, :] <= pos[:, :, None]
        return CacheIndex(write_slots, pos, rows, length, mask[:, None], pos)

    @torch.inference_mode()
    def decode_step(
        self, tokens: torch.Tensor, cache: KVCache, first: int, positions: list[int]
    ) -> torch.Tensor:
        """One new token (B,) for each sequence in slots first..first+B-1, at `positions`
        -> logits (B, vocab).

        The arithmetic of forward_cached at T == 1, written with functional ops on the
        modules' weights: at batch 1 on a CPU the per-module calls, masks and index tensors
        cost more than the matmuls (shakespeare-gpt: 1.1 ms a step here, 2.7 ms there).
        """
        B = tokens.shape[0]
        C, nh = self.config.n_embd, self.config.n_head
        eps = self.ln_f.eps  # every LayerNorm's
        pos = torch.tensor(positions, device=tokens.device)
        L = max(positions) + 1
        rows = torch.arange(B, device=tokens.device)
        mask = None  # one sequence sees all of its L keys; several are masked to their own
        if B > 1:
            mask = (torch.arange(L, device=tokens.device) <= pos[:, None])[:, None, None, :]
        wte, wpe, ln_f, head, blocks = self._decode_weights()
        x = F.embedding(tokens, wte) + F.embedding(pos, wpe)  # (B, C)
        for i, (ln_1, c_attn, attn_proj, ln_2, c_fc, mlp_proj) in enumerate(blocks):
            h = torch.layer_norm(x, (C,), *ln_1, eps)
            q, k, v = F.linear(h, *c_attn).view(B, 3, nh, C // nh).unbind(1)  # (B, nh, hs)
            keys, values = cache.k[i, first : first + B], cache.v[i, first : first + B]
            if B == 1:
                keys[0, :, positions[0]] = k[0].to(keys.dtype)
                values[0, :, positions[0]] = v[0].to(values.dtype)
            else:
                keys[rows, :, pos] = k.to(keys.dtype)
                values[rows, :, pos] = v.to(values.dtype)
            y = F.scaled_dot_product_attention(
                q[:, :, None],
                keys[:, :, :L].to(q.dtype),
                values[:, :, :L].to(q.dtype),
                attn_mask=mask,
            )  # (B, nh, 1, hs)
            x = x + F.linear(y.view(B, C), *attn_proj)
            h = F.gelu(F.linear(torch.layer_norm(x, (C,), *ln_2, eps), *c_fc))
            x = x + F.linear(h, *mlp_proj)
        x = torch.layer_norm(x, (C,), *ln_f, eps)
        return F.linear(x, head)

    def _decode_weights(self) -> tuple:
        """The tensors decode_step reads, gathered once: looking each up through the modules
        costs ~80 attribute lookups a step. Parameters are updated in place (loading,
        .to()), so the same tensors stay current."""
        if getattr(self, "_weights", None) is None:

            def pair(m: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
                return m.weight, m.bias

            blocks = [
                (pair(b.ln_1), pair(b.attn.c_attn), pair(b.attn.c_proj), pair(b.ln_2),
                 pair(b.mlp.c_fc), pair(b.mlp.c_proj))
                for b in self.blocks
            ]  # fmt: skip
            head = self.lm_head.weight
            self._weights = (self.wte.weight, self.wpe.weight, pair(self.ln_f), head, blocks)
        return self._weights


class GPTLanguageModel(LanguageModel):
    """The generation-engine view of a GPT: one KV-cache slot per running sequence.

    A sequence that outgrows the context is re-prefilled from its last half-context, so
    generation can run past block_size (positions are absolute, so the cache cannot slide).
    """

    def __init__(self, model: GPT, tokenizer: Tokenizer, name: str = ""):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.device = next(model.parameters()).device
        self.cache: KVCache | None = None
        self.history: dict[int, list[int]] = {}  # slot -> ids currently in its cache

    @classmethod
    def from_artifact(
        cls, config: dict, payload: dict[str, bytes], device: torch.device
    ) -> "GPTLanguageModel":
        model = load_module(GPT, GPTConfig, config, payload)
        tokenizer = artifact_tokenizer(config, model.config.vocab_size)
        return cls(model.to(device), tokenizer, config.get("name", ""))

    def allocate(self, slots: int) -> None:
        self.cache = self.model.new_cache(slots)
        self.history = {}

    def _run(
        self, slots: list[int], ids: torch.Tensor, start: list[int], every: bool = False
    ) -> torch.Tensor:
        assert self.cache is not None, "allocate() first"
        s = torch.tensor(slots, device=self.device)
        p = torch.tensor(start, device=self.device)
        # Consecutive slots (the engine keeps running sequences in 0..B-1) read the cache
        # as a view instead of gathering a copy of every key and value.
        first = slots[0] if slots == list(range(slots[0], slots[0] + len(slots))) else None
        ids = ids.to(self.device)
        return self.model.forward_cached(ids, self.cache, s, p, first, every).float()

    chunked_prefill = True

    def context(self, ids: list[int]) -> list[int]:
        """What the model reads of a prompt: its last block_size tokens (or a start token)."""
        return ids[-self.model.config.block_size :] or [self.tokenizer.start_id]

    def prefill(self, slot: int, ids: list[int]) -> torch.Tensor:
        ids = self.context(ids)
        self.history[slot] = list(ids)
        return self._run([slot], torch.tensor([ids]), [0])[0]

    def prefill_batch(
        self, slots: list[int], chunks: list[list[int]], starts: list[int]
    ) -> torch.Tensor:
        """Every chunk in one forward pass, right-padded to the longest; a chunk may continue
        a prompt whose first `start` tokens an earlier step stored."""
        for slot, chunk, start in zip(slots, chunks, starts, strict=True):
            self.history[slot] = self.history.get(slot, [])[:start] + chunk
        if len(slots) == 1:
            return self._run(slots, torch.tensor(chunks), starts)
        assert self.cache is not None, "allocate() first"
        T = max(len(c) for c in chunks)
        ids = torch.tensor([c + [0] * (T - len(c)) for c in chunks], device=self.device)
        lengths = torch.tensor([len(c) for c in chunks], device=self.device)
        s = torch.tensor(slots, device=self.device)
        p = torch.tensor(starts, device=self.device)
        return self.model.forward_cached(ids, self.cache, s, p, lengths=lengths).float()

    def prefill_scored(self, slot: int, ids: list[int]) -> torch.Tensor:
        """One forward pass while the text fits the context; past it, token by token (each
        token then sees the sliding context that generation would give it)."""
        if not ids or len(ids) > self.model.config.block_size:
            return super().prefill_scored(slot, ids)
        self.history[slot] = list(ids)
        return self._run([slot], torch.tensor([ids]), [0], every=True)[0]

    def decode(self, slots: list[int], ids: list[int]) -> torch.Tensor:
        block = self.model.config.block_size
        logits: dict[int, torch.Tensor] = {}
        batch = []
        for slot, token in zip(slots, ids, strict=True):
            history = self.history[slot]
            history.append(token)
            if len(history) > block:  # full: restart from the recent half-context
                logits[slot] = self.prefill(slot, history[-block // 2 :])
            else:
                batch.append(slot)
        if not batch:
            return torch.stack([logits[s] for s in slots])
        start = [len(self.history[s]) - 1 for s in batch]
        if len(batch) == len(slots) and batch == list(range(batch[0], batch[0] + len(batch))):
            # the usual step: every sequence decodes, from dense slots
            assert self.cache is not None, "allocate() first"
            last = torch.tensor([self.history[s][-1] for s in batch], device=self.device)
            return self.model.decode_step(last, self.cache, batch[0], start).float()
        last = torch.tensor([[self.history[s][-1]] for s in batch])
        for slot, row in zip(batch, self._run(batch, last, start), strict=True):
            logits[slot] = row
        return torch.stack([logits[s] for s in slots])

    def release(self, slot: int) -> None:
        self.history.pop(slot, None)

    @torch.inference_mode()
    def move(self, src: int, dst: int) -> None:
        assert self.cache is not None
        length = len(self.history[src])
        self.cache.k[:, dst, :, :length] = self.cache.k[:, src, :, :length]
        self.cache.v[:, dst, :, :length] = self.cache.v[:, src, :, :length]
        self.history[dst] = self.history.pop(src)
