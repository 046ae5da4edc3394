"""Model archives: one version exported as a tar, and such a tar imported as a new version.

An archive is a plain tar of the artifact's files (config.json, weights.safetensors or
model.skops, README.md) behind a `manifest.json`: each file's sha256 and size, the artifact's
registered sha256, and the version's model, task, kind, number, source, params, metrics and
lineage.

Export reads the artifact through the one verified read (models.artifacts.read_artifact), so
what it sends are exactly the bytes whose digest matched the registered one, held once in
memory as a worker's load holds them; the tar around them is generated block by block.

Import treats the tar as hostile. It is spooled to disk under the upload limit, then unpacked
member by member, never with `extractall`: only regular files with the archive's own names,
no path, link or device, each hashed against the manifest. The artifact must then pass the
registered-digest check, name a known kind, hold no pickle, and build in a probe process with
the workers' loader before it is published to the artifact store and registered. Every
refusal is a 4xx and removes what was unpacked; the unpack directory of a process that died
is swept at start with the upload spool it lives in.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import logging
import os
import re
import shutil
import sys
import tarfile
import tempfile
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, NoReturn

from fastapi import UploadFile
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from app.db import Database
from app.errors import Conflict, InvalidInput, NotFound, Unavailable
from app.pool.base import WorkerPool
from app.schemas.common import BAD_TEXT, as_utc
from app.services import versions
from app.services.datasets import DatasetService, spool_prefix, spool_upload
from app.services.registry import ArtifactMismatch, ModelRegistry
from app.services.versions import BUILTIN_PREFIX
from app.settings import REPO_ROOT, Settings
from app.storage import ARTIFACT_FILES, MANIFEST_FILE, archive_filename, check_key, store_fault
from app.tables import Model, ModelVersion
from models.artifacts import (
    CARD_FILE,
    CONFIG_FILE,
    SKOPS_FILE,
    WEIGHTS_FILE,
    ArtifactError,
    read_artifact,
    without_paths,
    write_durably,
)
from models.kinds import KINDS

log = logging.getLogger("genserve.archives")
ARCHIVE_FORMAT = "genserve-archive/1"
ARCHIVE_FILES = (MANIFEST_FILE, *ARTIFACT_FILES)  # the only members an archive may have
CHUNK = 1024 * 1024
PROBE_TIMEOUT_S = 300.0  # a large version's load on one CPU thread
# POST /models/{name}/versions: an upload, with the upload body limit and gate (app/main.py)
IMPORT_PATH = re.compile(r"/models/[^/]+/versions")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Archive:
    """An export about to be streamed: its download name, exact length and bytes."""

    filename: str
    size: int
    chunks: Iterator[bytes]


@dataclass(frozen=True)
class _Staged:
    """An unpacked archive that passed every check but the load, and its manifest."""

    directory: Path
    manifest: dict[str, Any]
    config: dict[str, Any]
    kind: str
    task: str


def invalid(message: str) -> NoReturn:
    raise InvalidInput(message, code="invalid_archive")


class ArchiveService:
    def __init__(
        self, settings: Settings, db: Database, registry: ModelRegistry, datasets: DatasetService
    ) -> None:
        self.settings = settings
        self.db = db
        self.registry = registry
        self.datasets = datasets

    # ---- export --------------------------------------------------------------------------------

    def export(self, name: str, version: int) -> Archive:
        """The version's archive; 404 if unknown, 409 if its artifact fails the sha256 check."""
        with self.db.session() as session:
            row = session.execute(
                select(Model, ModelVersion)
                .join(ModelVersion, ModelVersion.model_id == Model.id)
                .where(Model.name == name, ModelVersion.version == version)
            ).first()
        if row is None:
            raise NotFound(f"model {name!r} has no version {version}")
        model, ver = row
        directory = self._artifact_dir(ver)
        try:
            _, payload = read_artifact(directory, ver.sha256)
            card = directory / CARD_FILE
            files = dict(payload) | ({CARD_FILE: card.read_bytes()} if card.is_file() else {})
        except (ArtifactError, OSError) as e:
            log.error("cannot export %s v%d from %s: %s", name, version, directory, e)
            problem = e.problem if isinstance(e, ArtifactError) else type(e).__name__
            raise ArtifactMismatch(
                f"{name} v{version}: {without_paths(problem, directory)}; refusing to export it"
            ) from e
        manifest = export_manifest(model, ver, files)
        files = {MANIFEST_FILE: json.dumps(manifest, indent=1).encode()} | files
        mtime = int(as_utc(ver.created_at).timestamp())
        size, chunks = tar_stream(files, mtime)
        return Archive(archive_filename(name, version), size, chunks)

    def _artifact_dir(self, ver: ModelVersion) -> Path:
        """A local directory holding the version's files: committed defaults and the local
        store in place, object storage fetched (and verified) into the cache."""
        store = self.registry.store
        if ver.artifact_path.startswith(BUILTIN_PREFIX) or not store.remote:
            return self.registry.resolve(ver.artifact_path)
        try:
            return store.fetch(ver.artifact_path, ver.sha256)
        except ArtifactError as e:
            raise ArtifactMismatch(f"v{ver.version}: {e.problem}; refusing to export it") from e

    # ---- import --------------------------------------------------------------------------------

    async def import_archive(
        self, pool: WorkerPool, name: str, upload: UploadFile, activate: bool
    ) -> int:
        """Registers the archive `upload` as the next version of `name`; its number.

        Refused with 422 (a malformed or hostile archive, or one that does not load), 409 (a
        model of another task) or 413 (too large), leaving nothing behind.
        """
        spooled = await run_in_threadpool(
            spool_upload, upload.file, self.datasets.spool_dir, self.settings.max_upload_bytes
        )
        try:
            staged = await run_in_threadpool(self._stage, spooled.path)
        finally:
            spooled.path.unlink(missing_ok=True)
        try:
            await run_in_threadpool(self._check_task, name, staged.task)
            await self._probe(staged)
            version = await run_in_threadpool(self._register, name, staged)
        finally:
            shutil.rmtree(staged.directory, ignore_errors=True)
        log.info("imported %s v%d (%s)", name, version, staged.manifest["sha256"][:12])
        if activate:
            await self.registry.activate(pool, name, version)
        return version

    def _stage(self, tar_path: Path) -> _Staged:
        """Unpacks and checks the archive in a spool directory (removed if refused)."""
        directory = Path(tempfile.mkdtemp(dir=self.datasets.spool_dir, prefix=spool_prefix()))
        try:
            digests = unpack(tar_path, directory, self.settings.max_upload_bytes)
            return check_artifact(directory, digests)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise

    def _check_task(self, name: str, task: str) -> None:
        with self.db.session() as session:
            existing = session.scalar(select(Model.task).where(Model.name == name))
        if existing is not None and existing != task:
            raise Conflict(f"model {name!r} is a {existing} model; this archive holds a {task} one")

    async def _probe(self, staged: _Staged) -> None:
        """Builds the artifact with the workers' loader in a throwaway process: 422 if it
        does not load. The API process never imports torch or runs a model's code."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "app.worker.probe",
            str(staged.directory),
            staged.manifest["sha256"],
            staged.task,
            cwd=REPO_ROOT,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), PROBE_TIMEOUT_S)
        except TimeoutError:
            invalid(f"the model did not load within {PROBE_TIMEOUT_S:.0f} s")
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        try:
            result = json.loads(out.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            log.error("the load check exited with %s: %s", process.returncode, err.decode()[-2000:])
            invalid(f"the model could not be loaded (the check exited with {process.returncode})")
        if not result.get("ok"):
            invalid(f"the model does not load: {without_paths(result['error'], staged.directory)}")

    def _register(self, name: str, staged: _Staged) -> int:
        """Publishes the files under a new key of the artifact store, then registers them;
        the files are removed again if the registration fails."""
        key = check_key(f"artifacts/{name}/import-{uuid.uuid4().hex[:12]}")
        store = self.registry.store
        (staged.directory / MANIFEST_FILE).unlink()  # the archive's, not the artifact's
        manifest = staged.manifest
        try:
            try:
                published = store.publish(staged.directory, key)
            except Exception as e:
                if not store_fault(e):
                    raise
                log.error("cannot publish the import of %s to %s: %s", name, key, e)
                raise Unavailable(
                    f"the artifact store cannot be written: {type(e).__name__}; retry",
                    retry_after=5,
                ) from e
            if published.sha256 != manifest["sha256"]:  # changed on disk since it was checked
                invalid("the artifact changed while it was imported")
            for attempt in range(2):  # another import of `name` may take the number first
                try:
                    with self.db.session() as session:
                        return versions.register_imported(
                            session,
                            name=name,
                            task=staged.task,
                            kind=staged.kind,
                            artifact_path=key,
                            sha256=published.sha256,
                            size=published.size,
                            params=_object(manifest.get("params")),
                            metrics=_object(manifest.get("metrics")),
                            config=staged.config,
                            lineage=_lineage(manifest.get("lineage")),
                        ).version
                except IntegrityError:
                    if attempt:
                        raise
                except ValueError as e:
                    raise Conflict(str(e)) from e
            raise AssertionError("unreachable")
        except BaseException:
            with contextlib.suppress(Exception):  # a store that failed may fail again
                store.delete(key)
            raise


# ---- the archive format ----------------------------------------------------------------------


def export_manifest(model: Model, ver: ModelVersion, files: dict[str, bytes]) -> dict[str, Any]:
    """What an importer checks and registers: identity, lineage and every file's digest."""
    return {
        "format": ARCHIVE_FORMAT,
        "name": model.name,
        "task": model.task,
        "description": model.description,
        "kind": ver.kind,
        "version": ver.version,
        "source": ver.source,
        "sha256": ver.sha256,
        "size": ver.size_bytes,
        "params": ver.params,
        "metrics": ver.metrics,
        "lineage": {
            "parent": ver.parent,
            "dataset_name": ver.dataset_name,
            "dataset_sha256": ver.dataset_sha256,
            "job_id": ver.job_id,
        },
        "created_at": as_utc(ver.created_at).isoformat(),
        "files": {
            name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            for name, data in files.items()
        },
    }


def tar_stream(files: dict[str, bytes], mtime: int) -> tuple[int, Iterator[bytes]]:
    """(length, chunks) of a tar of `files` in order: tarfile's headers, the data padded to
    blocks, and the end-of-archive blocks padded to a record, as `tarfile` writes them."""
    headers = {}
    for name, data in files.items():
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), mtime, 0o644
        headers[name] = info.tobuf(tarfile.PAX_FORMAT)
    body = sum(len(headers[n]) + len(d) + -len(d) % tarfile.BLOCKSIZE for n, d in files.items())
    end = 2 * tarfile.BLOCKSIZE
    end += -(body + end) % tarfile.RECORDSIZE

    def chunks() -> Iterator[bytes]:
        for name, data in files.items():
            yield headers[name]
            view = memoryview(data)
            for start in range(0, len(data), CHUNK):
                yield bytes(view[start : start + CHUNK])
            if pad := -len(data) % tarfile.BLOCKSIZE:
                yield bytes(pad)
        yield bytes(end)

    return body + end, chunks()


def unpack(tar_path: Path, target: Path, max_bytes: int) -> dict[str, str]:
    """Writes the archive's members into `target`; {name: sha256}. Refuses (422) anything but
    a plain tar of regular files with an archive's names, each at most once."""
    digests: dict[str, str] = {}
    try:
        with tarfile.open(tar_path, "r:") as tar:
            for count, member in enumerate(tar, 1):
                if count > len(ARCHIVE_FILES):
                    invalid(f"more than {len(ARCHIVE_FILES)} members: {_names()}")
                _check_member(member, digests, max_bytes)
                digests[member.name] = _extract(tar, member, target / member.name)
    except (tarfile.TarError, EOFError) as e:
        invalid(f"not a complete, uncompressed tar archive: {e}")
    return digests


def _check_member(member: tarfile.TarInfo, seen: dict[str, str], max_bytes: int) -> None:
    name = member.name
    if name.startswith("/") or "\\" in name or ".." in PurePosixPath(name).parts:
        invalid(f"member {name!r}: absolute and `..` paths have no place in a model archive")
    if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
        invalid(f"member {name!r} is a {_member_type(member)}; only regular files are accepted")
    if name not in ARCHIVE_FILES:
        invalid(f"unexpected member {name!r}: {_names()}")
    if name in seen:
        invalid(f"member {name!r} appears twice")
    if member.size > max_bytes:
        invalid(f"member {name!r} declares {member.size} bytes, more than the {max_bytes} allowed")


def _names() -> str:
    return f"a model archive holds only {', '.join(ARCHIVE_FILES)}"


def _member_type(member: tarfile.TarInfo) -> str:
    if member.issym():
        return "symbolic link"
    if member.islnk():
        return "hard link"
    if member.isdev():
        return "device or FIFO"
    if member.isdir():
        return "directory"
    return "special member"


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path) -> str:
    """Copies one member's bytes to `path` while hashing them; a cut-short member raises
    tarfile.ReadError."""
    source = tar.extractfile(member)
    assert source is not None  # a regular file, checked
    digest = hashlib.sha256()

    def chunks() -> Iterator[bytes]:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
            yield chunk

    write_durably(path, chunks())
    path.chmod(0o644)
    if path.stat().st_size != member.size:
        invalid(f"member {member.name!r} is cut short")
    return digest.hexdigest()


def check_artifact(directory: Path, digests: dict[str, str]) -> _Staged:
    """The manifest against the files, then the artifact: its digest, kind, task and formats."""
    manifest = _manifest(directory, digests)
    try:
        config, payload = read_artifact(directory, manifest["sha256"])
    except ArtifactError as e:
        invalid(f"the artifact is refused: {without_paths(e.problem, directory)}")
    for name, data in payload.items():
        if _pickled(data):
            invalid(f"{name} holds a pickle, which could run code; genserve never loads one")
    for source, value in ((CONFIG_FILE, config), (MANIFEST_FILE, manifest)):
        text = json.dumps(value, ensure_ascii=False)  # NUL stays escaped, surrogates do not
        if "\\u0000" in text or BAD_TEXT.search(text):
            invalid(f"{source} holds a NUL or a lone surrogate, which no database stores")
    kind = KINDS.get(config.get("kind"))  # type: ignore[arg-type]
    if kind is None:
        invalid(f"{CONFIG_FILE} names an unknown kind {config.get('kind')!r}: {sorted(KINDS)}")
    for source, value in (
        (CONFIG_FILE, config.get("task", kind.task)),
        (MANIFEST_FILE, manifest["task"]),
    ):
        if value != kind.task:
            invalid(f"{source} says task {value!r}, but {kind.name} is {kind.task}")
    if manifest["kind"] != kind.name:
        invalid(f"{MANIFEST_FILE} says kind {manifest['kind']!r}, {CONFIG_FILE} {kind.name!r}")
    if WEIGHTS_FILE in payload:
        _check_safetensors(directory / WEIGHTS_FILE)
    if SKOPS_FILE in payload and not zipfile.is_zipfile(directory / SKOPS_FILE):
        invalid(f"{SKOPS_FILE} is not a skops file")
    if CARD_FILE in digests:
        try:
            (directory / CARD_FILE).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            invalid(f"{CARD_FILE} is not UTF-8 text")
    return _Staged(directory, manifest, config, kind.name, kind.task)


def _manifest(directory: Path, digests: dict[str, str]) -> dict[str, Any]:
    """The manifest, checked against every unpacked file's sha256 and size."""
    if MANIFEST_FILE not in digests:
        invalid(f"no {MANIFEST_FILE}: not a model archive (`genserve models export` makes one)")
    try:
        manifest = json.loads((directory / MANIFEST_FILE).read_bytes())
        files = manifest["files"]
        well_formed = (
            manifest.get("format") == ARCHIVE_FORMAT
            and all(isinstance(manifest.get(k), str) for k in ("sha256", "task", "kind"))
            and isinstance(files, dict)
            and all(
                isinstance(e, dict)
                and isinstance(e.get("sha256"), str)
                and isinstance(e.get("size"), int)
                for e in files.values()
            )
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        well_formed = False
    if not well_formed:
        invalid(f"{MANIFEST_FILE} is not a {ARCHIVE_FORMAT} manifest")
    present = set(digests) - {MANIFEST_FILE}
    if set(files) != present:
        invalid(f"{MANIFEST_FILE} lists {sorted(files)}, the archive holds {sorted(present)}")
    for name, entry in files.items():
        size = (directory / name).stat().st_size
        if entry["sha256"].lower() != digests[name] or entry["size"] != size:
            invalid(
                f"{name} has sha256 {digests[name][:12]}... and {size} bytes, but {MANIFEST_FILE} "
                f"says {entry['sha256'][:12]}... and {entry['size']} bytes"
            )
    if not _SHA256.fullmatch(manifest["sha256"]):
        invalid(f"{MANIFEST_FILE}'s sha256 is not a sha256")
    return manifest


def _pickled(data: bytes) -> bool:
    """A pickle (protocol 2+ opens with PROTO) or a zip holding one (what torch.save writes)."""
    if data[:1] == b"\x80":
        return True
    if data[:4] != b"PK\x03\x04":
        return False
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile:
        return False
    return any(n.endswith((".pkl", ".pickle")) for n in names)


def _check_safetensors(path: Path) -> None:
    """Parses the header and every tensor's place in the file (numpy: no torch here)."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework="np") as weights:
            weights.keys()
    except Exception as e:
        invalid(f"{WEIGHTS_FILE} is not a valid safetensors file: {type(e).__name__}: {e}")


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _lineage(value: Any) -> dict[str, Any]:
    """The manifest's lineage, kept only where it has the registry's shapes."""
    lineage = _object(value)
    parent = lineage.get("parent")
    ok_parent = (
        isinstance(parent, dict)
        and isinstance(parent.get("model"), str)
        and isinstance(parent.get("version"), int)
    )
    name, sha256 = lineage.get("dataset_name"), lineage.get("dataset_sha256")
    return {
        "parent": {"model": parent["model"][:200], "version": parent["version"]}
        if ok_parent
        else None,
        "dataset_name": name[:200] if isinstance(name, str) else None,
        "dataset_sha256": sha256 if isinstance(sha256, str) and _SHA256.fullmatch(sha256) else None,
    }
