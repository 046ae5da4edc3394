"""Character-level recurrent language models (LSTM and GRU), after pytorch/examples' RNNModel.

References:
- Hochreiter & Schmidhuber, "Long Short-Term Memory", 1997; Cho et al. (the GRU), 2014.
- Karpathy, char-rnn (2015): character LSTMs on tiny Shakespeare.
- pytorch/examples word_language_model: one RNNModel for both cells, chosen by name.

Training sees windows that start from a zero state (so the shared loop in
models/training/lm.py works unchanged). Generation keeps one recurrent state per slot: a
sequence's whole history lives in a fixed-size vector, so decoding costs the same at any
length and slots never interact.
"""

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.artifacts import ArtifactError, load_module
from models.text.lm import LanguageModel, artifact_tokenizer
from models.text.tokenizer import Tokenizer

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}


@dataclass
class RNNConfig:
    vocab_size: int = 65  # characters in the tokenizer
    cell: str = "lstm"  # "lstm" or "gru"
    n_embd: int = 64  # character embedding width
    hidden: int = 384  # recurrent state width per layer
    n_layer: int = 2  # stacked recurrent layers
    dropout: float = 0.1  # on embeddings, between layers and before the head (training)


class RNNModel(nn.Module):
    """Embedding -> stacked LSTM/GRU -> linear head over the vocabulary."""

    def __init__(self, config: RNNConfig):
        super().__init__()
        if config.cell not in CELLS:
            raise ValueError(f"cell must be one of {sorted(CELLS)}, not {config.cell!r}")
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.rnn = CELLS[config.cell](
            config.n_embd,
            config.hidden,
            config.n_layer,
            batch_first=True,
            dropout=config.dropout if config.n_layer > 1 else 0.0,
        )
        self.lm_head = nn.Linear(config.hidden, config.vocab_size)
        if config.cell == "lstm":
            # forget-gate bias 1: remember by default early in training (Jozefowicz et al. 2015)
            H = config.hidden
            for name, p in self.rnn.named_parameters():
                if name.startswith("bias_ih"):
                    nn.init.zeros_(p)
                    with torch.no_grad():
                        p[H : 2 * H].fill_(1.0)  # gate order i, f, g, o
                elif name.startswith("bias_hh"):
                    nn.init.zeros_(p)

    @property
    def state_parts(self) -> int:
        """Tensors in a layer's state: (h, c) for the LSTM, h for the GRU."""
        return 2 if self.config.cell == "lstm" else 1

    def zero_state(self, batch: int) -> torch.Tensor:
        """All-zero state (parts, n_layer, batch, hidden); parts = 2 for (h, c), 1 for h."""
        p = self.lm_head.weight
        shape = (self.state_parts, self.config.n_layer, batch, self.config.hidden)
        return torch.zeros(shape, device=p.device, dtype=p.dtype)

    def run(self, idx: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """idx (B, T) from `state` (parts, n_layer, B, hidden) -> logits (B, T, vocab), state."""
        x = self.drop(self.wte(idx))  # (B, T, n_embd)
        if self.config.cell == "lstm":
            y, (h, c) = self.rnn(x, (state[0].contiguous(), state[1].contiguous()))
            new_state = torch.stack((h, c))
        else:
            y, h = self.rnn(x, state[0].contiguous())
            new_state = h[None]
        logits = self.lm_head(self.drop(y))  # (B, T, vocab)
        return logits, new_state

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) from a zero state -> logits (B, T, vocab), and the mean cross-entropy."""
        logits, _ = self.run(idx, self.zero_state(idx.shape[0]))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


@torch.inference_mode()
def stream_validation_loss(
    model: RNNModel, data: torch.Tensor, device: torch.device, start_id: int, chunk: int = 4096
) -> float:
    """Cross-entropy over every character of `data` read as one stream, as a slot would read it.

    The state starts at zero and sees `start_id` (a newline) first, then carries across the
    whole text: unlike fixed windows, no character is scored with its context thrown away.
    """
    model.eval()
    inputs = torch.cat((torch.tensor([start_id]), data[:-1].cpu()))  # each target's previous
    state = model.zero_state(1)
    total = 0.0
    for i in range(0, len(data), chunk):
        x = inputs[i : i + chunk][None].to(device)  # (1, T)
        logits, state = model.run(x, state)
        y = data[i : i + chunk].to(device)  # (T,)
        total += F.cross_entropy(logits[0].float(), y, reduction="sum").item()
    return total / len(data)


# -- the slot interface for the generation engine ------------------------------------------


class RNNLanguageModel(LanguageModel):
    """Slots hold recurrent states; decode gathers them, takes one batched step, scatters back.

    An empty prompt starts from the zero state reading a newline (the model then continues as
    at the start of a line), so `needs_prompt` is False.
    """

    needs_prompt = False

    def __init__(self, model: RNNModel, tokenizer: Tokenizer, name: str = "") -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.device = model.lm_head.weight.device
        self.start_id = tokenizer.start_id
        self.state: torch.Tensor | None = None  # (parts, n_layer, slots, hidden)

    @torch.inference_mode()
    def allocate(self, slots: int) -> None:
        self.state = self.model.zero_state(slots)

    @torch.inference_mode()
    def prefill(self, slot: int, ids: list[int]) -> torch.Tensor:
        assert self.state is not None, "allocate() first"
        idx = torch.tensor([ids or [self.start_id]], device=self.device)  # (1, T)
        logits, state = self.model.run(idx, self.model.zero_state(1))
        self.state[:, :, slot] = state[:, :, 0]
        return logits[0, -1].float()  # (vocab,)

    @torch.inference_mode()
    def prefill_scored(self, slot: int, ids: list[int]) -> torch.Tensor:
        assert self.state is not None, "allocate() first"
        idx = torch.tensor([ids or [self.start_id]], device=self.device)  # (1, T)
        logits, state = self.model.run(idx, self.model.zero_state(1))
        self.state[:, :, slot] = state[:, :, 0]
        return logits[0].float()  # (T, vocab)

    @torch.inference_mode()
    def move(self, src: int, dst: int) -> None:
        assert self.state is not None
        self.state[:, :, dst] = self.state[:, :, src]

    @torch.inference_mode()
    def decode(self, slots: list[int], ids: list[int]) -> torch.Tensor:
        assert self.state is not None, "allocate() first"
        assert len(set(slots)) == len(slots), "a slot appears twice in one step"
        index = torch.tensor(slots, device=self.device)
        idx = torch.tensor(ids, device=self.device)[:, None]  # (B, 1)
        logits, state = self.model.run(idx, self.state[:, :, index])  # gather (.., B, hidden)
        self.state[:, :, index] = state  # scatter back
        return logits[:, -1].float()  # (B, vocab)

    @classmethod
    def from_artifact(
        cls, config: dict, payload: dict[str, bytes], device: torch.device
    ) -> "RNNLanguageModel":
        model = load_module(RNNModel, RNNConfig, config, payload)
        if config.get("kind") != f"text-{model.config.cell}":
            raise ArtifactError(f"kind {config.get('kind')!r} but cell {model.config.cell!r}")
        tokenizer = artifact_tokenizer(config, model.config.vocab_size)
        return cls(model.to(device), tokenizer, name=config.get("name", ""))
