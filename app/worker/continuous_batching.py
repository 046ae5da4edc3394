"""Continuous batching for one language model inside a worker process.

Between decoding steps, waiting sequences are prefilled into free slots and join the running
batch; finished or cancelled ones leave it and free their slot. Each step advances every
running sequence by one token in a single batched `decode` call, and reports the new text
of every sequence as events for the API.
"""

from __future__ import annotations

import codecs
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch

from app.worker.protocol import TokenEvent
from models.text.lm import LanguageModel
from models.text.sampling import SamplingParams, holdback, make_generator, sample, stop_index


@dataclass
class Sequence:
    request_id: int
    index: int  # choice index within its request (n > 1)
    prompt: list[int]
    params: SamplingParams
    generator: torch.Generator
    slot: int = -1
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    emitted: int = 0  # characters of `text` already sent to the client
    # bytes to text as they come: a character split across BPE tokens appears once whole
    utf8: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace")
    )
    last_logprob: float | None = None


class GenerationEngine:
    def __init__(self, lm: LanguageModel, max_running: int) -> None:
        self.lm = lm
        self.max_running = max_running
        lm.allocate(max_running)
        self.waiting: deque[Sequence] = deque()
        self.running: dict[int, Sequence] = {}  # slot -> sequence; slots are always 0..B-1
        self.pending_logits: dict[int, torch.Tensor] = {}  # slot -> logits after prefill
        self.vocab = lm.tokenizer.vocab_size

    def add(self, request_id: int, prompt: str, params: dict[str, Any], n: int) -> None:
        ids = self.lm.tokenizer.encode(prompt)  # the API checked the vocabulary already
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
        while self.waiting and self.free:
            seq = self.waiting.popleft()
            seq.slot = len(self.running)
            self.running[seq.slot] = seq
            self.pending_logits[seq.slot] = self.lm.prefill(seq.slot, seq.prompt)
        if not self.running:
            return []
        slots = sorted(self.running)
        decode = [s for s in slots if s not in self.pending_logits]
        logits: dict[int, torch.Tensor] = {s: self.pending_logits.pop(s) for s in slots
                                           if s in self.pending_logits}  # fmt: skip
        if decode:
            last = [self.running[s].tokens[-1] for s in decode]
            for slot, row in zip(decode, self.lm.decode(decode, last), strict=True):
                logits[slot] = row
        seqs = [self.running[s] for s in slots]
        batch = torch.stack([logits[s] for s in slots]).float().cpu()
        seen = torch.zeros(len(seqs), self.vocab, dtype=torch.bool)
        for row, seq in enumerate(seqs):
            if seq.params.repetition_penalty != 1.0:
                seen[row, seq.prompt + seq.tokens] = True
        tokens, logprobs = sample(
            batch, [s.params for s in seqs], [s.generator for s in seqs], seen
        )
        events: list[TokenEvent] = []
        for seq, token, logprob in zip(seqs, tokens, logprobs, strict=True):
            events.append(self._advance(seq, token, logprob))
        return events

    def _advance(self, seq: Sequence, token: int, logprob: float) -> TokenEvent:
        seq.tokens.append(token)
        seq.text += seq.utf8.decode(self.lm.tokenizer.token_bytes[token])
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
        if finish:
            self._finish(seq.slot)
        return TokenEvent(seq.request_id, seq.index, delta, finish, len(seq.tokens), logprob)

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
