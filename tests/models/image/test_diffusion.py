"""The diffusion family (models/image/diffusion.py) on a tiny U-Net trained for a few steps on
real MNIST digits: DDIM determinism, batch independence, guidance 0 = the unconditional model,
the option bounds, and a resumed training run that equals an uninterrupted one. The sampler's
arithmetic (schedule indexing, v -> x0 -> eps, pixel range, the null label) is checked against
the exact denoiser of a data set of a few real digits, which a perfect training would reach."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.artifacts import load_artifact, save_artifact
from models.data.idx import load_mnist
from models.data.uploads import ImageSet
from models.image.diffusion import DiffusionConfig, DiffusionImageGenerator, UNet
from models.kinds import KINDS, DiffusionParams
from models.training.diffusion import DiffusionTrainConfig, train_diffusion
from models.training.hooks import TrainHooks
from models.training.result import card
from tests.conftest import DATA_DIR

TINY = DiffusionConfig(channels=(8, 16, 16), num_classes=10, dropout=0.0)


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    x, y, _, _ = load_mnist(DATA_DIR)
    return x[:64], y[:64]


@pytest.fixture(scope="module")
def generator(digits: tuple[np.ndarray, np.ndarray]) -> DiffusionImageGenerator:
    torch.manual_seed(0)
    model = UNet(TINY)
    cfg = DiffusionTrainConfig(epochs=2, batch_size=16, warmup_steps=1, ema=0.9)
    train_diffusion(model, *digits, cfg, torch.device("cpu"))
    return DiffusionImageGenerator(model)


def noise(gen: DiffusionImageGenerator, n: int, seed: int = 0) -> torch.Tensor:
    return gen.noise.sample(n, torch.Generator().manual_seed(seed))


def test_noise_is_a_full_gaussian_image(generator: DiffusionImageGenerator) -> None:
    assert generator.noise.shape == (1, 28, 28) and generator.noise.distribution == "normal"
    z, y = noise(generator, 3), torch.tensor([1, 2, 3])
    images = generator.generate(z, y, steps=4)
    assert images.shape == (3, 28, 28) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1
    assert images.std() > 0.01, "a few steps of training already give non-constant images"


def test_ddim_is_deterministic_and_batch_independent(generator: DiffusionImageGenerator) -> None:
    z, y = noise(generator, 5), torch.tensor([0, 4, 4, 9, 2])
    batched = generator.generate(z, y, steps=6)
    assert torch.equal(batched, generator.generate(z, y, steps=6))
    for i in range(5):
        alone = generator.generate(z[i : i + 1], y[i : i + 1], steps=6)
        assert torch.allclose(alone[0], batched[i], atol=1e-5)
    assert not torch.allclose(batched, generator.generate(z, y, steps=3), atol=1e-3)


def test_guidance_zero_is_the_unconditional_model(generator: DiffusionImageGenerator) -> None:
    z = noise(generator, 4, seed=1)
    a = generator.generate(z, torch.tensor([1, 2, 3, 4]), steps=5, guidance=0)
    b = generator.generate(z, torch.tensor([7, 7, 7, 7]), steps=5, guidance=0)
    unconditional = ((generator.model.sample(z, None, steps=5) + 1) / 2).squeeze(1).clamp(0, 1)
    assert torch.equal(a, b) and torch.equal(a, unconditional)
    # guidance 1 is the plain conditional model; other scales mix the two
    y = torch.tensor([1, 2, 3, 4])
    conditional = ((generator.model.sample(z, y, steps=5, guidance=1) + 1) / 2).squeeze(1)
    assert torch.equal(generator.generate(z, y, steps=5, guidance=1), conditional.clamp(0, 1))
    guided = generator.generate(z, y, steps=5, guidance=3)
    assert not torch.allclose(guided, a, atol=1e-4)
    assert not torch.allclose(guided, generator.generate(z, y, steps=5, guidance=1), atol=1e-4)


class ExactDenoiser(UNet):
    """The v a perfectly trained UNet outputs when the data are `images` (K, 1, H, W) in [-1, 1],
    image k being the only one of class k: label k gives x0 = image k; the null label gives the
    posterior mean over the K images under x_t = sqrt(a) x0 + sqrt(1 - a) eps."""

    def __init__(self, images: torch.Tensor):
        super().__init__(DiffusionConfig(channels=(8, 8, 8), num_classes=len(images)))
        self.images = images

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        a = self.alpha_bar[t].double().view(-1, 1, 1, 1)
        x, images = x.double(), self.images.double()
        dist = ((x[:, None] - a[:, None].sqrt() * images[None]) ** 2).flatten(2).sum(-1)  # (B, K)
        weights = torch.softmax(-dist / (2 * (1 - a.view(-1, 1))), dim=1)
        mean = torch.einsum("bk,kchw->bchw", weights, images)
        known = labels < self.null_label
        x0 = torch.where(known.view(-1, 1, 1, 1), images[labels.clamp(max=len(images) - 1)], mean)
        eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
        return (a.sqrt() * eps - (1 - a).sqrt() * x0).float()


@pytest.fixture(scope="module")
def exact(digits: tuple[np.ndarray, np.ndarray]) -> tuple[DiffusionImageGenerator, torch.Tensor]:
    x, y = digits
    pixels = torch.tensor(np.stack([x[np.flatnonzero(y == k)[0]] for k in range(3)]))  # (3, H, W)
    return DiffusionImageGenerator(ExactDenoiser(pixels[:, None] * 2 - 1)), pixels


@pytest.mark.parametrize("steps", [1, 7, 50, 1000])
def test_the_exact_denoiser_samples_the_asked_for_digit(
    exact: tuple[DiffusionImageGenerator, torch.Tensor], steps: int
) -> None:
    """Guidance 1 (the conditional model) lands on the class's image in [0, 1], ink = 1."""
    gen, pixels = exact
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    images = gen.generate(noise(gen, 6, seed=steps), labels, steps=steps, guidance=1)
    assert torch.allclose(images, pixels[labels], atol=1e-4)


def test_the_exact_unconditional_model_samples_every_digit_of_its_data(
    exact: tuple[DiffusionImageGenerator, torch.Tensor],
) -> None:
    """Guidance 0 (the null label, whatever labels are asked): each sample is one of the data's
    images, and 30 draws of x_T reach all three."""
    gen, pixels = exact
    images = gen.generate(noise(gen, 30), torch.zeros(30, dtype=torch.long), steps=50, guidance=0)
    error = (images[:, None] - pixels[None]).abs().flatten(2).amax(-1)  # (30, 3)
    assert (error.amin(1) < 1e-3).all()
    assert set(error.argmin(1).tolist()) == {0, 1, 2}


def test_the_options_are_bounded(generator: DiffusionImageGenerator) -> None:
    z, y = noise(generator, 1), torch.tensor([3])
    for bad in ({"steps": 0}, {"steps": 1001}, {"guidance": -1}, {"guidance": 21}):
        with pytest.raises(ValueError):
            generator.generate(z, y, **bad)
    with pytest.raises(ValueError, match="needs labels"):
        generator.generate(z)
    assert generator.generate(z, y, steps=1).shape == (1, 28, 28)


def test_a_resumed_run_equals_an_uninterrupted_one(
    digits: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    cfg = DiffusionTrainConfig(epochs=2, batch_size=32, warmup_steps=1, ema=0.9)

    def fresh() -> UNet:
        torch.manual_seed(0)
        return UNet(TINY)

    whole = fresh()
    train_diffusion(whole, *digits, cfg, torch.device("cpu"))
    first = fresh()
    hooks = TrainHooks(work_dir=tmp_path)
    train_diffusion(
        first,
        *digits,
        DiffusionTrainConfig(**{**cfg.__dict__, "epochs": 1}),
        torch.device("cpu"),
        hooks,
    )
    resumed = fresh()
    result = train_diffusion(resumed, *digits, cfg, torch.device("cpu"), hooks)
    assert result["epoch"] == 2
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), k


def test_the_kind_trains_saves_and_serves(
    digits: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    x, y = digits
    train = ImageSet(x[:48], y[:48], [str(i) for i in range(10)])
    test = ImageSet(x[48:], y[48:], [str(i) for i in range(10)])
    params = DiffusionParams(channels=8, epochs=1, batch_size=16)
    kind = KINDS["image-diffusion"]
    result = kind.trainer()(
        "image-diffusion", train, test, params, TrainHooks(), torch.device("cpu")
    )
    assert np.isfinite(result.metrics["held_out_loss"]) and result.config["num_classes"] == 10
    config = {**result.config, "name": "t-diffusion"}
    sha256, _ = save_artifact(
        tmp_path, config, module=result.module, card=card("t", config, "d", {})
    )
    gen = load_artifact(tmp_path, expected_sha256=sha256)
    assert isinstance(gen, DiffusionImageGenerator)
    assert gen.generate(noise(gen, 2), torch.tensor([0, 1]), steps=2).shape == (2, 28, 28)
    with pytest.raises(ValueError, match="multiple of 8"):
        DiffusionParams(channels=12)


def test_the_committed_default_draws_the_asked_for_digit() -> None:
    """A loose check of models/pretrained/mnist-diffusion with a classifier independent of its
    training and of bench/image_quality.py's evaluator (the bench has the real figures)."""
    from sklearn.linear_model import LogisticRegression

    from app.settings import PRETRAINED_DIR

    path = PRETRAINED_DIR / "mnist-diffusion"
    if not (path / "config.json").is_file():
        pytest.skip("no committed mnist-diffusion")
    _, _, x_held, y_held = load_mnist(DATA_DIR)
    clf = LogisticRegression(C=0.05, max_iter=300).fit(x_held.reshape(len(x_held), -1), y_held)
    gen = load_artifact(path)
    labels = torch.arange(10).repeat_interleave(5)
    images = gen.generate(noise(gen, 50, seed=1), labels, steps=10).numpy().reshape(50, -1)
    accuracy = float((clf.predict(images) == labels.numpy()).mean())
    assert accuracy >= 0.8, f"{accuracy:.2f} of samples recognised as the asked-for class"
