"""Every kind of model the service can train: its parameters, task and data, with no torch.

The parameter dataclasses are the single source of names, defaults and bounds
(annotated_types metadata): the API builds its request schemas and GET /train/kinds from
them, and library users pass them to the training functions; each also estimates what a
job with those params needs (`footprint`: parameters and peak training memory, from the data
set's metadata), so POST /train refuses a job the machine cannot hold before queueing it.
`KINDS` is the one table keyed by kind: each row names its params, task, data, the class
that serves it and the function that trains it, the last two as lazy "module:attr" strings.
This module imports no torch, scikit-learn or Ray, so the API process can validate jobs
without loading them.
"""

import importlib
import math
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

from annotated_types import Ge, Gt, Le, MaxLen, MinLen

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
BlockSize = Annotated[int, Ge(8), Le(4096)]
WeightDecay = Annotated[float, Ge(0), Le(1)]
Dropout = Annotated[float, Ge(0), Le(0.9)]
Patience = Annotated[int, Ge(0), Le(10_000)]
PATIENCE_DOC = "stop after this many evaluations without a lower validation loss (0: never)"
EPOCH_PATIENCE_DOC = "stop after this many epochs without a lower validation loss (0: never)"


# -----------------------------------------------------------------------------
# memory: what a job needs, in plain arithmetic (the API process has no torch)
#
# Torch kinds train in fp32 with Adam(W): 16 bytes per parameter (weight, gradient, two
# moments). Beside them, at different moments, one of: a training step's activations (the
# tensors the forward pass saves for backward, counted per sample below, times SLACK for
# backward's own buffers and the blocks the allocator keeps); an evaluation batch (no
# gradients, but often many samples); a checkpoint's copies. Each formula was checked
# against measured runs by bench/job_memory.py (peak RSS on a CPU; on a GPU, autocast halves
# most activations).

F32 = 4  # bytes per float32
ADAM = 16  # bytes per trainable parameter while training
BEST = F32  # bytes per parameter of the best evaluation's weights, kept beside them
CHECKPOINT = 28  # bytes per parameter while a checkpoint is written: the weights cloned,
# then the weights and moments as one bytes object per tensor and once more joined
SLACK = 1.5  # peak resident memory of a training step over the tensors it saves
RUNTIME = 64 * 2**20  # buffers torch allocates on first use, interpreter garbage


@dataclass(frozen=True)
class DataShape:
    """What an estimate knows of a data set before it is loaded: its row's metadata."""

    records: int = 0  # characters of a corpus; texts or images otherwise (all splits)
    vocab: int = 256  # distinct characters of a corpus
    image_size: tuple[int, int] = (28, 28)
    classes: int = 0  # labels; 0 when unlabelled
    mean_chars: float = 100.0  # characters per text (labelled texts)

    @classmethod
    def from_meta(cls, records: int | None, meta: dict[str, Any]) -> "DataShape":
        """From a dataset row (`num_records`, `meta` as models.data.describe writes it)."""
        size = meta.get("image_size") or (28, 28)
        return cls(
            records=int(records or 0),
            vocab=int(meta.get("vocab_size") or 256),
            image_size=(int(size[0]), int(size[1])),
            classes=len(meta.get("labels") or []),
            mean_chars=float(meta.get("mean_chars") or 100.0),
        )


@dataclass(frozen=True)
class Footprint:
    """A job's trainable parameters and its peak training memory, an upper-ish estimate."""

    params: int
    bytes: int
    parts: dict[str, int]  # bytes: model (+ optimizer, checkpoint), activations, data, runtime


def torch_footprint(
    params: int, activations: int, data: int, *, evaluation: int = 0, extra: int = 0
) -> Footprint:
    """A torch fit: Adam's states, the best evaluation's weights and `extra` (weights outside
    the optimizer, such as an EMA copy); the largest of a step's saved `activations` (with
    SLACK), an `evaluation` batch and a checkpoint's copies, which are never alive together;
    the data it holds."""
    model = (ADAM + BEST) * params + extra
    peak = max(int(SLACK * activations), evaluation, CHECKPOINT * params)
    parts = {"model": model, "activations": peak, "data": data, "runtime": RUNTIME}
    return Footprint(params, sum(parts.values()), parts)


def conv_out(h: int, w: int, stride_stages: int) -> int:
    """Pixels of a map after `stride_stages` halvings."""
    return (h >> stride_stages) * (w >> stride_stages)


TokenizerKind = Literal["char", "bpe"]
VocabSize = Annotated[int, Ge(257), Le(65_536)]
TOKENIZER_DOC = "char: one token per character; bpe: byte-level BPE (any UTF-8 text encodes)"
VOCAB_DOC = "bpe: tokens learnt from the training split, the 256 bytes included"


class FineTunable:
    """Params of a kind whose jobs may start from a parent version's weights (POST /train
    `from`): the parent's config.json fixes the params that shape the network."""

    architecture: ClassVar[tuple[str, ...]] = ()  # params named as in the config's model_args

    @classmethod
    def inherited(cls, config: dict[str, Any]) -> dict[str, Any]:
        """The params a fine-tune takes from its parent's config.json."""
        args = config.get("model_args") or {}
        return {name: args[name] for name in cls.architecture if name in args}

    @classmethod
    def unsuited(cls, config: dict[str, Any], meta: dict[str, Any]) -> str | None:
        """Why a dataset (its row's meta) cannot fine-tune this parent; None if it can."""
        return None


def images_unsuited(config: dict[str, Any], meta: dict[str, Any], classes: int) -> str | None:
    """An image model keeps its image size, and its classes (`classes` > 0) and their names."""
    args = config.get("model_args") or {}
    size, parent = meta.get("image_size"), config.get("image_size") or args.get("image_size")
    if size and parent and list(size) != list(parent):
        return f"its images are {size[0]}x{size[1]}, the parent's {parent[0]}x{parent[1]}"
    labels, parent_labels = meta.get("labels") or [], config.get("labels") or []
    if classes and (len(labels) != classes or (parent_labels and labels != parent_labels)):
        return f"its labels {labels} are not the parent's {parent_labels or classes}"
    return None


@dataclass
class ChatParams:
    """How /v1/chat/completions turns messages into a prompt for the trained model."""

    chat_template: Annotated[str, MaxLen(8000)] = doc(
        "", "Jinja chat template (messages, add_generation_prompt); empty: the default"
    )
    chat_stop: Annotated[str, MinLen(1), MaxLen(64)] = doc("\n\n", "where a chat reply ends")


@dataclass
class DataParallelParams:
    """The torch kinds' data parallelism (models/training/distributed.py): `batch_size` is the
    global batch, split across the workers, so the learning rate needs no scaling."""

    num_workers: Annotated[int, Ge(1), Le(256)] = doc(
        1, "data-parallel workers (DDP; with GENSERVE_TRAIN_BACKEND=ray, Ray Train workers)"
    )
    use_gpu: bool = doc(False, "GENSERVE_TRAIN_BACKEND=ray: each worker takes a GPU")

    def __post_init__(self) -> None:
        batch = self.batch_size  # type: ignore[attr-defined]
        if batch % self.num_workers:
            raise ValueError(
                f"batch_size ({batch}) is the global batch: it must be a multiple "
                f"of num_workers ({self.num_workers})"
            )


@dataclass
class NGramParams(ChatParams):
    not_fine_tunable: ClassVar[str] = "its counts are fitted in one pass: train it on the data"
    order: Annotated[int, Ge(2), Le(12)] = doc(7, "longest n-gram (context = order - 1 tokens)")
    tokenizer: TokenizerKind = doc("char", TOKENIZER_DOC)
    vocab_size: VocabSize = doc(512, VOCAB_DOC)
    test_fraction: TestFraction = doc(0.1, "uploads: the last fraction of characters validates")

    def footprint(self, data: DataShape, kind: str) -> Footprint:
        """Counting sorts int64 codes per order and keeps each order's distinct n-grams (at
        most one per position, and vocab^k of order k): `params` is that bound on the table
        entries."""
        n = data.records
        vocab = self.vocab_size if self.tokenizer == "bpe" else data.vocab
        entries = sum(min(n, vocab**k) for k in range(1, self.order + 1))
        parts = {"tables": 16 * entries, "counting": 64 * n, "data": 20 * n, "runtime": RUNTIME}
        return Footprint(entries, sum(parts.values()), parts)


@dataclass
class LMParams(ChatParams, DataParallelParams, FineTunable):
    """The shared loop of models/training/lm.py; the family adds its architecture."""

    max_steps: Annotated[int, Ge(1), Le(10_000_000)] = doc(2000, "optimizer steps")
    max_seconds: Seconds = doc(0.0, "wall-clock budget in seconds, 0 for none")
    batch_size: BatchSize = doc(16, "sequences per step")
    block_size: BlockSize = doc(128, "tokens per sequence")
    lr: LearningRate = doc(1e-3, "peak learning rate (AdamW), cosine-decayed to lr/10")
    warmup_steps: Annotated[int, Ge(0), Le(1_000_000)] = doc(100, "linear warm-up steps")
    weight_decay: WeightDecay = doc(0.1, "on weight matrices only")
    eval_every: Annotated[int, Ge(1), Le(10_000_000)] = doc(250, "steps between evaluations")
    eval_batches: Annotated[int, Ge(1), Le(1000)] = doc(10, "batches per evaluation")
    patience: Patience = doc(0, PATIENCE_DOC)
    seed: Seed = doc(1337, "initialisation and batch sampling")
    test_fraction: TestFraction = doc(0.1, "uploads: the last fraction of characters validates")
    tokenizer: TokenizerKind = doc("char", TOKENIZER_DOC)
    vocab_size: VocabSize = doc(2048, VOCAB_DOC)

    @classmethod
    def inherited(cls, config: dict[str, Any]) -> dict[str, Any]:
        """The architecture and the tokenizer: a fine-tune continues with its parent's tokens."""
        args = config.get("model_args") or {}
        tokenizer = (config.get("tokenizer") or {}).get("type", "char")
        found = {**super().inherited(config), "tokenizer": tokenizer}
        if tokenizer == "bpe" and "vocab_size" in args:
            found["vocab_size"] = args["vocab_size"]
        return found

    @classmethod
    def unsuited(cls, config: dict[str, Any], meta: dict[str, Any]) -> str | None:
        """A character tokenizer cannot read characters it never saw."""
        chars = (config.get("tokenizer") or {}).get("chars")
        distinct = meta.get("vocab_size")
        if chars is not None and distinct and distinct > len(chars):
            return (
                f"it has {distinct} distinct characters and the parent's character tokenizer "
                f"knows {len(chars)}: a fine-tune keeps its parent's tokenizer"
            )
        return None

    def network(self, vocab: int, kind: str) -> tuple[int, int, int]:
        """`kind`'s (parameters, bytes saved per token of a training step, bytes of the
        final validation's batch: 64 windows without gradients)."""
        raise NotImplementedError

    def footprint(self, data: DataShape, kind: str) -> Footprint:
        """The corpus is held as text, token lists and int64 tensors (BPE ids are Python
        ints of their own)."""
        vocab = self.vocab_size if self.tokenizer == "bpe" else data.vocab
        params, per_token, evaluation = self.network(vocab, kind)
        train = self.batch_size * self.block_size * per_token
        per_char = 20 if self.tokenizer == "char" else 36
        return torch_footprint(params, train, per_char * data.records, evaluation=evaluation)


@dataclass
class GPTParams(LMParams):
    n_layer: Annotated[int, Ge(1), Le(48)] = doc(4, "transformer blocks")
    n_head: Annotated[int, Ge(1), Le(64)] = doc(4, "attention heads; must divide n_embd")
    n_embd: Annotated[int, Ge(8), Le(4096)] = doc(128, "residual stream width")
    dropout: Dropout = doc(0.0, "dropout while training")
    architecture: ClassVar[tuple[str, ...]] = (
        "n_layer",
        "n_head",
        "n_embd",
        "block_size",
        "dropout",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")

    def network(self, vocab: int, kind: str) -> tuple[int, int, int]:
        """Tied embeddings, positions, 12 C^2 + 2 C per block (no biases), the last norm.
        A block saves about 17 C floats per token for backward (the attention itself is a
        fused kernel); with dropout, attention falls back to T x T matrices per head.
        Evaluation holds about one block's worth per token, and the logits."""
        c, t = self.n_embd, self.block_size
        params = vocab * c + t * c + self.n_layer * (12 * c * c + 2 * c) + c
        block = 17 * c * F32 + (9 * self.n_head * t if self.dropout else 0)
        head = (3 * c + 4 * vocab) * F32  # embeddings, final norm; logits and their softmax
        evaluation = 64 * t * (17 * c + 3 * vocab) * F32
        return params, self.n_layer * block + head, evaluation


@dataclass
class RNNParams(LMParams):
    batch_size: BatchSize = doc(8, "sequences per step (small batches suit CPUs)")
    block_size: BlockSize = doc(64, "tokens per training sequence")
    lr: LearningRate = doc(3e-3, "peak learning rate (AdamW), cosine-decayed to lr/10")
    weight_decay: WeightDecay = doc(0.01, "on weight matrices only")
    n_embd: Annotated[int, Ge(4), Le(4096)] = doc(64, "character embedding width")
    hidden: Annotated[int, Ge(4), Le(8192)] = doc(256, "recurrent state width per layer")
    n_layer: Annotated[int, Ge(1), Le(8)] = doc(2, "stacked recurrent layers")
    dropout: Dropout = doc(0.0, "dropout while training")
    architecture: ClassVar[tuple[str, ...]] = ("n_embd", "hidden", "n_layer", "dropout")

    def network(self, vocab: int, kind: str) -> tuple[int, int, int]:
        """Embedding, gates x H x (input + H) + 2 biases per layer (4 gates for the LSTM, 3
        for the GRU), a linear head. Per token, a training step keeps about 16 H floats of
        each LSTM layer (gates, states, output) and 13 H of a GRU's (8 H saved, but its
        backward allocates more). Evaluation (windows of 256) runs a layer at a time: about
        5 H floats per token for the LSTM, 9 H for the GRU (measured)."""
        gates = 3 if kind == "text-gru" else 4
        e, h = self.n_embd, self.hidden
        layers = sum(
            gates * h * ((e if i == 0 else h) + h) + 2 * gates * h for i in range(self.n_layer)
        )
        params = vocab * e + layers + h * vocab + vocab
        saved = 16 * h if gates == 4 else 13 * h  # per layer
        per_token = (2 * e + self.n_layer * saved + 2 * h + 4 * vocab) * F32
        evaluation = 64 * 256 * ((5 if gates == 4 else 9) * h + 3 * vocab) * F32
        return params, per_token, evaluation


@dataclass
class ImageGenParams(DataParallelParams):
    conditional: bool | None = doc(None, "condition on labels; default: when the data has them")
    latent_dim: Annotated[int, Ge(2), Le(1024)] = doc(16, "size of z")
    epochs: Epochs = doc(10, "passes over the training images")
    batch_size: BatchSize = doc(64, "images per step")
    lr: LearningRate = doc(1e-3, "Adam learning rate")
    max_seconds: Seconds = doc(0.0, "wall-clock budget in seconds, 0 for none")
    seed: Seed = doc(0, "initialisation, shuffling and noise")
    test_fraction: TestFraction = doc(0.2, "uploads: held-out fraction for the final metrics")

    def labels(self, data: DataShape) -> int:
        """Classes the model conditions on (0: unconditional), as the training function picks."""
        return data.classes if self.conditional is not False and data.classes else 0

    def images(self, data: DataShape) -> int:
        """The float32 images in memory, twice: loaders convert them from bytes to floats."""
        h, w = data.image_size
        return 2 * data.records * h * w * F32


@dataclass
class VAEParams(ImageGenParams, FineTunable):
    architecture: ClassVar[tuple[str, ...]] = ("latent_dim", "hidden")
    hidden: Annotated[int, Ge(8), Le(8192)] = doc(256, "fully connected width around z")
    patience: Patience = doc(0, EPOCH_PATIENCE_DOC)

    @classmethod
    def inherited(cls, config: dict[str, Any]) -> dict[str, Any]:
        """The architecture, and conditional exactly when the parent has classes."""
        return {**super().inherited(config), "conditional": bool(config.get("num_classes"))}

    @classmethod
    def unsuited(cls, config: dict[str, Any], meta: dict[str, Any]) -> str | None:
        return images_unsuited(config, meta, int(config.get("num_classes") or 0))

    def footprint(self, data: DataShape, kind: str) -> Footprint:
        """Convs 1 -> 32 -> 64 (4x4, stride 2) and back, a hidden layer on both sides of z,
        16-wide label embeddings if conditional. Per image, backward keeps the feature maps
        and the loss's terms (about 32 floats per pixel) and the fully connected layers'."""
        h, w = data.image_size
        k = self.labels(data)
        cond = 16 if k else 0
        flat = 64 * conv_out(h, w, 2)
        convs = (1 * 32 * 16 + 32) + (32 * 64 * 16 + 64) + (64 * 32 * 16 + 32) + (32 * 16 + 1)
        fcs = (flat + cond) * self.hidden + self.hidden + 2 * (self.hidden * self.latent_dim)
        fcs += 2 * self.latent_dim + (self.latent_dim + cond) * self.hidden + self.hidden
        fcs += self.hidden * flat + flat
        params = convs + fcs + k * 16
        per_image = (32 * h * w + 2 * (self.hidden + flat)) * F32
        return torch_footprint(params, self.batch_size * per_image, self.images(data))


@dataclass
class GANParams(ImageGenParams):
    not_fine_tunable: ClassVar[str] = (
        "its artifact keeps the generator only, and training needs the discriminator too"
    )
    latent_dim: Annotated[int, Ge(2), Le(1024)] = doc(64, "size of z")
    lr: LearningRate = doc(2e-4, "Adam learning rate for both networks (beta1 0.5)")
    channels: Annotated[int, Ge(4), Le(512)] = doc(32, "base width of both networks")
    ema: Annotated[float, Ge(0), Le(0.99999)] = doc(0.0, "> 0: serve an EMA of G's weights")
    ema_warmup: bool = doc(False, "EMA decay min(ema, (1+t)/(10+t)) at step t: forgets the init")
    loss: Literal["bce", "hinge"] = doc(
        "bce", "bce: non-saturating loss with label smoothing; hinge: the SN-GAN hinge loss"
    )
    spectral_norm: bool = doc(False, "spectral norm on D's layers instead of BatchNorm")
    lr_d: Annotated[float, Ge(0), Le(1.0)] = doc(0.0, "D's own Adam learning rate (0: lr)")

    def footprint(self, data: DataShape, kind: str) -> Footprint:
        """G: z (+ a 16-wide label embedding) -> 2C x H/4 x W/4 (BatchNorm) -> C -> 1 with
        4x4 transposed convs; D mirrors it into 256 features, plus a projection and a class
        head if conditional. One step runs G once and D three times, keeping their maps for
        backward (about 4 C floats per pixel per image); the EMA is one more G. The fit
        rescales the images to [-1, 1]: one more copy."""
        h, w = data.image_size
        c, k = self.channels, self.labels(data)
        cond = 16 if k else 0
        grid = 2 * c * conv_out(h, w, 2)
        generator = (self.latent_dim + cond) * grid + 2 * grid + k * 16
        generator += 2 * c * c * 16 + 2 * c + c * 16 + 1
        discriminator = (c * 16 + c) + (c * 2 * c * 16 + 4 * c) + grid * 256 + 256 + 257
        discriminator += k * 256 + (256 * k + k if k else 0)
        per_image = 4 * c * h * w * F32
        extra = F32 * generator if self.ema else 0
        return torch_footprint(
            generator + discriminator,
            self.batch_size * per_image,
            self.images(data) * 3 // 2,
            extra=extra,
        )


@dataclass
class DiffusionParams(DataParallelParams, FineTunable):
    architecture: ClassVar[tuple[str, ...]] = ("blocks", "attention", "dropout")
    conditional: bool | None = doc(None, "condition on labels; default: when the data has them")
    channels: Annotated[int, Ge(8), Le(256)] = doc(
        16, "U-Net base width C (a multiple of 8): C, 2C, 4C channels at H, H/2, H/4"
    )
    blocks: Annotated[int, Ge(1), Le(4)] = doc(1, "residual blocks per U-Net level")
    attention: bool = doc(True, "a self-attention block at H/4")
    dropout: Dropout = doc(0.1, "dropout in the residual blocks while training")
    p_uncond: Annotated[float, Ge(0), Le(1)] = doc(
        0.1, "probability of dropping the label (trains the unguided model for guidance)"
    )
    ema: Annotated[float, Ge(0), Le(0.99999)] = doc(0.999, "> 0: serve an EMA of the weights")
    epochs: Epochs = doc(20, "passes over the training images")
    patience: Patience = doc(0, EPOCH_PATIENCE_DOC)
    batch_size: BatchSize = doc(64, "images per step")
    lr: LearningRate = doc(1e-3, "AdamW learning rate, constant after the warm-up")
    warmup_steps: Annotated[int, Ge(0), Le(1_000_000)] = doc(200, "linear warm-up steps")
    max_seconds: Seconds = doc(0.0, "wall-clock budget in seconds, 0 for none")
    seed: Seed = doc(0, "initialisation, shuffling, time steps and noise")
    test_fraction: TestFraction = doc(0.2, "uploads: held-out fraction for the final metrics")

    @classmethod
    def inherited(cls, config: dict[str, Any]) -> dict[str, Any]:
        """The architecture (C of the C, 2C, 4C widths), conditional when the parent is."""
        found = {**super().inherited(config), "conditional": bool(config.get("num_classes"))}
        widths = (config.get("model_args") or {}).get("channels")
        if widths:
            found["channels"] = widths[0]
        return found

    @classmethod
    def unsuited(cls, config: dict[str, Any], meta: dict[str, Any]) -> str | None:
        return images_unsuited(config, meta, int(config.get("num_classes") or 0))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.channels % 8:
            raise ValueError(f"channels ({self.channels}) must be a multiple of 8")

    def footprint(self, data: DataShape, kind: str) -> Footprint:
        """The U-Net of models/image/diffusion.py (widths C, 2C, 4C), counted layer by layer.
        A training step saves about (34 + 30 x blocks) floats per pixel per image and per C,
        and its backward (GroupNorm, convolutions) allocates about 60 % more; the held-out
        loss runs 500 images at once, about (12 + 4 x blocks) floats each. The EMA is one
        more copy of the weights; the fit rescales the images (one more copy)."""
        h, w = data.image_size
        c0, n = self.channels, self.blocks
        k = data.classes if self.conditional is not False and data.classes else 0
        emb = 4 * c0

        def res(c_in: int, c_out: int) -> int:
            skip = c_in * c_out + c_out if c_in != c_out else 0
            return 2 * c_in + 9 * c_in * c_out + 9 * c_out * c_out + emb * c_out + 5 * c_out + skip

        params = c0 * emb + emb * emb + 2 * emb + (k + 1) * emb + 10 * c0
        skips, c = [c0], c0
        for level, width in enumerate((c0, 2 * c0, 4 * c0)):
            for _ in range(n):
                params, c = params + res(c, width), width
                skips.append(c)
            if level < 2:
                params += 9 * c * c + c
                skips.append(c)
        params += 2 * res(c, c) + (4 * c * c + 6 * c if self.attention else 0)
        for level, width in reversed(list(enumerate((c0, 2 * c0, 4 * c0)))):
            for _ in range(n + 1):
                params, c = params + res(c + skips.pop(), width), width
            if level > 0:
                params += 9 * c * c + c
        params += 2 * c + 9 * c + 1
        pixels = c0 * h * w * F32
        images = 2 * data.records * h * w * F32
        return torch_footprint(
            params,
            self.batch_size * (55 + 48 * n) * pixels,
            images * 3 // 2,
            evaluation=500 * (12 + 4 * n) * pixels,
            extra=F32 * params if self.ema else 0,
        )


@dataclass
class TextPipelineParams:
    not_fine_tunable: ClassVar[str] = "a scikit-learn pipeline is fitted from scratch on its data"
    word_ngram_max: Annotated[int, Ge(1), Le(3)] = doc(2, "word n-grams 1..this")
    char_ngrams: bool = doc(True, "add char_wb 2-5-grams (catches misspellings and stems)")
    min_df: Annotated[int, Ge(1), Le(100)] = doc(2, "drop n-grams seen in fewer documents")
    seed: Seed = doc(0, "estimator randomness")
    test_fraction: TestFraction = doc(0.2, "uploads: stratified held-out fraction")

    def estimator(self) -> Any:
        """The unfitted scikit-learn estimator these params describe (the kind's own)."""
        raise NotImplementedError

    def features(self, data: DataShape) -> int:
        """TF-IDF columns: about 0.4 n-grams per character of text seen once, fewer as
        min_df rises (measured on the sentiment set; an overestimate for big corpora)."""
        return max(1, int(0.4 * data.records * data.mean_chars / self.min_df))

    def model(self, features: int, outputs: int) -> tuple[int, int]:
        """(parameters, bytes while fitting) of the estimator on `features` columns."""
        raise NotImplementedError

    def footprint(self, data: DataShape, kind: str) -> Footprint:
        """The vectorisers' vocabularies and the sparse matrices (about 3 non-zeros per
        character, float64 + int32 index, a few copies), then the estimator's arrays."""
        chars = data.records * data.mean_chars
        outputs = 1 if data.classes <= 2 else data.classes  # binary: one column
        params, fitting = self.model(self.features(data), outputs)
        parts = {"model": fitting, "data": int(150 * chars), "runtime": RUNTIME}
        return Footprint(params, sum(parts.values()), parts)


@dataclass
class NBParams(TextPipelineParams):
    alpha: Annotated[float, Gt(0), Le(100)] = doc(0.3, "additive smoothing")

    def estimator(self) -> Any:
        from sklearn.naive_bayes import MultinomialNB

        return MultinomialNB(alpha=self.alpha)  # deterministic, seed unused

    def model(self, features: int, outputs: int) -> tuple[int, int]:
        params = max(outputs, 2) * features  # a count and a log-probability per class
        return params, 4 * 8 * params


@dataclass
class LogRegParams(TextPipelineParams):
    C: Annotated[float, Gt(0), Le(1e6)] = doc(10.0, "inverse regularisation strength")

    def estimator(self) -> Any:
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=self.C, max_iter=2000, random_state=self.seed)

    def model(self, features: int, outputs: int) -> tuple[int, int]:
        params = outputs * (features + 1)
        return params, 24 * 8 * params  # L-BFGS keeps 10 pairs of parameter-sized vectors


@dataclass
class MLPParams(TextPipelineParams):
    hidden: Annotated[int, Ge(1), Le(4096)] = doc(64, "hidden units")
    alpha: Annotated[float, Ge(0), Le(10)] = doc(1e-3, "L2 penalty")
    max_iter: Annotated[int, Ge(1), Le(1000)] = doc(30, "epochs")

    def estimator(self) -> Any:
        from sklearn.neural_network import MLPClassifier

        # a few epochs are enough: sparse TF-IDF inputs are nearly separable and MLPs overfit
        return MLPClassifier(
            hidden_layer_sizes=(self.hidden,),
            alpha=self.alpha,
            max_iter=self.max_iter,
            random_state=self.seed,
        )

    def model(self, features: int, outputs: int) -> tuple[int, int]:
        """float64 weights and gradients, and Adam's moments and update, each computed into
        new arrays before the old ones are dropped: about 10 copies at the peak (measured)."""
        params = features * self.hidden + self.hidden + self.hidden * outputs + outputs
        return params, 10 * 8 * params


@dataclass
class TextRNNParams(DataParallelParams):
    not_fine_tunable: ClassVar[str] = "its vocabulary is built from its own training texts"
    level: Literal["char", "word"] = doc("word", "tokens: lower-cased words or characters")
    embed: Annotated[int, Ge(4), Le(1024)] = doc(128, "token embedding width")
    hidden: Annotated[int, Ge(4), Le(2048)] = doc(128, "GRU state width per direction")
    num_layers: Annotated[int, Ge(1), Le(4)] = doc(1, "stacked GRU layers")
    bidirectional: bool = doc(True, "read both directions")
    dropout: Dropout = doc(0.3, "dropout while training")
    max_len: Annotated[int, Ge(4), Le(4096)] = doc(256, "tokens kept per input")
    epochs: Epochs = doc(12, "passes over the training texts")
    patience: Patience = doc(0, EPOCH_PATIENCE_DOC)
    batch_size: BatchSize = doc(32, "texts per step")
    lr: LearningRate = doc(3e-3, "AdamW learning rate")
    weight_decay: WeightDecay = doc(1e-2, "AdamW weight decay")
    seed: Seed = doc(0, "initialisation and shuffling")
    test_fraction: TestFraction = doc(0.2, "uploads: stratified held-out fraction")

    def footprint(self, data: DataShape, kind: str) -> Footprint:
        """Vocabulary (tokens seen twice): Heaps' law for words, 8 N^0.6 of N tokens (about
        2x the sentiment set's), at most 1,000 characters; never above N / 2. The GRU runs on
        packed sequences (real tokens only) in batches of similar lengths: the longest batch
        averages about twice the mean length (up to max_len). Per token and direction, the
        GRU keeps its gates and states (about 8 H floats). The texts are held as id lists (a
        word id is a Python int of its own) and a padded int64 matrix."""
        chars = data.records * data.mean_chars
        per_token = 1 if self.level == "char" else 4  # characters; a word is about 4.5
        tokens = chars / per_token
        seen = 1_000 if self.level == "char" else 8 * tokens**0.6
        vocab = int(max(1, min(tokens / 2, seen))) + 2
        dirs = 2 if self.bidirectional else 1
        h, e = self.hidden, self.embed
        gru = sum(
            dirs * (3 * h * ((e if i == 0 else dirs * h) + h) + 6 * h)
            for i in range(self.num_layers)
        )
        width = dirs * h
        params = vocab * e + gru + 2 * width * max(data.classes, 2) + max(data.classes, 2)
        mean = data.mean_chars / per_token
        length = min(self.max_len, max(8, math.ceil(2 * mean)))
        per_text = length * (2 * e + self.num_layers * dirs * 8 * h + 4 * width) * F32
        ids = tokens * 36 + data.records * (min(self.max_len, 8 * mean) * 8 + 64)
        return torch_footprint(params, self.batch_size * per_text, int(ids))


@dataclass
class CNNParams(DataParallelParams, FineTunable):
    architecture: ClassVar[tuple[str, ...]] = ("hidden", "dropout")
    epochs: Epochs = doc(30, "passes over the training images")
    patience: Patience = doc(0, EPOCH_PATIENCE_DOC)
    batch_size: BatchSize = doc(64, "images per step")
    lr: LearningRate = doc(3e-3, "AdamW learning rate, cosine-decayed")
    weight_decay: WeightDecay = doc(1e-2, "AdamW weight decay")
    shift: Annotated[int, Ge(0), Le(4)] = doc(0, "random pixel shifts (augmentation)")
    hidden: Annotated[int, Ge(4), Le(4096)] = doc(128, "fully connected width")
    dropout: Dropout = doc(0.25, "dropout while training")
    seed: Seed = doc(0, "initialisation, shuffling and augmentation")
    test_fraction: TestFraction = doc(0.2, "uploads: stratified held-out fraction")

    @classmethod
    def unsuited(cls, config: dict[str, Any], meta: dict[str, Any]) -> str | None:
        classes = int((config.get("model_args") or {}).get("num_classes") or 0)
        return images_unsuited(config, meta, classes)

    def footprint(self, data: DataShape, kind: str) -> Footprint:
        """Two stages of two 3x3 convs (32, then 64 channels) and a 2x2 max-pool each, then
        fc `hidden` and the classes. Backward keeps about 150 floats per input pixel per
        image (feature maps, the pools' int64 indices); evaluation runs 512 images at once,
        about 72 floats per pixel each."""
        h, w = data.image_size
        k = max(data.classes, 2)
        flat = 64 * conv_out(h, w, 2)
        convs = (1 * 32 * 9 + 32) + (32 * 32 * 9 + 32) + (32 * 64 * 9 + 64) + (64 * 64 * 9 + 64)
        params = convs + flat * self.hidden + self.hidden + self.hidden * k + k
        per_image = (150 * h * w + 2 * self.hidden) * F32
        evaluation = 512 * 72 * h * w * F32
        images = 2 * data.records * h * w * F32  # as loaded: bytes, then floats
        return torch_footprint(params, self.batch_size * per_image, images, evaluation=evaluation)


# -----------------------------------------------------------------------------
# the registry of kinds


def _resolve(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class Kind:
    name: str
    task: str  # classification | text-generation | image-generation
    data: str  # the dataset kind it trains on: text | labelled-text | images
    params: type  # the parameter dataclass, the only home of its defaults and bounds
    serve: str  # "module:Class" whose from_artifact(config, payload, device) serves it
    train: str  # "module:function" (kind, train, test, params, hooks, device) -> TrainResult
    description: str
    needs_labels: bool = False  # images must carry labels
    size_multiple: int = 1  # image sides must be divisible by this
    torch: bool = True  # trained by a torch loop; False: one fit (scikit-learn, n-gram counts)

    def serving_class(self) -> Any:
        return _resolve(self.serve)

    def trainer(self) -> Any:
        return _resolve(self.train)


_LM = "models.training.lm"
_IMAGE = "models.training.image"

KINDS: dict[str, Kind] = {
    k.name: k
    for k in [
        Kind(
            "text-ngram",
            "text-generation",
            "text",
            NGramParams,
            "models.text.ngram:NGramLanguageModel",
            f"{_LM}:train_ngram",
            "Character n-gram language model, interpolated Kneser-Ney.",
            torch=False,
        ),
        Kind(
            "text-lstm",
            "text-generation",
            "text",
            RNNParams,
            "models.text.rnn:RNNLanguageModel",
            f"{_LM}:train_rnn",
            "Character-level LSTM language model.",
        ),
        Kind(
            "text-gru",
            "text-generation",
            "text",
            RNNParams,
            "models.text.rnn:RNNLanguageModel",
            f"{_LM}:train_rnn",
            "Character-level GRU language model.",
        ),
        Kind(
            "text-gpt",
            "text-generation",
            "text",
            GPTParams,
            "models.text.gpt:GPTLanguageModel",
            f"{_LM}:train_gpt",
            "Character-level GPT (decoder-only transformer).",
        ),
        Kind(
            "image-vae",
            "image-generation",
            "images",
            VAEParams,
            "models.image.vae:VAEImageGenerator",
            f"{_IMAGE}:train_image_vae",
            "Convolutional VAE; class-conditional with conditional=true.",
            size_multiple=4,
        ),
        Kind(
            "image-gan",
            "image-generation",
            "images",
            GANParams,
            "models.image.gan:GANImageGenerator",
            f"{_IMAGE}:train_image_gan",
            "DCGAN; class-conditional (AC-GAN) with conditional=true.",
            size_multiple=4,
        ),
        Kind(
            "image-diffusion",
            "image-generation",
            "images",
            DiffusionParams,
            "models.image.diffusion:DiffusionImageGenerator",
            "models.training.diffusion:train_image_diffusion",
            "Small U-Net DDPM (v-prediction), DDIM sampling; classifier-free guidance when "
            "conditional.",
            size_multiple=4,
        ),
        Kind(
            "classify-nb",
            "classification",
            "labelled-text",
            NBParams,
            "models.classify.text_pipeline:SklearnTextClassifier",
            "models.training.text_pipeline:train_text_pipeline",
            "TF-IDF word + char n-grams, multinomial naive Bayes.",
            torch=False,
        ),
        Kind(
            "classify-logreg",
            "classification",
            "labelled-text",
            LogRegParams,
            "models.classify.text_pipeline:SklearnTextClassifier",
            "models.training.text_pipeline:train_text_pipeline",
            "TF-IDF word + char n-grams, logistic regression.",
            torch=False,
        ),
        Kind(
            "classify-mlp",
            "classification",
            "labelled-text",
            MLPParams,
            "models.classify.text_pipeline:SklearnTextClassifier",
            "models.training.text_pipeline:train_text_pipeline",
            "TF-IDF word + char n-grams, one-hidden-layer MLP.",
            torch=False,
        ),
        Kind(
            "classify-rnn",
            "classification",
            "labelled-text",
            TextRNNParams,
            "models.classify.text_rnn:TorchTextClassifier",
            "models.training.text_rnn:train_text_rnn",
            "Bidirectional GRU over characters or words.",
        ),
        Kind(
            "classify-cnn",
            "classification",
            "images",
            CNNParams,
            "models.classify.cnn:TorchImageClassifier",
            "models.training.cnn:train_cnn",
            "Small convolutional net for grayscale images.",
            needs_labels=True,
            size_multiple=4,
        ),
    ]
}
