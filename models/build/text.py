"""Train the default text models on tinyshakespeare and write their artifacts and cards.

    python -m models.build shakespeare-gpt [--max-seconds 4200] [--device auto]

Training checkpoints under --work (default var/train/<name>) and resumes from there, so a
stopped run picks up where it left off. The card's validation loss is measured in full
precision over every validation character, in non-overlapping windows of the block size.
"""

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import torch

from models.build import train_lm_printing, work_dir
from models.data.builtin import load_shakespeare
from models.text.gpt import GPT, GPTConfig
from models.text.tokenizer import BPETokenizer, CharTokenizer, Tokenizer
from models.training.lm import TrainConfig, full_validation_loss


def train_shakespeare_gpt(
    data_dir: Path,
    work: Path,
    device: torch.device,
    max_seconds: float,
    seed: int = 1337,
    tok: Tokenizer | None = None,
    block_size: int = 256,
    dropout: float = 0.1,
    cpu_bf16: bool = True,
    max_steps: int = 20_000,
) -> tuple[GPT, Tokenizer, dict, TrainConfig]:
    """The recipe of both Shakespeare GPTs: characters (the default `tok`) or BPE tokens."""
    train_text, val_text = load_shakespeare(data_dir)
    tok = tok or CharTokenizer.from_text(train_text + val_text)
    train_ids = torch.tensor(tok.encode(train_text), dtype=torch.long)
    val_ids = torch.tensor(tok.encode(val_text), dtype=torch.long)
    config = GPTConfig(tok.vocab_size, block_size, n_layer=4, n_head=4, n_embd=256, dropout=dropout)
    cfg = TrainConfig(
        max_steps=max_steps,
        max_seconds=max_seconds,
        batch_size=16,
        block_size=block_size,
        lr=2e-3,
        min_lr=1e-4,
        warmup_steps=200,
        weight_decay=0.1,
        eval_every=200,
        eval_batches=10,
        checkpoint_every=200,
        seed=seed,
        cpu_bf16=cpu_bf16 and device.type == "cpu",
    )
    torch.manual_seed(seed)
    model = GPT(config)
    result = train_lm_printing(model, train_ids, val_ids, cfg, device, work)
    return model, tok, result, cfg


def build_gpt(name: str, args: argparse.Namespace, device: torch.device) -> None:
    max_seconds = 3600 if args.max_seconds is None else args.max_seconds
    seed = 1337 if args.seed is None else args.seed
    model, tok, result, cfg = train_shakespeare_gpt(
        args.data_dir, work_dir(args, name), device, max_seconds, seed
    )
    _, val_text = load_shakespeare(args.data_dir)
    val_ids = torch.tensor(tok.encode(val_text), dtype=torch.long)
    val_loss = full_validation_loss(model, val_ids, model.config.block_size, device)
    print(f"{name}: full validation loss {val_loss:.4f} nats/char", flush=True)
    # Training seconds across resumes, as the checkpoints recorded them.
    seconds = result.get("seconds", 0.0)
    save_text_model(args.out / name, name, "text-gpt", model, tok, val_loss, result, cfg, seconds)


def save_text_model(
    path: Path,
    name: str,
    kind: str,
    model: torch.nn.Module,
    tok: Tokenizer,
    val_loss: float,
    result: dict,
    cfg: TrainConfig,
    seconds: float,
) -> None:
    from models.artifacts import save_artifact

    config = {
        "name": name,
        "kind": kind,
        "task": "text-generation",
        "description": f"Character-level {kind} trained on tiny Shakespeare.",
        "tokenizer": tok.to_config(),
        "model_args": asdict(model.config),
        "metrics": {"val_loss": round(val_loss, 4), "val_chars": 111540},
        "training": {
            "dataset": "tinyshakespeare",
            "split": "first 90% of characters train, last 10% validation",
            "params": asdict(cfg),
            "steps": result.get("step"),
            "seconds": round(seconds, 1),
        },
    }
    params = sum(p.numel() for p in model.parameters())
    card = f"""# {name} ({kind})

Character-level language model trained on tiny Shakespeare (1,115,394 characters, 65
distinct; public domain). Split: first 90 % train, last 10 % validation.

- **Parameters**: {params / 1e6:.2f} M; config `{json.dumps(asdict(model.config))}`
- **Validation loss**: **{val_loss:.4f} nats/char** over every validation character
  (non-overlapping windows of the block size, full precision).
- **Training**: {result.get("step")} steps of {cfg.batch_size} x {cfg.block_size} characters,
  AdamW, warm-up + cosine decay, {seconds / 60:.0f} minutes.

Reproduce: `python -m models.build {name}`; re-measure: `python bench/text_quality.py`.
"""
    save_artifact(path, config, module=model, card=card)


def build_bpe_gpt(name: str, args: argparse.Namespace, device: torch.device) -> None:
    """The GPT over byte-level BPE tokens learnt from the training split (any UTF-8 prompt).

    1,024 tokens and a 128-token window (about 330 characters, more than the char GPT's 256):
    on 1 M characters a larger vocabulary leaves each token too few examples.
    """
    # 5,000 steps, not a time budget: the schedule must not depend on how busy the CPU is
    max_seconds = 0 if args.max_seconds is None else args.max_seconds
    seed = 1337 if args.seed is None else args.seed
    train_text, val_text = load_shakespeare(args.data_dir)
    model, tok, result, cfg = train_shakespeare_gpt(
        args.data_dir,
        work_dir(args, name),
        device,
        max_seconds,
        seed,
        tok=BPETokenizer.train(train_text, vocab_size=1024),
        block_size=128,
        dropout=0.2,
        cpu_bf16=False,  # bf16 autocast runs at half the fp32 speed on this 2-core CPU
        max_steps=args.max_steps or 5000,
    )
    config = model.config
    val_ids = torch.tensor(tok.encode(val_text), dtype=torch.long)
    loss = full_validation_loss(model, val_ids, config.block_size, device)
    per_char = loss * len(val_ids) / len(val_text)
    print(f"{name}: {loss:.4f} nats/token, {per_char:.4f} nats/char", flush=True)
    from models.artifacts import save_artifact

    seconds = result.get("seconds", 0.0)
    artifact = {
        "name": name,
        "kind": "text-gpt",
        "task": "text-generation",
        "description": "GPT over byte-level BPE tokens, trained on tiny Shakespeare.",
        "tokenizer": tok.to_config(),
        "model_args": asdict(config),
        "metrics": {
            "val_loss": round(loss, 4),
            "val_nats_per_char": round(per_char, 4),
            "val_tokens": len(val_ids),
            "val_chars": len(val_text),
        },
        "training": {
            "dataset": "tinyshakespeare",
            "split": "first 90% of characters train, last 10% validation",
            "tokenizer": "byte-level BPE, 1,024 tokens, learnt from the training split",
            "params": asdict(cfg),
            "steps": result.get("step"),
            "seconds": round(seconds, 1),
        },
    }
    params = sum(p.numel() for p in model.parameters())
    card = f"""# {name} (text-gpt, byte-level BPE)

GPT over byte-level BPE tokens (1,024, learnt from the training split with Hugging Face
`tokenizers`) trained on tiny Shakespeare. Any UTF-8 prompt encodes. Split: first 90 %
train, last 10 % validation ({len(val_text):,} characters, {len(val_ids):,} tokens).

- **Parameters**: {params / 1e6:.2f} M; config `{json.dumps(asdict(config))}`
- **Validation loss**: **{per_char:.4f} nats/char** ({loss:.4f} nats/token) over every
  validation token (non-overlapping windows of the block size, full precision).
- **Training**: {result.get("step")} steps of {cfg.batch_size} x {cfg.block_size} tokens,
  AdamW, warm-up + cosine decay, {seconds / 60:.0f} minutes.

Reproduce: `python -m models.build {name}`; re-measure: `python bench/text_quality.py`.
"""
    save_artifact(args.out / name, artifact, module=model, card=card)
