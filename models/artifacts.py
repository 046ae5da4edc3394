"""Model artifacts: a directory holding config.json, one payload file and a README.md model card.

    <artifact>/config.json          name, kind, task, input, labels, image_size, model_args,
                                    tokenizer, metrics, ...
    <artifact>/weights.safetensors  torch kinds
    <artifact>/model.skops          scikit-learn kinds
    <artifact>/README.md            the model card

Every artifact is read, verified and parsed by the one path here, `read_artifact`, and built
by `load_artifact` through the serving class its kind names in models/kinds.py. Nothing here
unpickles: torch weights are safetensors (plain tensors, no code), scikit-learn pipelines skops
files whose every type must be on the family's allowlist. The digest covers config + payload
but not the card, so a card can be rewritten without the model's identity changing. Loading
reads the payload bytes once and parses those same bytes, so a file swapped between the digest
check and the parse cannot slip through.

Identity (digests, reading) needs only the standard library, so the API process can register
and verify artifacts without torch; saving and building import torch and skops when called.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from models.kinds import KINDS

if TYPE_CHECKING:
    import torch

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
SKOPS_FILE = "model.skops"
CARD_FILE = "README.md"
PAYLOAD_FILES = (CONFIG_FILE, WEIGHTS_FILE, SKOPS_FILE)  # what the digest covers, if present
log = logging.getLogger("genserve.storage")
T = TypeVar("T")


class ArtifactError(Exception):
    """An artifact is missing, altered, malformed or not trusted; it was not loaded.

    The message names the problem only, never the artifact's path: messages reach clients,
    and a path tells them the server's layout. `path` keeps it for the caller's log.
    """

    def __init__(self, problem: str, path: Path | str | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.path = path


# An absolute path inside a message: a slash that does not follow a word, a dot, a colon or
# another slash (so "1/2", "text/plain" and URLs stay), then path segments.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s/'\"`,;:()\[\]{}]+/)*[^\s/'\"`,;:()\[\]{}]+")


def without_paths(text: str, *paths: Path | str) -> str:
    """`text` with every absolute path cut to its last part (`/srv/x/config.json` becomes
    `config.json`), the known `paths` first (they may hold spaces the pattern would miss).

    For messages that leave the server; the log keeps the full paths.
    """
    for path in sorted({str(p) for p in paths if p}, key=len, reverse=True):
        text = text.replace(path + os.sep, "").replace(path, Path(path).name)
    return _ABSOLUTE_PATH.sub(lambda m: m.group(0).rstrip("/").rsplit("/", 1)[-1], text)


def describe_error(exc: BaseException, *paths: Path | str) -> str:
    """`Type: message` of `exc`, without any path: what a client may read about it."""
    return without_paths(f"{type(exc).__name__}: {exc}", *paths)


# -----------------------------------------------------------------------------
# identity: standard library only


def digest_payload(payload: dict[str, bytes]) -> tuple[str, int]:
    """sha256 over (name, length, bytes) of each payload file in name order, and total size."""
    h = hashlib.sha256()
    size = 0
    for name in sorted(payload):
        data = payload[name]
        h.update(name.encode() + b"\0" + len(data).to_bytes(8, "little"))  # unambiguous framing
        h.update(data)
        size += len(data)
    return h.hexdigest(), size


def read_payload(path: Path) -> dict[str, bytes]:
    path = Path(path)
    if not (path / CONFIG_FILE).is_file():
        raise ArtifactError(f"no {CONFIG_FILE}, not a model artifact", path)
    try:
        payload = {
            name: (path / name).read_bytes() for name in PAYLOAD_FILES if (path / name).is_file()
        }
    except OSError as e:  # its message holds the file's path: keep only the reason
        raise ArtifactError(f"cannot read {Path(e.filename or '').name}: {e.strerror}", path) from e
    if len(payload) != 2:
        raise ArtifactError(f"expected {CONFIG_FILE} and one of {WEIGHTS_FILE}, {SKOPS_FILE}", path)
    return payload


def artifact_digest(path: Path) -> tuple[str, int]:
    """(sha256 hex, total bytes) of config.json + weights/skops file; the card is excluded."""
    return digest_payload(read_payload(path))


def read_artifact(
    path: Path, expected_sha256: str | None = None
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """(config, payload) of a verified artifact: the one read, verify and parse path."""
    path = Path(path)
    payload = read_payload(path)
    if expected_sha256 is not None:
        actual, _ = digest_payload(payload)
        if actual != expected_sha256.lower():
            raise ArtifactError(f"sha256 {actual} does not match expected {expected_sha256}", path)
    try:
        config = json.loads(payload[CONFIG_FILE])
    except ValueError as e:
        raise ArtifactError(f"{CONFIG_FILE} is not valid JSON: {e}", path) from e
    if not isinstance(config, dict):
        raise ArtifactError(f"{CONFIG_FILE} must hold a JSON object", path)
    return config, payload


# -----------------------------------------------------------------------------
# building a served model: the kind's serving class, imported on use


def load_artifact(
    path: Path,
    *,
    expected_sha256: str | None = None,
    device: str = "cpu",
    task: str | None = None,
) -> Any:
    """Reads and verifies an artifact, then builds it with its kind's serving class.

    `task` (text-generation, image-generation, classification) refuses an artifact of another
    task. Anything that goes wrong while building is an ArtifactError whose `path` is the
    artifact's (its message names no path).
    """
    import torch

    config, payload = read_artifact(path, expected_sha256)
    kind = KINDS.get(config.get("kind"))  # type: ignore[arg-type]
    if kind is None:
        raise ArtifactError(
            f"unknown kind {config.get('kind')!r}, expected one of {sorted(KINDS)}", path
        )
    declared = config.get("task", kind.task)
    if declared != kind.task or (task is not None and kind.task != task):
        raise ArtifactError(f"task {declared!r} of {kind.name} is not {task!r}", path)
    try:
        served = kind.serving_class().from_artifact(config, payload, torch.device(device))
    except ArtifactError as e:
        raise ArtifactError(without_paths(e.problem, path), path) from e
    except Exception as e:  # bad model_args, unparsable or ill-fitting weights
        problem = without_paths(f"cannot build {kind.name} from its artifact: {e}", path)
        raise ArtifactError(problem, path) from e
    served.name = config.get("name", "")
    return served


def load_module(module_class: type, config_class: type, config: dict, payload: dict) -> Any:
    """An nn.Module rebuilt from config["model_args"] with its safetensors weights, strictly."""
    from safetensors.torch import load as load_safetensors

    if WEIGHTS_FILE not in payload:
        raise ArtifactError(f"{config.get('kind')} needs {WEIGHTS_FILE}")
    try:
        model_config = config_class(**config.get("model_args", {}))
    except (TypeError, ValueError) as e:
        raise ArtifactError(f"bad model_args for {config.get('kind')}: {e}") from e
    try:
        state = load_safetensors(payload[WEIGHTS_FILE])  # a JSON header + raw tensors, no code
    except Exception as e:
        raise ArtifactError(f"{WEIGHTS_FILE} is not a valid safetensors file: {e}") from e
    module = module_class(model_config)
    try:
        module.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError) as e:
        raise ArtifactError(f"weights do not fit {config.get('kind')} {model_config}: {e}") from e
    return module.eval()


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


def load_skops(payload: dict[str, bytes], trusted: list[str]) -> Any:
    """A scikit-learn object from model.skops, refused unless every type in it is `trusted`."""
    import skops.io

    if SKOPS_FILE not in payload:
        raise ArtifactError(f"needs {SKOPS_FILE}")
    data = payload[SKOPS_FILE]
    # two independent checks: our own walk over every type, and skops's audit inside load
    # (a separate get_untrusted_types pass would build skops's tree a third time: 0.6 s of
    # the sentiment model's 1.8 s load)
    untrusted = skops_types(data) - set(trusted)
    if untrusted:
        raise ArtifactError(f"{SKOPS_FILE} contains untrusted types: {sorted(untrusted)}")
    try:
        estimator = skops.io.load(io.BytesIO(data), trusted=trusted)
    except skops.io.exceptions.UntrustedTypesFoundException as e:
        raise ArtifactError(f"{SKOPS_FILE} contains untrusted types: {e}") from e
    except Exception as e:
        raise ArtifactError(f"cannot load {SKOPS_FILE}: {e}") from e
    try:
        _expand_vocabularies(estimator)
    except (TypeError, ValueError) as e:
        raise ArtifactError(f"bad vocabulary in {SKOPS_FILE}: {e}") from e
    return estimator


# A text vectorizer's `vocabulary_` (term -> column) is one skops node per term: loading the
# sentiment model's 22,700 of them took 1.3 s. Saved as one array of terms in column order it
# is one .npy file in the zip, and the dict is rebuilt on load.
TERMS_ATTR = "genserve_terms_"


def _vectorizers(estimator: Any) -> list[Any]:
    """`estimator` and every estimator nested in it that has a vocabulary."""
    parts = [estimator]
    if hasattr(estimator, "get_params"):
        parts += list(estimator.get_params(deep=True).values())
    return [p for p in parts if isinstance(getattr(p, "vocabulary_", None), dict)
            or hasattr(p, TERMS_ATTR)]  # fmt: skip


def _compact_vocabularies(estimator: Any) -> list[tuple[Any, dict[str, int]]]:
    """Replaces each vocabulary dict by its terms in column order; what to restore."""
    import numpy as np

    replaced = []
    for v in _vectorizers(estimator):
        vocabulary = getattr(v, "vocabulary_", None)
        if not isinstance(vocabulary, dict):
            continue
        terms = sorted(vocabulary, key=vocabulary.__getitem__)
        if [vocabulary[t] for t in terms] != list(range(len(terms))):
            continue  # not a dense column map: saved as it is
        replaced.append((v, vocabulary))
        setattr(v, TERMS_ATTR, np.array(terms, dtype=str))
        del v.vocabulary_
    return replaced


def _restore_vocabularies(replaced: list[tuple[Any, dict[str, int]]]) -> None:
    for v, vocabulary in replaced:
        v.vocabulary_ = vocabulary
        delattr(v, TERMS_ATTR)


def _expand_vocabularies(estimator: Any) -> None:
    """The inverse of _compact_vocabularies, after loading."""
    for v in _vectorizers(estimator):
        terms = getattr(v, TERMS_ATTR, None)
        if terms is None:
            continue
        if getattr(terms, "dtype", None) is None or terms.dtype.kind != "U" or terms.ndim != 1:
            raise TypeError("terms must be a 1-d array of strings")
        v.vocabulary_ = {str(t): i for i, t in enumerate(terms.tolist())}
        if len(v.vocabulary_) != len(terms):
            raise ValueError("repeated terms")
        delattr(v, TERMS_ATTR)


# -----------------------------------------------------------------------------
# durable writes, retried through storage faults an operator can fix

# A full disk, a quota, a state dir briefly unwritable or unmounted: errors that go away.
TRANSIENT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EIO, errno.EROFS}
)


@dataclass(frozen=True)
class WriteRetry:
    """How long a write failing with a transient storage error is tried again.

    `pause(seconds)` waits between tries; a caller passes one that raises to give up early
    (the job runner's raises when the job is cancelled or the runner stops).
    """

    total_s: float = 0.0  # 0: fail at the first error, as a library call should by default
    first_delay_s: float = 0.5
    max_delay_s: float = 10.0
    pause: Callable[[float], object] = time.sleep


_write_retry: ContextVar[WriteRetry | None] = ContextVar("write_retry", default=None)


@contextmanager
def write_retry(policy: WriteRetry) -> Iterator[None]:
    """Applies `policy` to every durable write in this context (checkpoints and artifacts
    are written deep inside the training loops, which know nothing of the service)."""
    token = _write_retry.set(policy)
    try:
        yield
    finally:
        _write_retry.reset(token)


def retry_writes(write: Callable[[], T], what: str) -> T:
    """`write()`, tried again with back-off while it fails with a transient storage error
    and the context's `WriteRetry.total_s` is not spent. `write` must be safe to repeat."""

    def storage_fault(exc: Exception) -> bool:
        return isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS

    return retry(write, storage_fault, f"writing {what}", _write_retry.get() or WriteRetry())


def retry(call: Callable[[], T], transient: Callable[[Exception], bool], what: str,
          policy: WriteRetry) -> T:  # fmt: skip
    """`call()`, tried again with doubling pauses while it raises what `transient` accepts,
    for up to `policy.total_s`; the one back-off of storage writes and job bookkeeping."""
    deadline = time.monotonic() + policy.total_s
    delay = policy.first_delay_s
    while True:
        try:
            return call()
        except Exception as exc:
            if not transient(exc) or time.monotonic() + delay > deadline:
                raise
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log.warning("%s failed (%s); retrying in %.1f s", what, first_line, delay)
        policy.pause(delay)
        delay = min(delay * 2, policy.max_delay_s)


def write_durably(path: Path, data: bytes | Iterable[bytes]) -> None:
    """Writes `data` (bytes, or chunks as they come) to `path` and fsyncs it; a partial file
    is removed on any failure, including one raised by the chunks' producer."""
    try:
        with open(path, "wb") as f:
            for chunk in [data] if isinstance(data, bytes) else data:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def fsync_dir(path: Path) -> None:
    """Makes the renames and creations inside `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -----------------------------------------------------------------------------
# saving


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
    Storage errors are retried as the context's `write_retry` says. Returns the digest of
    what was written.
    """
    if (module is None) == (estimator is None):
        raise ArtifactError("pass exactly one of module= or estimator=")
    config = dict(config)
    if module is not None and "model_args" not in config:
        config["model_args"] = asdict(module.config)
    files = {CONFIG_FILE: (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()}
    if module is not None:
        import safetensors.torch

        # plain CPU copies: tied weights share storage, which safetensors refuses twice
        state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
        files[WEIGHTS_FILE] = safetensors.torch.save(state, metadata={"format": "pt"})
    else:
        import skops.io

        replaced = _compact_vocabularies(estimator)
        try:
            files[SKOPS_FILE] = skops.io.dumps(estimator, compression=zipfile.ZIP_DEFLATED)
        finally:
            _restore_vocabularies(replaced)
    files[CARD_FILE] = card.encode("utf-8")
    path = Path(path)
    retry_writes(lambda: _write_artifact(path, files), f"artifact {path}")
    return artifact_digest(path)


def _write_artifact(path: Path, files: dict[str, bytes]) -> None:
    """One attempt: every file fsynced in a temp dir, then renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        for name, data in files.items():
            write_durably(tmp / name, data)
            (tmp / name).chmod(0o644)
        # mkdtemp makes a private 0700 dir; artifacts are not secrets and other users serve them
        tmp.chmod(0o755)
        fsync_dir(tmp)
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
        fsync_dir(path.parent)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
