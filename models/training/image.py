"""Training loops for the image generators (vae.py, gan.py), kept apart from the model files.

Both loops run whole epochs over an in-memory (N, H, W) image array, stop after `epochs` or
`max_seconds` (counted across restarts), and checkpoint to a work directory after every epoch:
weights and optimizer moments as safetensors, counters as JSON, never pickle. A restarted run
resumes from the last finished epoch. Mixed precision (models/training/precision.py) on CUDA only;
CPUs run in fp32. In a torch.distributed group each loop runs under DDP on the global batch
(models/training/distributed.py); rank 0 alone checkpoints and reports.
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
import torch.nn.functional as F

from models.data.uploads import ImageSet
from models.image.gan import Discriminator, GANConfig, Generator
from models.image.vae import VAE, VAEConfig, held_out_negative_elbo
from models.kinds import GANParams, VAEParams
from models.training import distributed
from models.training.best import BestWeights
from models.training.checkpoint import load_checkpoint, save_checkpoint
from models.training.hooks import TrainHooks
from models.training.precision import autocast, grad_scaler
from models.training.result import TrainResult, parent_module


@dataclass
class VAETrainConfig:
    epochs: int = 40  # passes over the training images
    batch_size: int = 64
    lr: float = 1e-3  # Adam, cosine-decayed to lr / 10 over the epochs
    max_seconds: float = 0.0  # stop early after this much training time (0: no limit)
    seed: int = 0  # drives init, shuffling and the reparameterisation noise
    patience: int = 0  # epochs without a lower held-out loss before stopping (0: never)


@dataclass
class GANTrainConfig:
    epochs: int = 30  # passes over the training images
    batch_size: int = 64
    lr: float = 2e-4  # Adam for both networks, as in DCGAN
    beta1: float = 0.5  # DCGAN's Adam momentum; 0.9 oscillates
    real_label: float = 0.9  # one-sided label smoothing: keeps D from becoming overconfident
    loss: str = "bce"  # "bce": non-saturating GAN loss; "hinge": hinge D loss, G maximises D
    lr_d: float = 0.0  # > 0: D's own learning rate (TTUR, Heusel et al. 2017); 0: lr
    aux_weight: float = 1.0  # weight of the auxiliary class loss (conditional models only)
    ema: float = 0.0  # > 0: serve an exponential moving average of G's weights (e.g. 0.999)
    ema_warmup: bool = False  # decay min(ema, (1 + t) / (10 + t)) at step t: forget the init
    bn_refresh_batches: int = 50  # batches of 256 fakes that re-estimate BatchNorm at the end
    max_seconds: float = 0.0  # stop early after this much training time (0: no limit)
    seed: int = 0


def _step(opt: torch.optim.Optimizer, scaler: Any, loss: torch.Tensor) -> None:
    """One optimizer step on `loss`, through the loss scaler (a no-op unless fp16)."""
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()


def _end_epoch(
    state: dict[str, Any],
    started: float,
    steps_per_epoch: int,
    samples: int,
    losses: dict[str, float],
    hooks: TrainHooks,
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    scored: dict[str, Any] | None = None,
) -> None:
    """Counts the finished epoch, records its row (with its validation, `scored`),
    checkpoints, and reports the row."""
    seconds = time.perf_counter() - started
    state["seconds"] += seconds
    state["epoch"] += 1
    state["steps"] = state["epoch"] * steps_per_epoch
    record = {
        "epoch": state["epoch"],
        "step": state["steps"],
        "samples_per_s": round(samples / seconds, 1),
        **{k: round(v, 3) for k, v in losses.items()},
        **(scored or {}),
        "seconds": round(state["seconds"], 1),
    }
    state["history"].append(record)
    distributed.checkpoint(hooks, lambda d: save_checkpoint(d, modules, optimizers, state))
    if hooks.on_epoch is not None:
        hooks.on_epoch(record)


def _validate_epoch(
    state: dict[str, Any],
    steps_per_epoch: int,
    validate: Callable[[], float] | None,
    best: BestWeights,
    device: torch.device,
) -> tuple[dict[str, Any], bool]:
    """The finished epoch's held-out loss on rank 0 (`validate` scores `best.model`, in eval
    mode), and whether patience ends the run here, agreed by every rank."""
    scored: dict[str, Any] = {}
    if validate is not None and distributed.is_main():
        was_training = best.model.training
        best.model.eval()
        with torch.no_grad():
            val_loss = round(validate(), 4)
        best.model.train(was_training)
        step = (state["epoch"] + 1) * steps_per_epoch
        scored = {"val_loss": val_loss, **best.update(step, val_loss)}
    early = bool(best.patience) and distributed.agree(bool(scored) and best.exhausted, device)
    state["early_stopped"] = early
    return scored, early


def _keep_best(
    state: dict[str, Any], validate: Callable[[], float] | None, best: BestWeights, early: bool
) -> dict[str, Any]:
    """Loads the best epoch's weights (rank 0, with a validation); what the loop returns of
    them: the best epoch's step and loss, why it stopped."""
    last = state["history"][-1] if state["history"] else {}
    kept = best.restore(last) if validate is not None and distributed.is_main() else None
    distributed.same_weights(best.model)
    return {"best": kept, **({"stopped_reason": "early_stopping"} if early else {})}


def _out_of_time(max_seconds: float, state: dict[str, Any], device: torch.device) -> bool:
    """The time budget is spent (on any rank: they must stop at the same epoch)."""
    return distributed.agree(0 < max_seconds <= state["seconds"], device)


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
    validate: Callable[[], float] | None = None,
) -> dict[str, Any]:
    """Maximise the ELBO on float32 (N, H, W) images in [0, 1]; labels (N,) if conditional.

    Trains `model` in place (moved to `device`) and returns the last epoch's figures. With
    `validate` (a held-out loss of `model`) every epoch is scored, the best epoch's weights
    are the ones kept, and cfg.patience epochs without a lower loss end the run.
    """
    torch.manual_seed(distributed.rank_seed(cfg.seed))  # reparameterisation noise
    hooks = distributed.rank_hooks(hooks or TrainHooks())
    work_dir, on_step = hooks.work_dir, hooks.on_step
    model.to(device).train()
    net = distributed.wrap(model, device)
    x, y = _as_tensors(images, labels if model.config.num_classes else None, device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    scaler = grad_scaler(device)  # a no-op unless autocast runs in fp16
    state = {"epoch": 0, "seconds": 0.0, "history": []}
    if work_dir is not None and (saved := load_checkpoint(work_dir, {"vae": model}, {"vae": opt})):
        state = saved
        print(f"resumed from {work_dir} at epoch {state['epoch']}", flush=True)
    steps_per_epoch = math.ceil(len(x) / cfg.batch_size)
    scored = validate is not None and distributed.is_main()
    best = BestWeights(model, work_dir if scored else None, state["history"], cfg.patience)
    early = bool(state.get("early_stopped"))  # it had stopped before a restart
    while (
        state["epoch"] < cfg.epochs
        and not early
        and not _out_of_time(cfg.max_seconds, state, device)
    ):
        t0 = time.perf_counter()
        epoch = state["epoch"]
        for group in opt.param_groups:  # cosine from lr to lr / 10
            group["lr"] = cfg.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * epoch / cfg.epochs)))
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)  # resumable shuffling
        order = torch.randperm(len(x), generator=gen).to(device)
        totals = torch.zeros(3, device=device)  # sums of loss, nll, kl over this rank's rows
        rows = 0
        stopped = False
        for n, i in enumerate(range(0, len(x), cfg.batch_size)):
            if distributed.stop_asked(hooks, device):
                stopped = True
                break
            shared = distributed.share(order[i : i + cfg.batch_size])
            if shared is None:
                continue  # fewer rows than ranks: skipped by all
            idx, weight = shared
            xb, yb = x[idx], None if y is None else y[idx]  # (B, 1, H, W), (B,)
            with autocast(device):
                recon, mu, logvar = net(xb, yb)
            loss, nll, kl = model.loss(xb, recon.float(), mu.float(), logvar.float())
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss * weight).backward()
            scaler.step(opt)
            scaler.update()
            totals += torch.stack([loss, nll, kl]).detach() * len(idx)
            rows += len(idx)
            if on_step is not None:
                on_step(
                    epoch * steps_per_epoch + n + 1, cfg.epochs * steps_per_epoch, loss.detach()
                )
        if stopped:
            break  # mid-epoch: the last checkpoint stays the last finished epoch
        loss, nll, kl = (totals / max(1, rows)).tolist()
        losses = {"loss": loss, "nll": nll, "kl": kl}
        val, early = _validate_epoch(state, steps_per_epoch, validate, best, device)
        modules, optimizers = {"vae": model}, {"vae": opt}
        _end_epoch(state, t0, steps_per_epoch, len(x), losses, hooks, modules, optimizers, val)
    kept = _keep_best(state, validate, best, early)
    model.eval()
    last = state["history"][-1] if state["history"] else {}
    return {**last, "steps": state.get("steps", 0), "config": asdict(cfg), **kept}


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
    """DCGAN training on float32 (N, H, W) images in [0, 1].

    cfg.loss "bce" is the non-saturating loss with one-sided label smoothing (real_label);
    "hinge" trains D to push real logits above 1 and fake ones below -1 and G to raise D's
    logit on its fakes (Lim & Ye 2017, the loss of SN-GAN); its D stops pushing on images it
    already separates by the margin, so it does not saturate the way a sigmoid does.

    For conditional models fakes get uniformly drawn labels; the discriminator's auxiliary
    head learns the classes on real images only and the generator is asked to produce images
    it classifies as the requested label (AC-GAN). With cfg.ema > 0 the generator ends up
    holding the moving average of its weights. Trains both modules in place; BatchNorm
    statistics are re-estimated at the end for the weights that will be served.
    """
    torch.manual_seed(distributed.rank_seed(cfg.seed))  # z and fake labels: each rank its own
    hooks = distributed.rank_hooks(hooks or TrainHooks())
    work_dir, on_step = hooks.work_dir, hooks.on_step
    k, latent = generator.config.num_classes, generator.config.latent_dim
    generator.to(device).train()
    discriminator.to(device).train()
    g_net, d_net = distributed.wrap(generator, device), distributed.wrap(discriminator, device)
    x, y = _as_tensors(images, labels if k else None, device)
    x = x * 2 - 1  # tanh range
    betas = (cfg.beta1, 0.999)
    opt_g = torch.optim.Adam(generator.parameters(), lr=cfg.lr, betas=betas)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=cfg.lr_d or cfg.lr, betas=betas)
    if cfg.loss not in ("bce", "hinge"):
        raise ValueError(f"loss {cfg.loss!r}: 'bce' or 'hinge'")
    hinge = cfg.loss == "hinge"
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
    while state["epoch"] < cfg.epochs and not _out_of_time(cfg.max_seconds, state, device):
        t0 = time.perf_counter()
        epoch = state["epoch"]
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        order = torch.randperm(len(x), generator=gen).to(device)
        totals = torch.zeros(4, device=device)  # d loss, g loss, D(real), D(fake)
        stopped = False
        for i in range(steps_per_epoch):
            if distributed.stop_asked(hooks, device):
                stopped = True
                break
            # whole batches only: every rank takes batch_size / num_workers rows
            shared = distributed.share(order[i * cfg.batch_size : (i + 1) * cfg.batch_size])
            if shared is None:
                continue
            idx = shared[0]
            real, y_real = x[idx], None if y is None else y[idx]  # (B, 1, H, W), (B,)
            B = len(idx)
            z = torch.randn(B, latent, device=device)
            y_fake = torch.randint(0, k, (B,), device=device) if k else None

            # discriminator: real -> real_label (smoothed), fake -> 0; hinge: real > 1, fake < -1
            with autocast(device):
                fake = g_net(z, y_fake)  # (B, 1, H, W)
                logit_real, cls_real = d_net(real, y_real)
                logit_fake, _ = d_net(fake.detach(), y_fake)
                if hinge:
                    loss_d = F.relu(1 - logit_real.float()).mean()
                    loss_d = loss_d + F.relu(1 + logit_fake.float()).mean()
                else:
                    loss_d = F.binary_cross_entropy_with_logits(
                        logit_real.float(), torch.full((B,), cfg.real_label, device=device)
                    ) + F.binary_cross_entropy_with_logits(
                        logit_fake.float(), torch.zeros(B, device=device)
                    )
                if k:
                    loss_d = loss_d + cfg.aux_weight * F.cross_entropy(cls_real.float(), y_real)
            _step(opt_d, scaler, loss_d)

            # generator: make D call the fakes real (and of the asked-for class)
            with autocast(device):
                logit_fake, cls_fake = d_net(fake, y_fake)
                if hinge:
                    loss_g = -logit_fake.float().mean()
                else:
                    loss_g = F.binary_cross_entropy_with_logits(
                        logit_fake.float(), torch.ones(B, device=device)
                    )
                if k:
                    loss_g = loss_g + cfg.aux_weight * F.cross_entropy(cls_fake.float(), y_fake)
            _step(opt_g, scaler, loss_g)
            if ema is not None:  # average out the oscillation of adversarial training
                t = epoch * steps_per_epoch + i
                decay = min(cfg.ema, (1 + t) / (10 + t)) if cfg.ema_warmup else cfg.ema
                for p_ema, p in zip(ema.parameters(), generator.parameters(), strict=True):
                    p_ema.lerp_(p.detach(), 1 - decay)
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
    return {
        **last,
        "steps": state.get("steps", 0),
        "config": asdict(cfg),
        "history": state["history"],
    }


# -----------------------------------------------------------------------------
# the kinds' training functions (models/kinds.py): data and params in, TrainResult out


def _image_labels(train: ImageSet, conditional: bool | None) -> tuple[np.ndarray | None, int]:
    labelled = train.labels is not None
    if conditional and not labelled:
        raise ValueError("conditional=true needs a labelled image dataset")
    if conditional is False or not labelled:
        return None, 0
    return train.labels, len(train.label_names or [])


def _image_result(
    kind: str, train: ImageSet, module: nn.Module, result: dict, metrics: dict
) -> TrainResult:
    keys = ("loss", "nll", "kl", "loss_d", "loss_g", "d_real", "d_fake", "samples_per_s")
    metrics.update({k: result[k] for k in keys if k in result})
    metrics.update(steps=result.get("steps"), train_seconds=result.get("seconds"))
    if result.get("best"):  # the kept epoch's held-out loss, as its history row shows it
        metrics.update(val_loss=result["best"]["val_loss"], best_step=result["best"]["step"])
    if "stopped_reason" in result:
        metrics["stopped_reason"] = result["stopped_reason"]
    num_classes = module.config.num_classes  # type: ignore[union-attr]
    return TrainResult(
        {
            "kind": kind,
            "task": "image-generation",
            "description": f"{kind} ({'' if num_classes else 'un'}conditional), trained over HTTP.",
            "image_size": list(module.config.image_size),  # type: ignore[union-attr]
            "num_classes": num_classes,
            "labels": list(train.label_names or []) if num_classes else [],
            "model_args": asdict(module.config),  # type: ignore[call-overload]
            "metrics": metrics,
        },
        module=module,
    )


def train_image_vae(
    kind: str, train: ImageSet, test: ImageSet, p: VAEParams, hooks: TrainHooks, device
) -> TrainResult:
    labels, num_classes = _image_labels(train, p.conditional)
    torch.manual_seed(p.seed)
    image_size = tuple(train.images.shape[1:])
    model = parent_module(hooks, VAE, VAEConfig)  # a fine-tune starts from its parent
    if model is None:
        model = VAE(VAEConfig(image_size, p.latent_dim, hidden=p.hidden, num_classes=num_classes))
    cfg = VAETrainConfig(p.epochs, p.batch_size, p.lr, p.max_seconds, p.seed, p.patience)
    held_out = test.labels[:2000] if test.labels is not None else None

    def validate() -> float:
        """Every epoch's held-out loss, and the kept one's: the negative ELBO."""
        return held_out_negative_elbo(model, test.images[:2000], held_out, device)

    result = train_vae(model, train.images, labels, cfg, device, hooks, validate)
    model.eval()
    best = result.get("best")  # None on the other ranks of a data-parallel group
    elbo = best["val_loss"] if best else validate()
    return _image_result(kind, train, model, result, {"held_out_neg_elbo": round(elbo, 2)})


def train_image_gan(
    kind: str, train: ImageSet, test: ImageSet, p: GANParams, hooks: TrainHooks, device
) -> TrainResult:
    labels, num_classes = _image_labels(train, p.conditional)
    torch.manual_seed(p.seed)
    gan = GANConfig(
        tuple(train.images.shape[1:]),
        p.latent_dim,
        p.channels,
        num_classes,
        spectral_norm=p.spectral_norm,
    )
    generator = Generator(gan)
    cfg = GANTrainConfig(
        p.epochs,
        p.batch_size,
        p.lr,
        loss=p.loss,
        lr_d=p.lr_d,
        ema=p.ema,
        ema_warmup=p.ema_warmup,
        max_seconds=p.max_seconds,
        seed=p.seed,
    )
    result = train_gan(generator, Discriminator(gan), train.images, labels, cfg, device, hooks)
    return _image_result(kind, train, generator, result, {})
