"""Each kind's memory estimate (models/kinds.py `footprint`): its parameter count is the real
model's, for the torch kinds at two sizes, and its bytes grow with what should grow them.
(bench/job_memory.py checks the bytes against measured runs.)"""

from __future__ import annotations

from typing import Any

import pytest
import torch.nn as nn

from models.kinds import KINDS, DataShape

CORPUS = DataShape(records=1_000_000, vocab=65)
IMAGES = DataShape(records=10_000, image_size=(28, 28), classes=10)
TEXTS = DataShape(records=3_000, classes=3, mean_chars=64.0)


def count(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters() if p.requires_grad)


def gpt(p: Any, data: DataShape) -> int:
    from models.text.gpt import GPT, GPTConfig

    config = GPTConfig(data.vocab, p.block_size, p.n_layer, p.n_head, p.n_embd, p.dropout)
    return count(GPT(config))


def rnn(cell: str):  # type: ignore[no-untyped-def]
    def build(p: Any, data: DataShape) -> int:
        from models.text.rnn import RNNConfig, RNNModel

        config = RNNConfig(data.vocab, cell, p.n_embd, p.hidden, p.n_layer, p.dropout)
        return count(RNNModel(config))

    return build


def vae(p: Any, data: DataShape) -> int:
    from models.image.vae import VAE, VAEConfig

    config = VAEConfig(data.image_size, p.latent_dim, hidden=p.hidden, num_classes=data.classes)
    return count(VAE(config))


def gan(p: Any, data: DataShape) -> int:
    from models.image.gan import Discriminator, GANConfig, Generator

    config = GANConfig(data.image_size, p.latent_dim, p.channels, data.classes)
    return count(Generator(config), Discriminator(config))


def cnn(p: Any, data: DataShape) -> int:
    from models.classify.cnn import ImageCNN, ImageCNNConfig

    config = ImageCNNConfig(data.image_size, num_classes=data.classes, hidden=p.hidden)
    return count(ImageCNN(config))


def diffusion(p: Any, data: DataShape) -> int:
    from models.image.diffusion import DiffusionConfig, UNet

    c = p.channels
    config = DiffusionConfig(
        data.image_size, (c, 2 * c, 4 * c), p.blocks, p.attention, p.dropout, data.classes
    )
    return count(UNet(config))


TORCH_KINDS = {
    "text-gpt": (gpt, CORPUS, [{}, {"n_layer": 6, "n_head": 6, "n_embd": 384, "block_size": 256}]),
    "text-lstm": (rnn("lstm"), CORPUS, [{}, {"hidden": 1024, "n_layer": 3, "n_embd": 128}]),
    "text-gru": (rnn("gru"), CORPUS, [{}, {"hidden": 1024, "n_layer": 3, "n_embd": 128}]),
    "image-vae": (vae, IMAGES, [{}, {"hidden": 2048, "latent_dim": 64}]),
    "image-gan": (gan, IMAGES, [{}, {"channels": 128, "latent_dim": 100}]),
    "classify-cnn": (cnn, IMAGES, [{}, {"hidden": 1024}]),
    "image-diffusion": (diffusion, IMAGES, [{}, {"channels": 64, "blocks": 2}]),
}


@pytest.mark.parametrize("kind", sorted(TORCH_KINDS))
@pytest.mark.parametrize("size", [0, 1], ids=["default", "large"])
def test_parameter_counts_are_the_models(kind: str, size: int) -> None:
    build, data, sizes = TORCH_KINDS[kind]
    params = KINDS[kind].params(**sizes[size])
    assert params.footprint(data, kind).params == build(params, data)


def test_unconditional_image_models_count_no_label_layers() -> None:
    unlabelled = DataShape(records=10_000, image_size=(28, 28), classes=0)
    for kind, build in (("image-vae", vae), ("image-gan", gan)):
        params = KINDS[kind].params()
        assert params.footprint(unlabelled, kind).params == build(params, unlabelled)
        off = KINDS[kind].params(conditional=False)
        assert off.footprint(IMAGES, kind).params == build(off, unlabelled)


def test_the_text_classifier_counts_its_gru_and_head() -> None:
    """Its vocabulary is only known after tokenising: fix it, and the rest is exact."""
    from models.classify.text_rnn import TextRNN, TextRNNConfig

    p = KINDS["classify-rnn"].params(num_layers=2, hidden=64, embed=32)
    estimate = p.footprint(TEXTS, "classify-rnn").params
    vocab = (estimate - count(TextRNN(TextRNNConfig(vocab_size=3, **_rnn(p, 3))))) // p.embed + 3
    assert count(TextRNN(TextRNNConfig(vocab_size=vocab, **_rnn(p, 3)))) == estimate
    assert 1_000 < vocab < 3_000 * 64 / 4 / 2  # some thousands of words, under half the words


def _rnn(p: Any, classes: int) -> dict[str, Any]:
    return {
        "level": p.level,
        "embed": p.embed,
        "hidden": p.hidden,
        "num_layers": p.num_layers,
        "bidirectional": p.bidirectional,
        "num_classes": classes,
    }


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_estimates_and_bigger_jobs_need_more(kind: str) -> None:
    spec = KINDS[kind]
    if not hasattr(spec.params, "footprint"):
        pytest.skip(f"{kind} has no memory estimate")
    data = {"text": CORPUS, "labelled-text": TEXTS, "images": IMAGES}[spec.data]
    small = spec.params().footprint(data, kind)
    assert small.params > 0 and small.bytes == sum(small.parts.values()) > 0
    bigger = DataShape(**{**data.__dict__, "records": data.records * 10})
    assert spec.params().footprint(bigger, kind).bytes > small.bytes
    if "batch_size" in spec.params.__dataclass_fields__:
        batch = spec.params(batch_size=1024).footprint(data, kind)
        assert batch.bytes >= small.bytes and batch.params == small.params
