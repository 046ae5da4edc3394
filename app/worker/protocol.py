"""Every message between the API and its workers, as named types.

A local worker process gets and sends them over its two pipes; a Ray actor takes them as call
arguments and answers with them. Both transports pickle them (inputs and outputs hold numpy
arrays), and msgspec Structs stay cheap to build and to pickle on the per-token path.

    API -> worker    WorkerConfig (at start), then Infer | Generate | Cancel | Load | Unload | Stop
    worker -> API    Ready | Loaded | BatchDone | Tokens | Previews | Failed
    Ray replies      InferReply, EventsReply (an actor answers calls instead of streaming)

Plain data only: the API process imports this module, and it must not pull in torch.
"""

from __future__ import annotations

from typing import Any

import msgspec


class ModelSpec(msgspec.Struct, frozen=True):
    """What a worker needs to load one model version: cheap to send to a process.

    A committed default, or an artifact of the local store, is a directory on this machine
    (`artifact_dir`); one in object storage is a URL (`artifact_url`, with no directory)
    that the worker fetches into its own cache and verifies against `sha256`.
    """

    name: str
    version: int
    kind: str
    task: str
    artifact_dir: str
    sha256: str
    config: dict[str, Any] = msgspec.field(default_factory=dict)
    artifact_url: str = ""
    size_bytes: int = 0  # the artifact's, what the pool counts against its memory budget

    @property
    def key(self) -> str:
        """How a version loaded beside the active one is named to its workers."""
        return f"{self.name}@{self.version}"


class TokenInfo(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """One token with its log-probability, for `logprobs`, `echo` and scoring."""

    id: int
    text: str  # the token's bytes as text (a split UTF-8 character shows as U+FFFD)
    logprob: float | None  # None for a text's first token: nothing predicts it
    offset: int  # its first character in the prompt (prompt tokens) or the completion
    top: list[tuple[int, str, float]] | None = None  # the k most likely (id, text, logprob)


class TokenEvent(msgspec.Struct, frozen=True, gc=False):
    """New text of one choice of a generation request, one per decoding step."""

    request_id: int
    index: int  # the choice within its request (n > 1)
    text: str  # may be empty: text that could still become a stop string is held back
    finish_reason: str | None  # "stop" or "length" on a choice's last event
    completion_tokens: int  # tokens of this choice so far
    logprob: float | None  # of the token sampled at this step (None: no token, echo only)
    token: TokenInfo | None = None  # with `logprobs`: the sampled token and its alternatives
    prompt: list[TokenInfo] | None = None  # with `echo`, on the first event: the prompt's tokens
    prompt_tokens: int = 0  # on the first event: the prompt's length in tokens


# -- API -> worker ---------------------------------------------------------------------------


class WorkerConfig(msgspec.Struct, frozen=True):
    """How to start a worker: its slot, device and threads, what it serves at start, and its
    batching limits."""

    worker_id: int
    device: str  # "cpu", "cuda" or "cuda:N"
    threads: int
    specs: list[ModelSpec]
    max_batch_size: int
    max_wait_ms: float
    max_running: int  # sequences a language model decodes together
    prefill_tokens: int = 0  # prompt tokens a language model prefills per step; 0: all
    artifact_cache_dir: str = ""  # where artifacts fetched by URL are kept (an absolute path)
    storage_options: dict[str, Any] = msgspec.field(default_factory=dict)  # fsspec's, for URLs


class Infer(msgspec.Struct, frozen=True, gc=False):
    """`rows` inputs for a dynamic batch: texts, an (N, H, W) array, image-sampling params, or
    a VAE's EncodeImages / Interpolate."""

    request_id: int
    model: str
    inputs: Any
    rows: int


class EncodeImages(msgspec.Struct, frozen=True, gc=False):
    """Infer inputs for a VAE's encoder: images (N, H, W) float32 in [0, 1] to latent means and
    log-variances and negative ELBOs, with `reconstruct` their decoded means too. `labels`
    (N,) for a conditional VAE, -1 where the best-fitting class is to be found."""

    images: Any
    labels: list[int] | None = None
    reconstruct: bool = False


class Interpolate(msgspec.Struct, frozen=True, gc=False):
    """Infer inputs for a VAE: `steps` images decoded along the latent line between two ends,
    two images (2, H, W) encoded to their means, or the noise of two seeds (as
    /generate/image draws it). `label` is the class a conditional VAE decodes (and encodes
    with); None: the first end's (found, or drawn from its seed)."""

    steps: int
    images: Any = None
    seeds: tuple[int, int] | None = None
    label: int | None = None


class Encoded(msgspec.Struct, frozen=True, gc=False):
    """What EncodeImages answers: float32 mean, logvar (N, D) and neg_elbo (N,); the labels
    used (conditional VAEs); uint8 reconstructions (N, H, W) when asked for."""

    mean: Any
    logvar: Any
    neg_elbo: Any
    labels: list[int] | None = None
    pixels: Any = None


class Interpolated(msgspec.Struct, frozen=True, gc=False):
    """What Interpolate answers: uint8 images (steps, H, W) and the class decoded."""

    pixels: Any
    label: int | None = None


class Generate(msgspec.Struct, frozen=True, gc=False):
    """`n` sampled continuations of `prompt` (text, or token ids); `params` are
    SamplingParams' fields."""

    request_id: int
    model: str
    prompt: str | list[int]
    params: dict[str, Any]
    n: int


class Cancel(msgspec.Struct, frozen=True, gc=False):
    """Stop a generation: its client went away or timed out."""

    request_id: int


class Load(msgspec.Struct, frozen=True):
    """Hot-load `spec` beside what the worker serves, then switch to it; with `side`, serve it
    beside the active version as `spec.key` (a version or alias named in a request, a canary).
    Activating a version loaded beside promotes it without loading it again."""

    request_id: int
    spec: ModelSpec
    side: bool = False


class Unload(msgspec.Struct, frozen=True):
    """Drop a version served beside the active one (`name@version`): the pool evicts it."""

    key: str


class Stop(msgspec.Struct, frozen=True):
    """Finish the current step and exit."""


ToWorker = Infer | Generate | Cancel | Load | Unload | Stop


# -- worker -> API ---------------------------------------------------------------------------


class Ready(msgspec.Struct, frozen=True):
    """The worker loaded what it was started with and serves from now on."""

    pid: int
    models: dict[str, int]  # name -> loaded version
    load_errors: dict[str, str]  # name -> why it did not load
    load_seconds: dict[str, float]


class Loaded(msgspec.Struct, frozen=True):
    """Answer to `Load`: `error` is None once the worker serves the new version."""

    request_id: int
    name: str
    version: int
    error: str | None
    side: bool = False  # loaded beside the active version, as `name@version`


class BatchDone(msgspec.Struct, frozen=True, gc=False):
    """One dynamic batch's outputs, one per request: one message per batch, not per request."""

    model: str
    rows: int
    seconds: float
    results: list[tuple[int, Any]]  # (request id, output)


class Tokens(msgspec.Struct, frozen=True, gc=False):
    """One decoding step of a model: the events of every sequence that advanced."""

    model: str
    running: int  # sequences in the step, for the batch-size metric
    events: list[TokenEvent]


class Preview(msgspec.Struct, frozen=True, gc=False):
    """A diffusion request's images part-way, for streaming: uint8 (n, H, W) after `step` of
    its `steps` denoising steps."""

    request_id: int
    step: int
    steps: int
    pixels: Any


class Previews(msgspec.Struct, frozen=True, gc=False):
    """The previews due after one denoising step (requests that asked for `preview_every`)."""

    previews: list[Preview]


class Failure(msgspec.Struct, frozen=True, gc=False):
    """Why a request failed in the worker; out of memory is worth a retry, the rest is a bug."""

    request_id: int
    reason: str
    out_of_memory: bool = False


class Failed(msgspec.Struct, frozen=True, gc=False):
    failures: list[Failure]


FromWorker = Ready | Loaded | BatchDone | Tokens | Previews | Failed


# -- Ray actor replies -----------------------------------------------------------------------


class InferReply(msgspec.Struct, frozen=True, gc=False):
    """What a Ray actor's `infer` answers. Exactly one request of each batch carries the
    batch's rows (the others 0), so the API records each batch size once."""

    output: Any
    batch_rows: int
    failure: Failure | None = None


class EventsReply(msgspec.Struct, frozen=True, gc=False):
    """The events of a generation since the API last asked, and the decoding steps' sizes."""

    events: list[TokenEvent]
    steps: list[int]
    failure: Failure | None = None
