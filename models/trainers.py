"""The trainers behind models/kinds.py: one function per family, from data to artifact.

A trainer takes a train and a test split (the types of models/datasets.py), the job's
parameters (a dataclass of models/kinds.py, validated by the caller) and TrainHooks, and
returns what `save_artifact` needs. Nothing here knows about HTTP or databases.
"""

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from models.datasets import ImageSet, LabelledTexts, TextCorpus
from models.hooks import TrainHooks
from models.kinds import (
    CNNParams,
    GANParams,
    GPTParams,
    ImageGenParams,
    LMParams,
    NGramParams,
    RNNParams,
    TextPipelineParams,
    TextRNNParams,
    VAEParams,
)

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


def lm(
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
    result = train_loop(model, train_ids, val_ids, cfg, device, hooks)
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


def ngram(
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


def image_gen(
    kind: str,
    train: ImageSet,
    test: ImageSet,
    p: ImageGenParams,
    hooks: TrainHooks,
    device: torch.device,
) -> TrainResult:
    from models.gan import Discriminator, GANConfig, Generator
    from models.train_image import GANTrainConfig, VAETrainConfig, train_gan, train_vae
    from models.vae import VAE, VAEConfig, held_out_negative_elbo

    labels, num_classes = _image_labels(train, p.conditional)
    image_size = tuple(train.images.shape[1:])
    torch.manual_seed(p.seed)
    metrics: dict[str, Any] = {}
    if isinstance(p, VAEParams):
        module: torch.nn.Module = VAE(
            VAEConfig(image_size, p.latent_dim, hidden=p.hidden, num_classes=num_classes)
        )
        cfg = VAETrainConfig(p.epochs, p.batch_size, p.lr, p.max_seconds, p.seed)
        result = train_vae(module, train.images, labels, cfg, device, hooks)
        module.eval()
        held_out = test.labels[:2000] if test.labels is not None else None
        elbo = held_out_negative_elbo(module, test.images[:2000], held_out, device)
        metrics["held_out_neg_elbo"] = round(elbo, 2)
    else:
        assert isinstance(p, GANParams)
        gan = GANConfig(image_size, p.latent_dim, p.channels, num_classes)
        module = Generator(gan)
        cfg = GANTrainConfig(
            p.epochs, p.batch_size, p.lr, ema=p.ema, max_seconds=p.max_seconds, seed=p.seed
        )
        result = train_gan(module, Discriminator(gan), train.images, labels, cfg, device, hooks)
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


def text_pipeline(
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


def text_rnn(
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


def cnn(
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
