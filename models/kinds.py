"""Every kind of model the service can train: its parameters, task and data, with no torch.

The parameter dataclasses are the single source of names, defaults and bounds
(annotated_types metadata): the API builds its request schemas and GET /train/kinds from
them, and library users pass them to the training functions. `KINDS` is the one table keyed
by kind: each row names its params, task, data, the class that serves it and the function
that trains it, the last two as lazy "module:attr" strings. This module imports no torch,
scikit-learn or Ray, so the API process can validate jobs without loading them.
"""

import importlib
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

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


TokenizerKind = Literal["char", "bpe"]
VocabSize = Annotated[int, Ge(257), Le(65_536)]
TOKENIZER_DOC = "char: one token per character; bpe: byte-level BPE (any UTF-8 text encodes)"
VOCAB_DOC = "bpe: tokens learnt from the training split, the 256 bytes included"


@dataclass
class ChatParams:
    """How /v1/chat/completions turns messages into a prompt for the trained model."""

    chat_template: Annotated[str, MaxLen(8000)] = doc(
        "", "Jinja chat template (messages, add_generation_prompt); empty: the default"
    )
    chat_stop: Annotated[str, MinLen(1), MaxLen(64)] = doc("\n\n", "where a chat reply ends")


@dataclass
class NGramParams(ChatParams):
    order: Annotated[int, Ge(2), Le(12)] = doc(7, "longest n-gram (context = order - 1 tokens)")
    tokenizer: TokenizerKind = doc("char", TOKENIZER_DOC)
    vocab_size: VocabSize = doc(512, VOCAB_DOC)
    test_fraction: TestFraction = doc(0.1, "uploads: the last fraction of characters validates")


@dataclass
class LMParams(ChatParams):
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
    seed: Seed = doc(1337, "initialisation and batch sampling")
    test_fraction: TestFraction = doc(0.1, "uploads: the last fraction of characters validates")
    tokenizer: TokenizerKind = doc("char", TOKENIZER_DOC)
    vocab_size: VocabSize = doc(2048, VOCAB_DOC)


@dataclass
class GPTParams(LMParams):
    n_layer: Annotated[int, Ge(1), Le(48)] = doc(4, "transformer blocks")
    n_head: Annotated[int, Ge(1), Le(64)] = doc(4, "attention heads; must divide n_embd")
    n_embd: Annotated[int, Ge(8), Le(4096)] = doc(128, "residual stream width")
    dropout: Dropout = doc(0.0, "dropout while training")

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")


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
class DiffusionParams:
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
    batch_size: BatchSize = doc(64, "images per step")
    lr: LearningRate = doc(1e-3, "AdamW learning rate, constant after the warm-up")
    warmup_steps: Annotated[int, Ge(0), Le(1_000_000)] = doc(200, "linear warm-up steps")
    max_seconds: Seconds = doc(0.0, "wall-clock budget in seconds, 0 for none")
    seed: Seed = doc(0, "initialisation, shuffling, time steps and noise")
    test_fraction: TestFraction = doc(0.2, "uploads: held-out fraction for the final metrics")

    def __post_init__(self) -> None:
        if self.channels % 8:
            raise ValueError(f"channels ({self.channels}) must be a multiple of 8")


@dataclass
class TextPipelineParams:
    word_ngram_max: Annotated[int, Ge(1), Le(3)] = doc(2, "word n-grams 1..this")
    char_ngrams: bool = doc(True, "add char_wb 2-5-grams (catches misspellings and stems)")
    min_df: Annotated[int, Ge(1), Le(100)] = doc(2, "drop n-grams seen in fewer documents")
    seed: Seed = doc(0, "estimator randomness")
    test_fraction: TestFraction = doc(0.2, "uploads: stratified held-out fraction")

    def estimator(self) -> Any:
        """The unfitted scikit-learn estimator these params describe (the kind's own)."""
        raise NotImplementedError


@dataclass
class NBParams(TextPipelineParams):
    alpha: Annotated[float, Gt(0), Le(100)] = doc(0.3, "additive smoothing")

    def estimator(self) -> Any:
        from sklearn.naive_bayes import MultinomialNB

        return MultinomialNB(alpha=self.alpha)  # deterministic, seed unused


@dataclass
class LogRegParams(TextPipelineParams):
    C: Annotated[float, Gt(0), Le(1e6)] = doc(10.0, "inverse regularisation strength")

    def estimator(self) -> Any:
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=self.C, max_iter=2000, random_state=self.seed)


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


@dataclass
class TextRNNParams:
    level: Literal["char", "word"] = doc("word", "tokens: lower-cased words or characters")
    embed: Annotated[int, Ge(4), Le(1024)] = doc(128, "token embedding width")
    hidden: Annotated[int, Ge(4), Le(2048)] = doc(128, "GRU state width per direction")
    num_layers: Annotated[int, Ge(1), Le(4)] = doc(1, "stacked GRU layers")
    bidirectional: bool = doc(True, "read both directions")
    dropout: Dropout = doc(0.3, "dropout while training")
    max_len: Annotated[int, Ge(4), Le(4096)] = doc(256, "tokens kept per input")
    epochs: Epochs = doc(12, "passes over the training texts")
    batch_size: BatchSize = doc(32, "texts per step")
    lr: LearningRate = doc(3e-3, "AdamW learning rate")
    weight_decay: WeightDecay = doc(1e-2, "AdamW weight decay")
    seed: Seed = doc(0, "initialisation and shuffling")
    test_fraction: TestFraction = doc(0.2, "uploads: stratified held-out fraction")


@dataclass
class CNNParams:
    epochs: Epochs = doc(30, "passes over the training images")
    batch_size: BatchSize = doc(64, "images per step")
    lr: LearningRate = doc(3e-3, "AdamW learning rate, cosine-decayed")
    weight_decay: WeightDecay = doc(1e-2, "AdamW weight decay")
    shift: Annotated[int, Ge(0), Le(4)] = doc(0, "random pixel shifts (augmentation)")
    hidden: Annotated[int, Ge(4), Le(4096)] = doc(128, "fully connected width")
    dropout: Dropout = doc(0.25, "dropout while training")
    seed: Seed = doc(0, "initialisation, shuffling and augmentation")
    test_fraction: TestFraction = doc(0.2, "uploads: stratified held-out fraction")


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
        ),
        Kind(
            "classify-logreg",
            "classification",
            "labelled-text",
            LogRegParams,
            "models.classify.text_pipeline:SklearnTextClassifier",
            "models.training.text_pipeline:train_text_pipeline",
            "TF-IDF word + char n-grams, logistic regression.",
        ),
        Kind(
            "classify-mlp",
            "classification",
            "labelled-text",
            MLPParams,
            "models.classify.text_pipeline:SklearnTextClassifier",
            "models.training.text_pipeline:train_text_pipeline",
            "TF-IDF word + char n-grams, one-hidden-layer MLP.",
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
