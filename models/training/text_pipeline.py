"""Fitting the TF-IDF text pipelines (classify-nb, classify-logreg, classify-mlp)."""

import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from sklearn.pipeline import Pipeline

from models.classify.text_pipeline import build_text_pipeline
from models.data.uploads import LabelledTexts
from models.kinds import TextPipelineParams
from models.training.epochs import check_lengths, encode_labels
from models.training.hooks import TrainHooks
from models.training.result import TrainResult, check_stop, classifier_metrics, one_step


def make_pipeline(p: TextPipelineParams, min_df: int | None = None) -> Pipeline:
    """The unfitted pipeline `p` describes: its n-gram features and its kind's estimator."""
    return build_text_pipeline(
        p.estimator(),
        word_ngrams=(1, p.word_ngram_max),
        char_ngrams=(2, 5) if p.char_ngrams else None,
        min_df=p.min_df if min_df is None else min_df,
    )


def fit_text_pipeline(
    p: TextPipelineParams,
    train_texts: Sequence[str],
    train_labels: Sequence[Any],
    test_texts: Sequence[str],
    test_labels: Sequence[Any],
    *,
    num_classes: int | None = None,
    min_df: int | None = None,
) -> tuple[Pipeline, dict[str, Any]]:
    """Fit the pipeline `p` describes on any labelled texts, score the test ones.

    The pipeline predicts class ids 0..K-1 (what SklearnTextClassifier expects), so every class
    needs training examples; metrics["labels"] names the classes (see encode_labels). min_df
    is p.min_df from 500 training texts up and 1 below unless given: n-grams seen once are
    noise among thousands of texts but much of the signal in a handful.
    """
    classes, y_train, y_test = encode_labels(train_labels, test_labels, num_classes)
    check_lengths(train_texts, y_train, test_texts, y_test)
    missing = sorted(set(range(len(classes))) - set(y_train.tolist()))
    if missing:
        names = [str(classes[i]) for i in missing]
        raise ValueError(f"classes without training examples: {names}")
    if min_df is None:
        min_df = p.min_df if len(train_texts) >= 500 else 1
    pipeline = make_pipeline(p, min_df)
    t0 = time.perf_counter()
    pipeline.fit(list(train_texts), y_train)
    seconds = time.perf_counter() - t0
    accuracy = None
    if len(test_texts):
        accuracy = float(np.mean(pipeline.predict(list(test_texts)) == y_test))
    metrics = {
        "test_accuracy": accuracy,
        "test_examples": len(test_texts),
        "train_examples": len(train_texts),
        "train_seconds": round(seconds, 2),
        "labels": [str(c) for c in classes],
        "params": {**asdict(p), "min_df": min_df},
    }
    return pipeline, metrics


def train_text_pipeline(
    kind: str,
    train: LabelledTexts,
    test: LabelledTexts,
    p: TextPipelineParams,
    hooks: TrainHooks,
    device: torch.device,
) -> TrainResult:
    check_stop(hooks)
    pipeline, metrics = fit_text_pipeline(
        p,
        train.texts,
        list(train.labels),
        test.texts,
        list(test.labels),
        num_classes=len(train.label_names),
        min_df=p.min_df,  # asked for (or defaulted) by the job: no small-data adjustment
    )
    one_step(hooks, {"step": 1, "val_accuracy": metrics.get("test_accuracy")})
    return TrainResult(
        {
            "kind": kind,
            "task": "classification",
            "input": "text",
            "description": f"TF-IDF + {kind} text classifier trained over HTTP.",
            "labels": list(train.label_names),
            "metrics": classifier_metrics(metrics),
        },
        estimator=pipeline,
    )
