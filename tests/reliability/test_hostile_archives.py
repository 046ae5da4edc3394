"""Hostile model archives (POST /models/{name}/versions) against a real server: the hostile
cases of the upload and artifact tests, applied to tars. Each gets a clear 4xx in the one
error shape, registers nothing, leaves no file behind (under the state dir's artifacts or the
upload spool) and never runs a pickle: the payloads create a marker file if unpickled.

Every case starts from a real export of the server's own version and changes one thing,
re-signing the manifest where needed, so that only the check under test can refuse it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import pickle
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import skops.io
import torch
from sklearn.tree import DecisionTreeClassifier

from models.artifacts import PAYLOAD_FILES, digest_payload
from tests.e2e.server import Server
from tests.helpers import tar_members
from tests.reliability.test_hostile_artifacts import Exploit

pytestmark = pytest.mark.e2e
Members = dict[str, bytes]


def export(srv: Server, name: str) -> Members:
    response = srv.client.get(f"/models/{name}/versions/1/artifact")
    assert response.status_code == 200, response.text
    return tar_members(response.content)


def signed(members: Members, **manifest_changes: Any) -> Members:
    """`members` with a manifest that matches them: each file's sha256 and size, and the
    artifact's digest over its payload files."""
    manifest = json.loads(members["manifest.json"])
    files = {n: d for n, d in members.items() if n != "manifest.json"}
    manifest["files"] = {
        n: {"sha256": hashlib.sha256(d).hexdigest(), "size": len(d)} for n, d in files.items()
    }
    manifest["sha256"] = digest_payload({n: d for n, d in files.items() if n in PAYLOAD_FILES})[0]
    return {"manifest.json": json.dumps(manifest | manifest_changes).encode(), **files}


def tar_of(members: Members, *extra: tarfile.TarInfo) -> bytes:
    """A plain tar of `members` as regular files, then the `extra` headers (links, devices)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info)
    return buffer.getvalue()


def special(name: str, kind: bytes, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def with_weights(payload: bytes) -> Callable[[Members], bytes]:
    return lambda m: tar_of(signed({**m, "weights.safetensors": payload}))


def with_config(**changes: Any) -> Callable[[Members], bytes]:
    def make(m: Members) -> bytes:
        config = json.loads(m["config.json"]) | changes
        return tar_of(signed({**m, "config.json": json.dumps(config).encode()}))

    return make


def untrusted_skops(m: Members, tmp: Path) -> bytes:
    """sentiment's pipeline with a classifier skops trusts but genserve's allowlist does not."""
    (tmp / "model.skops").write_bytes(m["model.skops"])
    tree = skops.io.load(
        tmp / "model.skops", trusted=skops.io.get_untrusted_types(file=tmp / "model.skops")
    )
    tree.steps[-1] = ("clf", DecisionTreeClassifier())
    skops.io.dump(tree, tmp / "model.skops")
    return tar_of(signed({**m, "model.skops": (tmp / "model.skops").read_bytes()}))


def torch_pickle(marker: Path, tmp: Path) -> bytes:
    torch.save({"weight": Exploit(marker)}, tmp / "evil.pt")
    return (tmp / "evil.pt").read_bytes()


def tar_twice(members: Members) -> bytes:
    """A tar holding config.json a second time, after the rest."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in [*members.items(), ("config.json", members["config.json"])]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


# case -> (the export it starts from, make(members, marker, tmp) -> tar, status, message)
Make = Callable[[Members, Path, Path], bytes]
HOSTILE: dict[str, tuple[str, Make, int, str]] = {
    "pickle for weights": (
        "digits",
        lambda m, marker, _: with_weights(pickle.dumps({"w": Exploit(marker)}))(m),
        422,
        "weights.safetensors holds a pickle",
    ),
    "torch.save zip for weights": (
        "digits",
        lambda m, marker, tmp: with_weights(torch_pickle(marker, tmp))(m),
        422,
        "weights.safetensors holds a pickle",
    ),
    "protocol 0 pickle for weights": (
        "digits",
        lambda m, marker, _: with_weights(pickle.dumps({"w": Exploit(marker)}, protocol=0))(m),
        422,
        "not a valid safetensors file",
    ),
    "pickle for the skops file": (
        "sentiment",
        lambda m, marker, _: tar_of(signed({**m, "model.skops": pickle.dumps(Exploit(marker))})),
        422,
        "model.skops holds a pickle",
    ),
    "skops type off the allowlist": (
        "sentiment",
        lambda m, _, tmp: untrusted_skops(m, tmp),
        422,
        "untrusted types",
    ),
    "weights that are not safetensors": (
        "digits",
        lambda m, *_: with_weights(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}" + bytes(64))(m),
        422,
        "not a valid safetensors file",
    ),
    "weights that do not fit the config": (
        "digits",
        lambda m, *_: with_config(model_args={"channels": [4, 8]})(m),
        422,
        "the model does not load",
    ),
    "unknown kind": ("digits", lambda m, *_: with_config(kind="evil-kind")(m), 422, "unknown kind"),
    "NUL in the config": (
        "digits",
        lambda m, *_: with_config(description="a\u0000b")(m),
        422,
        "NUL",
    ),
    "manifest sha256 mismatch": (
        "digits",
        lambda m, *_: tar_of({**m, "weights.safetensors": m["weights.safetensors"][:-1] + b"\x01"}),
        422,
        "but manifest.json says",
    ),
    "artifact digest mismatch": (
        "digits",
        lambda m, *_: tar_of(signed(m, sha256="0" * 64)),
        422,
        "does not match expected",
    ),
    "manifest listing a missing file": (
        "digits",
        lambda m, *_: tar_of({n: d for n, d in m.items() if n != "README.md"}),
        422,
        "manifest.json lists",
    ),
    "no manifest": (
        "digits",
        lambda m, *_: tar_of({n: d for n, d in m.items() if n != "manifest.json"}),
        422,
        "no manifest.json",
    ),
    "truncated tar": ("digits", lambda m, *_: tar_of(m)[:200_000], 422, "not a complete"),
    "not a tar": ("digits", lambda *_: b"MZ\x90\x00" + bytes(2000), 422, "not a complete"),
    "gzipped tar": ("digits", lambda m, *_: gzip.compress(tar_of(m)), 422, "uncompressed tar"),
    "symlink member": (
        "digits",
        lambda m, *_: tar_of(m, special("evil", tarfile.SYMTYPE, "/etc/passwd")),
        422,
        "is a symbolic link; only regular files",
    ),
    "symlink in a file's place": (
        "digits",
        lambda m, *_: tar_of(
            {n: d for n, d in m.items() if n != "README.md"},
            special("README.md", tarfile.SYMTYPE, "/etc/passwd"),
        ),
        422,
        "is a symbolic link",
    ),
    "hard link": (
        "digits",
        lambda m, *_: tar_of(m, special("hard", tarfile.LNKTYPE, "/etc/passwd")),
        422,
        "is a hard link",
    ),
    "device": (
        "digits",
        lambda m, *_: tar_of(m, special("null", tarfile.CHRTYPE)),
        422,
        "is a device",
    ),
    "directory": (
        "digits",
        lambda m, *_: tar_of(m, special("d", tarfile.DIRTYPE)),
        422,
        "directory",
    ),
    "member with ..": (
        "digits",
        lambda m, *_: tar_of({"../../etc/cron.d/x": b"x", **m}),
        422,
        "absolute and `..` paths",
    ),
    "member with an absolute path": (
        "digits",
        lambda m, *_: tar_of({"/tmp/x/config.json": b"{}", **m}),
        422,
        "absolute and `..` paths",
    ),
    "unexpected member": (
        "digits",
        lambda m, marker, _: tar_of({**m, "evil.pkl": pickle.dumps(Exploit(marker))}),
        422,
        "unexpected member 'evil.pkl'",
    ),
    "member twice": (
        "digits",
        lambda m, *_: tar_twice(m),
        422,
        "appears twice",
    ),
    "too many members": (
        "digits",
        lambda m, *_: tar_of({**m, "model.skops": b"PK", "x": b"", "y": b""}),
        422,
        "more than 5 members",
    ),
}


def left_behind(srv: Server) -> set[str]:
    """Every file under the state dir's artifacts and upload spool."""
    state = Path(srv.state_dir)
    return {
        str(p.relative_to(state))
        for root in (state / "artifacts", state / "datasets" / "tmp")
        for p in root.rglob("*")
    }


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_archive_is_refused_and_leaves_nothing_behind(
    server: Server, tmp_path: Path, case: str
) -> None:
    source, make, status, message = HOSTILE[case]
    marker = tmp_path / "pwned"
    archive = make(export(server, source), marker, tmp_path)
    before = left_behind(server)
    name = f"hostile-{source}"
    response = server.client.post(
        f"/models/{name}/versions?activate=true",
        files={"file": ("model.tar", archive, "application/x-tar")},
        timeout=300,
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"}
    assert message in error["message"], error
    assert str(server.state_dir) not in response.text  # no server path reaches the client
    assert server.client.get(f"/models/{name}").status_code == 404  # nothing registered
    assert left_behind(server) == before
    assert not marker.exists(), "a pickle payload was executed"


def test_an_archive_of_another_task_is_a_conflict(server: Server) -> None:
    archive = tar_of(export(server, "tiny-gpt"))
    response = server.client.post("/models/digits/versions", files={"file": ("a.tar", archive)})
    assert response.status_code == 409, response.text
    assert "is a classification model" in response.json()["error"]["message"]
    versions = server.client.get("/models/digits").json()["versions"]
    assert [v["version"] for v in versions] == [1]


def test_a_good_archive_after_them_still_imports(server: Server) -> None:
    before = left_behind(server)
    archive = tar_of(export(server, "digits"))
    response = server.client.post(
        "/models/hostile-digits/versions", files={"file": ("digits.tar", archive)}, timeout=300
    )
    assert response.status_code == 201, response.text
    assert response.json()["source"] == "imported"
    [stored] = {Path(p).parent for p in left_behind(server) - before if p.endswith(".json")}
    assert stored.parent == Path("artifacts/hostile-digits"), stored
    files = {Path(p).name for p in left_behind(server) - before if Path(p).parent == stored}
    assert files == {"config.json", "weights.safetensors", "README.md"}  # the artifact alone
