"""Artifact identity: which files make an artifact and the sha256 that names its contents.

Standard library only, so the API process can register and verify artifacts without
importing torch or scikit-learn; models/artifacts.py does the saving and loading.
"""

import hashlib
from pathlib import Path

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
SKOPS_FILE = "model.skops"
CARD_FILE = "README.md"
PAYLOAD_FILES = (CONFIG_FILE, WEIGHTS_FILE, SKOPS_FILE)  # what the digest covers, if present


class ArtifactError(Exception):
    """An artifact is missing, altered, malformed or not trusted; it was not loaded."""


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
        raise ArtifactError(f"{path}: no {CONFIG_FILE}, not a model artifact")
    payload = {
        name: (path / name).read_bytes() for name in PAYLOAD_FILES if (path / name).is_file()
    }
    if len(payload) != 2:
        raise ArtifactError(
            f"{path}: expected {CONFIG_FILE} and one of {WEIGHTS_FILE}, {SKOPS_FILE}"
        )
    return payload


def artifact_digest(path: Path) -> tuple[str, int]:
    """(sha256 hex, total bytes) of config.json + weights/skops file; the card is excluded."""
    return digest_payload(read_payload(path))
