"""One training loop for every neural language model (GPT, LSTM, GRU).

AdamW with decoupled weight decay on matrices only, linear warm-up then cosine decay,
gradient clipping, periodic evaluation on the validation split, mixed precision on CUDA
(bf16, or fp16 with loss scaling on GPUs without bf16),
and checkpoints (safetensors + JSON, never pickle) that a restarted run resumes from.
"""

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import safetensors.torch
import torch
import torch.nn as nn

from models.hooks import TrainHooks
from models.precision import autocast, grad_scaler


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
    """Mean cross-entropy (nats/char) over `batches` fixed random windows of `data`."""
    model.eval()
    gen = torch.Generator().manual_seed(0)  # the same windows every time, so evals compare
    losses = []
    for _ in range(batches):
        x, y = get_batch(data, cfg, gen, device)
        with autocast(device, cfg.cpu_bf16):
            _, loss = model(x, y)
        losses.append(loss.item())
    model.train()
    return float(np.mean(losses))


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


def save_checkpoint(path: Path, model: nn.Module, opt: torch.optim.Optimizer, state: dict) -> None:
    """Weights and optimizer moments as safetensors, counters as JSON; written atomically."""
    path.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in opt.param_groups:
        for p in group["params"]:
            for key, value in opt.state.get(p, {}).items():
                if torch.is_tensor(value) and value.dim() > 0:
                    tensors[f"opt.{names[id(p)]}.{key}"] = value.detach().cpu().contiguous()
    state = {**state, "opt_step": _opt_step(opt)}
    tmp = path / "checkpoint.safetensors.tmp"
    # tied weights share storage; safetensors wants each tensor once
    tensors.pop("model.lm_head.weight", None)
    safetensors.torch.save_file(tensors, tmp)
    tmp.replace(path / "checkpoint.safetensors")
    (path / "checkpoint.json.tmp").write_text(json.dumps(state))
    (path / "checkpoint.json.tmp").replace(path / "checkpoint.json")


def _opt_step(opt: torch.optim.Optimizer) -> int:
    for s in opt.state.values():
        if "step" in s:
            return int(s["step"])
    return 0


def load_checkpoint(path: Path, model: nn.Module, opt: torch.optim.Optimizer) -> dict | None:
    if not (path / "checkpoint.json").is_file():
        return None
    state = json.loads((path / "checkpoint.json").read_text())
    tensors = safetensors.torch.load_file(path / "checkpoint.safetensors")
    model_state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    model.load_state_dict(model_state, strict=False)
    device = next(model.parameters()).device
    for name, p in model.named_parameters():
        moments = {k: tensors[f"opt.{name}.{k}"] for k in ("exp_avg", "exp_avg_sq")}
        if all(f"opt.{name}.{k}" in tensors for k in moments):
            opt.state[p] = {
                "step": torch.tensor(float(state["opt_step"])),
                **{k: v.to(device) for k, v in moments.items()},
            }
    return state


def train(
    model: nn.Module,
    train_data: torch.Tensor,
    val_data: torch.Tensor,
    cfg: TrainConfig,
    device: torch.device,
    hooks: TrainHooks | None = None,
) -> dict:
    """Trains in place; returns the final metrics. Resumes from `checkpoint_dir` if it holds one.

    `hooks.should_stop` is asked before every step (it may raise to abort); `on_step(done, total,
    loss)` gets the loss as a tensor so that a caller who only samples it forces no sync.
    """
    hooks = hooks or TrainHooks()
    checkpoint_dir, on_step = hooks.work_dir, hooks.on_step
    torch.manual_seed(cfg.seed)
    model.to(device).train()
    opt = make_optimizer(model, cfg, device)
    scaler = grad_scaler(device)  # a no-op unless autocast runs in fp16
    start, history = 0, []
    if checkpoint_dir is not None and (state := load_checkpoint(checkpoint_dir, model, opt)):
        start, history = state["step"], state["history"]
    gen = torch.Generator().manual_seed(cfg.seed + start)
    tokens, t0 = 0, time.perf_counter()
    spent = history[-1].get("seconds", 0.0) if history else 0.0  # budget used before a resume
    began = time.perf_counter() - spent
    metrics: dict = history[-1] if history else {}
    for step in range(start, cfg.max_steps):
        elapsed_all = time.perf_counter() - began
        out_of_time = cfg.max_seconds > 0 and elapsed_all >= cfg.max_seconds
        if (hooks.should_stop is not None and hooks.should_stop()) or out_of_time:
            break
        time_fraction = elapsed_all / cfg.max_seconds if cfg.max_seconds else 0.0
        lr = lr_at(step, cfg, time_fraction)
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = get_batch(train_data, cfg, gen, device)
        with autocast(device, cfg.cpu_bf16):
            _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.grad_clip:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(opt)
        scaler.update()
        tokens += x.numel()
        if on_step is not None:
            on_step(step + 1, cfg.max_steps, loss.detach())
        last = step + 1 == cfg.max_steps or (
            cfg.max_seconds > 0 and time.perf_counter() - began >= cfg.max_seconds
        )
        if (step + 1) % cfg.eval_every == 0 or last:
            elapsed = time.perf_counter() - t0
            metrics = {
                "step": step + 1,
                "train_loss": round(loss.item(), 4),
                "val_loss": round(evaluate(model, val_data, cfg, device, cfg.eval_batches), 4),
                "lr": lr,
                "tokens_per_s": round(tokens / elapsed, 1),
                "samples_per_s": round(tokens / cfg.block_size / elapsed, 2),
                "seconds": round(time.perf_counter() - began, 3),
            }
            history.append(metrics)
            tokens, t0 = 0, time.perf_counter()
            if hooks.on_epoch is not None:
                hooks.on_epoch(metrics)
        due = cfg.checkpoint_every and ((step + 1) % cfg.checkpoint_every == 0 or last)
        if checkpoint_dir is not None and due:
            state = {"step": step + 1, "history": history, "train_config": asdict(cfg)}
            save_checkpoint(checkpoint_dir, model, opt, state)
    model.eval()
    return {"history": history, **metrics}
