"""The one interface every image generator offers the service.

A generator maps latent vectors (and, for class-conditional models, class labels) to images. The
service draws z itself from a per-request seeded CPU generator and may scale it (truncation /
temperature), so the same request always gives the same pixels whatever the model family. Each
family's adapter (VAEImageGenerator in vae.py, GANImageGenerator in gan.py) only says how to turn
z into pixels; the checks and the device round trip live here, once.
"""

import importlib
import json
from abc import ABC, abstractmethod
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors

from models.checksum import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    ArtifactError,
    digest_payload,
    read_payload,
)


class ImageGenerator(ABC):
    image_size: tuple[int, int]  # (H, W)
    num_classes: int  # 0 = unconditional, else labels 0..num_classes-1 are required
    latent_dim: int
    device: torch.device = torch.device("cpu")
    name: str = ""
    config_class: type  # the family's config dataclass, rebuilt from config["model_args"]
    module_class: type  # the nn.Module that turns z (and labels) into pixels

    def __init__(self, model: torch.nn.Module, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.image_size = tuple(model.config.image_size)
        self.num_classes = model.config.num_classes
        self.latent_dim = model.config.latent_dim

    @classmethod
    def from_artifact(
        cls, config: dict, payload: dict[str, bytes], device: torch.device
    ) -> "ImageGenerator":
        model = cls.module_class(cls.config_class(**config["model_args"]))
        model.load_state_dict(load_safetensors(payload[WEIGHTS_FILE]), strict=True)
        return cls(model, device)

    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """float32 (N, H, W) images in [0, 1] on the CPU from z (N, latent_dim) and labels (N,)."""
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must be (N, {self.latent_dim}), got {tuple(z.shape)}")
        if self.num_classes == 0:
            if labels is not None:
                raise ValueError("this generator is unconditional; pass labels=None")
        else:
            if labels is None:
                raise ValueError(f"this generator needs labels in 0..{self.num_classes - 1}")
            if labels.shape != (z.shape[0],):
                raise ValueError(f"labels must be ({z.shape[0]},), got {tuple(labels.shape)}")
            if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise ValueError(f"labels must lie in 0..{self.num_classes - 1}")
            labels = labels.to(self.device, torch.long)
        with torch.inference_mode():
            images = self.decode_latents(z.to(self.device, torch.float32), labels)  # (N, H, W)
            return images.float().clamp(0.0, 1.0).cpu()

    @abstractmethod
    def decode_latents(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """(N, H, W) pixel intensities in [0, 1] on self.device; inputs already checked."""


def load_image_generator(
    path: Path, expected_sha256: str | None = None, device: str = "cpu"
) -> ImageGenerator:
    """Reads and verifies an artifact, then builds its family's ImageGenerator."""
    payload = read_payload(Path(path))
    if expected_sha256 is not None:
        actual, _ = digest_payload(payload)
        if actual != expected_sha256.lower():
            raise ArtifactError(f"{path}: sha256 {actual} does not match {expected_sha256}")
    try:
        config = json.loads(payload[CONFIG_FILE])
    except ValueError as e:
        raise ArtifactError(f"{path}/{CONFIG_FILE} is not valid JSON: {e}") from e
    if not isinstance(config, dict) or config.get("task") != "image-generation":
        raise ArtifactError(f"{path}: not an image-generation artifact")
    kind = config.get("kind")
    if kind not in FAMILIES:
        raise ArtifactError(f"{path}: unknown image generator kind {kind!r}")
    module, name = FAMILIES[kind]
    family = getattr(importlib.import_module(module), name)
    try:
        generator = family.from_artifact(config, payload, torch.device(device))
    except Exception as e:  # bad model_args, unparsable or ill-fitting weights
        raise ArtifactError(f"{path}: cannot build {kind} from its artifact: {e}") from e
    declared = (
        tuple(config.get("image_size") or ()),
        config.get("num_classes"),
        config.get("latent_dim"),
    )
    built = (tuple(generator.image_size), generator.num_classes, generator.latent_dim)
    if declared != built:
        raise ArtifactError(
            f"{path}: config says (image_size, num_classes, latent_dim) = {declared}, "
            f"model_args build {built}"
        )
    generator.name = config.get("name", "")
    return generator


# kind -> (module, ImageGenerator class); imported on use, so a family loads only its own code
FAMILIES = {
    "image-vae": ("models.vae", "VAEImageGenerator"),
    "image-gan": ("models.gan", "GANImageGenerator"),
}
