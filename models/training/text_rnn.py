"""Fitting the GRU text classifier (classify-rnn) with the shared epoch loop."""

import math
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from models.classify.text_rnn import TextRNN, TextRNNConfig, TextVocab, pad_batch
from models.data.uploads import LabelledTexts
from models.kinds import TextRNNParams
from models.training.epochs import (
    check_lengths,
    data_digest,
    encode_labels,
    loop_metrics,
    train_epochs,
)
from models.training.hooks import TrainHooks
from models.training.result import TrainResult, classifier_metrics


def length_batches(
    lengths: torch.Tensor, batch_size: int, gen: torch.Generator, pool: int = 50
) -> list[torch.Tensor]:
    """Shuffled batches of similar lengths: a random pool of batch_size*pool texts is sorted by
    length and cut into batches, then the batches are shuffled. Less padding, fewer GRU steps;
    always ceil(N / batch_size) batches."""
    order = torch.randperm(len(lengths), generator=gen)
    out: list[torch.Tensor] = []
    for i in range(0, len(order), batch_size * pool):
        chunk = order[i : i + batch_size * pool]
        chunk = chunk[torch.argsort(lengths[chunk], stable=True)]
        out.extend(chunk.split(batch_size))
    return [out[j] for j in torch.randperm(len(out), generator=gen).tolist()]


@torch.no_grad()
def text_logits(
    model: TextRNN, ids: list[list[int]], device: str, batch_size: int = 256
) -> torch.Tensor:
    """(N, K) logits of encoded texts, in their order; restores train/eval mode."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths batched
    logits = torch.empty(len(ids), model.config.num_classes)
    for i in range(0, len(order), batch_size):
        rows = order[i : i + batch_size]
        logits[rows] = model(pad_batch([ids[r] for r in rows], device)).float().cpu()
    model.train(was_training)
    return logits


def text_accuracy(
    model: TextRNN, ids: list[list[int]], y: np.ndarray, device: str, batch_size: int = 256
) -> float | None:
    """Accuracy on encoded texts (None when there are none)."""
    if not ids:
        return None
    pred = text_logits(model, ids, device, batch_size).argmax(-1).numpy()
    return float(np.mean(pred == y))


def text_loss(model: TextRNN, ids: list[list[int]], y: np.ndarray, device: str) -> float | None:
    """Mean cross-entropy on encoded texts (None when there are none)."""
    if not ids:
        return None
    return F.cross_entropy(text_logits(model, ids, device), torch.from_numpy(y)).item()


def fit_text_rnn(
    train_texts: Sequence[str],
    train_labels: Sequence[Any],
    test_texts: Sequence[str],
    test_labels: Sequence[Any],
    p: TextRNNParams | None = None,
    *,
    device: str = "cpu",
    min_freq: int = 2,
    num_classes: int | None = None,
    hooks: TrainHooks | None = None,
) -> tuple[TextRNN, TextRNNConfig, dict[str, Any], dict[str, Any]]:
    """Train a TextRNN on any labelled texts; returns (model, config, tokenizer config, metrics).

    The vocabulary comes from the training texts only (tokens seen `min_freq` times). Labels
    are class ids or names (see encode_labels); metrics["labels"] names the model's classes.
    The defaults of TextRNNParams came from 5-fold CV on the sentiment training split
    (models/build/classifiers.py:cross_validate_text_rnn).
    """
    p = p or TextRNNParams()
    seed, level, max_len, batch_size = p.seed, p.level, p.max_len, p.batch_size
    classes, y_train, y_test = encode_labels(train_labels, test_labels, num_classes)
    check_lengths(train_texts, y_train, test_texts, y_test)
    vocab = TextVocab.build(train_texts, level, min_freq=min_freq)  # type: ignore[arg-type]
    torch.manual_seed(seed)
    config = TextRNNConfig(
        level=level,
        vocab_size=vocab.vocab_size,
        embed=p.embed,
        hidden=p.hidden,
        num_layers=p.num_layers,
        bidirectional=p.bidirectional,
        dropout=p.dropout,
        num_classes=len(classes),
        max_len=max_len,
    )
    model = TextRNN(config).to(device)
    train_ids = [vocab.encode(t, max_len) for t in train_texts]
    test_ids = [vocab.encode(t, max_len) for t in test_texts]
    x = pad_batch(train_ids)  # (N, T_max) on the CPU; batches are cut to their own length
    lengths = torch.tensor([max(1, len(s)) for s in train_ids])  # (N,)
    y = torch.from_numpy(y_train).to(device)  # (N,)

    def loss_of(net: nn.Module, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        xb = x[idx, : int(lengths[idx].max())].to(device)  # (B, T)
        return F.cross_entropy(net(xb), y[idx.to(device)])

    params = {
        "level": level,
        "epochs": p.epochs,
        "batch_size": batch_size,
        "lr": p.lr,
        "weight_decay": p.weight_decay,
        "min_freq": min_freq,
    }
    loop = train_epochs(
        model,
        batches=lambda gen: length_batches(lengths, batch_size, gen),
        loss_of=loss_of,
        val_accuracy=lambda: text_accuracy(model, test_ids, y_test, device),
        val_loss=lambda: text_loss(model, test_ids, y_test, device),
        patience=p.patience,
        steps_per_epoch=math.ceil(len(train_ids) / batch_size),
        seed=seed,
        epochs=p.epochs,
        lr=p.lr,
        weight_decay=p.weight_decay,
        clip=1.0,  # recurrent nets: one long sentence must not blow up a step
        hooks=hooks,
        run={
            "fit": "text-rnn",
            "seed": seed,
            **params,
            "model": asdict(config),
            "data": data_digest(list(train_texts), y_train),
        },
    )
    metrics = loop_metrics(
        loop,
        text_accuracy(model, test_ids, y_test, device),
        test_examples=len(test_ids),
        train_examples=len(train_ids),
        labels=[str(c) for c in classes],
        params=params,
    )
    return model, config, vocab.to_config(), metrics


def train_text_rnn(
    kind: str,
    train: LabelledTexts,
    test: LabelledTexts,
    p: TextRNNParams,
    hooks: TrainHooks,
    device: torch.device,
) -> TrainResult:
    module, _config, tokenizer, metrics = fit_text_rnn(
        train.texts,
        np.asarray(train.labels),
        test.texts,
        np.asarray(test.labels),
        p,
        device=str(device),
        hooks=hooks,
        num_classes=len(train.label_names),
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
            "metrics": classifier_metrics(metrics),
        },
        module=module,
    )
