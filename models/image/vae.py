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


class VAEImageGenerator(ImageGenerator):
    """Serves the decoder: pixels are the Bernoulli means sigmoid(decode(z, y))."""

    config_class = VAEConfig
    module_class = VAE

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return torch.sigmoid(self.model.decode(z, labels)).squeeze(1)  # (N, H, W)
