"""Training loops for the image generators (vae.py, gan.py), kept apart from the model files.

Both loops run whole epochs over an in-memory (N, H, W) image array, stop after `epochs` or
`max_seconds` (counted across restarts), and checkpoint to a work directory after every epoch:
weights and optimizer moments as safetensors, counters as JSON, never pickle. A restarted run
resumes from the last finished epoch. Mixed precision (models/precision.py) on CUDA only;
CPUs run in fp32.
"""

import copy
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
import torch.nn as nn
import torch.nn.functional as F

from models.gan import Discriminator, Generator
from models.hooks import TrainHooks
from models.precision import autocast, grad_scaler
from models.vae import VAE


@dataclass
class VAETrainConfig:
    epochs: int = 40  # passes over the training images
    batch_size: int = 64
    lr: float = 1e-3  # Adam, cosine-decayed to lr / 10 over the epochs
    max_seconds: float = 0.0  # stop early after this much training time (0: no limit)
    seed: int = 0  # drives init, shuffling and the reparameterisation noise


@dataclass
class GANTrainConfig:
    epochs: int = 30  # passes over the training images
    batch_size: int = 64
    lr: float = 2e-4  # Adam for both networks, as in DCGAN
    beta1: float = 0.5  # DCGAN's Adam momentum; 0.9 oscillates
    real_label: float = 0.9  # one-sided label smoothing: keeps D from becoming overconfident
    aux_weight: float = 1.0  # weight of the auxiliary class loss (conditional models only)
    ema: float = 0.0  # > 0: serve an exponential moving average of G's weights (e.g. 0.999)
    bn_refresh_batches: int = 50  # batches of 256 fakes that re-estimate BatchNorm at the end
    max_seconds: float = 0.0  # stop early after this much training time (0: no limit)
    seed: int = 0


# -----------------------------------------------------------------------------
# checkpoints: any number of modules and optimizers in one safetensors file + JSON


def save_checkpoint(
    path: Path,
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    state: dict[str, Any],
) -> None:
    """Write weights, optimizer state and `state` (JSON) atomically into directory `path`."""
    path.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        for k, v in module.state_dict().items():
            tensors[f"model.{name}.{k}"] = v.detach().cpu().contiguous()
    groups = {}
    for name, opt in optimizers.items():
        sd = opt.state_dict()
        for idx, per_param in sd["state"].items():
            for k, v in per_param.items():
                tensors[f"optim.{name}.{idx}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
        groups[name] = sd["param_groups"]
    safetensors.torch.save_file(tensors, path / "checkpoint.safetensors.tmp")
    (path / "checkpoint.safetensors.tmp").replace(path / "checkpoint.safetensors")
    meta = json.dumps({"state": state, "param_groups": groups})
    (path / "checkpoint.json.tmp").write_text(meta)
    (path / "checkpoint.json.tmp").replace(path / "checkpoint.json")


def load_checkpoint(
    path: Path, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer]
) -> dict[str, Any] | None:
    """Restore what save_checkpoint wrote; returns its `state`, or None if there is none."""
    if not (path / "checkpoint.json").is_file():
        return None
    meta = json.loads((path / "checkpoint.json").read_text())
    tensors = safetensors.torch.load_file(path / "checkpoint.safetensors")
    for name, module in modules.items():
        prefix = f"model.{name}."
        sd = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        module.load_state_dict(sd, strict=True)
    for name, opt in optimizers.items():
        prefix = f"optim.{name}."
        per_param: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in tensors.items():
            if k.startswith(prefix):
                idx, key = k[len(prefix) :].split(".", 1)
                per_param.setdefault(int(idx), {})[key] = v
        opt.load_state_dict({"state": per_param, "param_groups": meta["param_groups"][name]})
    return meta["state"]


def _end_epoch(
    state: dict[str, Any],
    started: float,
    steps_per_epoch: int,
    samples: int,
    losses: dict[str, float],
    hooks: TrainHooks,
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
) -> None:
    """Counts the finished epoch, records its row, checkpoints, and reports the row."""
    seconds = time.perf_counter() - started
    state["seconds"] += seconds
    state["epoch"] += 1
    state["steps"] = state["epoch"] * steps_per_epoch
    record = {
        "epoch": state["epoch"],
        "step": state["steps"],
        "samples_per_s": round(samples / seconds, 1),
        **{k: round(v, 3) for k, v in losses.items()},
        "seconds": round(state["seconds"], 1),
    }
    state["history"].append(record)
    if hooks.work_dir is not None:
        save_checkpoint(hooks.work_dir, modules, optimizers, state)
    if hooks.on_epoch is not None:
        hooks.on_epoch(record)


def _as_tensors(
    images: np.ndarray, labels: np.ndarray | None, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None]:
    x = torch.as_tensor(np.asarray(images, dtype=np.float32)).unsqueeze(1).to(device)  # (N,1,H,W)
    y = None if labels is None else torch.as_tensor(np.asarray(labels, dtype=np.int64)).to(device)
    return x, y


# -----------------------------------------------------------------------------
# VAE


def train_vae(
    model: VAE,
    images: np.ndarray,
    labels: np.ndarray | None,
    cfg: VAETrainConfig,
    device: torch.device,
    hooks: TrainHooks | None = None,
) -> dict[str, Any]:
    """Maximise the ELBO on float32 (N, H, W) images in [0, 1]; labels (N,) if conditional.

    Trains `model` in place (moved to `device`) and returns the last epoch's figures.
    """
    torch.manual_seed(cfg.seed)
    hooks = hooks or TrainHooks()
    work_dir, on_step, should_stop = hooks.work_dir, hooks.on_step, hooks.should_stop
    model.to(device).train()
    x, y = _as_tensors(images, labels if model.config.num_classes else None, device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    scaler = grad_scaler(device)  # a no-op unless autocast runs in fp16
    state = {"epoch": 0, "seconds": 0.0, "history": []}
    if work_dir is not None and (saved := load_checkpoint(work_dir, {"vae": model}, {"vae": opt})):
        state = saved
        print(f"resumed from {work_dir} at epoch {state['epoch']}", flush=True)
    steps_per_epoch = math.ceil(len(x) / cfg.batch_size)
    while state["epoch"] < cfg.epochs and not (0 < cfg.max_seconds <= state["seconds"]):
        t0 = time.perf_counter()
        epoch = state["epoch"]
        for group in opt.param_groups:  # cosine from lr to lr / 10
            group["lr"] = cfg.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * epoch / cfg.epochs)))
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)  # resumable shuffling
        order = torch.randperm(len(x), generator=gen).to(device)
        totals = torch.zeros(3, device=device)  # sums of loss, nll, kl
        stopped = False
        for n, i in enumerate(range(0, len(x), cfg.batch_size)):
            if should_stop is not None and should_stop():
                stopped = True
                break
            idx = order[i : i + cfg.batch_size]
            xb, yb = x[idx], None if y is None else y[idx]  # (B, 1, H, W), (B,)
            with autocast(device):
                recon, mu, logvar = model(xb, yb)
            loss, nll, kl = model.loss(xb, recon.float(), mu.float(), logvar.float())
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            totals += torch.stack([loss, nll, kl]).detach() * len(idx)
            if on_step is not None:
                on_step(
                    epoch * steps_per_epoch + n + 1, cfg.epochs * steps_per_epoch, loss.detach()
                )
        if stopped:
            break  # mid-epoch: the last checkpoint stays the last finished epoch
        loss, nll, kl = (totals / len(x)).tolist()
        losses = {"loss": loss, "nll": nll, "kl": kl}
        _end_epoch(state, t0, steps_per_epoch, len(x), losses, hooks, {"vae": model}, {"vae": opt})
    model.eval()
    last = state["history"][-1] if state["history"] else {}
    return {**last, "steps": state.get("steps", 0), "config": asdict(cfg)}


# -----------------------------------------------------------------------------
# GAN


@torch.no_grad()
def refresh_batchnorm(
    generator: Generator, device: torch.device, batches: int = 50, batch_size: int = 256
) -> None:
    """Re-estimate BatchNorm running statistics for the final weights.

    During training the running averages trail weights that keep moving; averaging fresh batch
    statistics of the finished generator makes eval-mode samples match train-mode ones.
    """
    cfg = generator.config
    gen = torch.Generator().manual_seed(1234)
    bns = [m for m in generator.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the batches below
    generator.train()
    for _ in range(batches):
        z = torch.randn(batch_size, cfg.latent_dim, generator=gen).to(device)
        y = torch.randint(0, max(cfg.num_classes, 1), (batch_size,), generator=gen).to(device)
        generator(z, y if cfg.num_classes else None)
    for bn in bns:
        bn.momentum = 0.1
    generator.eval()


def train_gan(
    generator: Generator,
    discriminator: Discriminator,
    images: np.ndarray,
    labels: np.ndarray | None,
    cfg: GANTrainConfig,
    device: torch.device,
    hooks: TrainHooks | None = None,
) -> dict[str, Any]:
    """DCGAN training (non-saturating loss) on float32 (N, H, W) images in [0, 1].

    For conditional models fakes get uniformly drawn labels; the discriminator's auxiliary
    head learns the classes on real images only and the generator is asked to produce images
    it classifies as the requested label (AC-GAN). With cfg.ema > 0 the generator ends up
    holding the moving average of its weights. Trains both modules in place; BatchNorm
    statistics are re-estimated at the end for the weights that will be served.
    """
    torch.manual_seed(cfg.seed)
    hooks = hooks or TrainHooks()
    work_dir, on_step, should_stop = hooks.work_dir, hooks.on_step, hooks.should_stop
    k, latent = generator.config.num_classes, generator.config.latent_dim
    generator.to(device).train()
    discriminator.to(device).train()
    x, y = _as_tensors(images, labels if k else None, device)
    x = x * 2 - 1  # tanh range
    betas = (cfg.beta1, 0.999)
    opt_g = torch.optim.Adam(generator.parameters(), lr=cfg.lr, betas=betas)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=cfg.lr, betas=betas)
    modules = {"generator": generator, "discriminator": discriminator}
    ema = copy.deepcopy(generator).eval() if cfg.ema else None  # averaged weights, served
    if ema is not None:
        ema.requires_grad_(False)
        modules["generator_ema"] = ema
    optimizers = {"generator": opt_g, "discriminator": opt_d}
    scaler = grad_scaler(device)  # a no-op unless autocast runs in fp16
    state = {"epoch": 0, "seconds": 0.0, "history": []}
    if work_dir is not None and (saved := load_checkpoint(work_dir, modules, optimizers)):
        state = saved
        print(f"resumed from {work_dir} at epoch {state['epoch']}", flush=True)
    steps_per_epoch = len(x) // cfg.batch_size  # drop the ragged last batch: BatchNorm
    while state["epoch"] < cfg.epochs and not (0 < cfg.max_seconds <= state["seconds"]):
        t0 = time.perf_counter()
        epoch = state["epoch"]
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        order = torch.randperm(len(x), generator=gen).to(device)
        totals = torch.zeros(4, device=device)  # d loss, g loss, D(real), D(fake)
        stopped = False
        for i in range(steps_per_epoch):
            if should_stop is not None and should_stop():
                stopped = True
                break
            idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            real, y_real = x[idx], None if y is None else y[idx]  # (B, 1, H, W), (B,)
            B = len(idx)
            z = torch.randn(B, latent, device=device)
            y_fake = torch.randint(0, k, (B,), device=device) if k else None

            # discriminator: real -> real_label (smoothed), fake -> 0
            with autocast(device):
                fake = generator(z, y_fake)  # (B, 1, H, W)
                logit_real, cls_real = discriminator(real, y_real)
                logit_fake, _ = discriminator(fake.detach(), y_fake)
                loss_d = F.binary_cross_entropy_with_logits(
                    logit_real.float(), torch.full((B,), cfg.real_label, device=device)
                ) + F.binary_cross_entropy_with_logits(
                    logit_fake.float(), torch.zeros(B, device=device)
                )
                if k:
                    loss_d = loss_d + cfg.aux_weight * F.cross_entropy(cls_real.float(), y_real)
            opt_d.zero_grad(set_to_none=True)
            scaler.scale(loss_d).backward()
            scaler.step(opt_d)
            scaler.update()

            # generator: make D call the fakes real (and of the asked-for class)
            with autocast(device):
                logit_fake, cls_fake = discriminator(fake, y_fake)
                loss_g = F.binary_cross_entropy_with_logits(
                    logit_fake.float(), torch.ones(B, device=device)
                )
                if k:
                    loss_g = loss_g + cfg.aux_weight * F.cross_entropy(cls_fake.float(), y_fake)
            opt_g.zero_grad(set_to_none=True)
            scaler.scale(loss_g).backward()
            scaler.step(opt_g)
            scaler.update()
            if ema is not None:  # average out the oscillation of adversarial training
                for p_ema, p in zip(ema.parameters(), generator.parameters(), strict=True):
                    p_ema.lerp_(p.detach(), 1 - cfg.ema)
            totals += torch.stack(
                [
                    loss_d.detach(),
                    loss_g.detach(),
                    torch.sigmoid(logit_real.detach().float()).mean(),
                    torch.sigmoid(logit_fake.detach().float()).mean(),
                ]
            )
            if on_step is not None:
                on_step(
                    epoch * steps_per_epoch + i + 1, cfg.epochs * steps_per_epoch, loss_g.detach()
                )
        if stopped:
            break  # mid-epoch: the last checkpoint stays the last finished epoch
        loss_d, loss_g, d_real, d_fake = (totals / steps_per_epoch).tolist()
        losses = {"loss_d": loss_d, "loss_g": loss_g, "d_real": d_real, "d_fake": d_fake}
        samples = steps_per_epoch * cfg.batch_size
        _end_epoch(state, t0, steps_per_epoch, samples, losses, hooks, modules, optimizers)
    if ema is not None:
        generator.load_state_dict(ema.state_dict())  # BatchNorm statistics are refreshed next
    refresh_batchnorm(generator, device, batches=cfg.bn_refresh_batches)
    discriminator.eval()
    last = state["history"][-1] if state["history"] else {}
    return {**last, "steps": state.get("steps", 0), "config": asdict(cfg)}
