"""A DCGAN for small grayscale images, optionally class-conditional.

The generator lifts z to a (2C, H/4, W/4) map with a linear layer, then doubles the resolution
twice with stride-2 transposed convolutions (BatchNorm + ReLU between, tanh at the end, so pixels
live in [-1, 1] during training). The discriminator mirrors it with stride-2 convolutions and
LeakyReLU. For num_classes > 0:
- the generator concatenates a label embedding to z;
- the discriminator adds a projection term <embed(y), features> to its real/fake logit and has
  an auxiliary classification head; training asks fakes to be classified as the requested
  class, which makes the label control the digit within a few epochs even on 8,000 images.

With spectral_norm=True the discriminator swaps BatchNorm for spectral normalisation of every
weight layer: each layer is then 1-Lipschitz, so D cannot sharpen its logits without bound and G
keeps a useful gradient; no BatchNorm also means D judges each image on its own rather than by its
batch's statistics. It pairs with the hinge loss (models/training/image.py). Only D changes, so
the flag does not alter the served generator. Measured on MNIST (issue 20), this shallow
3-layer D under spectral norm stayed too weak a critic (logits near 0; Fréchet distance 685 at
epoch 18 against 524 with BatchNorm), so the committed mnist-gan keeps BatchNorm in D and takes
the hinge loss alone.

Only the generator is needed to serve, so artifacts store only the generator.

References:
- Radford, Metz & Chintala, "Unsupervised Representation Learning with Deep Convolutional
  Generative Adversarial Networks" (ICLR 2016); pytorch/examples dcgan/main.py.
- Mirza & Osindero, "Conditional Generative Adversarial Nets" (2014): label concatenation.
- Miyato & Koyama, "cGANs with Projection Discriminator" (ICLR 2018).
- Odena, Olah & Shlens, "Conditional Image Synthesis with Auxiliary Classifier GANs" (ICML 2017).
- Miyato, Kataoka, Koyama & Yoshida, "Spectral Normalization for Generative Adversarial
  Networks" (ICLR 2018).
"""

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn.utils.parametrizations import spectral_norm

from models.image.generator import ImageGenerator


@dataclass
class GANConfig:
    image_size: tuple[int, int] = (28, 28)  # (H, W); two stride-2 stages, so divisible by 4
    latent_dim: int = 64  # size of z
    channels: int = 32  # base width C: the generator runs 2C at H/4, C at H/2 (D the reverse)
    num_classes: int = 0  # 0 = unconditional, > 0 = labels 0..num_classes-1 pick the class
    label_dim: int = 16  # width of the generator's label embedding (unused when unconditional)
    d_hidden: int = 256  # discriminator features before its heads (projection, classifier)
    spectral_norm: bool = False  # D: spectral norm on every weight layer instead of BatchNorm

    def __post_init__(self) -> None:
        self.image_size = tuple(self.image_size)  # JSON gives lists
        if self.image_size[0] % 4 or self.image_size[1] % 4:
            raise ValueError(f"image_size {self.image_size} must be divisible by 4")


def init_weights(module: nn.Module) -> None:
    """DCGAN initialisation: conv weights N(0, 0.02), BatchNorm scales N(1, 0.02)."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Generator(nn.Module):
    def __init__(self, config: GANConfig):
        super().__init__()
        self.config = config
        c, (h, w) = config.channels, config.image_size
        self.grid = (2 * c, h // 4, w // 4)
        cond = config.label_dim if config.num_classes else 0
        self.label_emb = nn.Embedding(config.num_classes, config.label_dim) if cond else None
        self.fc = nn.Sequential(
            nn.Linear(config.latent_dim + cond, 2 * c * (h // 4) * (w // 4), bias=False),
            nn.BatchNorm1d(2 * c * (h // 4) * (w // 4)),
            nn.ReLU(),
        )
        self.net = nn.Sequential(
            nn.ConvTranspose2d(2 * c, c, 4, stride=2, padding=1, bias=False),  # (B, C, H/2, W/2)
            nn.BatchNorm2d(c),
            nn.ReLU(),
            nn.ConvTranspose2d(c, 1, 4, stride=2, padding=1),  # (B, 1, H, W)
            nn.Tanh(),
        )
        self.apply(init_weights)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, latent_dim) [+ labels (B,)] -> images (B, 1, H, W) in [-1, 1]."""
        if self.label_emb is not None:
            if labels is None:
                raise ValueError("this generator is class-conditional; labels are required")
            z = torch.cat([z, self.label_emb(labels)], dim=1)  # (B, latent_dim + label_dim)
        h = self.fc(z).view(-1, *self.grid)  # (B, 2C, H/4, W/4)
        return self.net(h)


class Discriminator(nn.Module):
    def __init__(self, config: GANConfig):
        super().__init__()
        self.config = config
        c, (h, w) = config.channels, config.image_size
        sn = config.spectral_norm
        self.net = nn.Sequential(
            nn.Conv2d(1, c, 4, stride=2, padding=1),  # (B, C, H/2, W/2); no BN on the input
            nn.LeakyReLU(0.2),
            nn.Conv2d(c, 2 * c, 4, stride=2, padding=1, bias=sn),  # (B, 2C, H/4, W/4)
            nn.Identity() if sn else nn.BatchNorm2d(2 * c),
            nn.LeakyReLU(0.2),
            nn.Flatten(),  # (B, 2C * H/4 * W/4)
            nn.Linear(2 * c * (h // 4) * (w // 4), config.d_hidden),
            nn.LeakyReLU(0.2),  # (B, F), F = d_hidden
        )
        self.adv = nn.Linear(config.d_hidden, 1)
        k = config.num_classes
        self.proj = nn.Embedding(k, config.d_hidden) if k else None  # projection conditioning
        self.classify = nn.Linear(config.d_hidden, k) if k else None  # auxiliary classifier
        self.apply(init_weights)
        if self.proj is not None:
            nn.init.zeros_(self.proj.weight)  # start unconditional; large dot products saturate
        if sn:  # after init: the normalisation divides whatever scale init chose
            for m in self.modules():
                if isinstance(m, nn.Conv2d | nn.Linear):
                    spectral_norm(m)

    def forward(
        self, x: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(real/fake logit (B,), class logits (B, num_classes) or None) for x in [-1, 1]."""
        h = self.net(x)  # (B, F)
        logit = self.adv(h).squeeze(1)  # (B,)
        if self.proj is None:
            return logit, None
        if labels is None:
            raise ValueError("this discriminator is class-conditional; labels are required")
        logit = logit + (self.proj(labels) * h).sum(1)  # + <embed(y), h>
        return logit, self.classify(h)


# -----------------------------------------------------------------------------
# serving adapter


class GANImageGenerator(ImageGenerator):
    """Serves the generator in eval mode (BatchNorm uses its running statistics)."""

    config_class = GANConfig
    module_class = Generator

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return ((self.model(z, labels) + 1) / 2).squeeze(1)  # [-1, 1] -> [0, 1], (N, H, W)
