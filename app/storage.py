"""The artifact store: where trained artifacts are published, and how a worker gets one.

Two implementations behind one interface, `ArtifactStore`, chosen by GENSERVE_ARTIFACT_URL:

    empty (default)   LocalStore: the state dir, artifacts at <state_dir>/<key>; written in
                      place, read in place (one machine, or a shared mount)
    s3://, gs://,     FsspecStore: object storage (or any fsspec filesystem); a job uploads its
    file://, ...      artifact under <url>/<key>, and workers fetch it by URL into a local
                      cache, so no process depends on another's paths

A published remote artifact is its files plus `manifest.json`, uploaded last (and deleted
first): an upload that died halfway has no manifest and is never taken for an artifact. The
manifest names the artifact's sha256 (models.artifacts.artifact_digest) and each file's size.

A worker's cache holds one directory per sha256, renamed into place only after the download
verified. A cache hit is verified again (one hash over bytes about to be parsed anyway; a
corrupt entry is evicted and fetched again), and the load that follows checks the digest of the
bytes it parses. A version in the cache is served from the cache even if its objects in the
bucket changed since: the cache holds the registered bytes, which is what the sha256 asks for;
only a worker without it reads the bucket, and refuses altered bytes.

Errors that reach clients (ArtifactError.problem) name no URL and no path.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol

from models.artifacts import CARD_FILE, PAYLOAD_FILES, ArtifactError, artifact_digest

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

    from app.settings import Settings

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "genserve-artifact/1"
ARTIFACT_FILES = (*PAYLOAD_FILES, CARD_FILE)  # the only names a manifest may list
log = logging.getLogger("genserve.storage")


@dataclass(frozen=True)
class Published:
    """What the store holds under a key: the artifact's digest and payload size."""

    sha256: str
    size: int


class ArtifactStore(Protocol):
    """Where job artifacts go once written, under keys like `artifacts/<model>/job-<id>`."""

    remote: bool  # False: artifacts are written and read in place (no upload, no cache)

    def url(self, key: str) -> str:
        """Where the artifact under `key` lives: what a worker is handed to fetch it."""
        ...

    def publish(self, source: Path, key: str) -> Published:
        """Makes the artifact directory `source` the one under `key`, all of it or nothing."""
        ...

    def published(self, key: str) -> Published | None:
        """The digest of what is under `key`; None if nothing complete is there."""
        ...

    def fetch(self, key: str, sha256: str) -> Path:
        """A local directory holding the artifact under `key`, verified against `sha256`."""
        ...

    def delete(self, key: str) -> None:
        """Removes the artifact under `key`, if any."""
        ...

    def children(self, key: str) -> list[str]:
        """The names directly under `key` (none if nothing is there): what a sweep walks."""
        ...

    def modified(self, key: str) -> float | None:
        """Unix time of the newest file under `key`; None when unknown or nothing is there."""
        ...


def check_key(key: str) -> str:
    """A relative key of plain segments: no absolute path, `..` or backslash can reach
    outside the store."""
    parts = PurePosixPath(key).parts
    if (
        not parts
        or key.startswith("/")
        or "\\" in key
        or any(part in (".", "..") or not part.strip() for part in parts)
    ):
        raise ValueError(f"bad artifact key {key!r}")
    return "/".join(parts)


def archive_filename(name: str, version: int) -> str:
    """`name-v3.tar`, what an exported version is saved as, with anything a header or a file
    system could misread replaced (the server's download name and the CLI's default)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "model"
    return f"{safe}-v{version}.tar"


def job_artifact_key(model: str, job_id: int) -> str:
    """Where a training job's artifact goes in the store; registered as its version's path."""
    return check_key(f"artifacts/{model}/job-{job_id}")


def remove_artifacts(settings: Settings, keys: list[str]) -> None:
    """Deletes the artifacts of rows already deleted (their transaction committed). A failure
    is only logged: the start-up sweep (app/services/retention.py) removes what is left."""
    if not keys:
        return
    store = open_store(settings)
    for key in keys:
        try:
            store.delete(key)
            log.info("deleted artifact %s", key)
        except Exception:
            log.warning(
                "could not delete artifact %s; the next start sweeps it", key, exc_info=True
            )


def store_fault(exc: Exception) -> bool:
    """Whether a store's error may go away if retried (network, permissions, a bucket an
    operator creates): anything but an artifact or a request wrong in itself."""
    return not isinstance(exc, ArtifactError | ValueError | TypeError)


def open_store(settings: Settings) -> ArtifactStore:
    """The store GENSERVE_ARTIFACT_URL names (empty: the state dir)."""
    if not settings.artifact_url:
        return LocalStore(settings.state_dir)
    return FsspecStore(
        settings.artifact_url, settings.artifact_cache_path(), settings.storage_options()
    )


# -----------------------------------------------------------------------------
# the state dir


class LocalStore:
    """The default: artifacts live at <state_dir>/<key>, where jobs write them."""

    remote = False

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    def url(self, key: str) -> str:
        return self.path(key).resolve().as_uri()

    def publish(self, source: Path, key: str) -> Published:
        """In place when `source` is already the key's directory (what jobs do); otherwise a
        copy beside it renamed into place, replacing what was there."""
        target = self.path(key)
        sha256, size = artifact_digest(source)
        if Path(source).resolve() == target.resolve():
            return Published(sha256, size)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        try:
            shutil.copytree(source, tmp)
            if target.exists():
                old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex}")
                os.rename(target, old)
                shutil.rmtree(old)
            os.rename(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return Published(sha256, size)

    def published(self, key: str) -> Published | None:
        path = self.path(key)
        if not path.is_dir():
            return None
        return Published(*artifact_digest(path))

    def fetch(self, key: str, sha256: str) -> Path:
        path = self.path(key)
        actual, _ = artifact_digest(path)
        if actual != sha256:
            raise ArtifactError(_mismatch(actual, sha256), path)
        return path

    def delete(self, key: str) -> None:
        shutil.rmtree(self.path(key), ignore_errors=True)

    def children(self, key: str) -> list[str]:
        path = self.path(key)
        return sorted(p.name for p in path.iterdir()) if path.is_dir() else []

    def modified(self, key: str) -> float | None:
        path = self.path(key)
        files = [path, *path.rglob("*")] if path.is_dir() else [path]
        times = [f.lstat().st_mtime for f in files if f.exists() or f.is_symlink()]
        return max(times, default=None)


# -----------------------------------------------------------------------------
# object storage through fsspec


class FsspecStore:
    """Artifacts under an fsspec URL (s3://bucket/prefix, gs://..., file:///srv/artifacts),
    fetched into `cache_dir` by whoever loads them."""

    remote = True

    def __init__(self, url: str, cache_dir: Path, options: dict[str, Any] | None = None) -> None:
        self.base = url.rstrip("/")
        self.cache_dir = Path(cache_dir)
        self.options = dict(options or {})

    def url(self, key: str) -> str:
        return f"{self.base}/{check_key(key)}"

    def publish(self, source: Path, key: str) -> Published:
        return publish_artifact(source, self.url(key), self.options)

    def published(self, key: str) -> Published | None:
        return published_artifact(self.url(key), self.options)

    def fetch(self, key: str, sha256: str) -> Path:
        return fetch_artifact(self.url(key), sha256, self.cache_dir, self.options)

    def delete(self, key: str) -> None:
        delete_artifact(self.url(key), self.options)

    def children(self, key: str) -> list[str]:
        fs, root = _filesystem(self.url(key), self.options)
        try:
            listing = fs.ls(root, detail=False, refresh=True)
        except FileNotFoundError:
            return []
        here = root.rstrip("/")
        items = (str(item).rstrip("/") for item in listing)
        return sorted({PurePosixPath(item).name for item in items if item != here})

    def modified(self, key: str) -> float | None:
        """From the listing's stamps (S3's LastModified, a local file's mtime)."""
        fs, root = _filesystem(self.url(key), self.options)
        try:
            found = fs.find(root, detail=True)
        except FileNotFoundError:
            return None
        times = [_stamp(info) for info in found.values()]
        known = [t for t in times if t is not None]
        return max(known) if known and len(known) == len(times) else None


def _stamp(info: dict[str, Any]) -> float | None:
    """A listing entry's modification time in unix seconds, whatever the filesystem calls it."""
    for field in ("LastModified", "mtime", "updated", "created"):
        value = info.get(field)
        if isinstance(value, int | float):
            return float(value)
        if hasattr(value, "timestamp"):
            return float(value.timestamp())
    return None


def _filesystem(url: str, options: dict[str, Any]) -> tuple[AbstractFileSystem, str]:
    from fsspec.core import url_to_fs

    return url_to_fs(url, **options)


def _is_local(fs: AbstractFileSystem) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)


def publish_artifact(source: Path, url: str, options: dict[str, Any]) -> Published:
    """Uploads every file of the artifact at `source` to `url`, the manifest last; a manifest
    already there is deleted first, so no reader pairs it with half-replaced files. Safe to
    repeat after a failure."""
    source = Path(source)
    sha256, size = artifact_digest(source)
    files = {n: (source / n).stat().st_size for n in ARTIFACT_FILES if (source / n).is_file()}
    manifest = {"format": MANIFEST_FORMAT, "sha256": sha256, "size": size, "files": files}
    fs, root = _filesystem(url, options)
    _remove(fs, f"{root}/{MANIFEST_FILE}")
    if _is_local(fs):  # object stores have no directories (and makedirs creates buckets)
        fs.makedirs(root, exist_ok=True)
    for name in files:
        fs.put_file(str(source / name), f"{root}/{name}")
    fs.pipe_file(f"{root}/{MANIFEST_FILE}", json.dumps(manifest, indent=1).encode())
    log.info("published %s (sha256 %s) to %s", source.name, sha256[:12], url)
    return Published(sha256, size)


def delete_artifact(url: str, options: dict[str, Any]) -> None:
    """The manifest first: from then on it is no artifact, whatever the rest does."""
    fs, root = _filesystem(url, options)
    _remove(fs, f"{root}/{MANIFEST_FILE}")
    with contextlib.suppress(FileNotFoundError):
        fs.rm(root, recursive=True)
    fs.invalidate_cache(root)


def _remove(fs: AbstractFileSystem, path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        fs.rm_file(path)
    fs.invalidate_cache(path)


def read_manifest(url: str, options: dict[str, Any]) -> dict[str, Any] | None:
    """The artifact's manifest; None when there is none (never published, half-uploaded or
    deleted). One that does not parse, or lists files an artifact does not have, is refused."""
    fs, root = _filesystem(url, options)
    try:
        data = fs.cat_file(f"{root}/{MANIFEST_FILE}")
    except FileNotFoundError:
        return None
    except Exception as e:  # no path or URL in what clients read: the log has them
        log.warning("cannot read the manifest at %s: %s", url, e)
        raise ArtifactError(f"cannot read the artifact store: {type(e).__name__}", url) from e
    try:
        manifest = json.loads(data)
        files = manifest["files"]
        ok = (
            isinstance(manifest["sha256"], str)
            and isinstance(manifest["size"], int)
            and set(files) <= set(ARTIFACT_FILES)  # no other name: no path to write outside
            and all(isinstance(size, int) for size in files.values())
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        ok = False
    if not ok:
        raise ArtifactError(f"{MANIFEST_FILE} in the artifact store is malformed", url)
    return manifest


def published_artifact(url: str, options: dict[str, Any]) -> Published | None:
    """The manifest's digest, once a listing shows every file it names at the size it names:
    a cheap check (no download) that catches a truncated or removed object. Bytes changed in
    place are caught by the fetch, which hashes them."""
    manifest = read_manifest(url, options)
    if manifest is None:
        return None
    fs, root = _filesystem(url, options)
    try:
        listing = fs.ls(root, detail=True, refresh=True)
    except Exception as e:
        log.warning("cannot list %s: %s", url, e)
        raise ArtifactError(f"cannot read the artifact store: {type(e).__name__}", url) from e
    sizes = {PurePosixPath(item["name"]).name: item.get("size") for item in listing}
    for name, size in manifest["files"].items():
        if name not in sizes:
            raise ArtifactError(f"{name} is missing from the artifact store", url)
        if sizes[name] != size:
            raise ArtifactError(
                f"{name} in the artifact store is {sizes[name]} bytes, its manifest says {size}",
                url,
            )
    return Published(manifest["sha256"], manifest["size"])


def fetch_artifact(url: str, sha256: str, cache_dir: Path, options: dict[str, Any]) -> Path:
    """`<cache_dir>/<sha256>`, downloaded from `url` on a miss and verified either way.

    The download goes to a temporary directory in the cache, is hashed, and only then renamed
    into place, so the cache never holds unverified bytes under a digest's name; workers on one
    machine sharing the cache may race, and the first rename wins.
    """
    sha256 = sha256.lower()
    cache_dir = Path(cache_dir)
    target = cache_dir / sha256
    if target.is_dir():
        try:
            if artifact_digest(target)[0] == sha256:
                return target
        except ArtifactError:
            pass
        log.warning("evicting a corrupt cache entry %s", target)
        _evict(target)
    manifest = read_manifest(url, options)
    if manifest is None:
        raise ArtifactError(
            "not in the artifact store (never published, half-uploaded or deleted)", url
        )
    if manifest["sha256"] != sha256:
        raise ArtifactError(
            f"the artifact store holds sha256 {manifest['sha256'][:12]}..., not the registered "
            f"{sha256[:12]}...; refusing to load it",
            url,
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f".{sha256[:16]}.{uuid.uuid4().hex}.tmp"
    tmp.mkdir()
    try:
        fs, root = _filesystem(url, options)
        for name in manifest["files"]:
            try:
                fs.get_file(f"{root}/{name}", str(tmp / name))
            except Exception as e:
                log.warning("cannot download %s/%s: %s", url, name, e)
                raise ArtifactError(
                    f"cannot download {name} from the artifact store: {type(e).__name__}", url
                ) from e
        actual, _ = artifact_digest(tmp)
        if actual != sha256:
            raise ArtifactError(_mismatch(actual, sha256), url)
        tmp.chmod(0o755)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # lost a race to another worker: theirs is as good
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("fetched %s (sha256 %s) into the cache", url, sha256[:12])
    return target


def _mismatch(actual: str, expected: str) -> str:
    return (
        f"the artifact's bytes have sha256 {actual[:12]}..., not the registered "
        f"{expected[:12]}...; refusing to load them"
    )


def _evict(path: Path) -> None:
    """Renamed away first: a concurrent fetch sees no entry rather than half of one."""
    doomed = path.with_name(f".{path.name}.evicted-{uuid.uuid4().hex}")
    try:
        os.rename(path, doomed)
    except OSError:
        return
    shutil.rmtree(doomed, ignore_errors=True)
