"""Datasets: uploads validated and stored by content (sha256), built-ins registered at startup.

A stored file is never rewritten with other bytes: its name is its hash, so the same upload
twice is the same dataset, and a training job can always re-read what it used. It is deleted
only with its row, once no queued or running job uses it (app/services/retention.py).
An upload is spooled to `datasets/tmp` and renamed into place only once it parsed, then its
row is inserted: a crash at any point leaves no row for a partial file, and the spool files
of a process that died are swept when the service starts again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path, PurePath
from typing import BinaryIO, NamedTuple

from fastapi import UploadFile
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from app.db import Database
from app.errors import (
    Conflict,
    InsufficientStorage,
    InvalidInput,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from app.jobs.store import forget_dataset, jobs_using
from app.schemas.common import BAD_TEXT, CONTROL_CHARS, escape_controls
from app.services import retention, versions
from app.settings import Settings
from app.tables import Dataset
from models.artifacts import write_durably
from models.data import DatasetError, TextCorpus, UnsupportedFormat, describe, kind_of
from models.data.builtin import BUILTIN_DATASETS, Builtin
from models.data.uploads import parse_upload

log = logging.getLogger("genserve.datasets")
BUILTIN_PREFIX = "builtin:"
CHUNK = 1024 * 1024
# Spool files are named upload-<host>-<pid>-<random>: a restarted service knows which of them
# belong to processes of its host that are gone. Another node's are swept once this old.
SPOOL_NAME = re.compile(r"^upload-(?P<host>.+)-(?P<pid>\d+)-[^-]+$")
ORPHAN_AGE_S = 24 * 3600
MAX_ID = 2**31 - 1  # ids are INTEGER columns


def builtin_sha256(name: str) -> str:
    """Built-ins have no file of their own: their identity is their name."""
    return hashlib.sha256(f"{BUILTIN_PREFIX}{name}".encode()).hexdigest()


class DatasetService:
    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self.root = settings.state_dir / "datasets"
        self.uploading = 0  # uploads being spooled and parsed: each may hold its file in memory

    # ---- built-ins -----------------------------------------------------------------------------

    def sync_builtin(self) -> list[str]:
        """Registers the built-ins whose data is present, then links the committed default
        models to the built-ins they were trained on. A row written before built-ins had a
        size (size_bytes 0) is described again; other existing rows are left alone."""
        registered = []
        for builtin in BUILTIN_DATASETS.values():
            sha256 = builtin_sha256(builtin.name)
            existing = self._by_sha256(sha256)
            if existing is not None and existing.size_bytes:
                continue
            if not builtin.available(self.settings.data_dir):
                continue
            try:
                row = self._builtin_row(builtin, sha256)
            except Exception:  # a broken data file must not stop the service
                log.exception("built-in dataset %s could not be loaded", builtin.name)
                continue
            if existing is not None:
                self._redescribe(existing.id, row)
                continue
            _, created = self._insert(row)
            if created:
                registered.append(builtin.name)
                log.info("registered built-in dataset %s", builtin.name)
        self._link_builtin_models()
        return registered

    def _builtin_row(self, builtin: Builtin, sha256: str) -> Dataset:
        train, test = builtin.load(self.settings.data_dir)
        meta, test_meta = describe(train), describe(test)
        num_train, num_test = meta.pop("num_records"), test_meta["num_records"]
        if isinstance(train, TextCorpus) and isinstance(test, TextCorpus):
            meta = describe(TextCorpus(train.text + test.text))  # the whole corpus, as uploads
            meta.pop("num_records")
        meta.pop("label_counts", None)  # the train split's counts alone would mislead
        meta |= {
            "description": builtin.description,
            "splits": {"train": num_train, "test": num_test},
        }
        return Dataset(
            name=builtin.name,
            kind=builtin.kind,
            format="builtin",
            sha256=sha256,
            size_bytes=sum(f.stat().st_size for f in builtin.files(self.settings.data_dir)),
            path=BUILTIN_PREFIX + builtin.name,
            num_records=num_train + num_test,
            meta=meta,
            builtin=True,
        )

    def _redescribe(self, dataset_id: int, row: Dataset) -> None:
        with self.db.session() as session:
            session.execute(
                update(Dataset)
                .where(Dataset.id == dataset_id)
                .values(size_bytes=row.size_bytes, num_records=row.num_records, meta=row.meta)
            )
        log.info("described built-in dataset %s again", row.name)

    def _link_builtin_models(self) -> None:
        """The committed default models name their data as their config.json's
        training.dataset (a built-in's name or one of its `trained_as` names)."""
        with self.db.session() as session:
            trained_on = {}
            for row in session.scalars(select(Dataset).where(Dataset.builtin.is_(True))):
                builtin = BUILTIN_DATASETS.get(row.name)
                for name in (row.name, *(builtin.trained_as if builtin else ())):
                    trained_on[name] = (row.id, row.name, row.sha256)
            linked = versions.link_builtin_datasets(session, trained_on)
        if linked:
            log.info("linked %d committed model version(s) to their datasets", linked)

    # ---- uploads -------------------------------------------------------------------------------

    async def upload(self, file: UploadFile, name: str | None = None) -> tuple[Dataset, bool]:
        """(dataset, created): a new dataset, or the existing one with the same bytes."""
        filename = PurePath(file.filename or "").name
        if not filename:
            raise InvalidInput("the uploaded file has no name; its extension tells its format")
        if BAD_TEXT.search(filename) or (name and BAD_TEXT.search(name)):
            raise InvalidInput("the file name or dataset name holds a NUL or a lone surrogate")
        if CONTROL_CHARS.search(filename) or (name and CONTROL_CHARS.search(name)):
            # names end up on terminals: an escape sequence in one would act, not show
            raise InvalidInput(
                "the file name or dataset name holds a control character (an escape, tab, "
                "newline or bidirectional override); rename it or pass `name`"
            )
        limit = self.settings.max_uploads_in_flight
        if self.uploading >= limit:
            raise Overloaded(f"{limit} upload(s) are being processed; retry shortly", retry_after=5)
        self.uploading += 1
        try:
            return await self._upload(file, filename, name)
        finally:
            self.uploading -= 1

    async def _upload(
        self, file: UploadFile, filename: str, name: str | None
    ) -> tuple[Dataset, bool]:
        tmp = await run_in_threadpool(self._spool, file.file)
        try:
            sha256, size = tmp.sha256, tmp.size
            existing = self._by_sha256(sha256)
            if existing is not None:
                return self._same_file(existing), False
            try:
                fmt, data = await run_in_threadpool(parse_upload, tmp.path, filename)
                meta = await run_in_threadpool(describe, data)
                _check_labels(getattr(data, "label_names", None) or [])
            except UnsupportedFormat as e:
                raise UnsupportedMediaType(str(e), code="unsupported_format") from None
            except DatasetError as e:
                raise InvalidInput(str(e), code="invalid_dataset") from None
            await run_in_threadpool(self._check_quota, size)
            stored = f"datasets/{sha256}.{fmt}"
            os.replace(tmp.path, self.settings.state_dir / stored)  # same bytes if it exists
            row = Dataset(
                name=(name or filename)[:200],
                kind=kind_of(data),
                format=fmt,
                sha256=sha256,
                size_bytes=size,
                path=stored,
                num_records=meta.pop("num_records"),
                meta=meta,
                builtin=False,
            )
            dataset, created = self._insert(row)
            return self._same_file(dataset), created
        finally:
            tmp.path.unlink(missing_ok=True)

    def _spool(self, source: BinaryIO) -> _Spooled:
        """Copies the upload under the state dir while hashing it, refusing it past the limit."""
        return spool_upload(source, self.spool_dir, self.settings.max_upload_bytes)

    @property
    def spool_dir(self) -> Path:
        """Where uploads are received (datasets, imported archives); swept at start."""
        return self.root / "tmp"

    def sweep_spool(self) -> list[str]:
        """Deletes the spool files of uploads cut short by a crash: those of this host's
        processes that are gone, and any older than a day (a node that never came back)."""
        removed = []
        host, old = socket.gethostname(), time.time() - ORPHAN_AGE_S
        for path in (self.root / "tmp").glob("upload-*"):
            match = SPOOL_NAME.match(path.name)
            dead = match is not None and match["host"] == host and not _alive(int(match["pid"]))
            try:
                if dead or path.stat().st_mtime < old:
                    if path.is_dir():  # an imported archive being unpacked
                        shutil.rmtree(path)
                    else:
                        path.unlink()
                    removed.append(path.name)
            except FileNotFoundError:  # another process swept it first
                continue
        if removed:
            log.warning("removed %d upload spool file(s) left by a crash", len(removed))
        return removed

    def _check_quota(self, size: int) -> None:
        """507 when storing `size` more bytes would pass GENSERVE_MAX_DATASET_BYTES_TOTAL
        (uploads together; built-ins take none). Two uploads checked at once may together
        pass it by one file."""
        limit = self.settings.max_dataset_bytes_total
        if not limit:
            return
        with self.db.session() as session:
            used = session.scalar(
                select(func.coalesce(func.sum(Dataset.size_bytes), 0)).where(
                    Dataset.builtin.is_(False)
                )
            )
        if used + size > limit:
            raise InsufficientStorage(
                f"storing this {size}-byte file would put datasets at {used + size} bytes, past "
                f"this server's {limit}-byte quota (GENSERVE_MAX_DATASET_BYTES_TOTAL); delete "
                "datasets no longer needed (DELETE /datasets/{id}) and retry",
                code="dataset_quota_exceeded",
                details={"limit_bytes": limit, "used_bytes": used, "size_bytes": size},
            )

    def delete(self, dataset_id: int) -> None:
        """Deletes an uploaded dataset, then its file. 409 while a queued or running job
        trains on it, and for built-ins (registered again at every start). Versions trained
        on it keep its name and sha256; finished jobs lose the reference."""
        with self.db.session() as session:
            row = session.scalar(select(Dataset).where(Dataset.id == dataset_id).with_for_update())
            if row is None:
                raise NotFound(f"unknown dataset {dataset_id}")
            if row.builtin:
                raise Conflict(
                    f"dataset {dataset_id} ({row.name!r}) is built in: it is registered again "
                    "at every start and has no file to reclaim",
                    code="builtin_dataset",
                )
            busy = jobs_using(session, dataset_id)
            if busy:
                raise Conflict(
                    f"dataset {dataset_id} ({row.name!r}) is used by queued or running job(s) "
                    f"{', '.join(map(str, busy))}: cancel them or wait until they finish",
                    code="dataset_in_use",
                    details={"jobs": busy},
                )
            versions.forget_dataset(session, dataset_id, row.name, row.sha256)
            forget_dataset(session, dataset_id)
            session.delete(row)
        retention.remove_dataset_file(self.settings, row.path)
        log.info("deleted dataset %d (%s)", dataset_id, row.name)

    def _same_file(self, dataset: Dataset) -> Dataset:
        if dataset.builtin:  # only a file whose bytes are "builtin:<name>" gets here
            raise Conflict(f"this file's sha256 is reserved for built-in dataset {dataset.name!r}")
        return dataset

    def _insert(self, row: Dataset) -> tuple[Dataset, bool]:
        """Inserts, or returns the row that a concurrent equal upload inserted first."""
        try:
            with self.db.session() as session:
                session.add(row)
            return row, True
        except IntegrityError:
            existing = self._by_sha256(row.sha256)
            if existing is None:
                raise
            return existing, False

    # ---- queries -------------------------------------------------------------------------------

    def _by_sha256(self, sha256: str) -> Dataset | None:
        with self.db.session() as session:
            return session.scalar(select(Dataset).where(Dataset.sha256 == sha256))

    def list(self) -> list[Dataset]:
        with self.db.session() as session:
            return list(session.scalars(select(Dataset).order_by(Dataset.id)))

    def get(self, dataset_id: int) -> Dataset:
        if not 1 <= dataset_id <= MAX_ID:  # beyond what an INTEGER column holds: none such
            raise NotFound(f"unknown dataset {dataset_id}")
        with self.db.session() as session:
            dataset = session.get(Dataset, dataset_id)
        if dataset is None:
            raise NotFound(f"unknown dataset {dataset_id}")
        return dataset

    def resolve(self, ref: int | str) -> Dataset:
        """A dataset by id (an int, or ASCII decimal digits: Unicode digits are names, never ids),
        or by a name matched exactly when it is unambiguous."""
        if isinstance(ref, int):
            return self.get(ref)
        if ref.isascii() and ref.isdecimal():
            return self.get(int(ref))
        with self.db.session() as session:
            rows = list(session.scalars(select(Dataset).where(Dataset.name == ref)))
        if not rows:
            raise NotFound(f"unknown dataset {ref!r}")
        if len(rows) > 1:
            ids = ", ".join(str(r.id) for r in rows)
            raise InvalidInput(
                f"{len(rows)} datasets are named {ref!r} (ids {ids}); refer to one by its id",
                code="ambiguous_dataset",
                details={"ids": [r.id for r in rows]},
            )
        return rows[0]

    def path_of(self, dataset: Dataset) -> Path | None:
        """The stored file; None for built-ins, which load from the data dir."""
        if dataset.builtin or dataset.path.startswith(BUILTIN_PREFIX):
            return None
        return self.settings.state_dir / dataset.path


def spool_prefix() -> str:
    """`upload-<host>-<pid>-`: what `sweep_spool` reads to tell a dead process's leftovers."""
    return f"upload-{socket.gethostname()}-{os.getpid()}-"


def spool_upload(source: BinaryIO, tmp_dir: Path, limit: int) -> _Spooled:
    """Copies `source` into a new spool file of `tmp_dir` while hashing it; 413 past `limit`
    bytes (the partial file is removed)."""
    tmp_dir.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    fd, name = tempfile.mkstemp(dir=tmp_dir, prefix=spool_prefix())
    os.close(fd)
    path = Path(name)

    def chunks() -> Iterator[bytes]:
        nonlocal size
        while chunk := source.read(CHUNK):
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(
                    f"the file exceeds the {limit}-byte upload limit",
                    details={"max_bytes": limit},
                )
            digest.update(chunk)
            yield chunk

    write_durably(path, chunks())
    return _Spooled(path, digest.hexdigest(), size)


def _check_labels(labels: list[str]) -> None:
    """Labels are names too (a CSV column, zip folders): shown by the API, the playground and
    terminals, so no control character either."""
    bad = [escape_controls(label) for label in labels if CONTROL_CHARS.search(label)]
    if bad:
        raise InvalidInput(
            f"{len(bad)} label(s) hold a control character: {bad[:5]}", code="invalid_dataset"
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class _Spooled(NamedTuple):
    path: Path  # a temporary file under state_dir/datasets/tmp, same filesystem as the store
    sha256: str
    size: int
