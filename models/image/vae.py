"""A convolutional variational autoencoder for small grayscale images, optionally class-conditional.

The encoder maps an image to a diagonal Gaussian q(z|x) over a small latent space; the decoder
maps z back to per-pixel Bernoulli logits. Training maximises the evidence lower bound (ELBO):
log p(x) >= E_q[log p(x|z)] - KL(q(z|x) || N(0, I)). With num_classes > 0 a learned label
embedding is concatenated into both the encoder and the decoder (a conditional VAE), so the
latent only has to carry style and the label alone picks the digit.

References:
- Kingma & Welling, "Auto-Encoding Variational Bayes" (ICLR 2014).
- Sohn, Lee & Yan, "Learning Structured Output Representation using Deep Conditional Generative
  Models" (NeurIPS 2015) for the conditional variant.
- pytorch/examples vae/main.py for the layout.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from models.image.generator import ImageGenerator


@dataclass
class VAEConfig:
    image_size: tuple[int, int] = (28, 28)  # (H, W); each conv stage halves both
    latent_dim: int = 16  # size of z; 16 is plenty for digits, the KL prunes unused units
    channels: tuple[int, ...] = (32, 64)  # conv widths, one stride-2 stage each
    hidden: int = 256  # width of the fully connected layer on both sides of z
    num_classes: int = 0  # 0 = unconditional, > 0 = labels 0..num_classes-1 condition both sides
    label_dim: int = 16  # width of the label embedding (unused when unconditional)

    def __post_init__(self) -> None:
        # JSON turns tuples into lists; normalise so configs compare and rebuild identically
        self.image_size = tuple(self.image_size)
        self.channels = tuple(self.channels)
        scale = 2 ** len(self.channels)
        if self.image_size[0] % scale or self.image_size[1] % scale:
            raise ValueError(f"image_size {self.image_size} must be divisible by {scale}")


class VAE(nn.Module):
    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        c = config.channels
        scale = 2 ** len(c)
        self.grid = (c[-1], config.image_size[0] // scale, config.image_size[1] // scale)
        flat = c[-1] * self.grid[1] * self.grid[2]
        cond = config.label_dim if config.num_classes else 0
        self.label_emb = nn.Embedding(config.num_classes, config.label_dim) if cond else None

        # encoder: (B, 1, H, W) -> (B, C, H/s, W/s) -> (B, hidden) -> mu, logvar
        enc: list[nn.Module] = []
        for c_in, c_out in zip((1, *c[:-1]), c, strict=True):
            enc += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.ReLU()]
        self.enc_conv = nn.Sequential(*enc)
        self.enc_fc = nn.Linear(flat + cond, config.hidden)
        self.fc_mu = nn.Linear(config.hidden, config.latent_dim)
        self.fc_logvar = nn.Linear(config.hidden, config.latent_dim)

        # decoder: z -> (B, hidden) -> (B, C, H/s, W/s) -> (B, 1, H, W) logits
        self.dec_fc = nn.Sequential(
            nn.Linear(config.latent_dim + cond, config.hidden),
            nn.ReLU(),
            nn.Linear(config.hidden, flat),
            nn.ReLU(),
        )
        dec: list[nn.Module] = []
        for c_in, c_out in zip(c[::-1], (*c[::-1][1:], 1), strict=True):
            dec += [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1), nn.ReLU()]
        self.dec_conv = nn.Sequential(*dec[:-1])  # no ReLU on the logits

    def _with_label(self, h: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if self.label_emb is None:
            return h
        if labels is None:
            raise ValueError("this VAE is class-conditional; labels are required")
        return torch.cat([h, self.label_emb(labels)], dim=1)  # (B, F + label_dim)

    def encode(
        self, x: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Parameters of q(z|x, y): mean and log-variance, each (B, latent_dim)."""
        h = self.enc_conv(x).flatten(1)  # (B, C * h * w)
        h = F.relu(self.enc_fc(self._with_label(h, labels)))  # (B, hidden)
        return self.fc_mu(h), self.fc_logvar(h)

    def reparameterize(
        self, mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """z = mu + sigma * eps: a sample whose gradient flows into mu and logvar."""
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + torch.exp(0.5 * logvar) * eps  # (B, latent_dim)

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Bernoulli logits (B, 1, H, W) of p(x|z, y); sigmoid gives the mean image."""
        h = self.dec_fc(self._with_label(z, labels))  # (B, C * h * w)
        return self.dec_conv(h.view(-1, *self.grid))  # (B, 1, H, W)

    def forward(
        self, x: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(recon_logits (B, 1, H, W), mu (B, latent_dim), logvar (B, latent_dim))."""
        mu, logvar = self.encode(x, labels)
        z = self.reparameterize(mu, logvar)
        return self.decode(z, labels), mu, logvar

    @staticmethod
    def loss(
        x: torch.Tensor, recon_logits: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(negative ELBO, reconstruction NLL, KL), each in nats per image, batch means.

        Pixels in [0, 1] are scored as Bernoulli targets (binary cross-entropy), the usual
        convention for MNIST VAEs; KL is closed-form between N(mu, sigma^2) and N(0, I).
        """
        nll = F.binary_cross_entropy_with_logits(recon_logits, x, reduction="none")
        nll = nll.flatten(1).sum(1)  # (B,)
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)  # (B,)
        return (nll + kl).mean(), nll.mean(), kl.mean()

    @torch.no_grad()
    def negative_elbo(
        self,
        x: torch.Tensor,
        labels: torch.Tensor | None = None,
        samples: int = 1,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Per-image negative ELBO (B,) in nats, averaged over `samples` draws of z."""
        mu, logvar = self.encode(x, labels)
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)  # (B,)
        nll = torch.zeros_like(kl)
        for _ in range(samples):
            logits = self.decode(self.reparameterize(mu, logvar, generator), labels)
            bce = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
            nll += bce.flatten(1).sum(1) / samples
        return nll + kl

    @torch.no_grad()
    def score(
        self, x: torch.Tensor, labels: torch.Tensor | None, eps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mu, logvar, negative ELBO (B,) in nats) with the given draws eps (S, latent_dim).

        Every image uses the same S draws, so an image's score does not depend on its batch.
        """
        mu, logvar = self.encode(x, labels)  # (B, D) each
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)  # (B,)
        s = len(eps)
        z = mu.unsqueeze(1) + torch.exp(0.5 * logvar).unsqueeze(1) * eps  # (B, S, D)
        ys = None if labels is None else labels.repeat_interleave(s)  # (B * S,)
        logits = self.decode(z.flatten(0, 1), ys)  # (B * S, 1, H, W)
        bce = F.binary_cross_entropy_with_logits(
            logits.float(), x.repeat_interleave(s, 0).float(), reduction="none"
        )
        return mu, logvar, bce.flatten(1).sum(1).view(-1, s).mean(1) + kl

    @torch.no_grad()
    def score_unlabelled(
        self, x: torch.Tensor, eps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """A conditional VAE given no labels: (best class (B,), its mu, its logvar, negative
        ELBO of the marginal p(x) = mean_y p(x|y)).

        Each class's ELBO bounds log p(x|y), so -log mean_y exp(-nelbo_y) bounds -log p(x):
        an image that fits no class well scores high, one that fits any class scores low.
        """
        k, b = self.config.num_classes, len(x)
        ys = torch.arange(k, device=x.device).repeat_interleave(b)  # (K * B,), class-major
        mu, logvar, nelbo = self.score(x.repeat(k, 1, 1, 1), ys, eps)
        per_class = nelbo.view(k, b)
        best = per_class.argmin(0)  # (B,)
        pick = best * b + torch.arange(b, device=x.device)  # rows of the best class
        marginal = math.log(k) - torch.logsumexp(-per_class, 0)  # (B,)
        return best, mu[pick], logvar[pick], marginal


# -----------------------------------------------------------------------------
# serving adapter


@torch.no_grad()
def held_out_negative_elbo(
    model: VAE, x: np.ndarray, y: np.ndarray | None, device: torch.device, samples: int = 10
) -> float:
    """Mean negative ELBO in nats per image (10 draws of z per image, fixed seed)."""
    gen = torch.Generator(device=device).manual_seed(0)
    xt = torch.from_numpy(x).unsqueeze(1).to(device)  # (N, 1, H, W)
    yt = torch.from_numpy(y).to(device) if model.config.num_classes else None
    total = 0.0
    for i in range(0, len(xt), 500):
        labels = None if yt is None else yt[i : i + 500]
        total += model.negative_elbo(xt[i : i + 500], labels, samples, gen).sum().item()
    return total / len(xt)


ELBO_SAMPLES = 8  # draws of z per image for a served negative ELBO (an anomaly score)


class VAEImageGenerator(ImageGenerator):
    """Serves the decoder: pixels are the Bernoulli means sigmoid(decode(z, y))."""

    config_class = VAEConfig
    module_class = VAE

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return torch.sigmoid(self.model.decode(z, labels)).squeeze(1)  # (N, H, W)

    def encode(
        self, images: torch.Tensor, labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(mean (N, D), log-variance (N, D), labels (N,) or None, negative ELBO (N,)), on the
        CPU, of images (N, H, W) in [0, 1]. A conditional VAE takes labels (N,), -1 where the
        best-fitting class is to be found (and returned); an unconditional one takes None."""
        if tuple(images.shape[1:]) != self.image_size:
            raise ValueError(f"images must be (N, {self.image_size}), got {tuple(images.shape)}")
        if (labels is None) != (self.num_classes == 0):
            raise ValueError("labels are for conditional VAEs, and required there")
        eps = torch.randn(
            (ELBO_SAMPLES, self.noise.shape[0]), generator=torch.Generator().manual_seed(0)
        ).to(self.device)  # the same draws for every image and every batch
        with torch.inference_mode():
            x = images.to(self.device, torch.float32).unsqueeze(1)  # (N, 1, H, W)
            if labels is None:
                mu, logvar, nelbo = self.model.score(x, None, eps)
                return mu.float().cpu(), logvar.float().cpu(), None, nelbo.float().cpu()
            labels = labels.to(self.device, torch.long).clone()
            mu = torch.empty(len(x), self.noise.shape[0], device=self.device)
            logvar, nelbo = torch.empty_like(mu), torch.empty(len(x), device=self.device)
            known = labels >= 0
            if known.any():
                parts = self.model.score(x[known], labels[known], eps)
                # float32 results, whatever precision autocast computed them in
                mu[known], logvar[known], nelbo[known] = (t.float() for t in parts)
            if (~known).any():
                best, *parts = self.model.score_unlabelled(x[~known], eps)
                labels[~known] = best
                mu[~known], logvar[~known], nelbo[~known] = (t.float() for t in parts)
            return mu.cpu(), logvar.cpu(), labels.cpu(), nelbo.cpu()


def latent_line(start: torch.Tensor, end: torch.Tensor, steps: int) -> torch.Tensor:
    """`steps` evenly spaced points (steps, D) from start (D,) to end (D,), both included
    exactly (t = 0 and t = 1 give the ends bit for bit)."""
    t = (torch.arange(steps, dtype=torch.float32) / (steps - 1)).unsqueeze(1)  # (steps, 1)
    return (1 - t) * start + t * end
