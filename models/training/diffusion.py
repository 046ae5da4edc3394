"""The training loop of the diffusion model (models/image/diffusion.py) and its kind's function.

DDPM training: every step draws t uniformly from 0..T-1 and Gaussian noise per image, noises
the batch to x_t and regresses the U-Net's output on v (mean squared error); labels are
replaced by the "no label" row with probability p_uncond so the same network learns the
unconditional model that classifier-free guidance needs. AdamW at a constant learning rate
after a linear warm-up, gradients clipped at norm 1; an exponential moving average of the
weights (decay `ema`, ramped up as min(ema, (1 + s) / (10 + s)) over the first steps) is what
gets served. Like the other image loops: whole epochs over an in-memory (N, H, W) array, a
checkpoint (weights, EMA, optimizer moments, counters) after every epoch, resumed by a restarted
run; each epoch's shuffling, t, noise, label drops and dropout come from generators seeded by
(seed, epoch), so a resumed run computes what an uninterrupted one would. In a
torch.distributed group it runs under DDP on the global batch (models/training/distributed.py).
"""

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from models.data.uploads import ImageSet
from models.image.diffusion import DiffusionConfig, UNet
from models.kinds import DiffusionParams
from models.training import distributed
from models.training.best import BestWeights
from models.training.checkpoint import load_checkpoint
from models.training.hooks import TrainHooks
from models.training.image import (
    _as_tensors,
    _end_epoch,
    _image_labels,
    _image_result,
    _keep_best,
    _out_of_time,
    _validate_epoch,
)
from models.training.precision import autocast, grad_scaler
from models.training.result import TrainResult, parent_module


@dataclass
class DiffusionTrainConfig:
    epochs: int = 100  # passes over the training images
    batch_size: int = 64
    lr: float = 1e-3  # AdamW, constant after the warm-up (the EMA does the averaging)
    warmup_steps: int = 200  # linear learning-rate warm-up
    weight_decay: float = 0.0
    p_uncond: float = 0.1  # probability of dropping the label (classifier-free guidance)
    ema: float = 0.999  # > 0: serve an exponential moving average of the weights
    clip: float = 1.0  # gradient norm clip
    max_seconds: float = 0.0  # stop early after this much training time (0: no limit)
    seed: int = 0
    patience: int = 0  # epochs without a lower held-out loss before stopping (0: never)


def train_diffusion(
    model: UNet,
    images: np.ndarray,
    labels: np.ndarray | None,
    cfg: DiffusionTrainConfig,
    device: torch.device,
    hooks: TrainHooks | None = None,
    validate: Callable[[nn.Module], float] | None = None,
) -> dict[str, Any]:
    """DDPM (v-prediction) on float32 (N, H, W) images in [0, 1]; labels (N,) if conditional.

    Trains `model` in place; with cfg.ema > 0 it ends up holding the averaged weights.
    Returns the last epoch's figures. With `validate` (a held-out loss of the module given)
    the weights served (the EMA's, if any) are scored every epoch, the best epoch's are the
    ones kept, and cfg.patience epochs without a lower loss end the run.
    """
    torch.manual_seed(cfg.seed)
    hooks = distributed.rank_hooks(hooks or TrainHooks())
    # channels-last: oneDNN's convolutions run ~30% faster on CPUs in that layout
    model.to(device, memory_format=torch.channels_last).train()
    net = distributed.wrap(model, device)
    x, y = _as_tensors(images, labels if model.config.num_classes else None, device)
    x = (x * 2 - 1).contiguous(memory_format=torch.channels_last)  # pixels in [-1, 1]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    modules: dict[str, nn.Module] = {"unet": model}
    ema = copy.deepcopy(model).eval() if cfg.ema else None
    if ema is not None:
        ema.requires_grad_(False)
        modules["unet_ema"] = ema
    optimizers = {"unet": opt}
    scaler = grad_scaler(device)  # a no-op unless autocast runs in fp16
    state: dict[str, Any] = {"epoch": 0, "seconds": 0.0, "history": []}
    if hooks.work_dir is not None and (
        saved := load_checkpoint(hooks.work_dir, modules, optimizers)
    ):
        state = saved
        print(f"resumed from {hooks.work_dir} at epoch {state['epoch']}", flush=True)
    steps_per_epoch = math.ceil(len(x) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    served = ema if ema is not None else model
    score = None if validate is None else lambda: validate(served)
    main = score is not None and distributed.is_main()
    best = BestWeights(served, hooks.work_dir if main else None, state["history"], cfg.patience)
    early = bool(state.get("early_stopped"))  # it had stopped before a restart
    while (
        state["epoch"] < cfg.epochs
        and not early
        and not _out_of_time(cfg.max_seconds, state, device)
    ):
        t0 = time.perf_counter()
        epoch = state["epoch"]
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)  # shuffling, t, noise
        # dropout: its own, as resumable
        torch.manual_seed(distributed.rank_seed(10**6 + cfg.seed * 1000 + epoch))
        order = torch.randperm(len(x), generator=gen).to(device)
        gen = distributed.fork(gen)  # t, noise and label drops: each rank its own
        loss_sum = torch.zeros((), device=device)
        rows = 0
        stopped = False
        for i in range(steps_per_epoch):
            if distributed.stop_asked(hooks, device):
                stopped = True
                break
            step = epoch * steps_per_epoch + i  # optimizer steps before this one
            for group in opt.param_groups:
                group["lr"] = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))
            batch = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            shared = distributed.share(batch)
            if shared is None:
                continue  # fewer rows than ranks: skipped by all
            idx, weight = shared
            with autocast(device):
                yb = None if y is None else y[idx]
                loss = model.loss(x[idx], yb, cfg.p_uncond, gen, net=net)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss.float() * weight).backward()
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            scaler.step(opt)
            scaler.update()
            if ema is not None:
                decay = min(cfg.ema, (1 + step) / (10 + step))
                with torch.no_grad():
                    for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
                        p_ema.lerp_(p.detach(), 1 - decay)
            loss_sum += loss.detach() * len(idx)
            rows += len(idx)
            if hooks.on_step is not None:
                hooks.on_step(step + 1, total, loss.detach())
        if stopped:
            break  # mid-epoch: the last checkpoint stays the last finished epoch
        losses = {"loss": float(loss_sum) / max(1, rows)}
        val, early = _validate_epoch(state, steps_per_epoch, score, best, device)
        _end_epoch(state, t0, steps_per_epoch, len(x), losses, hooks, modules, optimizers, val)
    kept = _keep_best(state, score, best, early)  # into the served module
    if ema is not None:
        model.load_state_dict(ema.state_dict())
    model.to(memory_format=torch.contiguous_format).eval()
    last = state["history"][-1] if state["history"] else {}
    return {**last, "steps": state.get("steps", 0), "config": asdict(cfg), **kept}


@torch.no_grad()
def held_out_loss(
    model: UNet, images: np.ndarray, labels: np.ndarray | None, device: torch.device
) -> float:
    """The training objective (v MSE, labels kept) on held-out images, fixed t and noise."""
    model.eval()
    gen = torch.Generator().manual_seed(0)
    x, y = _as_tensors(images, labels if model.config.num_classes else None, device)
    total = 0.0
    for i in range(0, len(x), 500):
        yb = None if y is None else y[i : i + 500]
        total += model.loss(x[i : i + 500] * 2 - 1, yb, 0.0, gen).item() * len(x[i : i + 500])
    return total / max(1, len(x))


def train_image_diffusion(
    kind: str, train: ImageSet, test: ImageSet, p: DiffusionParams, hooks: TrainHooks, device
) -> TrainResult:
    labels, num_classes = _image_labels(train, p.conditional)
    torch.manual_seed(p.seed)
    c = p.channels
    model = parent_module(hooks, UNet, DiffusionConfig)  # a fine-tune starts from its parent
    if model is None:
        model = UNet(
            DiffusionConfig(
                tuple(train.images.shape[1:]),
                (c, 2 * c, 4 * c),  # the recipe's widths at C = 16
                p.blocks,
                p.attention,
                p.dropout,
                num_classes,
            )
        )
    cfg = DiffusionTrainConfig(
        p.epochs,
        p.batch_size,
        p.lr,
        p.warmup_steps,
        p_uncond=p.p_uncond,
        ema=p.ema,
        max_seconds=p.max_seconds,
        seed=p.seed,
        patience=p.patience,
    )
    held = test.labels[:2000] if (test.labels is not None and num_classes) else None

    def validate(served: nn.Module) -> float:
        """Every epoch's held-out loss, and the kept one's."""
        return held_out_loss(served, test.images[:2000], held, device)  # type: ignore[arg-type]

    result = train_diffusion(model, train.images, labels, cfg, device, hooks, validate)
    best = result.get("best")  # None on the other ranks of a data-parallel group
    loss = best["val_loss"] if best else round(validate(model), 4)
    return _image_result(kind, train, model, result, {"held_out_loss": loss})
