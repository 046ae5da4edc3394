"""The artifact store round trip, on the state dir, on a file:// URL and on S3 (moto's server):
publish, fetch into an empty cache with the digest checked, altered bytes refused, a
half-upload never taken for an artifact, delete."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.settings import Settings
from app.storage import (
    MANIFEST_FILE,
    ArtifactStore,
    FsspecStore,
    LocalStore,
    Published,
    check_key,
    open_store,
)
from models.artifacts import ArtifactError, artifact_digest
from tests.storage.conftest import S3Server

KEY = "artifacts/m/job-1"


def make_artifact(path: Path, weights: bytes = b"\x00" * 64, card: str = "# m\n") -> Path:
    """An artifact's files (the store moves bytes; it never parses the weights)."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"name": "m", "kind": "text-gpt"}))
    (path / "weights.safetensors").write_bytes(weights)
    (path / "README.md").write_text(card)
    return path


@dataclass
class Backend:
    """A store, and a way to change its bytes behind its back (as someone with write access
    to the bucket or the disk could)."""

    store: ArtifactStore
    write: Callable[[str, bytes], None]  # (key/file, bytes)
    places: list[str]  # what no error message may contain


@pytest.fixture(params=["local", "file", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    cache = tmp_path / "cache"
    if request.param == "local":
        root = tmp_path / "state"

        def write_local(name: str, data: bytes) -> None:
            (root / name).write_bytes(data)

        yield Backend(LocalStore(root), write_local, [str(tmp_path)])
        return
    if request.param == "file":
        import fsspec

        url = (tmp_path / "bucket").as_uri()
        fs = fsspec.filesystem("file")
        yield Backend(
            FsspecStore(url, cache),
            lambda name, data: fs.pipe_file(f"{tmp_path}/bucket/{name}", data),
            [str(tmp_path), url],
        )
        return
    s3: S3Server = request.getfixturevalue("s3")
    import fsspec

    bucket = s3.bucket()
    # through the settings an operator sets, endpoint and credentials in the storage options
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        state_dir=tmp_path / "state",
        artifact_url=f"s3://{bucket}/prefix",
        artifact_cache_dir=str(cache),
        artifact_storage_options=json.dumps(s3.options()),
    )
    fs = fsspec.filesystem("s3", skip_instance_cache=True, **s3.options())
    yield Backend(
        open_store(settings),
        lambda name, data: fs.pipe_file(f"{bucket}/prefix/{name}", data),
        [str(tmp_path), bucket, s3.endpoint],
    )


def assert_no_place(error: BaseException, places: list[str]) -> None:
    message = str(error)
    assert not [p for p in places if p in message], message
    assert "s3://" not in message and "file://" not in message, message


def test_round_trip(backend: Backend, tmp_path: Path) -> None:
    source = make_artifact(tmp_path / "written")
    digest = Published(*artifact_digest(source))
    store = backend.store
    assert store.published(KEY) is None
    with pytest.raises(ArtifactError) as missing:
        store.fetch(KEY, digest.sha256)
    assert_no_place(missing.value, backend.places)

    assert store.publish(source, KEY) == digest
    assert store.published(KEY) == digest
    fetched = store.fetch(KEY, digest.sha256)
    assert fetched != source and Published(*artifact_digest(fetched)) == digest
    for name in ("config.json", "weights.safetensors", "README.md"):
        assert (fetched / name).read_bytes() == (source / name).read_bytes()
    assert store.fetch(KEY, digest.sha256) == fetched  # a cache hit, verified again
    if store.remote:
        assert fetched.name == digest.sha256  # named by what it holds

    with pytest.raises(ArtifactError, match="sha256") as wrong:
        store.fetch(KEY, "0" * 64)
    assert_no_place(wrong.value, backend.places)


def test_altered_bytes_are_refused(backend: Backend, tmp_path: Path) -> None:
    source = make_artifact(tmp_path / "written")
    sha256 = backend.store.publish(source, KEY).sha256
    backend.write(f"{KEY}/weights.safetensors", b"\x01" * 64)  # same size, other bytes
    with pytest.raises(ArtifactError, match="sha256") as refused:
        backend.store.fetch(KEY, sha256)
    assert "refusing" in str(refused.value)
    assert_no_place(refused.value, backend.places)


def test_a_half_upload_is_never_an_artifact(backend: Backend, tmp_path: Path) -> None:
    store = backend.store
    old = make_artifact(tmp_path / "old")
    new = make_artifact(tmp_path / "new", weights=b"\x02" * 128)
    old_sha = store.publish(old, KEY).sha256
    new_sha = Published(*artifact_digest(new)).sha256

    with pytest.raises(OSError, match="connection reset"), _dies_after_one_file(store):
        store.publish(new, KEY)
    if store.remote:
        # the old manifest went first, the new one never came: nothing is published here
        assert store.published(KEY) is None
        for sha256 in (old_sha, new_sha):
            with pytest.raises(ArtifactError, match="not in the artifact store"):
                store.fetch(KEY, sha256)
    else:
        # written beside it, renamed into place: the old artifact, whole, and no leftovers
        assert store.published(KEY) == Published(*artifact_digest(old))
        assert [p.name for p in (tmp_path / "state" / "artifacts" / "m").iterdir()] == ["job-1"]

    store.publish(new, KEY)  # the retry completes it
    assert store.published(KEY) == Published(*artifact_digest(new))
    assert artifact_digest(store.fetch(KEY, new_sha))[0] == new_sha


@contextmanager
def _dies_after_one_file(store: ArtifactStore) -> Iterator[None]:
    """The upload (or copy) fails after its first file, as a dropped connection would."""
    with pytest.MonkeyPatch.context() as patch:
        if isinstance(store, LocalStore):
            import shutil

            real_copytree = shutil.copytree

            def copytree(src: Path, dst: Path) -> None:
                real_copytree(src, dst, ignore=lambda _, names: set(names) - {"config.json"})
                raise OSError("connection reset")

            patch.setattr(shutil, "copytree", copytree)
        else:
            from fsspec.core import url_to_fs

            assert isinstance(store, FsspecStore)
            fs, _ = url_to_fs(store.base, **store.options)  # the store's own (cached) one
            real_put = fs.put_file
            calls: list[str] = []

            def put_file(lpath: str, rpath: str, **kwargs: object) -> None:
                calls.append(rpath)
                if len(calls) > 1:
                    raise OSError("connection reset")
                real_put(lpath, rpath, **kwargs)

            patch.setattr(fs, "put_file", put_file)
        yield


def test_delete(backend: Backend, tmp_path: Path) -> None:
    store = backend.store
    sha256 = store.publish(make_artifact(tmp_path / "written"), KEY).sha256
    store.delete(KEY)
    assert store.published(KEY) is None
    if store.remote:
        cache = Path(store.cache_dir)  # type: ignore[attr-defined]
        assert not (cache / sha256).exists()
        with pytest.raises(ArtifactError, match="not in the artifact store"):
            store.fetch(KEY, sha256)
    store.delete(KEY)  # nothing there: no error


def test_a_cached_copy_outlives_a_changed_bucket_and_a_corrupt_one_is_fetched_again(
    s3: S3Server, tmp_path: Path
) -> None:
    """The cache holds verified, registered bytes: a worker that has them keeps serving them;
    only a worker without them reads the bucket (and refuses what changed there)."""
    import fsspec

    bucket = s3.bucket()
    url = f"s3://{bucket}/p"
    first = FsspecStore(url, tmp_path / "cache-1", s3.options())
    sha256 = first.publish(make_artifact(tmp_path / "written"), KEY).sha256
    cached = first.fetch(KEY, sha256)
    (cached / "weights.safetensors").write_bytes(b"\x07" * 64)  # a bad disk, or a bad hand
    assert artifact_digest(first.fetch(KEY, sha256))[0] == sha256  # evicted, fetched again

    fs = fsspec.filesystem("s3", skip_instance_cache=True, **s3.options())
    fs.pipe_file(f"{bucket}/p/{KEY}/weights.safetensors", b"\x09" * 64)
    assert artifact_digest(first.fetch(KEY, sha256))[0] == sha256  # served from the cache
    with pytest.raises(ArtifactError, match="sha256"):
        FsspecStore(url, tmp_path / "cache-2", s3.options()).fetch(KEY, sha256)
    assert not list((tmp_path / "cache-2").iterdir())  # nothing unverified is kept


def test_a_truncated_object_is_caught_without_a_download(s3: S3Server, tmp_path: Path) -> None:
    """What the API checks before activating: the manifest and a listing, no weights read."""
    import fsspec

    bucket = s3.bucket()
    store = FsspecStore(f"s3://{bucket}/p", tmp_path / "cache", s3.options())
    store.publish(make_artifact(tmp_path / "written"), KEY)
    fs = fsspec.filesystem("s3", skip_instance_cache=True, **s3.options())
    fs.pipe_file(f"{bucket}/p/{KEY}/weights.safetensors", b"\x00" * 10)
    with pytest.raises(ArtifactError, match="10 bytes, its manifest says 64") as caught:
        store.published(KEY)
    assert bucket not in str(caught.value)
    fs.rm_file(f"{bucket}/p/{KEY}/weights.safetensors")
    with pytest.raises(ArtifactError, match=r"weights\.safetensors is missing"):
        store.published(KEY)
    fs.pipe_file(f"{bucket}/p/{KEY}/{MANIFEST_FILE}", b'{"files": {"../../x": 1}}')
    with pytest.raises(ArtifactError, match="malformed"):
        store.published(KEY)


@pytest.mark.parametrize("key", ["", "/etc/x", "../x", "a/../../x", "a\\b", "a/ /b"])
def test_keys_stay_inside_the_store(key: str) -> None:
    with pytest.raises(ValueError, match="bad artifact key"):
        check_key(key)


@pytest.mark.parametrize(
    ("setting", "value", "error"),
    [
        ("artifact_url", "bucket/prefix", "must be a URL"),
        ("artifact_url", "nosuch://bucket/prefix", "unknown protocol"),
        ("artifact_storage_options", "{not json", "must be JSON"),
        ("artifact_storage_options", "[1]", "must be a JSON object"),
    ],
)
def test_bad_store_settings_are_refused_at_start(setting: str, value: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        Settings(_env_file=None, **{setting: value})  # type: ignore[call-arg]
