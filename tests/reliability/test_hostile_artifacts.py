"""A pickle where an artifact or checkpoint should be is refused and never executed, by every
loader and through the server's activation path; so are a sha256 mismatch and a skops file
holding a type outside the trusted list.

The proof is a payload whose unpickling creates a marker file: it must never exist.
"""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import skops.io
import torch
from safetensors import SafetensorError
from sklearn.tree import DecisionTreeClassifier
from sqlalchemy import func, select

from app.db import Database
from app.settings import PRETRAINED_DIR
from app.tables import Model, ModelVersion
from models.artifacts import SKOPS_FILE, WEIGHTS_FILE, ArtifactError, artifact_digest, load_artifact
from models.text.gpt import GPT, GPTConfig
from models.training.checkpoint import load_checkpoint
from tests.e2e.server import Server
from tests.helpers import held_out_digits

LOADERS: dict[str, Callable[..., Any]] = {
    "shakespeare-gpt": load_artifact,
    "shakespeare-lstm": load_artifact,
    "shakespeare-ngram": load_artifact,
    "mnist-vae": load_artifact,
    "mnist-cgan": load_artifact,
    "digits": load_artifact,
    "sentiment": load_artifact,
}


class Exploit:
    """Unpickling this creates a file: the proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def raw_pickle(marker: Path, _: Path) -> bytes:
    return pickle.dumps({"weight": Exploit(marker)})


def torch_pickle(marker: Path, tmp: Path) -> bytes:
    """What torch.save writes: a zip around a pickle, the format weights_only=False would run."""
    torch.save({"weight": Exploit(marker)}, tmp / "evil.pt")
    return (tmp / "evil.pt").read_bytes()


@pytest.fixture
def marker(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "pwned"
    pickle.loads(raw_pickle(path, tmp_path))["weight"].close()  # the payload works:
    assert path.exists()  # unpickling it does create the marker
    path.unlink()
    yield path
    assert not path.exists(), "a pickle payload was executed"


def trojan(source: str, tmp: Path, payload: bytes) -> Path:
    """A copy of a committed artifact whose weights (or skops file) are `payload`."""
    target = tmp / source
    shutil.copytree(PRETRAINED_DIR / source, target)
    name = SKOPS_FILE if (target / SKOPS_FILE).exists() else WEIGHTS_FILE
    (target / name).write_bytes(payload)
    return target


@pytest.mark.parametrize("make", [raw_pickle, torch_pickle])
@pytest.mark.parametrize("source", list(LOADERS))
def test_every_loader_refuses_a_pickle_for_weights(
    tmp_path: Path, marker: Path, source: str, make: Callable[[Path, Path], bytes]
) -> None:
    artifact = trojan(source, tmp_path, make(marker, tmp_path))
    load = LOADERS[source]
    with pytest.raises(ArtifactError):
        load(artifact)
    # Registered with its own digest, so that the sha256 check passes: still refused.
    with pytest.raises(ArtifactError):
        load(artifact, expected_sha256=artifact_digest(artifact)[0])


@pytest.mark.parametrize("source", list(LOADERS))
def test_every_loader_refuses_a_sha256_mismatch(tmp_path: Path, source: str) -> None:
    artifact = tmp_path / source
    shutil.copytree(PRETRAINED_DIR / source, artifact)
    with pytest.raises(ArtifactError, match="sha256"):
        LOADERS[source](artifact, expected_sha256="0" * 64)


def test_checkpoints_refuse_a_pickle(tmp_path: Path, marker: Path) -> None:
    """A resumed job reads its checkpoint: a pickle swapped in must not run either."""
    model = GPT(GPTConfig(vocab_size=8, block_size=8, n_layer=1, n_head=1, n_embd=8))
    opt = torch.optim.AdamW(model.parameters())
    for make in (raw_pickle, torch_pickle):
        (tmp_path / "checkpoint.json").write_text(json.dumps({"step": 1}))
        (tmp_path / "checkpoint.safetensors").write_bytes(make(marker, tmp_path))
        with pytest.raises(SafetensorError):  # the one checkpoint format of every loop
            load_checkpoint(tmp_path, {"model": model}, {"opt": opt})


# ---- through the server: POST /models/{name}/versions/{v}/activate ----------------------------


def register(srv: Server, name: str, artifact: Path, sha256: str | None = None) -> int:
    """A new, inactive version of `name` whose artifact lives under the state dir, written to
    the server's database as a finished job would; returns its number."""
    relative = artifact.relative_to(srv.state_dir)
    db = Database(f"sqlite:///{srv.state_dir / 'genserve.db'}")
    try:
        with db.session() as session:
            model = session.scalar(select(Model).where(Model.name == name))
            assert model is not None
            latest = session.scalar(
                select(func.max(ModelVersion.version)).where(ModelVersion.model_id == model.id)
            )
            active = next(v for v in model.versions if v.is_active)
            version = ModelVersion(
                model_id=model.id,
                version=(latest or 0) + 1,
                kind=active.kind,
                artifact_path=str(relative),
                sha256=sha256 or artifact_digest(artifact)[0],
                size_bytes=artifact_digest(artifact)[1],
                config=json.loads((artifact / "config.json").read_text()),
                source="trained",
            )
            session.add(version)
            session.flush()
            return version.version
    finally:
        db.dispose()


def activate(srv: Server, name: str, version: int) -> dict[str, Any]:
    response = srv.client.post(f"/models/{name}/versions/{version}/activate")
    assert response.status_code == 409, response.text
    return response.json()["error"]


def still_serving(srv: Server, name: str, body: dict[str, Any]) -> None:
    model = srv.client.get(f"/models/{name}").json()
    response = srv.client.post("/classify", json={"model": name, **body})
    assert response.status_code == 200, response.text
    assert response.json()["version"] == model["active_version"]


@pytest.mark.e2e
def test_activation_refuses_hostile_artifacts_and_keeps_serving(
    server: Server, tmp_path: Path, marker: Path
) -> None:
    root = Path(server.state_dir) / "artifacts" / "hostile"
    root.mkdir(parents=True, exist_ok=True)
    digits = held_out_digits(1)[0]
    for source, make in [("sentiment", raw_pickle), ("digits", torch_pickle)]:
        artifact = trojan(source, root / make.__name__, make(marker, tmp_path))
        error = activate(server, source, register(server, source, artifact))
        assert error["code"] == "load_failed", error
        assert "ArtifactError" in json.dumps(error["details"]), error

    untrusted = root / "untrusted" / "sentiment"
    shutil.copytree(PRETRAINED_DIR / "sentiment", untrusted)
    tree = skops.io.load(untrusted / SKOPS_FILE, trusted=skops.io.get_untrusted_types(
        file=untrusted / SKOPS_FILE))  # fmt: skip
    tree.steps[-1] = ("clf", DecisionTreeClassifier())  # trusted by skops, not by genserve
    skops.io.dump(tree, untrusted / SKOPS_FILE)
    error = activate(server, "sentiment", register(server, "sentiment", untrusted))
    assert "untrusted types" in json.dumps(error["details"]), error

    intact = root / "intact" / "sentiment"
    shutil.copytree(PRETRAINED_DIR / "sentiment", intact)
    error = activate(server, "sentiment", register(server, "sentiment", intact, "f" * 64))
    assert error["code"] == "artifact_mismatch", error

    still_serving(server, "sentiment", {"inputs": ["what a lovely day"]})
    still_serving(server, "digits", {"images": digits})
    assert server.client.get("/readyz").status_code == 200
