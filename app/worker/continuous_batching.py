"""Continuous batching for one language model inside a worker process.

Between decoding steps, waiting sequences are prefilled into free slots and join the running
batch; finished or cancelled ones leave it and free their slot. Each step advances every
running sequence by one token in a single batched `decode` call, and reports the new text
of every sequence as events for the API. A sequence with `max_new_tokens` 0 (scoring, or
OpenAI's echo without generation) leaves right after its prefill.

Prefill is budgeted (`prefill_tokens` prompt tokens a step, 0 = no limit): the prompts
admitted in a step go through the model in one padded pass, and a prompt longer than what
is left of the budget is cut into chunks over several steps (models with `chunked_prefill`).
So a burst of new requests gets its first tokens after one pass rather than one pass per
prompt, and a long prompt delays the running sequences' next token by at most a budget's
worth of work.
"""

from __future__ import annotations

import codecs
import sys
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch

from app.worker.protocol import TokenEvent, TokenInfo
from models.text.lm import LanguageModel
from models.text.sampling import SamplingParams, holdback, make_generator, sample, stop_index


def utf8_decoder() -> codecs.IncrementalDecoder:
    """Bytes to text as they come: a character split across BPE tokens appears once whole."""
    return codecs.getincrementaldecoder("utf-8")("replace")


def token_text(data: bytes) -> str:
    """A token shown on its own (an alternative): its text, or OpenAI's `bytes:\\xNN` form
    for a piece of a UTF-8 character, so that distinct tokens never share a name."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in data)


@dataclass
class Sequence:
    request_id: int
    index: int  # choice index within its request (n > 1)
    prompt: list[int]
    params: SamplingParams
    generator: torch.Generator
    slot: int = -1
    tokens: list[int] = field(default_factory=list)
    counts: dict[int, int] = field(default_factory=dict)  # generated token -> times, penalties
    text: str = ""
    emitted: int = 0  # characters of `text` already sent to the client
    utf8: codecs.IncrementalDecoder = field(default_factory=utf8_decoder)
    scored_prompt: list[TokenInfo] | None = None  # with echo, sent on the first event
    reported: bool = False  # the first event (with the prompt's length) went out
    context: list[int] = field(default_factory=list)  # the prompt as the model reads it
    filled: int = 0  # tokens of `context` in the model's state: prefill may take steps

    @property
    def prefilled(self) -> bool:
        return self.filled == len(self.context)


class GenerationEngine:
    def __init__(self, lm: LanguageModel, max_running: int, prefill_tokens: int = 0) -> None:
        self.lm = lm
        self.max_running = max_running
        self.prefill_tokens = prefill_tokens  # prompt tokens prefilled per step; 0: all
        lm.allocate(max_running)
        self.waiting: deque[Sequence] = deque()
        self.running: dict[int, Sequence] = {}  # slot -> sequence; slots are always 0..B-1
        self.pending_logits: dict[int, torch.Tensor] = {}  # slot -> logits after prefill
        self.vocab = lm.tokenizer.vocab_size
        self.token_text = [token_text(b) for b in lm.tokenizer.token_bytes]

    def add(self, request_id: int, prompt: str | list[int], params: dict[str, Any], n: int) -> None:
        # The API checked the vocabulary (characters or token ids) already.
        ids = self.lm.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        sampling = SamplingParams(**params)
        for index in range(n):
            gen = make_generator(sampling.seed, index)
            self.waiting.append(Sequence(request_id, index, ids, sampling, gen))

    @property
    def free(self) -> int:
        return self.max_running - len(self.running)

    def cancel(self, request_id: int) -> None:
        self.waiting = deque(s for s in self.waiting if s.request_id != request_id)
        for seq in [s for s in self.running.values() if s.request_id == request_id]:
            self._finish(seq.slot)  # read at each call: finishing moves other sequences

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def step(self) -> list[TokenEvent]:
        """Admits waiting sequences, advances every running one by a token, reports text."""
        events: list[TokenEvent] = []
        self._prefill(events)
        if not self.running:
            return events
        slots = sorted(s for s, seq in self.running.items() if seq.prefilled)
        if not slots:
            return events  # every sequence is still reading its prompt
        decode = [s for s in slots if s not in self.pending_logits]
        logits: dict[int, torch.Tensor] = {s: self.pending_logits.pop(s) for s in slots
                                           if s in self.pending_logits}  # fmt: skip
        decoded = None
        if decode:
            decoded = self.lm.decode(decode, [self.running[s].tokens[-1] for s in decode])
            logits.update(zip(decode, decoded, strict=True))
        seqs = [self.running[s] for s in slots]
        if decoded is not None and len(decode) == len(slots):  # the usual step: all decoded
            batch = decoded.float().cpu()
        else:
            batch = torch.stack([logits[s] for s in slots]).float().cpu()
        seen = None
        if any(s.params.repetition_penalty != 1.0 for s in seqs):
            seen = torch.zeros(len(seqs), self.vocab, dtype=torch.bool)
            for row, seq in enumerate(seqs):
                if seq.params.repetition_penalty != 1.0:
                    seen[row, seq.prompt + seq.tokens] = True
        counts = [s.counts for s in seqs]
        params = [s.params for s in seqs]
        tokens, logprobs = sample(batch, params, [s.generator for s in seqs], seen, counts)
        chosen = logprobs.gather(1, torch.tensor(tokens)[:, None]).squeeze(1).tolist()
        k = max(p.logprobs or 0 for p in params)
        top = logprobs.topk(min(k, self.vocab), dim=-1) if k else None
        for row, (seq, token) in enumerate(zip(seqs, tokens, strict=True)):
            k = seq.params.logprobs
            alternatives = None if k is None else self._top(top, row, k) or []
            events.append(self._advance(seq, token, chosen[row], alternatives))
        return events

    def _prefill(self, events: list[TokenEvent]) -> None:
        """This step's prefill: chunks of prompts already started, then new sequences, within
        the token budget, in one `prefill_batch` call. At least one chunk runs each step, so
        a prompt larger than the budget of a model that cannot chunk still gets its turn."""
        budget = self.prefill_tokens or sys.maxsize
        batch: list[tuple[Sequence, int, list[int]]] = []  # (sequence, start, tokens)
        for slot in sorted(self.running):
            seq = self.running[slot]
            if budget > 0 and not seq.prefilled:  # a chunked prompt continues
                take = seq.context[seq.filled : seq.filled + budget]
                batch.append((seq, seq.filled, take))
                budget -= len(take)
        while self.waiting and self.free and budget > 0:
            seq = self.waiting[0]
            seq.context = seq.prompt if seq.params.echo else self.lm.context(seq.prompt)
            whole = seq.params.echo or not self.lm.chunked_prefill
            if whole and len(seq.context) > budget and batch:
                break  # it takes a step of its own
            self.waiting.popleft()
            seq.slot = len(self.running)
            self.running[seq.slot] = seq
            if seq.params.echo:  # every position's logits: its own pass
                rows = self.lm.prefill_scored(seq.slot, seq.prompt)
                seq.scored_prompt = self._score_prompt(seq.prompt, rows, seq.params.logprobs)
                self.pending_logits[seq.slot] = rows[-1]
                seq.filled = len(seq.context)
                budget -= len(seq.context)
                continue
            take = seq.context if whole else seq.context[:budget]
            batch.append((seq, 0, take))
            budget -= len(take)
        if batch:
            rows = self.lm.prefill_batch(
                [seq.slot for seq, _, _ in batch],
                [tokens for _, _, tokens in batch],
                [start for _, start, _ in batch],
            )
            for (seq, start, tokens), row in zip(batch, rows, strict=True):
                seq.filled = start + len(tokens)
                if seq.prefilled:
                    self.pending_logits[seq.slot] = row
        done = [s for s in self.running.values() if s.prefilled and s.params.max_new_tokens == 0]
        for seq in done:  # scoring: nothing to generate
            events.append(self._event(seq, "", "length", None, None))
            self._finish(seq.slot)

    def _top(self, top: Any, row: int, k: int) -> list[tuple[int, str, float]] | None:
        if not k or top is None:
            return None
        values, ids = top.values[row, :k].tolist(), top.indices[row, :k].tolist()
        return [(i, self.token_text[i], v) for i, v in zip(ids, values, strict=True)]

    def _score_prompt(self, ids: list[int], rows: torch.Tensor, k: int | None) -> list[TokenInfo]:
        """Each prompt token with its logprob given the tokens before it (none for the first)
        and, with k, the k most likely tokens at its place; offsets in prompt characters."""
        logprobs = torch.log_softmax(rows.float().cpu(), dim=-1)  # row t predicts ids[t + 1]
        given = logprobs[:-1].gather(1, torch.tensor(ids[1:], dtype=torch.long)[:, None])
        chosen = [None, *given.squeeze(1).tolist()]
        top = logprobs[:-1].topk(min(k, self.vocab), dim=-1) if k else None
        decoder, offset, scored = utf8_decoder(), 0, []
        for t, token in enumerate(ids):
            alternatives = self._top(top, t - 1, k or 0) if t else None
            piece = decoder.decode(self.lm.tokenizer.token_bytes[token])
            scored.append(TokenInfo(token, piece, chosen[t], offset, alternatives))
            offset += len(piece)
        return scored

    def _advance(
        self,
        seq: Sequence,
        token: int,
        logprob: float,
        alternatives: list[tuple[int, str, float]] | None,
    ) -> TokenEvent:
        """`alternatives` None: no logprobs asked for; else the sampled token's top-k."""
        seq.tokens.append(token)
        if seq.params.penalised:
            seq.counts[token] = seq.counts.get(token, 0) + 1
        # The token's text is the decoder's output: a character split across tokens belongs
        # to the token that completes it, so the pieces always add up to the text.
        piece = seq.utf8.decode(self.lm.tokenizer.token_bytes[token])
        info = None
        if alternatives is not None:
            info = TokenInfo(token, piece, logprob, len(seq.text), alternatives or None)
        seq.text += piece
        finish = None
        stops = seq.params.stop
        cut = stop_index(seq.text, stops) if stops else -1
        if cut >= 0:
            seq.text, finish = seq.text[:cut], "stop"
        elif len(seq.tokens) >= seq.params.max_new_tokens:
            finish = "length"
            seq.text += seq.utf8.decode(b"", final=True)  # a cut-off character, replaced
        safe = len(seq.text) if finish or not stops else len(seq.text) - holdback(seq.text, stops)
        delta = seq.text[seq.emitted : safe]
        seq.emitted = max(seq.emitted, safe)
        event = self._event(seq, delta, finish, logprob, info)
        if finish:
            self._finish(seq.slot)
        return event

    def _event(
        self,
        seq: Sequence,
        text: str,
        finish: str | None,
        logprob: float | None,
        info: TokenInfo | None,
    ) -> TokenEvent:
        first = not seq.reported
        seq.reported = True
        return TokenEvent(
            seq.request_id,
            seq.index,
            text,
            finish,
            len(seq.tokens),
            logprob,
            info,
            seq.scored_prompt if first else None,
            len(seq.prompt) if first else 0,
        )

    def _finish(self, slot: int) -> None:
        """Frees `slot` and moves the highest running sequence into it: slots stay dense."""
        self.running.pop(slot, None)
        self.pending_logits.pop(slot, None)
        self.lm.release(slot)
        last = len(self.running)  # the highest occupied slot, now that one has left
        if slot < last:
            seq = self.running.pop(last)
            self.lm.move(last, slot)
            seq.slot = slot
            self.running[slot] = seq
            if last in self.pending_logits:
                self.pending_logits[slot] = self.pending_logits.pop(last)
