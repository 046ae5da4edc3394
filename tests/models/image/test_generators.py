"""Image generators: the IDX reader, model shapes, the ImageGenerator interface and artifacts."""

import gzip
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from models.artifacts import ArtifactError, artifact_digest, load_artifact, save_artifact
from models.data.idx import load_mnist, read_idx
from models.image.gan import Discriminator, GANConfig, GANImageGenerator, Generator
from models.image.vae import VAE, VAEConfig, VAEImageGenerator, latent_line

REPO = Path(__file__).resolve().parents[3]
DATA_DIR = Path(os.environ.get("GENSERVE_DATA_DIR", REPO.parent / "shared" / "data"))
PRETRAINED = REPO / "models" / "pretrained"
needs_mnist = pytest.mark.skipif(
    not (DATA_DIR / "mnist").is_dir(), reason=f"no MNIST data at {DATA_DIR}"
)


def idx_bytes(array: np.ndarray) -> bytes:
    """A uint8 IDX file: 0, 0, type 0x08, ndim, big-endian dims, then the values."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


# -----------------------------------------------------------------------------
# IDX reader


def test_idx_round_trip_gzip_and_plain(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    (tmp_path / "x.gz").write_bytes(gzip.compress(idx_bytes(images)))
    (tmp_path / "x").write_bytes(idx_bytes(images))
    for name in ("x.gz", "x"):
        back = read_idx(tmp_path / name)
        assert back.dtype == np.uint8 and back.shape == (5, 28, 28)
        np.testing.assert_array_equal(back, images)


def test_idx_reads_wider_types(tmp_path: Path) -> None:
    values = np.arange(6, dtype=np.int32).reshape(2, 3) - 3
    header = bytes([0, 0, 0x0C, 2]) + np.asarray([2, 3], dtype=">u4").tobytes()
    (tmp_path / "i4").write_bytes(header + values.astype(">i4").tobytes())  # big-endian
    back = read_idx(tmp_path / "i4")
    assert back.dtype == np.int32
    np.testing.assert_array_equal(back, values)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b[:-10], "truncated"),
        (lambda b: b + b"\0", "trailing"),
        (lambda b: b"\x01" + b[1:], "magic"),
        (lambda b: b[:2] + b"\x07" + b[3:], "type code"),
        (lambda b: b[:6], "header"),
    ],
)
def test_idx_bad_files_raise_value_error(tmp_path: Path, mutate, message: str) -> None:
    data = idx_bytes(np.zeros((3, 4, 4), dtype=np.uint8))
    (tmp_path / "bad").write_bytes(mutate(data))
    with pytest.raises(ValueError, match=message):
        read_idx(tmp_path / "bad")


def test_idx_truncated_gzip_raises_value_error(tmp_path: Path) -> None:
    data = gzip.compress(idx_bytes(np.ones((3, 4, 4), dtype=np.uint8)))
    (tmp_path / "bad.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="gzip"):
        read_idx(tmp_path / "bad.gz")


@needs_mnist
def test_load_mnist_split() -> None:
    x_train, y_train, x_held, y_held = load_mnist(DATA_DIR)
    assert x_train.shape == (8000, 28, 28) and x_held.shape == (2000, 28, 28)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert x_train.min() >= 0.0 and x_train.max() <= 1.0
    assert x_train.mean() < 0.2  # ink = 1 on a dark background
    assert set(np.unique(y_held)) == set(range(10))


# -----------------------------------------------------------------------------
# models


@pytest.mark.parametrize("num_classes", [0, 10])
def test_vae_shapes_and_loss(num_classes: int) -> None:
    torch.manual_seed(0)
    model = VAE(VAEConfig(latent_dim=8, num_classes=num_classes))
    x = torch.rand(4, 1, 28, 28)
    labels = torch.tensor([0, 1, 2, 9]) if num_classes else None
    recon, mu, logvar = model(x, labels)
    assert recon.shape == (4, 1, 28, 28) and mu.shape == logvar.shape == (4, 8)
    loss, nll, kl = model.loss(x, recon, mu, logvar)
    assert loss.item() == pytest.approx(nll.item() + kl.item(), rel=1e-5)
    assert model.negative_elbo(x, labels).shape == (4,)
    if num_classes:
        with pytest.raises(ValueError):
            model(x)


def test_vae_encoder_scores_find_classes_and_do_not_depend_on_the_batch() -> None:
    torch.manual_seed(0)
    served = VAEImageGenerator(VAE(VAEConfig(latent_dim=8, channels=(8, 16), num_classes=3)))
    x = torch.rand(5, 28, 28)
    known = torch.tensor([0, 1, 2, 1, 0])
    mean, logvar, labels, nelbo = served.encode(x, known)
    assert mean.shape == logvar.shape == (5, 8) and labels.tolist() == known.tolist()
    alone = served.encode(x[3:4], known[3:4])
    torch.testing.assert_close(alone[0][0], mean[3], atol=1e-5, rtol=0)
    torch.testing.assert_close(alone[3][0], nelbo[3], atol=1e-3, rtol=0)

    # no label: every class is tried; the best one is kept, and the score is the uniform
    # mixture's, between the best class's score and that plus log K
    per_class = torch.stack([served.encode(x, torch.full((5,), y))[3] for y in range(3)])
    found = served.encode(x, torch.tensor([-1, 2, -1, -1, 0]))
    unknown = [0, 2, 3]
    assert found[2][unknown].tolist() == per_class.argmin(0)[unknown].tolist()
    assert found[2][1] == 2 and found[3][1] == pytest.approx(per_class[2, 1].item(), abs=1e-3)
    assert found[2][4] == 0
    best = per_class.min(0).values
    for i in unknown:
        assert best[i] - 1e-3 <= found[3][i] <= best[i] + math.log(3) + 1e-3

    with torch.autocast("cpu", dtype=torch.bfloat16):  # as a GPU worker runs it: float32 out
        half = served.encode(x, torch.tensor([-1, 2, -1, -1, 0]))
    assert [t.dtype for t in half] == [torch.float32, torch.float32, torch.int64, torch.float32]
    torch.testing.assert_close(half[3], found[3], rtol=0.05, atol=0)

    ends = torch.randn(2, 8)
    line = latent_line(ends[0], ends[1], 5)
    assert line.shape == (5, 8) and torch.equal(line[0], ends[0]) and torch.equal(line[-1], ends[1])
    torch.testing.assert_close(line[2], (ends[0] + ends[1]) / 2)


@pytest.mark.parametrize("num_classes", [0, 10])
def test_gan_shapes(num_classes: int) -> None:
    torch.manual_seed(0)
    config = GANConfig(latent_dim=16, channels=8, num_classes=num_classes)
    g, d = Generator(config), Discriminator(config)
    labels = torch.tensor([3, 4, 5]) if num_classes else None
    fake = g(torch.randn(3, 16), labels)
    assert fake.shape == (3, 1, 28, 28)
    assert fake.min() >= -1 and fake.max() <= 1
    logit, class_logits = d(fake, labels)
    assert logit.shape == (3,)
    assert (class_logits is None) == (num_classes == 0)
    if num_classes:
        assert class_logits.shape == (3, num_classes)


def tiny_generators() -> list:
    torch.manual_seed(0)
    return [
        VAEImageGenerator(VAE(VAEConfig(latent_dim=8, channels=(8, 16), hidden=32))),
        VAEImageGenerator(VAE(VAEConfig(latent_dim=8, channels=(8, 16), num_classes=10))),
        GANImageGenerator(Generator(GANConfig(latent_dim=8, channels=8))),
        GANImageGenerator(Generator(GANConfig(latent_dim=8, channels=8, num_classes=10))),
    ]


@pytest.mark.parametrize("gen", tiny_generators(), ids=["vae", "cvae", "gan", "cgan"])
def test_generate_contract(gen) -> None:
    z = gen.noise.sample(6)
    labels = torch.arange(6) if gen.num_classes else None
    images = gen.generate(z, labels)
    assert images.shape == (6, 28, 28) and images.dtype == torch.float32
    assert images.device.type == "cpu" and not images.requires_grad
    assert images.min() >= 0.0 and images.max() <= 1.0
    with pytest.raises(ValueError):
        gen.generate(torch.randn(6, gen.noise.shape[0] + 1), labels)
    if gen.num_classes:
        with pytest.raises(ValueError):
            gen.generate(z, None)
        with pytest.raises(ValueError):
            gen.generate(z, torch.full((6,), 10))
    else:
        with pytest.raises(ValueError):
            gen.generate(z, torch.zeros(6, dtype=torch.long))


# -----------------------------------------------------------------------------
# artifacts


def image_config(kind: str, module: torch.nn.Module) -> dict:
    c = module.config
    return {
        "name": f"tiny-{kind}",
        "kind": kind,
        "task": "image-generation",
        "description": "test",
        "image_size": list(c.image_size),
        "num_classes": c.num_classes,
        "latent_dim": c.latent_dim,
        "metrics": {},
        "training": {},
    }


@pytest.mark.parametrize("kind", ["image-vae", "image-gan"])
def test_artifact_round_trip_and_digest(tmp_path: Path, kind: str) -> None:
    torch.manual_seed(0)
    if kind == "image-vae":
        module = VAE(VAEConfig(latent_dim=8, channels=(8, 16), num_classes=10))
        original = VAEImageGenerator(module)
    else:
        module = Generator(GANConfig(latent_dim=8, channels=8, num_classes=10))
        module.train()(torch.randn(16, 8), torch.arange(16) % 10)  # move BatchNorm statistics
        original = GANImageGenerator(module)
    digest, _ = save_artifact(tmp_path / "a", image_config(kind, module), module=module, card="x")
    assert json.loads((tmp_path / "a" / "config.json").read_text())["model_args"]
    loaded = load_artifact(tmp_path / "a", expected_sha256=digest)
    assert loaded.name == f"tiny-{kind}" and loaded.num_classes == 10
    z, labels = torch.randn(5, 8), torch.tensor([0, 3, 5, 7, 9])
    assert torch.equal(loaded.generate(z, labels), original.generate(z, labels))

    with pytest.raises(ArtifactError, match="sha256"):
        load_artifact(tmp_path / "a", expected_sha256="0" * 64)
    (tmp_path / "a" / "README.md").write_text("a new card")  # not part of the digest
    assert artifact_digest(tmp_path / "a")[0] == digest


def test_artifact_refuses_unknown_kind_and_mismatch(tmp_path: Path) -> None:
    module = Generator(GANConfig(latent_dim=8, channels=8))
    save_artifact(
        tmp_path / "k",
        {**image_config("image-gan", module), "kind": "image-x"},
        module=module,
        card="x",
    )
    with pytest.raises(ArtifactError, match="unknown"):
        load_artifact(tmp_path / "k")
    save_artifact(
        tmp_path / "m",
        {**image_config("image-gan", module), "latent_dim": 9},
        module=module,
        card="x",
    )
    with pytest.raises(ArtifactError, match="latent_dim"):
        load_artifact(tmp_path / "m")
    save_artifact(tmp_path / "v", image_config("image-vae", module), module=module, card="x")
    with pytest.raises(ArtifactError):  # GAN weights under a VAE kind
        load_artifact(tmp_path / "v")


@needs_mnist
@pytest.mark.parametrize("name", ["mnist-cvae", "mnist-cgan"])
def test_committed_conditional_generators_draw_the_asked_for_digit(name: str) -> None:
    """Loose check with a classifier independent of both training and the bench's evaluator."""
    if not (PRETRAINED / name / "config.json").is_file():
        pytest.skip(f"no committed {name}")
    from sklearn.linear_model import LogisticRegression

    _, _, x_held, y_held = load_mnist(DATA_DIR)
    clf = LogisticRegression(C=0.05, max_iter=300).fit(x_held.reshape(len(x_held), -1), y_held)
    gen = load_artifact(PRETRAINED / name)
    labels = torch.arange(10).repeat_interleave(10)
    z = gen.noise.sample(100, torch.Generator().manual_seed(1))
    images = gen.generate(z, labels).numpy().reshape(100, -1)
    accuracy = float((clf.predict(images) == labels.numpy()).mean())
    assert accuracy >= 0.70, f"{name}: {accuracy:.2f} of samples recognised as the asked-for class"


# -----------------------------------------------------------------------------
# training


def test_training_checkpoints_and_resumes(tmp_path: Path) -> None:
    from models.training.hooks import TrainHooks
    from models.training.image import GANTrainConfig, VAETrainConfig, train_gan, train_vae

    rng = np.random.default_rng(0)
    images = rng.random((32, 28, 28), dtype=np.float32)
    labels = rng.integers(0, 10, 32)
    cpu = torch.device("cpu")
    vae = VAE(VAEConfig(latent_dim=4, channels=(4, 8), hidden=16, num_classes=10))
    first = train_vae(
        vae,
        images,
        labels,
        VAETrainConfig(epochs=1, batch_size=16),
        cpu,
        TrainHooks(work_dir=tmp_path / "v"),
    )
    assert first["epoch"] == 1 and (tmp_path / "v" / "checkpoint.json").is_file()
    resumed = VAE(vae.config)
    again = train_vae(
        resumed,
        images,
        labels,
        VAETrainConfig(epochs=2, batch_size=16),
        cpu,
        TrainHooks(work_dir=tmp_path / "v"),
    )
    assert again["epoch"] == 2 and again["steps"] == 4

    cfg = GANTrainConfig(epochs=1, batch_size=16, bn_refresh_batches=1)
    plain = GANConfig(latent_dim=4, channels=4, num_classes=0, d_hidden=8)
    ema_cfg = GANTrainConfig(epochs=1, batch_size=16, bn_refresh_batches=1, ema=0.9)
    result = train_gan(Generator(plain), Discriminator(plain), images, None, ema_cfg, cpu)
    assert result["epoch"] == 1 and result["steps"] == 2
    config = GANConfig(latent_dim=4, channels=4, num_classes=10, d_hidden=8)
    g, d = Generator(config), Discriminator(config)
    result = train_gan(g, d, images, labels, cfg, cpu, TrainHooks(work_dir=tmp_path / "g"))
    assert result["epoch"] == 1 and result["steps"] == 2 and not g.training
    g2, d2 = Generator(config), Discriminator(config)
    assert (
        train_gan(g2, d2, images, labels, cfg, cpu, TrainHooks(work_dir=tmp_path / "g"))["epoch"]
        == 1
    )  # no-op
    for a, b in zip(d.state_dict().values(), d2.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_hinge_spectral_norm_gan_trains_round_trips_and_serves(tmp_path: Path) -> None:
    """The image-gan kind's hinge loss, spectral-norm D and TTUR train; the artifact (generator
    only) records the variant in model_args and serves exactly what was trained."""
    from models.data import ImageSet, split
    from models.kinds import KINDS
    from models.training.hooks import TrainHooks

    rng = np.random.default_rng(0)
    train, test = split(ImageSet(rng.random((64, 8, 8), dtype=np.float32), None, None), 0.25, 0)
    spec = KINDS["image-gan"]
    params = spec.params(
        epochs=2,
        latent_dim=4,
        channels=8,
        batch_size=16,
        loss="hinge",
        spectral_norm=True,
        lr_d=4e-4,
        ema=0.9,
    )
    rows: list[dict] = []
    hooks = TrainHooks(on_epoch=rows.append, work_dir=tmp_path / "work")
    result = spec.trainer()("image-gan", train, test, params, hooks, torch.device("cpu"))
    assert len(rows) == 2 and all(np.isfinite(r["loss_d"]) for r in rows)
    assert result.config["model_args"]["spectral_norm"] is True
    config = {**result.config, "name": "t-sn"}
    digest, _ = save_artifact(tmp_path / "a", config, module=result.module, card="x")
    gen = load_artifact(tmp_path / "a", expected_sha256=digest)
    z = gen.noise.sample(3, torch.Generator().manual_seed(0))
    served = gen.generate(z)
    assert served.shape == (3, 8, 8)
    with torch.no_grad():
        trained = ((result.module.eval()(z) + 1) / 2).squeeze(1)
    torch.testing.assert_close(served, trained)

    d = Discriminator(GANConfig(latent_dim=4, channels=8, spectral_norm=True))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in d.modules())
    assert torch.nn.utils.parametrize.is_parametrized(d.adv)
