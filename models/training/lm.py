"""One training loop for every neural language model (GPT, LSTM, GRU).

AdamW with decoupled weight decay on matrices only, linear warm-up then cosine decay,
gradient clipping, periodic evaluation on the validation split, mixed precision on CUDA
(bf16, or fp16 with loss scaling on GPUs without bf16),
and checkpoints (safetensors + JSON, never pickle) that a restarted run resumes from.

Every evaluation of a run is one function (`evaluate`): the periodic ones in the history and
the one the registered weights are scored by, so a job's metrics, its last history row and
its model card show one validation loss. The weights kept are those of the best evaluation
(lowest validation loss), not the last; with `patience` the run stops once that many
evaluations in a row have not improved on it. A fine-tune starts from a parent artifact's
weights and tokenizer (TrainHooks.parent).
"""

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from models.data.uploads import TextCorpus
from models.kinds import KINDS, ChatParams, GPTParams, LMParams, NGramParams, RNNParams
from models.text.gpt import GPT, GPTConfig
from models.text.ngram import NGramConfig, NGramModel
from models.text.rnn import RNNConfig, RNNModel
from models.text.tokenizer import Tokenizer, UnknownCharacters, train_tokenizer
from models.training import distributed
from models.training.best import BestWeights
from models.training.checkpoint import load_checkpoint, save_checkpoint
from models.training.hooks import TrainHooks
from models.training.precision import autocast, grad_scaler
from models.training.result import TrainResult, check_stop, one_step, rate


@dataclass
class TrainConfig:
    max_steps: int = 5000  # optimizer steps
    max_seconds: float = 0.0  # wall-clock budget (0: none); the schedule fits whichever ends first
    batch_size: int = 32  # sequences per step
    block_size: int = 256  # characters per sequence
    lr: float = 1e-3  # peak learning rate
    min_lr: float = 1e-4  # floor of the cosine decay
    warmup_steps: int = 100  # linear warm-up from 0
    weight_decay: float = 0.1  # on 2-D weights only
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    eval_every: int = 250  # steps between validation estimates
    eval_batches: int = 20  # batches per validation estimate
    eval_window: int = 0  # tokens per validation window (0: block_size)
    patience: int = 0  # evaluations without improvement before stopping (0: never)
    checkpoint_every: int = 250  # steps between checkpoints (0: never)
    seed: int = 1337  # batch sampling and init
    cpu_bf16: bool = False  # bf16 autocast on CPUs with native bf16 (AVX512-BF16, AMX)


def lr_at(step: int, cfg: TrainConfig, time_fraction: float = 0.0) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, max(progress, time_fraction))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


def get_batch(
    data: torch.Tensor, cfg: TrainConfig, gen: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows: x (B, T) and the next characters y (B, T)."""
    ix = torch.randint(len(data) - cfg.block_size - 1, (cfg.batch_size,), generator=gen)
    offsets = torch.arange(cfg.block_size + 1)
    windows = data[ix[:, None] + offsets]  # (B, T+1)
    x, y = windows[:, :-1], windows[:, 1:]
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def make_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    fused = device.type == "cuda"
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99), fused=fused)


@torch.no_grad()
def evaluate(
    model: nn.Module, data: torch.Tensor, cfg: TrainConfig, device: torch.device, batches: int
) -> float:
    """Mean cross-entropy per token over fixed non-overlapping windows spread evenly over
    `data`: at most `batches` x batch_size windows of eval_window tokens, the same ones at
    every evaluation, so evaluations compare and the last one is the registered number."""
    model.eval()
    window = min(cfg.eval_window or cfg.block_size, len(data) - 1)
    n = (len(data) - 1) // window
    count = max(1, min(n, batches * cfg.batch_size))
    starts = torch.arange(count) * n // count * window  # (count,) evenly spread
    index = starts[:, None] + torch.arange(window)  # (count, window)
    total = 0.0
    for i in range(0, count, cfg.batch_size):
        rows = index[i : i + cfg.batch_size]
        x, y = data[rows].to(device), data[rows + 1].to(device)
        with autocast(device, cfg.cpu_bf16):
            _, loss = model(x, y)
        total += loss.item() * y.numel()
    model.train()
    return total / (count * window)


def eval_tokens(data: torch.Tensor, cfg: TrainConfig) -> int:
    """How many tokens `evaluate` scores on `data`."""
    window = min(cfg.eval_window or cfg.block_size, len(data) - 1)
    return max(1, min((len(data) - 1) // window, cfg.eval_batches * cfg.batch_size)) * window


@torch.no_grad()
def full_validation_loss(
    model: nn.Module, data: torch.Tensor, block_size: int, device: torch.device, batch: int = 64
) -> float:
    """Cross-entropy over every validation character, in non-overlapping windows."""
    model.eval()
    n = (len(data) - 1) // block_size
    x = data[: n * block_size].view(n, block_size)
    y = data[1 : n * block_size + 1].view(n, block_size)
    total, count = 0.0, 0
    for i in range(0, n, batch):
        xb, yb = x[i : i + batch].to(device), y[i : i + batch].to(device)
        with autocast(device):
            _, loss = model(xb, yb)
        total += loss.item() * yb.numel()
        count += yb.numel()
    return total / count


def train(
    model: nn.Module,
    train_data: torch.Tensor,
    val_data: torch.Tensor,
    cfg: TrainConfig,
    device: torch.device,
    hooks: TrainHooks | None = None,
) -> dict:
    """Trains in place; returns the final metrics. Resumes from `checkpoint_dir` if it holds one.

    `hooks.should_stop` is asked before the first step and after every step (it may raise to
    abort; True ends the run there, that step evaluated and checkpointed); `on_step(done,
    total, loss)` gets the loss as a tensor so that a caller who only samples it forces no
    sync. In a torch.distributed group (models/training/distributed.py) `batch_size` is the
    global batch, and rank 0 alone asks the hooks and writes checkpoints; every rank resumes
    from its `work_dir`.
    """
    hooks = hooks or TrainHooks()
    checkpoint_dir, on_step = hooks.work_dir, hooks.on_step
    torch.manual_seed(cfg.seed)
    model.to(device).train()
    opt = make_optimizer(model, cfg, device)
    scaler = grad_scaler(device)  # a no-op unless autocast runs in fp16
    start, history = 0, []
    saved = None
    if checkpoint_dir is not None:
        saved = load_checkpoint(checkpoint_dir, {"model": model}, {"opt": opt})
    if saved:
        start, history = saved["step"], saved["history"]
    main = distributed.is_main()
    best = BestWeights(model, checkpoint_dir if main else None, history, cfg.patience)
    early = bool(saved and saved.get("early_stopped"))  # stopped before its restart
    hooks = distributed.rank_hooks(hooks)
    on_step = hooks.on_step
    net = distributed.wrap(model, device)  # a group's ranks average their gradients

    def agree(flag: bool) -> bool:
        return distributed.agree(flag, device)

    gen = torch.Generator().manual_seed(cfg.seed + start)  # the global batch: equal on all
    tokens, t0 = 0, time.perf_counter()
    spent = history[-1].get("seconds", 0.0) if history else 0.0  # budget used before a resume
    began = time.perf_counter() - spent
    metrics: dict = history[-1] if history else {}
    for step in range(start, cfg.max_steps):
        if early:
            break
        elapsed_all = time.perf_counter() - began
        out_of_time = cfg.max_seconds > 0 and agree(elapsed_all >= cfg.max_seconds)
        first = step == start  # later steps were asked at the end of the one before
        if first and distributed.stop_asked(hooks, device):
            break
        if out_of_time:
            break
        time_fraction = elapsed_all / cfg.max_seconds if cfg.max_seconds else 0.0
        lr = lr_at(step, cfg, time_fraction)
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = get_batch(train_data, cfg, gen, device)
        x, y = distributed.local_slice(x), distributed.local_slice(y)
        with autocast(device, cfg.cpu_bf16):
            _, loss = net(x, y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.grad_clip:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(opt)
        scaler.update()
        tokens += x.numel() * distributed.world_size()
        if on_step is not None:
            on_step(step + 1, cfg.max_steps, loss.detach())
        # asked to stop early (a time limit): this step is the last, evaluated and saved
        stopping = distributed.stop_asked(hooks, device)
        last = (
            step + 1 == cfg.max_steps
            or stopping
            or (cfg.max_seconds > 0 and agree(time.perf_counter() - began >= cfg.max_seconds))
        )
        evaluating = (step + 1) % cfg.eval_every == 0 or last
        if main and evaluating:
            elapsed = time.perf_counter() - t0
            val_loss = round(evaluate(model, val_data, cfg, device, cfg.eval_batches), 4)
            metrics = {
                "step": step + 1,
                "train_loss": round(loss.item(), 4),
                "val_loss": val_loss,
                **best.update(step + 1, val_loss),
                "lr": lr,
                "tokens_per_s": round(tokens / elapsed, 1),
                "samples_per_s": round(tokens / cfg.block_size / elapsed, 2),
                "seconds": round(time.perf_counter() - began, 3),
            }
            history.append(metrics)
            tokens, t0 = 0, time.perf_counter()
            if hooks.on_epoch is not None:
                hooks.on_epoch(metrics)
            early = best.exhausted
        if evaluating and cfg.patience:
            early = agree(early)  # rank 0 decides; every rank leaves the loop at this step
        due = cfg.checkpoint_every and ((step + 1) % cfg.checkpoint_every == 0 or last or early)
        if due:
            state = {
                "step": step + 1,
                "history": history,
                "train_config": asdict(cfg),
                "early_stopped": early,
            }
            distributed.checkpoint(
                hooks, lambda d, s=state: save_checkpoint(d, {"model": model}, {"opt": opt}, s)
            )
        if stopping or early:
            break
    kept = best.restore(metrics) if main else None  # the best evaluation's weights
    distributed.same_weights(model)
    model.eval()
    stopped = {"stopped_reason": "early_stopping"} if early else {}
    return {"history": history, **metrics, "best": kept, **stopped}


# -----------------------------------------------------------------------------
# the kinds' training functions (models/kinds.py): data and params in, TrainResult out


def _tokenize(
    p: LMParams | NGramParams, train: TextCorpus, test: TextCorpus
) -> tuple[Tokenizer, list[int], list[int]]:
    """The job's tokenizer and both splits' ids. A char vocabulary covers both splits (as the
    committed models'); BPE learns from the training split only and encodes anything."""
    seen = train.text if p.tokenizer == "bpe" else train.text + test.text
    tok = train_tokenizer(p.tokenizer, seen, p.vocab_size)
    return tok, tok.encode(train.text), tok.encode(test.text)


def _loss_metrics(
    loss: float, tokens: int, test: TextCorpus, split_tokens: int
) -> dict[str, float | int]:
    """Validation loss per token (over the `tokens` scored) and per character, scaled by the
    split's tokens per character: nats/char compares every tokenizer."""
    chars = max(1, len(test.text))
    return {
        "val_loss": round(loss, 4),
        "val_nats_per_char": round(loss * split_tokens / chars, 4),
        "val_tokens": tokens,
        "val_chars": chars,
    }


def tok_name(p: LMParams | NGramParams) -> str:
    return f"BPE ({p.vocab_size})" if p.tokenizer == "bpe" else "character"


def _start(
    kind: str, p: LMParams, hooks: TrainHooks, train: TextCorpus, test: TextCorpus
) -> tuple[nn.Module | None, Tokenizer, list[int], list[int]]:
    """A fine-tune's model and tokenizer, rebuilt by the parent's serving class (the artifact
    loader), and both splits in its tokens; a fresh tokenizer and no model otherwise."""
    if hooks.parent is None:
        return None, *_tokenize(p, train, test)
    config, payload = hooks.parent
    served = KINDS[kind].serving_class().from_artifact(config, payload, torch.device("cpu"))
    tok = served.tokenizer
    try:
        return served.model, tok, tok.encode(train.text), tok.encode(test.text)
    except UnknownCharacters as e:
        raise ValueError(
            f"the dataset has {e.chars!r}, which the parent model's character tokenizer "
            "lacks: a fine-tune keeps its parent's tokenizer"
        ) from None


def _fit_lm(
    kind: str,
    train_split: TextCorpus,
    test_split: TextCorpus,
    p: LMParams,
    hooks: TrainHooks,
    device: torch.device,
    build: Callable[[int], nn.Module],
    eval_window: int,
) -> TrainResult:
    """The loop above on a character corpus, for any model `build(vocab_size)` makes (or the
    parent's, when fine-tuning)."""
    parent, tok, train_list, val_list = _start(kind, p, hooks, train_split, test_split)
    train_ids = torch.tensor(train_list, dtype=torch.long)
    val_ids = torch.tensor(val_list, dtype=torch.long)
    for split, ids in (("training", train_ids), ("validation", val_ids)):
        if len(ids) <= p.block_size + 1:
            raise ValueError(
                f"the {split} text has {len(ids)} tokens; block_size {p.block_size} "
                "needs more: upload more text or lower block_size"
            )
    torch.manual_seed(p.seed)
    model = parent if parent is not None else build(tok.vocab_size)
    cfg = TrainConfig(
        max_steps=p.max_steps,
        max_seconds=p.max_seconds,
        batch_size=p.batch_size,
        block_size=p.block_size,
        lr=p.lr,
        min_lr=p.lr / 10,
        warmup_steps=min(p.warmup_steps, p.max_steps // 2),
        weight_decay=p.weight_decay,
        eval_every=p.eval_every,
        eval_batches=p.eval_batches,
        eval_window=eval_window,
        patience=p.patience,
        checkpoint_every=p.eval_every,
        seed=p.seed,
    )
    result = train(model, train_ids, val_ids, cfg, device, hooks)
    # the registered weights' own evaluation, as their history row has it (rank 0 evaluates)
    best = result.get("best") or {"step": result.get("step"), "val_loss": 0.0}
    stopped = {k: result[k] for k in ("stopped_reason",) if k in result}
    return TrainResult(
        {
            "kind": kind,
            "task": "text-generation",
            "description": f"{kind} over {tok_name(p)} tokens, trained over HTTP.",
            "tokenizer": tok.to_config(),
            **chat_config(p),
            "model_args": asdict(model.config),  # type: ignore[arg-type]
            "metrics": {
                **_loss_metrics(
                    best["val_loss"], eval_tokens(val_ids, cfg), test_split, len(val_ids)
                ),
                "best_step": best["step"],
                "steps": result.get("step"),
                "samples_per_s": rate(result.get("step"), p.batch_size, result.get("seconds")),
                "train_seconds": result.get("seconds"),
                **stopped,
            },
        },
        module=model,
    )


def chat_config(p: ChatParams) -> dict[str, Any]:
    """The job's chat template, kept in config.json for /v1/chat/completions."""
    return {"chat": {"template": p.chat_template, "stop": [p.chat_stop]}} if p.chat_template else {}


def train_gpt(
    kind: str, train: TextCorpus, test: TextCorpus, p: GPTParams, hooks: TrainHooks, device
) -> TrainResult:
    def build(vocab_size: int) -> nn.Module:
        return GPT(GPTConfig(vocab_size, p.block_size, p.n_layer, p.n_head, p.n_embd, p.dropout))

    return _fit_lm(kind, train, test, p, hooks, device, build, eval_window=p.block_size)


def train_rnn(
    kind: str, train: TextCorpus, test: TextCorpus, p: RNNParams, hooks: TrainHooks, device
) -> TrainResult:
    cell = kind.removeprefix("text-")

    def build(vocab_size: int) -> nn.Module:
        return RNNModel(RNNConfig(vocab_size, cell, p.n_embd, p.hidden, p.n_layer, p.dropout))

    # a recurrent model carries its state on: a longer window than it was trained on is fair
    return _fit_lm(kind, train, test, p, hooks, device, build, eval_window=256)


def train_ngram(
    kind: str, train: TextCorpus, test: TextCorpus, p: NGramParams, hooks: TrainHooks, device
) -> TrainResult:
    """Counts, no loop: reported to the hooks as one step."""
    check_stop(hooks)
    tok, train_list, val_list = _tokenize(p, train, test)
    train_ids = np.asarray(train_list, np.int64)
    val_ids = np.asarray(val_list, np.int64)
    t0 = time.perf_counter()
    model = NGramModel.fit(train_ids, NGramConfig(vocab_size=tok.vocab_size, order=p.order))
    seconds = time.perf_counter() - t0
    val_loss = model.cross_entropy(val_ids, tok.start_id)
    one_step(hooks, {"step": 1, "val_loss": round(val_loss, 4), "seconds": round(seconds, 2)})
    return TrainResult(
        {
            "kind": kind,
            "task": "text-generation",
            "description": f"{p.order}-gram model over {tok_name(p)} tokens (modified Kneser-Ney).",
            "tokenizer": tok.to_config(),
            **chat_config(p),
            "model_args": asdict(model.config),
            "metrics": {
                **_loss_metrics(val_loss, len(val_ids), test, len(val_ids)),
                "train_seconds": round(seconds, 2),
            },
        },
        module=model,
    )
