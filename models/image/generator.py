"""The one interface every image generator offers the service.

A generator maps noise (and, for class-conditional models, class labels) to images. Each
generator describes its noise, `Noise(shape, distribution)`: a latent vector for a VAE or GAN,
a full image of Gaussian noise for a diffusion model. The service draws that noise itself from
a per-request seeded CPU generator and may scale it (truncation / temperature), so the same
request always gives the same pixels whatever the model family. Each family's adapter
(VAEImageGenerator in vae.py, GANImageGenerator in gan.py) only says how to turn noise into
pixels; the checks and the device round trip live here, once.
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

import torch

from models.artifacts import ArtifactError, load_module


@dataclass(frozen=True)
class Noise:
    """What a generator starts from, per image: a tensor of `shape` drawn from `distribution`."""

    shape: tuple[int, ...]
    distribution: Literal["normal", "uniform"] = "normal"  # N(0, 1) or U[0, 1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, *shape) float32 on the CPU, drawn from `generator` (seeded by the caller)."""
        size = (n, *self.shape)
        if self.distribution == "uniform":
            return torch.rand(size, generator=generator)
        return torch.randn(size, generator=generator)


class ImageGenerator(ABC):
    image_size: tuple[int, int]  # (H, W)
    num_classes: int  # 0 = unconditional, else labels 0..num_classes-1 are required
    noise: Noise
    device: torch.device = torch.device("cpu")
    name: str = ""
    config_class: type  # the family's config dataclass, rebuilt from config["model_args"]
    module_class: type  # the nn.Module that turns noise (and labels) into pixels

    def __init__(self, model: torch.nn.Module, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.image_size = tuple(model.config.image_size)
        self.num_classes = model.config.num_classes
        self.noise = self.noise_of(model)

    @staticmethod
    def noise_of(model: torch.nn.Module) -> Noise:
        """A latent vector of the model's latent_dim: the VAE's and the GAN's noise."""
        return Noise((model.config.latent_dim,))

    @classmethod
    def from_artifact(
        cls, config: dict, payload: dict[str, bytes], device: torch.device
    ) -> "ImageGenerator":
        generator = cls(load_module(cls.module_class, cls.config_class, config, payload), device)
        declared = (tuple(config.get("image_size") or ()), config.get("num_classes"))
        built = (tuple(generator.image_size), generator.num_classes)
        if declared != built:
            raise ArtifactError(
                f"config says (image_size, num_classes) = {declared}, model_args build {built}"
            )
        if "latent_dim" in config and (config["latent_dim"],) != generator.noise.shape:
            raise ArtifactError(
                f"config says latent_dim {config['latent_dim']}, model_args build noise "
                f"{generator.noise.shape}"
            )
        return generator

    def generate(self, noise: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """float32 (N, H, W) images in [0, 1] on the CPU from noise (N, *shape) and labels (N,)."""
        if tuple(noise.shape[1:]) != self.noise.shape:
            raise ValueError(f"noise must be (N, {self.noise.shape}), got {tuple(noise.shape)}")
        if self.num_classes == 0:
            if labels is not None:
                raise ValueError("this generator is unconditional; pass labels=None")
        else:
            if labels is None:
                raise ValueError(f"this generator needs labels in 0..{self.num_classes - 1}")
            if labels.shape != (noise.shape[0],):
                raise ValueError(f"labels must be ({noise.shape[0]},), got {tuple(labels.shape)}")
            if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise ValueError(f"labels must lie in 0..{self.num_classes - 1}")
            labels = labels.to(self.device, torch.long)
        with torch.inference_mode():
            images = self.decode(noise.to(self.device, torch.float32), labels)  # (N, H, W)
            return images.float().clamp(0.0, 1.0).cpu()

    @abstractmethod
    def decode(self, noise: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """(N, H, W) pixel intensities in [0, 1] on self.device; inputs already checked."""
