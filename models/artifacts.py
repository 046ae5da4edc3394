"""Model artifacts: a directory holding config.json, one payload file and a README.md model card.

Nothing here unpickles. Torch weights are safetensors (plain tensors, no code); scikit-learn
pipelines are skops files whose every type must be on an explicit allowlist before loading.
The digest covers config + payload but not the card, so a card can be rewritten without the
model's identity changing. Loading reads the payload bytes once and parses those same bytes,
so a file swapped between the digest check and the parse cannot slip through.

    <artifact>/config.json          name, kind, task, input, labels, image_size, model_args,
                                    tokenizer (classify-rnn: its TextVocab as plain JSON), ...
    <artifact>/weights.safetensors  torch kinds (classify-cnn, classify-rnn)
    <artifact>/model.skops          scikit-learn kinds (classify-logreg, classify-nb, classify-mlp)
    <artifact>/README.md            the model card
"""

import io
import json
import os
import shutil
import tempfile
import uuid
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import safetensors.torch
import skops.io
import torch
from safetensors.torch import load as load_safetensors

from models.checksum import (
    CARD_FILE,
    CONFIG_FILE,
    SKOPS_FILE,
    WEIGHTS_FILE,
    ArtifactError,
    artifact_digest,
    digest_payload,
    read_payload,
)
from models.classifiers import (
    SKLEARN_KINDS,
    TORCH_INPUTS,
    TORCH_MODELS,
    Classifier,
    SklearnTextClassifier,
    TextVocab,
    TorchImageClassifier,
    TorchTextClassifier,
)

# Every type a skops file may contain: exactly what the text pipelines in classifiers.py use,
# found by dumping one fitted pipeline of each kind. Anything else is refused before loading.
TRUSTED_SKOPS_TYPES: list[str] = [
    "builtins.dict",
    "builtins.list",
    "builtins.str",
    "builtins.tuple",
    "numpy.float64",
    "numpy.ndarray",
    "numpy.random.mtrand.RandomState",
    "sklearn.feature_extraction.text.TfidfTransformer",
    "sklearn.feature_extraction.text.TfidfVectorizer",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.naive_bayes.MultinomialNB",
    "sklearn.neural_network._multilayer_perceptron.MLPClassifier",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.pipeline.FeatureUnion",
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._label.LabelBinarizer",
]


def save_artifact(
    path: Path,
    config: dict[str, Any],
    *,
    module: torch.nn.Module | None = None,
    estimator: Any = None,
    card: str,
) -> tuple[str, int]:
    """Write an artifact atomically (temp dir beside `path`, then rename), replacing any old one.

    For a module without `model_args` in `config`, they are taken from `module.config`.
    Returns the digest of what was written.
    """
    if (module is None) == (estimator is None):
        raise ArtifactError("pass exactly one of module= or estimator=")
    config = dict(config)
    if module is not None and "model_args" not in config:
        config["model_args"] = asdict(module.config)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        text = json.dumps(config, indent=2, sort_keys=True) + "\n"
        (tmp / CONFIG_FILE).write_text(text, encoding="utf-8")
        if module is not None:
            # plain CPU copies: tied weights share storage, which safetensors refuses twice
            state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
            safetensors.torch.save_file(state, tmp / WEIGHTS_FILE, metadata={"format": "pt"})
        else:
            # the schema is JSON with one node per vocabulary entry: deflate shrinks it ~40x
            skops.io.dump(estimator, tmp / SKOPS_FILE, compression=zipfile.ZIP_DEFLATED)
        (tmp / CARD_FILE).write_text(card, encoding="utf-8")
        # mkdtemp makes a private 0700 dir; artifacts are not secrets and other users serve them
        tmp.chmod(0o755)
        for file in tmp.iterdir():
            file.chmod(0o644)
        old = None
        if path.exists():
            # two renames (a directory cannot be os.replace'd onto a non-empty one); readers
            # see either the old or the new artifact, or briefly none, never a mix of both
            old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex}")
            os.rename(path, old)
        try:
            os.rename(tmp, path)
        except OSError:
            if old is not None:
                os.rename(old, path)  # put the previous artifact back
            raise
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return artifact_digest(path)


def skops_types(data: bytes) -> set[str]:
    """Every `module.Class` named anywhere in a skops file's schema, trusted by skops or not."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            schema = json.loads(zf.read("schema.json"))
    except (zipfile.BadZipFile, KeyError, ValueError) as e:
        raise ArtifactError(f"not a skops file: {e}") from e
    found: set[str] = set()
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "__module__" in node and "__class__" in node:
                found.add(f"{node['__module__']}.{node['__class__']}")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def _load_sklearn(data: bytes, labels: list[str]) -> SklearnTextClassifier:
    # two independent checks: our own walk over every type, and skops's own audit
    untrusted = (skops_types(data) | set(skops.io.get_untrusted_types(data=data))) - set(
        TRUSTED_SKOPS_TYPES
    )
    if untrusted:
        raise ArtifactError(f"{SKOPS_FILE} contains untrusted types: {sorted(untrusted)}")
    try:
        pipeline = skops.io.load(io.BytesIO(data), trusted=TRUSTED_SKOPS_TYPES)
        return SklearnTextClassifier(pipeline, labels)
    except Exception as e:
        raise ArtifactError(f"cannot load {SKOPS_FILE}: {e}") from e


def _load_torch(
    kind: str, data: bytes, config: dict[str, Any], device: str
) -> TorchImageClassifier | TorchTextClassifier:
    config_cls, model_cls = TORCH_MODELS[kind]
    try:
        model_config = config_cls(**config.get("model_args", {}))
    except (TypeError, ValueError) as e:
        raise ArtifactError(f"bad model_args for {kind}: {e}") from e
    if model_config.num_classes != len(config["labels"]):
        raise ArtifactError(
            f"{len(config['labels'])} labels for {model_config.num_classes} classes"
        )
    vocab = None
    if TORCH_INPUTS[kind] == "image":
        image_size = config.get("image_size")
        if image_size is None or tuple(image_size) != tuple(model_config.image_size):
            raise ArtifactError(f"image_size {image_size} != model_args {model_config.image_size}")
    else:
        vocab = _load_vocab(config.get("tokenizer"), model_config)
    try:
        state = load_safetensors(data)  # parses a JSON header + raw tensors, runs no code
    except Exception as e:
        raise ArtifactError(f"{WEIGHTS_FILE} is not a valid safetensors file: {e}") from e
    module = model_cls(model_config)
    try:
        module.load_state_dict(state, strict=True)
        if vocab is not None:
            return TorchTextClassifier(module.eval(), vocab, config["labels"], device=device)
        return TorchImageClassifier(module.eval(), config["labels"], device=device)
    except (RuntimeError, ValueError) as e:
        raise ArtifactError(f"weights do not fit {kind} {model_config}: {e}") from e


def _load_vocab(tokenizer: Any, model_config: Any) -> TextVocab:
    """The text model's vocabulary from config.json, which must match model_args exactly."""
    try:
        vocab = TextVocab.from_config(tokenizer)
    except (KeyError, TypeError, ValueError) as e:
        raise ArtifactError(f"bad tokenizer in {CONFIG_FILE}: {e!r}") from e
    if vocab.vocab_size != model_config.vocab_size or vocab.level != model_config.level:
        raise ArtifactError(
            f"tokenizer ({vocab.level}, {vocab.vocab_size} tokens) does not fit model_args "
            f"({model_config.level}, vocab_size {model_config.vocab_size})"
        )
    return vocab


def load_classifier(
    path: Path, *, expected_sha256: str | None = None, device: str = "cpu"
) -> Classifier:
    """Load a classification artifact, verifying its digest first when one is expected."""
    path = Path(path)
    payload = read_payload(path)
    if expected_sha256 is not None:
        actual, _ = digest_payload(payload)
        if actual != expected_sha256.lower():
            raise ArtifactError(
                f"{path}: sha256 {actual} does not match expected {expected_sha256}"
            )
    try:
        config = json.loads(payload[CONFIG_FILE])
    except ValueError as e:
        raise ArtifactError(f"{path}/{CONFIG_FILE} is not valid JSON: {e}") from e
    if not isinstance(config, dict):
        raise ArtifactError(f"{path}/{CONFIG_FILE} must hold a JSON object")
    kind, labels = config.get("kind"), config.get("labels")
    if config.get("task", "classification") != "classification":
        raise ArtifactError(f"{path}: task {config.get('task')!r} is not classification")
    if not isinstance(labels, list) or not labels or not all(isinstance(s, str) for s in labels):
        raise ArtifactError(f"{path}: labels must be a non-empty list of strings")

    if kind in TORCH_MODELS:
        takes = TORCH_INPUTS[kind]
        if config.get("input") != takes or WEIGHTS_FILE not in payload:
            raise ArtifactError(f"{path}: {kind} needs input {takes!r} and {WEIGHTS_FILE}")
        return _load_torch(kind, payload[WEIGHTS_FILE], config, device)
    if kind in SKLEARN_KINDS:
        if config.get("input") != "text" or SKOPS_FILE not in payload:
            raise ArtifactError(f"{path}: {kind} needs input 'text' and {SKOPS_FILE}")
        return _load_sklearn(payload[SKOPS_FILE], labels)
    known = sorted([*TORCH_MODELS, *SKLEARN_KINDS])
    raise ArtifactError(f"{path}: unknown kind {kind!r}, expected one of {known}")
