"""Every model family the service can train, behind one call: `KINDS[kind].train(...)`.

A trainer takes a train and a test split (the types of models/datasets.py), the job's
parameters (a dataclass below, validated by the caller) and TrainHooks, and returns what
`save_artifact` needs. The parameter dataclasses are the single source of names, defaults
and bounds (annotated_types metadata): the API builds its request schemas and GET
/train/kinds from them, and library users call the trainers with them directly.

Nothing here knows about HTTP or databases.
"""

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
import torch
from annotated_types import Ge, Gt, Le

from models.datasets import ImageSet, LabelledTexts, TextCorpus
from models.training import TrainHooks

# -----------------------------------------------------------------------------
# parameters: one dataclass per family; `doc` metadata becomes the API's description


def doc(default: Any, text: str) -> Any:
    return field(default=default, metadata={"doc": text})


Seed = Annotated[int, Ge(0), Le(2**31 - 1)]
Epochs = Annotated[int, Ge(1), Le(10_000)]
BatchSize = Annotated[int, Ge(1), Le(4096)]
LearningRate = Annotated[float, Gt(0), Le(1.0)]
Seconds = Annotated[float, Ge(0), Le(7 * 86_400)]
TestFraction = Annotated[float, Ge(0.01), Le(0.5)]


@dataclass
class NGramParams:
    order: Annotated[int, Ge(2), Le(12)] = doc(7, "longest n-gram (context = order - 1 chars)")
    test_fraction: TestFraction = doc(0.1, "uploads: the last fraction of characters validates")


@dataclass
class LMParams:
    """The shared loop of models/train_lm.py; the family adds its architecture."""

    max_steps: Annotated[int, Ge(1), Le(10_000_000)] = doc(2000, "optimizer steps")
    max_seconds: Seconds = doc(0.0, "wall-clock budget in seconds, 0 for none")
    batch_size: BatchSize = doc(16, "sequences per step")
    block_size: Annotated[int, Ge(8), Le(4096)] = doc(128, "characters per sequence")
    lr: LearningRate = doc(1e-3, "peak learning rate (AdamW), cosine-decayed to lr/10")
    warmup_steps: Annotated[int, Ge(0), Le(1_000_000)] = doc(100, "linear warm-up steps")
    weight_decay: Annotated[float, Ge(0), Le(1)] = doc(0.1, "on weight matrices only")
    eval_every: Annotated[int, Ge(1), Le(10_000_000)] = doc(250, "steps between evaluations")
    eval_batches: Annotated[int, Ge(1), Le(1000)] = doc(10, "batches per evaluation")
    seed: Seed = doc(1337, "initialisation and batch sampling")
    test_fraction: TestFraction = doc(0.1, "uploads: the last fraction of characters validates")


@dataclass
class GPTParams(LMParams):
    n_layer: Annotated[int, Ge(1), Le(48)] = doc(4, "transformer blocks")
    n_head: Annotated[int, Ge(1), Le(64)] = doc(4, "attention heads; must divide n_embd")
    n_embd: Annotated[int, Ge(8), Le(4096)] = doc(128, "residual stream width")
    dropout: Annotated[float, Ge(0), Le(0.9)] = doc(0.0, "dropout while training")

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")


@dataclass
class RNNParams(LMParams):
    batch_size: BatchSize = doc(8, "sequences per step (small batches suit CPUs)")
    block_size: Annotated[int, Ge(8), Le(4096)] = doc(64, "characters per training sequence")
    lr: LearningRate = doc(3e-3, "peak learning rate (AdamW), cosine-decayed to lr/10")
    weight_decay: Annotated[float, Ge(0), Le(1)] = doc(0.01, "on weight matrices only")
    n_embd: Annotated[int, Ge(4), Le(4096)] = doc(64, "character embedding width")
    hidden: Annotated[int, Ge(4), Le(8192)] = doc(256, "recurrent state width per layer")
    n_layer: Annotated[int, Ge(1), Le(8)] = doc(2, "stacked recurrent layers")
    dropout: Annotated[float, Ge(0), Le(0.9)] = doc(0.0, "dropout while training")


@dataclass
class ImageGenParams:
    conditional: bool | None = doc(None, "condition on labels; default: when the data has them")
    latent_dim: Annotated[int, Ge(2), Le(1024)] = doc(16, "size of z")
    epochs: Epochs = doc(10, "passes over the training images")
    batch_size: BatchSize = doc(64, "images per step")
    lr: LearningRate = doc(1e-3, "Adam learning rate")
    max_seconds: Seconds = doc(0.0, "wall-clock budget in seconds, 0 for none")
    seed: Seed = doc(0, "initialisation, shuffling and noise")
    test_fraction: TestFraction = doc(0.2, "uploads: held-out fraction for the final metrics")


@dataclass
class VAEParams(ImageGenParams):
    hidden: Annotated[int, Ge(8), Le(8192)] = doc(256, "fully connected width around z")


@dataclass
class GANParams(ImageGenParams):
    latent_dim: Annotated[int, Ge(2), Le(1024)] = doc(64, "size of z")
    lr: LearningRate = doc(2e-4, "Adam learning rate for both networks (beta1 0.5)")
    channels: Annotated[int, Ge(4), Le(512)] = doc(32, "base width of both networks")
    ema: Annotated[float, Ge(0), Le(0.99999)] = doc(0.0, "> 0: serve an EMA of G's weights")


@dataclass
class TextPipelineParams:
    word_ngram_max: Annotated[int, Ge(1), Le(3)] = doc(2, "word n-grams 1..this")
    char_ngrams: bool = doc(True, "add char_wb 2-5-grams (catches misspellings and stems)")
    min_df: Annotated[int, Ge(1), Le(100)] = doc(2, "drop n-grams seen in fewer documents")
    seed: Seed = doc(0, "estimator randomness")
    test_fraction: TestFraction = doc(0.2, "uploads: stratified held-out fraction")


@dataclass
class NBParams(TextPipelineParams):
    alpha: Annotated[float, Gt(0), Le(100)] = doc(0.3, "additive smoothing")


@dataclass
class LogRegParams(TextPipelineParams):
    C: Annotated[float, Gt(0), Le(1e6)] = doc(10.0, "inverse regularisation strength")


@dataclass
class MLPParams(TextPipelineParams):
    hidden: Annotated[int, Ge(1), Le(4096)] = doc(64, "hidden units")
    alpha: Annotated[float, Ge(0), Le(10)] = doc(1e-3, "L2 penalty")
    max_iter: Annotated[int, Ge(1), Le(1000)] = doc(30, "epochs")


@dataclass
class TextRNNParams:
    level: Literal["char", "word"] = doc("word", "tokens: lower-cased words or characters")
    embed: Annotated[int, Ge(4), Le(1024)] = doc(128, "token embedding width")
    hidden: Annotated[int, Ge(4), Le(2048)] = doc(128, "GRU state width per direction")
    num_layers: Annotated[int, Ge(1), Le(4)] = doc(1, "stacked GRU layers")
    bidirectional: bool = doc(True, "read both directions")
    dropout: Annotated[float, Ge(0), Le(0.9)] = doc(0.3, "dropout while training")
    max_len: Annotated[int, Ge(4), Le(4096)] = doc(256, "tokens kept per input")
    epochs: Epochs = doc(12, "passes over the training texts")
    batch_size: BatchSize = doc(32, "texts per step")
    lr: LearningRate = doc(3e-3, "AdamW learning rate")
    weight_decay: Annotated[float, Ge(0), Le(1)] = doc(1e-2, "AdamW weight decay")
    seed: Seed = doc(0, "initialisation and shuffling")
    test_fraction: TestFraction = doc(0.2, "uploads: stratified held-out fraction")


@dataclass
class CNNParams:
    epochs: Epochs = doc(30, "passes over the training images")
    batch_size: BatchSize = doc(64, "images per step")
    lr: LearningRate = doc(3e-3, "AdamW learning rate, cosine-decayed")
    weight_decay: Annotated[float, Ge(0), Le(1)] = doc(1e-2, "AdamW weight decay")
    shift: Annotated[int, Ge(0), Le(4)] = doc(0, "random pixel shifts (augmentation)")
    hidden: Annotated[int, Ge(4), Le(4096)] = doc(128, "fully connected width")
    dropout: Annotated[float, Ge(0), Le(0.9)] = doc(0.25, "dropout while training")
    seed: Seed = doc(0, "initialisation, shuffling and augmentation")
    test_fraction: TestFraction = doc(0.2, "uploads: stratified held-out fraction")


# -----------------------------------------------------------------------------
# trainers


@dataclass
class TrainResult:
    """An artifact to write: config.json (without the name) and one payload."""

    config: dict[str, Any]
    module: torch.nn.Module | None = None
    estimator: Any = None

    @property
    def metrics(self) -> dict[str, Any]:
        return self.config.get("metrics", {})


def _check_stop(hooks: TrainHooks) -> None:
    if hooks.should_stop is not None:
        hooks.should_stop()


def _lm(
    kind: str,
    train: TextCorpus,
    test: TextCorpus,
    p: LMParams,
    hooks: TrainHooks,
    device: torch.device,
) -> TrainResult:
    from models.gpt import GPT, GPTConfig
    from models.rnn import RNNConfig, RNNModel
    from models.tokenizer import CharTokenizer
    from models.train_lm import TrainConfig, full_validation_loss
    from models.train_lm import train as train_loop

    tok = CharTokenizer.from_text(train.text + test.text)
    train_ids = torch.tensor(tok.encode(train.text), dtype=torch.long)
    val_ids = torch.tensor(tok.encode(test.text), dtype=torch.long)
    for split, ids in (("training", train_ids), ("validation", val_ids)):
        if len(ids) <= p.block_size + 1:
            raise ValueError(
                f"the {split} text has {len(ids)} characters; block_size {p.block_size} "
                "needs more: upload more text or lower block_size"
            )
    torch.manual_seed(p.seed)
    if isinstance(p, GPTParams):
        model: torch.nn.Module = GPT(
            GPTConfig(tok.vocab_size, p.block_size, p.n_layer, p.n_head, p.n_embd, p.dropout)
        )
    else:
        assert isinstance(p, RNNParams)
        cell = kind.removeprefix("text-")
        model = RNNModel(RNNConfig(tok.vocab_size, cell, p.n_embd, p.hidden, p.n_layer, p.dropout))
    cfg = TrainConfig(
        max_steps=p.max_steps,
        max_seconds=p.max_seconds,
        batch_size=p.batch_size,
        block_size=p.block_size,
        lr=p.lr,
        min_lr=p.lr / 10,
        warmup_steps=min(p.warmup_steps, p.max_steps // 2),
        weight_decay=p.weight_decay,
        eval_every=p.eval_every,
        eval_batches=p.eval_batches,
        checkpoint_every=p.eval_every,
        seed=p.seed,
    )
    result = train_loop(
        model,
        train_ids,
        val_ids,
        cfg,
        device,
        checkpoint_dir=hooks.work_dir,
        on_eval=(lambda _step, row: hooks.on_epoch(row)) if hooks.on_epoch else None,
        should_stop=hooks.should_stop or (lambda: False),
        on_step=hooks.on_step,
    )
    window = p.block_size if isinstance(p, GPTParams) else 256
    val_loss = full_validation_loss(model, val_ids, min(window, len(val_ids) - 1), device)
    return TrainResult(
        {
            "kind": kind,
            "task": "text-generation",
            "description": f"Character-level {kind} trained over HTTP.",
            "tokenizer": tok.to_config(),
            "model_args": asdict(model.config),  # type: ignore[arg-type]
            "metrics": {
                "val_loss": round(val_loss, 4),
                "val_chars": len(val_ids),
                "steps": result.get("step"),
                "samples_per_s": _rate(result.get("step"), p.batch_size, result.get("seconds")),
                "train_seconds": result.get("seconds"),
            },
        },
        module=model,
    )


def _rate(steps: int | None, batch: int, seconds: float | None) -> float | None:
    """Samples/s of the whole loop, evaluations and checkpoints included."""
    return round(steps * batch / seconds, 2) if steps and seconds else None


def _ngram(
    kind: str,
    train: TextCorpus,
    test: TextCorpus,
    p: NGramParams,
    hooks: TrainHooks,
    device: torch.device,
) -> TrainResult:
    from models.ngram import NGramConfig, NGramModel
    from models.tokenizer import CharTokenizer

    _check_stop(hooks)
    tok = CharTokenizer.from_text(train.text + test.text)
    train_ids = np.asarray(tok.encode(train.text), np.int64)
    val_ids = np.asarray(tok.encode(test.text), np.int64)
    t0 = time.perf_counter()
    model = NGramModel.fit(train_ids, NGramConfig(vocab_size=tok.vocab_size, order=p.order))
    seconds = time.perf_counter() - t0
    val_loss = model.cross_entropy(val_ids, tok.stoi.get("\n", 0))
    row = {"step": 1, "val_loss": round(val_loss, 4), "seconds": round(seconds, 2)}
    if hooks.on_step is not None:
        hooks.on_step(1, 1, torch.tensor(val_loss))
    if hooks.on_epoch is not None:
        hooks.on_epoch(row)
    return TrainResult(
        {
            "kind": kind,
            "task": "text-generation",
            "description": f"Character {p.order}-gram model (modified Kneser-Ney).",
            "tokenizer": tok.to_config(),
            "model_args": asdict(model.config),
            "metrics": {
                "val_loss": round(val_loss, 4),
                "val_chars": len(val_ids),
                "train_seconds": round(seconds, 2),
            },
        },
        module=model,
    )


def _image_labels(train: ImageSet, conditional: bool | None) -> tuple[np.ndarray | None, int]:
    labelled = train.labels is not None
    if conditional and not labelled:
        raise ValueError("conditional=true needs a labelled image dataset")
    if conditional is False or not labelled:
        return None, 0
    return train.labels, len(train.label_names or [])


def _image_gen(
    kind: str,
    train: ImageSet,
    test: ImageSet,
    p: ImageGenParams,
    hooks: TrainHooks,
    device: torch.device,
) -> TrainResult:
    from models.gan import Discriminator, GANConfig, Generator
    from models.train_image import GANTrainConfig, VAETrainConfig, train_gan, train_vae
    from models.vae import VAE, VAEConfig

    labels, num_classes = _image_labels(train, p.conditional)
    image_size = tuple(train.images.shape[1:])
    torch.manual_seed(p.seed)
    common = {
        "on_epoch": hooks.on_epoch,
        "on_step": hooks.on_step,
        "should_stop": hooks.should_stop,
    }
    metrics: dict[str, Any] = {}
    if isinstance(p, VAEParams):
        module: torch.nn.Module = VAE(
            VAEConfig(image_size, p.latent_dim, hidden=p.hidden, num_classes=num_classes)
        )
        cfg = VAETrainConfig(p.epochs, p.batch_size, p.lr, p.max_seconds, p.seed)
        result = train_vae(module, train.images, labels, cfg, device, hooks.work_dir, **common)
        module.eval()
        x = torch.from_numpy(test.images[:2000]).unsqueeze(1).to(device)  # (N, 1, H, W)
        y = None
        if num_classes and test.labels is not None:
            y = torch.from_numpy(test.labels[:2000]).to(device)
        gen = torch.Generator(device=device).manual_seed(0)
        with torch.no_grad():
            metrics["held_out_neg_elbo"] = round(
                module.negative_elbo(x, y, 10, gen).mean().item(), 2
            )
    else:
        assert isinstance(p, GANParams)
        gan = GANConfig(image_size, p.latent_dim, p.channels, num_classes)
        module = Generator(gan)
        cfg = GANTrainConfig(
            p.epochs, p.batch_size, p.lr, ema=p.ema, max_seconds=p.max_seconds, seed=p.seed
        )
        result = train_gan(
            module, Discriminator(gan), train.images, labels, cfg, device, hooks.work_dir, **common
        )
    keys = ("loss", "nll", "kl", "loss_d", "loss_g", "d_real", "d_fake", "samples_per_s")
    metrics.update({k: result[k] for k in keys if k in result})
    metrics.update(steps=result.get("steps"), train_seconds=result.get("seconds"))
    return TrainResult(
        {
            "kind": kind,
            "task": "image-generation",
            "description": f"{kind} ({'' if num_classes else 'un'}conditional), trained over HTTP.",
            "image_size": list(image_size),
            "num_classes": num_classes,
            "latent_dim": p.latent_dim,
            "labels": list(train.label_names or []) if num_classes else [],
            "model_args": asdict(module.config),  # type: ignore[arg-type]
            "metrics": metrics,
        },
        module=module,
    )


def _text_pipeline(
    kind: str,
    train: LabelledTexts,
    test: LabelledTexts,
    p: TextPipelineParams,
    hooks: TrainHooks,
    device: torch.device,
) -> TrainResult:
    from models.training import fit_text_pipeline

    _check_stop(hooks)
    params = {k: v for k, v in asdict(p).items() if k not in ("seed", "test_fraction")}
    params["word_ngrams"] = (1, params.pop("word_ngram_max"))
    params["char_ngrams"] = (2, 5) if params.pop("char_ngrams") else None
    pipeline, metrics = fit_text_pipeline(
        kind,
        train.texts,
        list(train.labels),
        test.texts,
        list(test.labels),
        seed=p.seed,
        num_classes=len(train.label_names),
        **params,
    )
    row = {"step": 1, "val_accuracy": metrics.get("test_accuracy")}
    if hooks.on_step is not None:
        hooks.on_step(1, 1, torch.tensor(0.0))
    if hooks.on_epoch is not None:
        hooks.on_epoch(row)
    return TrainResult(
        {
            "kind": kind,
            "task": "classification",
            "input": "text",
            "description": f"TF-IDF + {kind} text classifier trained over HTTP.",
            "labels": list(train.label_names),
            "metrics": _classifier_metrics(metrics),
        },
        estimator=pipeline,
    )


def _classifier_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    keep = ("test_accuracy", "test_examples", "train_examples", "train_seconds", "samples_per_s")
    return {k: metrics[k] for k in keep if k in metrics}


def _text_rnn(
    kind: str,
    train: LabelledTexts,
    test: LabelledTexts,
    p: TextRNNParams,
    hooks: TrainHooks,
    device: torch.device,
) -> TrainResult:
    from models.training import fit_text_rnn

    params = {k: v for k, v in asdict(p).items() if k != "test_fraction"}
    module, _config, tokenizer, metrics = fit_text_rnn(
        train.texts,
        np.asarray(train.labels),
        test.texts,
        np.asarray(test.labels),
        device=str(device),
        hooks=hooks,
        num_classes=len(train.label_names),
        **params,
    )
    return TrainResult(
        {
            "kind": kind,
            "task": "classification",
            "input": "text",
            "description": f"{p.level}-level GRU text classifier trained over HTTP.",
            "labels": list(train.label_names),
            "tokenizer": tokenizer,
            "model_args": asdict(module.config),
            "metrics": _classifier_metrics(metrics),
        },
        module=module,
    )


def _cnn(
    kind: str,
    train: ImageSet,
    test: ImageSet,
    p: CNNParams,
    hooks: TrainHooks,
    device: torch.device,
) -> TrainResult:
    from models.training import fit_image_cnn

    if train.labels is None or test.labels is None:
        raise ValueError("classify-cnn needs a labelled image dataset")
    params = {k: v for k, v in asdict(p).items() if k != "test_fraction"}
    num_classes = len(train.label_names or [])
    module, config, metrics = fit_image_cnn(
        train.images,
        train.labels,
        test.images,
        test.labels,
        device=str(device),
        hooks=hooks,
        num_classes=num_classes,
        **params,
    )
    return TrainResult(
        {
            "kind": kind,
            "task": "classification",
            "input": "image",
            "description": "Convolutional image classifier trained over HTTP.",
            "labels": list(train.label_names or []),
            "image_size": list(config.image_size),
            "model_args": asdict(config),
            "metrics": _classifier_metrics(metrics),
        },
        module=module,
    )


# -----------------------------------------------------------------------------
# the registry of kinds


Trainer = Callable[[str, Any, Any, Any, TrainHooks, torch.device], TrainResult]


@dataclass(frozen=True)
class Kind:
    name: str
    task: str  # classification | text-generation | image-generation
    data: str  # the dataset kind it trains on: text | labelled-text | images
    params: type  # the parameter dataclass
    trainer: Trainer
    description: str
    needs_labels: bool = False  # images must carry labels
    size_multiple: int = 1  # image sides must be divisible by this

    def train(
        self, train: Any, test: Any, params: Any, hooks: TrainHooks, device: torch.device
    ) -> TrainResult:
        return self.trainer(self.name, train, test, params, hooks, device)


KINDS: dict[str, Kind] = {
    k.name: k
    for k in [
        Kind(
            "text-ngram",
            "text-generation",
            "text",
            NGramParams,
            _ngram,
            "Character n-gram language model, interpolated Kneser-Ney.",
        ),
        Kind(
            "text-lstm",
            "text-generation",
            "text",
            RNNParams,
            _lm,
            "Character-level LSTM language model.",
        ),
        Kind(
            "text-gru",
            "text-generation",
            "text",
            RNNParams,
            _lm,
            "Character-level GRU language model.",
        ),
        Kind(
            "text-gpt",
            "text-generation",
            "text",
            GPTParams,
            _lm,
            "Character-level GPT (decoder-only transformer).",
        ),
        Kind(
            "image-vae",
            "image-generation",
            "images",
            VAEParams,
            _image_gen,
            "Convolutional VAE; class-conditional with conditional=true.",
            size_multiple=4,
        ),
        Kind(
            "image-gan",
            "image-generation",
            "images",
            GANParams,
            _image_gen,
            "DCGAN; class-conditional (AC-GAN) with conditional=true.",
            size_multiple=4,
        ),
        Kind(
            "classify-nb",
            "classification",
            "labelled-text",
            NBParams,
            _text_pipeline,
            "TF-IDF word + char n-grams, multinomial naive Bayes.",
        ),
        Kind(
            "classify-logreg",
            "classification",
            "labelled-text",
            LogRegParams,
            _text_pipeline,
            "TF-IDF word + char n-grams, logistic regression.",
        ),
        Kind(
            "classify-mlp",
            "classification",
            "labelled-text",
            MLPParams,
            _text_pipeline,
            "TF-IDF word + char n-grams, one-hidden-layer MLP.",
        ),
        Kind(
            "classify-rnn",
            "classification",
            "labelled-text",
            TextRNNParams,
            _text_rnn,
            "Bidirectional GRU over characters or words.",
        ),
        Kind(
            "classify-cnn",
            "classification",
            "images",
            CNNParams,
            _cnn,
            "Small convolutional net for grayscale images.",
            needs_labels=True,
            size_multiple=4,
        ),
    ]
}


def card(name: str, config: dict[str, Any], dataset: str, params: dict[str, Any]) -> str:
    """A short model card: what it is, what it was trained on, what it scored."""
    metrics = "\n".join(f"- {k}: {v}" for k, v in config.get("metrics", {}).items())
    settings = "\n".join(f"- {k}: {v}" for k, v in params.items())
    return f"""# {name} ({config["kind"]})

{config.get("description", "")}

Trained on dataset `{dataset}`.

## Metrics (held-out split)

{metrics or "- none"}

## Parameters

{settings}
"""
