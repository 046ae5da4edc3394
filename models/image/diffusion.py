"""A class-conditional denoising diffusion model (DDPM) for small grayscale images, with DDIM.

The model is a small U-Net that, given a noised image x_t, the time step t and a class label,
predicts the velocity v = sqrt(a_t) * eps - sqrt(1 - a_t) * x0 (a_t = alpha-bar at t), from
which both the clean image x0 and the noise eps follow linearly. Choices, and why:

- **v-prediction** (Salimans & Ho 2022) rather than eps-prediction: at the noisiest steps of a
  cosine schedule a_t is ~0, and an eps-model's estimate x0 = (x_t - sqrt(1-a_t) eps) / sqrt(a_t)
  divides by ~0; a v-model gives x0 = sqrt(a_t) x_t - sqrt(1-a_t) v with no division, which is
  what few-step DDIM sampling leans on.
- **Cosine alpha-bar schedule** (Nichol & Dhariwal 2021), T = 1000, betas clipped to 0.999:
  a linear schedule spends most of its steps on nearly pure noise at 28x28.
- **Classifier-free guidance** (Ho & Salimans 2022): the class embedding table has
  num_classes + 1 rows; the last one means "no label". Training replaces the label by it with
  probability p_uncond, so one network learns both p(x|y) and p(x). Sampling combines them as
  out = out_u + w * (out_c - out_u) (the convention in which w = 1 is the plain conditional
  model and w = 0 the unconditional one). Because eps and x0 are both affine in v with the
  same coefficients for the two passes, mixing v is exactly mixing eps. With w = 0 only the
  unconditional pass runs, so "guidance 0" IS the unconditional sampler, bit for bit, whatever
  labels were asked for; with w = 1 only the conditional pass runs.
- **DDIM with eta = 0** (Song, Meng & Ermon 2021): a deterministic map from the initial noise
  x_T to the image, in any number of steps 1..T (evenly spaced time steps), with x0 clipped to
  [-1, 1] at each step. The service draws x_T from its seeded generator, so a seed fixes the
  pixels, and every image's trajectory depends only on its own noise and label.

The network: a 3-level U-Net (28 -> 14 -> 7) of residual blocks (GroupNorm, SiLU, 3x3 convs,
the time + class embedding added between the convs, dropout), one self-attention block at the
lowest resolution, skip connections by concatenation, a zero-initialised output conv.
Training lives in models/training/diffusion.py; serving (DiffusionImageGenerator) here.

References:
- Ho, Jain & Abbeel, "Denoising Diffusion Probabilistic Models" (NeurIPS 2020).
- Nichol & Dhariwal, "Improved Denoising Diffusion Probabilistic Models" (ICML 2021).
- Song, Meng & Ermon, "Denoising Diffusion Implicit Models" (ICLR 2021).
- Ho & Salimans, "Classifier-Free Diffusion Guidance" (2022).
- Salimans & Ho, "Progressive Distillation for Fast Sampling of Diffusion Models" (ICLR 2022):
  v-prediction.
"""

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.image.generator import ImageGenerator, Noise

DEFAULT_STEPS = 50  # DDIM steps when a caller names none
DEFAULT_GUIDANCE = 1.5  # classifier-free guidance w when a caller names none (mnist-diffusion card)
MAX_STEPS = 1000


@dataclass
class DiffusionConfig:
    image_size: tuple[int, int] = (28, 28)  # (H, W); two stride-2 stages, so divisible by 4
    channels: tuple[int, int, int] = (32, 64, 96)  # U-Net widths at H, H/2, H/4
    blocks: int = 1  # residual blocks per level on the way down (one more on the way up)
    attention: bool = True  # one self-attention block at H/4
    dropout: float = 0.1  # inside the residual blocks, while training
    num_classes: int = 0  # 0 = unconditional; else labels 0..num_classes-1 (+1 "no label" row)
    timesteps: int = 1000  # T of the forward process

    def __post_init__(self) -> None:
        self.image_size = tuple(self.image_size)  # JSON gives lists
        self.channels = tuple(self.channels)
        if len(self.channels) != 3:
            raise ValueError(f"channels {self.channels} must name 3 widths")
        if any(c % 8 for c in self.channels):
            raise ValueError(f"channels {self.channels} must be multiples of 8 (GroupNorm)")
        if self.image_size[0] % 4 or self.image_size[1] % 4:
            raise ValueError(f"image_size {self.image_size} must be divisible by 4")


def cosine_alpha_bar(timesteps: int, s: float = 0.008) -> torch.Tensor:
    """alpha-bar_t for t = 0..T-1 (float64): cumulative products of 1 - beta, betas <= 0.999."""
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    return torch.cumprod(1 - betas, dim=0)  # (T,)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features (B, dim) of integer time steps t (B,), as in the transformer."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(8, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2 = nn.GroupNorm(8, c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, C_out, H, W)
        h = h + self.emb(emb)[:, :, None, None]  # time + class, per channel
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Attention(nn.Module):
    """Single-head self-attention over the pixels of a (small) feature map, residual."""

    def __init__(self, c: int):
        super().__init__()
        self.norm = nn.GroupNorm(8, c)
        self.qkv = nn.Conv2d(c, 3 * c, 1)
        self.proj = nn.Conv2d(c, c, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, C, H * W).transpose(2, 3).unbind(1)
        h = F.scaled_dot_product_attention(q, k, v)  # (B, HW, C)
        return x + self.proj(h.transpose(1, 2).reshape(B, C, H, W))


class UNet(nn.Module):
    def __init__(self, config: DiffusionConfig):
        super().__init__()
        self.config = config
        c0, c1, c2 = config.channels
        emb = 4 * c0
        n, p = config.blocks, config.dropout
        # alpha-bar_t, kept out of the state dict: the config rebuilds it
        self.register_buffer("alpha_bar", cosine_alpha_bar(config.timesteps).float(), False)
        self.time_mlp = nn.Sequential(nn.Linear(c0, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.label_emb = nn.Embedding(config.num_classes + 1, emb)  # last row: "no label"
        self.inp = nn.Conv2d(1, c0, 3, padding=1)

        widths = (c0, c1, c2)
        self.down = nn.ModuleList()  # per level: n ResBlocks, then a stride-2 conv (not last)
        skips, c = [c0], c0
        for level, w in enumerate(widths):
            for _ in range(n):
                self.down.append(ResBlock(c, w, emb, p))
                c = w
                skips.append(c)
            if level < 2:
                self.down.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)
        self.mid1 = ResBlock(c, c, emb, p)
        self.attn = Attention(c) if config.attention else nn.Identity()
        self.mid2 = ResBlock(c, c, emb, p)
        self.up = nn.ModuleList()  # per level: n + 1 ResBlocks on [h, skip], then upsample
        for level, w in reversed(list(enumerate(widths))):
            for _ in range(n + 1):
                self.up.append(ResBlock(c + skips.pop(), w, emb, p))
                c = w
            if level > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(c, c, 3, 1, 1)))
        self.out_norm = nn.GroupNorm(8, c)
        self.out = nn.Conv2d(c, 1, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    @property
    def null_label(self) -> int:
        return self.config.num_classes

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """v predicted for x_t (B, 1, H, W) at integer steps t (B,), labels (B,) (null = K)."""
        emb = self.time_mlp(timestep_embedding(t, self.config.channels[0]))
        emb = emb + self.label_emb(labels)  # (B, E)
        h = self.inp(x)
        hs = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
            hs.append(h)
        h = self.mid2(self.attn(self.mid1(h, emb)), emb)
        for layer in self.up:
            if isinstance(layer, ResBlock):
                h = layer(torch.cat([h, hs.pop()], dim=1), emb)
            else:
                h = layer(h)
        return self.out(F.silu(self.out_norm(h)))

    # -- training ----------------------------------------------------------------------------

    def loss(
        self,
        x0: torch.Tensor,
        labels: torch.Tensor | None,
        p_uncond: float,
        generator: torch.Generator | None = None,
        net: nn.Module | None = None,
    ) -> torch.Tensor:
        """Mean squared error of v on images x0 (B, 1, H, W) in [-1, 1] at uniform random t.
        `net` runs the forward pass instead of self: a DDP wrapper, so gradients sync."""
        B, dev = x0.shape[0], x0.device
        t = torch.randint(0, self.config.timesteps, (B,), generator=generator).to(dev)
        eps = torch.randn(x0.shape, generator=generator).to(dev)
        null = torch.full((B,), self.null_label, dtype=torch.long)
        if labels is None:
            y = null.to(dev)
        else:  # drop the label with probability p_uncond: the unconditional model, for guidance
            drop = torch.rand(B, generator=generator) < p_uncond
            y = torch.where(drop.to(dev), null.to(dev), labels)
        a = self.alpha_bar[t].view(B, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
        v = a.sqrt() * eps - (1 - a).sqrt() * x0
        return F.mse_loss((net or self)(x_t, t, y), v)

    # -- sampling ----------------------------------------------------------------------------

    def predict_v(
        self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, guidance: torch.Tensor
    ) -> torch.Tensor:
        """v_u + w (v_c - v_u) per image, each with its own label and scale w (B,), in one
        forward pass. An image needs the conditional pass unless w = 0 or its label is the null
        one, and the unconditional pass unless w = 1: so w = 0 runs only the unconditional
        model and w = 1 only the conditional one."""
        null = labels == self.null_label
        cond = ~null & (guidance != 0)
        uncond = null | (guidance != 1)
        nulls = torch.full_like(labels, self.null_label)
        w = guidance.view(-1, 1, 1, 1)
        # the uniform batches (one request alone) skip the indexing
        if not cond.any():
            return self(x, t, nulls)
        if not uncond.any():
            return self(x, t, labels)
        if cond.all() and uncond.all():
            out = self(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, nulls]))
            v_c, v_u = out.chunk(2)
            return v_u + w * (v_c - v_u)
        ci, ui = cond.nonzero().squeeze(1), uncond.nonzero().squeeze(1)
        out = self(
            torch.cat([x[ci], x[ui]]), torch.cat([t[ci], t[ui]]), torch.cat([labels[ci], nulls[ui]])
        )
        v_c, v_u = out[: len(ci)], out[len(ci) :]
        v = torch.empty_like(x)
        v[ci], v[ui] = v_c, v_u
        both = cond & uncond
        vu = v_u[both[ui]]
        v[both] = vu + w[both] * (v_c[both[ci]] - vu)
        return v

    @torch.no_grad()
    def denoise(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        t_next: torch.Tensor,
        labels: torch.Tensor,
        guidance: torch.Tensor,
    ) -> torch.Tensor:
        """One DDIM (eta = 0) step for every image of x (B, 1, H, W), each on its own schedule:
        from step t (B,) to t_next (B,) (-1: the clean image), with its own label (B,) (the
        null label: unconditional) and guidance scale (B,). Images at different steps, of
        requests asking for different step counts, share the forward pass: what a serving
        worker needs to let images join and leave between steps."""
        shape = (-1, 1, 1, 1)
        a = self.alpha_bar[t].view(shape)
        ones = torch.ones_like(t_next, dtype=a.dtype)
        a_next = torch.where(t_next >= 0, self.alpha_bar[t_next.clamp(min=0)], ones).view(shape)
        v = self.predict_v(x, t, labels, guidance)
        x0 = (a.sqrt() * x - (1 - a).sqrt() * v).clamp(-1, 1)
        eps = torch.where(a < 1, (x - a.sqrt() * x0) / (1 - a).clamp(min=1e-12).sqrt(), 0.0)
        return a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps

    def schedule(self, steps: int) -> list[int]:
        """The time steps of a `steps`-step DDIM run, evenly spaced from T - 1 down to 0."""
        T = self.config.timesteps
        if not 1 <= steps <= T:
            raise ValueError(f"steps must lie in 1..{T}, got {steps}")
        return torch.linspace(T - 1, 0, steps, dtype=torch.float64).round().long().tolist()

    @torch.no_grad()
    def sample(
        self,
        noise: torch.Tensor,
        labels: torch.Tensor | None = None,
        steps: int = DEFAULT_STEPS,
        guidance: float = DEFAULT_GUIDANCE,
    ) -> torch.Tensor:
        """DDIM (eta = 0) from x_T = noise (B, 1, H, W) to images (B, 1, H, W) in [-1, 1].

        labels None (or guidance 0): the unconditional model."""
        ts = self.schedule(steps)
        B, dev = noise.shape[0], noise.device
        y = torch.full((B,), self.null_label, dtype=torch.long, device=dev)
        if labels is not None:
            y = labels.to(dev)
        w = torch.full((B,), float(guidance), device=dev)
        x = noise
        for t, t_next in zip(ts, [*ts[1:], -1], strict=True):
            full = torch.full((B,), t, dtype=torch.long, device=dev)
            x = self.denoise(x, full, torch.full_like(full, t_next), y, w)
        return x


# -----------------------------------------------------------------------------
# serving adapter


class DiffusionImageGenerator(ImageGenerator):
    """Serves the (EMA) U-Net: noise is a full image of N(0, 1), x_T; DDIM turns it into pixels.

    generate(noise, labels, steps=, guidance=) takes the two sampling options; the defaults are
    DEFAULT_STEPS and DEFAULT_GUIDANCE. Guidance applies to class-conditional models only.
    """

    config_class = DiffusionConfig
    module_class = UNet
    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE

    @staticmethod
    def noise_of(model: torch.nn.Module) -> Noise:
        return Noise((1, *model.config.image_size))

    def generate(
        self,
        noise: torch.Tensor,
        labels: torch.Tensor | None = None,
        *,
        steps: int | None = None,
        guidance: float | None = None,
    ) -> torch.Tensor:
        """float32 (N, H, W) in [0, 1]: DDIM in `steps` steps at guidance scale `guidance`."""
        steps = self.steps if steps is None else int(steps)
        guidance = self.guidance if guidance is None else float(guidance)
        if not 1 <= steps <= min(MAX_STEPS, self.model.config.timesteps):
            raise ValueError(f"steps must lie in 1..{self.model.config.timesteps}, got {steps}")
        if not 0 <= guidance <= 20 or math.isnan(guidance):
            raise ValueError(f"guidance must lie in 0..20, got {guidance}")
        sampler = copy.copy(self)  # shares the model; only the options differ
        sampler.steps, sampler.guidance = steps, guidance
        return ImageGenerator.generate(sampler, noise, labels)

    def decode(self, noise: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        x = self.model.sample(noise, labels, self.steps, self.guidance)  # (N, 1, H, W)
        return ((x + 1) / 2).squeeze(1)
