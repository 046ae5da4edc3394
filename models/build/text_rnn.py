"""Train the recurrent and n-gram text models on tinyshakespeare; write their artifacts and cards.

    python -m models.build shakespeare-lstm [--max-seconds 900] [--threads 1]
    python -m models.build shakespeare-gru [--max-seconds 900] [--threads 1]
    python -m models.build shakespeare-ngram [--order 7]

The RNNs train with the shared loop in models/training/lm.py, checkpointing under --work (default
var/train/<name>) and resuming from there. Their card's validation loss reads the whole
validation text as one stream, state carried across, as a generation slot would; the loss in
non-overlapping 256-character windows from a zero state (the GPT's measure) is recorded too.
On a CPU shared with another training job, `--threads 1` avoids OpenMP threads spinning
against each other (8x faster for an LSTM at batch 64 on 2 busy cores).
"""

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from models.artifacts import save_artifact
from models.build import environment, train_lm_printing, work_dir
from models.data.builtin import load_shakespeare
from models.text.ngram import NGramConfig, NGramModel
from models.text.rnn import RNNConfig, RNNModel, stream_validation_loss
from models.text.tokenizer import CharTokenizer
from models.training.lm import TrainConfig, full_validation_loss

SPLIT = "first 90% of characters train, last 10% validation"
NGRAM_ORDERS = range(3, 10)  # orders compared for the card; the artifact keeps --order


def shakespeare_ids(data_dir: Path) -> tuple[CharTokenizer, torch.Tensor, torch.Tensor]:
    """The tokenizer over the whole corpus (as the GPT's) and the train / validation ids."""
    train_text, val_text = load_shakespeare(data_dir)
    tok = CharTokenizer.from_text(train_text + val_text)
    train_ids = torch.tensor(tok.encode(train_text), dtype=torch.long)
    val_ids = torch.tensor(tok.encode(val_text), dtype=torch.long)
    return tok, train_ids, val_ids


def text_config(name: str, kind: str, description: str, tok: CharTokenizer, model_args: dict,
                metrics: dict, training: dict) -> dict:  # fmt: skip
    """config.json in the layout of models/build/text.py's save_text_model."""
    return {
        "name": name,
        "kind": kind,
        "task": "text-generation",
        "description": description,
        "tokenizer": tok.to_config(),
        "model_args": model_args,
        "metrics": metrics,
        "training": {"dataset": "tinyshakespeare", "split": SPLIT, **training},
    }


# -- LSTM / GRU ------------------------------------------------------------------------------


# Many small steps: on a CPU nn.LSTM reads about as many characters per second at batch 8 as
# at 64, so small batches make far more updates in the same budget. In 150 s trials on 2 busy
# cores (noisy: the load varied) batch 8 x 64 reached 1.64 nats/char where 64 x 128 reached
# 2.57; hidden 256 made twice the steps of 384 and won; lr 3e-3 beat 2e-3 and 6e-3.
RNN_RECIPE = {
    "max_steps": 100_000,  # the time budget ends training first on a CPU
    "batch_size": 8,
    "block_size": 64,
    "lr": 3e-3,
    "min_lr": 1e-4,
    "warmup_steps": 100,
    "weight_decay": 0.01,
    "grad_clip": 1.0,
    "eval_every": 500,
    "eval_batches": 40,
    "checkpoint_every": 500,
    "cpu_bf16": False,  # measured slower than fp32 for nn.LSTM on this CPU (AVX512-BF16)
}


def train_shakespeare_rnn(
    cell: str, data_dir: Path, work: Path, device: torch.device, max_seconds: float, seed: int
) -> tuple[RNNModel, CharTokenizer, dict, TrainConfig]:
    tok, train_ids, val_ids = shakespeare_ids(data_dir)
    config = RNNConfig(
        vocab_size=tok.vocab_size, cell=cell, n_embd=64, hidden=256, n_layer=2, dropout=0.0
    )
    cfg = TrainConfig(**RNN_RECIPE, max_seconds=max_seconds, seed=seed)
    torch.manual_seed(seed)
    model = RNNModel(config)
    result = train_lm_printing(model, train_ids, val_ids, cfg, device, work)
    return model, tok, result, cfg


def build_rnn(name: str, args: argparse.Namespace, device: torch.device) -> None:
    cell = name.removeprefix("shakespeare-")
    max_seconds = 900 if args.max_seconds is None else args.max_seconds
    seed = 1337 if args.seed is None else args.seed
    t0 = time.perf_counter()
    work = work_dir(args, name)
    model, tok, result, cfg = train_shakespeare_rnn(
        cell, args.data_dir, work, device, max_seconds, seed
    )
    seconds = result.get("seconds") or time.perf_counter() - t0  # counts time before a resume
    _, _, val_ids = shakespeare_ids(args.data_dir)
    val_loss = stream_validation_loss(model, val_ids, device, start_id=tok.stoi["\n"])
    windows = full_validation_loss(model, val_ids, 256, device)
    print(f"{name}: validation loss {val_loss:.4f} nats/char (stream), {windows:.4f} (windows)")
    kind = f"text-{cell}"
    config = text_config(
        name,
        kind,
        f"Character-level {cell.upper()} trained on tiny Shakespeare.",
        tok,
        asdict(model.config),
        {
            "val_loss": round(val_loss, 4),
            "val_chars": len(val_ids),
            "val_loss_windows_256": round(windows, 4),
        },
        {
            "params": asdict(cfg),
            "steps": result.get("step"),
            "seconds": round(seconds, 1),
            "device": device.type,
            "threads": torch.get_num_threads(),
            "environment": environment("torch", "numpy"),
        },
    )
    state = "(h, c)" if cell == "lstm" else "h"
    card = f"""# {name} ({kind})

Character-level {cell.upper()} language model trained on tiny Shakespeare (1,115,394
characters, 65 distinct; public domain). Split: {SPLIT}.

- **Model**: `RNNModel` (models/text/rnn.py): {model.config.n_embd}-wide character embedding,
  {model.config.n_layer} x {cell.upper()} of {model.config.hidden} units, linear head;
  {model.num_params() / 1e6:.2f} M parameters. Config `{json.dumps(asdict(model.config))}`.
- **Validation loss**: **{val_loss:.4f} nats/char** over all {len(val_ids):,} validation
  characters read as one stream (zero state, a newline, then the text, state carried across:
  what a generation slot sees). In non-overlapping 256-character windows from a zero state
  (the GPT's measure): {windows:.4f}.
- **Training**: {result.get("step")} steps of {cfg.batch_size} x {cfg.block_size} characters from a
  zero state, AdamW (lr {cfg.lr}, warm-up + cosine decay), {seconds / 60:.0f} minutes on
  {device.type} ({torch.get_num_threads()} thread(s), beside another training job).
- **Generation**: each slot keeps its {state} state, so a step costs the same at any
  length; an empty prompt starts from the zero state reading a newline.

Reproduce:

```
python -m models.build {name} --max-seconds {args.max_seconds:g} --threads 1
python bench/text_quality.py
```
"""
    save_artifact(args.out / name, config, module=model, card=card)


# -- n-gram ----------------------------------------------------------------------------------


def build_ngram(name: str, args: argparse.Namespace, device: torch.device) -> None:
    tok, train_ids, val_ids = shakespeare_ids(args.data_dir)
    x, y, pad = train_ids.numpy(), val_ids.numpy(), tok.stoi["\n"]
    sweep = {}
    for order in NGRAM_ORDERS:
        t0 = time.perf_counter()
        model = NGramModel.fit(x, NGramConfig(vocab_size=tok.vocab_size, order=order))
        fit_seconds = time.perf_counter() - t0
        sweep[order] = round(model.cross_entropy(y, pad), 4)
        print(f"order {order}: validation loss {sweep[order]:.4f} nats/char ({fit_seconds:.1f} s)")
    t0 = time.perf_counter()
    model = NGramModel.fit(x, NGramConfig(vocab_size=tok.vocab_size, order=args.order))
    seconds = time.perf_counter() - t0
    val_loss = model.cross_entropy(y, pad)
    print(f"{name}: validation loss {val_loss:.4f} nats/char (order {args.order})")
    grams = [len(o.codes) for o in model.orders]
    config = text_config(
        name,
        "text-ngram",
        f"Character {args.order}-gram model (modified Kneser-Ney) of tiny Shakespeare.",
        tok,
        asdict(model.config),
        {"val_loss": round(val_loss, 4), "val_chars": len(y)},
        {
            "params": {"order": args.order, "smoothing": "interpolated modified Kneser-Ney"},
            "distinct_ngrams": grams,
            "val_loss_by_order": sweep,
            "seconds": round(seconds, 2),
            "environment": environment("torch", "numpy"),
        },
    )
    rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in sweep.items())
    card = f"""# {name} (text-ngram)

Character {args.order}-gram language model of tiny Shakespeare (1,115,394 characters, 65
distinct; public domain). Split: {SPLIT}.

- **Model**: `NGramModel` (models/text/ngram.py): counts of every 1- to {args.order}-gram of the
  training text, interpolated modified Kneser-Ney smoothing (Chen & Goodman 1998, three
  discounts per order from counts of counts), backing off to a uniform distribution so every
  character keeps a nonzero probability. {sum(grams):,} distinct n-grams stored as integer
  tables in `weights.safetensors` (no pickle); fitted in {seconds:.1f} s with numpy.
- **Validation loss**: **{val_loss:.4f} nats/char** over all {len(y):,} validation characters
  (the text's first characters see newlines before them, as a generation from an empty prompt).
- **Order**: chosen by validation loss; every order was fitted on the training split only:

| order | val loss (nats/char) |
| --- | --- |
{rows}

- **Limits**: no context beyond {args.order - 1} characters: names, metre and dialogue turns
  are local patterns only; text drifts off topic quickly.

Reproduce:

```
python -m models.build {name} --order {args.order}
python bench/text_quality.py
```
"""
    save_artifact(args.out / name, config, module=model, card=card)
