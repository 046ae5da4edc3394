"""The model registry: which models and versions exist, and which version each one serves.

The active version in the database is desired state: every replica reconciles its workers to
it (`sync`, under the same lock as `activate`, so a poll never undoes a newer switch) and
reports what it actually serves in `model_placements`; a replica that cannot load a version
keeps the old one, reports itself degraded and retries, and never writes the desired state
back. The API keeps the served specs in memory so that the request path never queries the
database. Rows are written through app.services.versions only.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

from app.db import Database
from app.errors import AppError, BadRequest, NotFound
from app.pool.base import WorkerPool
from app.schemas.common import as_utc
from app.services import versions
from app.services.placements import Degraded, Placements
from app.services.versions import BUILTIN_PREFIX
from app.settings import Settings
from app.storage import open_store, published_artifact
from app.tables import Model, ModelVersion
from app.worker.protocol import ModelSpec
from models.artifacts import (
    CONFIG_FILE,
    ArtifactError,
    artifact_digest,
    describe_error,
    without_paths,
)

log = logging.getLogger("genserve.registry")
TASK_NOUNS = {
    "classification": "a classifier",
    "text-generation": "a text generator",
    "image-generation": "an image generator",
}


class ArtifactMismatch(AppError):
    """The bytes on disk are not the ones registered: refuse to serve them."""

    status, code = 409, "artifact_mismatch"


CATALOG_MISS_S = 0.5
ALIAS = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")  # never all digits: name@3 is a version


@dataclass
class Catalog:
    """One model's versions, aliases and traffic split as the request path sees them: kept in
    memory from the last sync, so that resolving `name@alias` never queries the database."""

    task: str
    versions: dict[int, ModelSpec] = field(default_factory=dict)
    aliases: dict[str, int] = field(default_factory=dict)
    traffic: list[tuple[int, int]] = field(default_factory=list)  # (version, weight)

    def pick(self, user: str | None) -> int:
        """A version of the split by weight: the same one every time for one `user`."""
        total = sum(weight for _, weight in self.traffic)
        if user is None:
            point = random.randrange(total)
        else:
            digest = hashlib.blake2b(user.encode(), digest_size=8).digest()
            point = int.from_bytes(digest) % total
        for version, weight in self.traffic:
            if point < weight:
                return version
            point -= weight
        raise AssertionError("weights sum to total")


class ModelRegistry:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.active: dict[str, ModelSpec] = {}
        self.catalog: dict[str, Catalog] = {}  # every servable version, by model name
        self._catalog_read_at = 0.0
        self._switching = asyncio.Lock()  # one activation or sync at a time
        self._backoff: dict[str, Degraded] = {}  # desired versions that would not load here
        self._created: dict[tuple[str, int], int] = {}  # (name, version) -> unix seconds
        self.placements = Placements(db, settings)
        self.store = open_store(settings)

    def resolve(self, artifact_path: str) -> Path:
        """Committed defaults live in the repository, everything else under the state dir."""
        if artifact_path.startswith(BUILTIN_PREFIX):
            return self.settings.pretrained_dir / artifact_path.removeprefix(BUILTIN_PREFIX)
        return self.settings.state_dir / artifact_path

    def locate(self, artifact_path: str) -> tuple[str, str]:
        """(directory, URL) of an artifact for the workers: committed defaults and the local
        store are read in place; an artifact in object storage is fetched by its URL."""
        if artifact_path.startswith(BUILTIN_PREFIX) or not self.store.remote:
            return str(self.resolve(artifact_path)), ""
        return "", self.store.url(artifact_path)

    def sync_builtin(self) -> list[str]:
        """Registers the committed default artifacts; a changed one becomes a new version."""
        registered = []
        root = self.settings.pretrained_dir
        if not root.is_dir():
            return registered
        for directory in sorted(p for p in root.iterdir() if (p / CONFIG_FILE).is_file()):
            config = json.loads((directory / CONFIG_FILE).read_text())
            sha256, size = artifact_digest(directory)
            for attempt in range(2):  # a replica starting beside this one may register it first
                try:
                    with self.db.session() as session:
                        if versions.register_builtin(session, directory.name, config, sha256, size):
                            registered.append(config.get("name", directory.name))
                    break
                except IntegrityError:
                    if attempt:
                        raise
        return registered

    def _spec(self, model: Model, version: ModelVersion) -> ModelSpec:
        self._created[(model.name, version.version)] = int(as_utc(version.created_at).timestamp())
        directory, url = self.locate(version.artifact_path)
        return ModelSpec(
            name=model.name,
            version=version.version,
            kind=version.kind,
            task=model.task,
            artifact_dir=directory,
            sha256=version.sha256,
            config=version.config,
            artifact_url=url,
            size_bytes=version.size_bytes,
        )

    def desired(self) -> dict[str, ModelSpec]:
        """The versions the database says should be served (archived models: none)."""
        with self.db.session() as session:
            rows = session.execute(
                select(Model, ModelVersion)
                .join(ModelVersion, ModelVersion.model_id == Model.id)
                .where(ModelVersion.is_active, Model.archived_at.is_(None))
            ).all()
            return {model.name: self._spec(model, version) for model, version in rows}

    def refresh(self) -> dict[str, ModelSpec]:
        """Reloads the active versions and the catalog from the database."""
        self.active = self.desired()
        self.catalog = self.read_catalog()
        return self.active

    def read_catalog(self) -> dict[str, Catalog]:
        """Every version, alias and traffic split of the models that are not archived."""
        catalog: dict[str, Catalog] = {}
        with self.db.session() as session:
            models = session.scalars(
                select(Model)
                .where(Model.archived_at.is_(None))
                .options(selectinload(Model.versions), selectinload(Model.aliases))
            )
            for model in models:
                entry = catalog[model.name] = Catalog(model.task)
                entry.versions = {v.version: self._spec(model, v) for v in model.versions}
                entry.aliases = {a.alias: a.version for a in model.aliases}
                entry.traffic = [
                    (int(v), int(w)) for v, w in sorted((model.traffic or {}).items()) if w
                ]
        return catalog

    async def serve(
        self, pool: WorkerPool, ref: str, task: str | None = None, user: str | None = None
    ) -> ModelSpec:
        """The version a request for `ref` gets, loaded and ready to route with `pool.key`.

        `name` is the traffic split's pick (sticky per `user`) or the active version;
        `name@3` is version 3 and `name@staging` the version that alias points at. A version
        other than the active one is loaded beside it on first use."""
        try:
            spec = self.lookup(ref, task, user)
        except NotFound:
            # registered since the last sync (a job just finished, another replica set an
            # alias)? Read again, at most every CATALOG_MISS_S however many requests miss.
            if "@" not in ref or time.monotonic() - self._catalog_read_at < CATALOG_MISS_S:
                raise
            self._catalog_read_at = time.monotonic()
            await self.reread_catalog()
            spec = self.lookup(ref, task, user)
        await pool.ensure(spec)
        return spec

    async def reread_catalog(self) -> None:
        self.catalog = await asyncio.to_thread(self.read_catalog)

    def lookup(self, ref: str, task: str | None = None, user: str | None = None) -> ModelSpec:
        """`ref`'s version (see `serve`); 404 if unknown, 400 if it does not do `task`."""
        name, at, selector = ref.partition("@")
        entry = self.catalog.get(name)
        if not at and (entry is None or not entry.traffic):
            return self.spec(name, task)
        if entry is None:
            self.spec(name, task)  # the usual 404
            raise AssertionError
        if not at:
            version = entry.pick(user)
        elif selector.isdigit():
            version = int(selector)
        elif selector in entry.aliases:
            version = entry.aliases[selector]
        else:
            known = ", ".join(sorted(entry.aliases)) or "none"
            raise NotFound(f"model {name!r} has no alias {selector!r}; its aliases: {known}")
        spec = entry.versions.get(version)
        if spec is None:
            raise NotFound(f"model {name!r} has no version {selector or version}")
        self._check_task(spec, task)
        return spec

    def verify(self, spec: ModelSpec) -> None:
        """Digest of the artifact against the registered sha256: hashed on disk, or, in object
        storage, its manifest's with every object listed at its size (no download: the worker
        that fetches it hashes the bytes). The error names the version, not the path or URL
        (clients read it); the log has them."""
        where = spec.artifact_url or spec.artifact_dir
        try:
            if spec.artifact_url:
                sha256 = self._published(spec.artifact_url)
            else:
                sha256, _ = artifact_digest(Path(spec.artifact_dir))
        except Exception as e:
            log.error("cannot read %s v%d at %s: %s", spec.name, spec.version, where, e)
            reason = without_paths(str(e), where)
            raise ArtifactMismatch(
                f"{spec.name} v{spec.version}: cannot read artifact: {reason}"
            ) from e
        if sha256 != spec.sha256:
            log.error("%s v%d at %s: sha256 %s", spec.name, spec.version, where, sha256)
            raise ArtifactMismatch(
                f"{spec.name} v{spec.version}: artifact sha256 {sha256[:12]}... does not match "
                f"the registered {spec.sha256[:12]}...; refusing to serve it"
            )

    def _published(self, url: str) -> str:
        published = published_artifact(url, self.settings.storage_options())
        if published is None:
            raise ArtifactError("not in the artifact store (never published, or deleted)", url)
        return published.sha256

    async def activate(self, pool: WorkerPool, name: str, version: int) -> ModelSpec:
        """Serve `version` of `name`: verify, hot-load on this replica's workers, then record
        it as the desired version; other replicas follow on their next sync.

        Loading before recording means a version that will not load here is refused (409)
        without ever becoming the fleet's desired state. The lock makes the background sync
        wait, so it never reads the desired state from before this switch.
        """
        async with self._switching:
            spec = await asyncio.to_thread(self._version_spec, name, version)
            await asyncio.to_thread(self.verify, spec)
            current = self.active.get(name)
            if not self._serves(pool, spec):
                await pool.load(spec)
            try:
                await asyncio.to_thread(self._set_active, name, version)
            except Exception:
                if current is not None:  # the workers follow the label again
                    await pool.load(current)
                raise
            self._served(spec)
            await asyncio.to_thread(self._report, pool, {name: spec})
            log.info("activated %s v%d", name, version)
            return spec

    def _version_spec(self, name: str, version: int) -> ModelSpec:
        with self.db.session() as session:
            row = session.execute(
                select(Model, ModelVersion)
                .join(ModelVersion, ModelVersion.model_id == Model.id)
                .where(Model.name == name, ModelVersion.version == version)
            ).first()
            if row is None:
                raise NotFound(f"model {name!r} has no version {version}")
            return self._spec(*row)

    def _set_active(self, name: str, version: int) -> None:
        with self.db.session() as session:
            if not versions.set_active(session, name, version):
                raise NotFound(f"unknown model {name!r}")

    async def sync(self, pool: WorkerPool) -> list[str]:
        """Reconciles this replica's workers to the desired versions in the database (a job
        runner or another replica may have changed them).

        The desired state is read under the activation lock: read before it, a sync could
        undo an activation that finished meanwhile. A version that will not load leaves the
        previous one serving, marks the model degraded and is retried with back-off; the
        database's desired state is never written from here.
        """
        changed = []
        async with self._switching:
            desired = await asyncio.to_thread(self.desired)
            await self.reread_catalog()
            for name in set(self.active) - set(desired):  # archived, by any replica
                self.active.pop(name)
                log.info("no longer serving %s", name)
            for name, spec in desired.items():
                if self._serves(pool, spec):
                    self._served(spec)  # clears a back-off left from an earlier version
                    continue
                if not self._due(name, spec):
                    continue
                try:
                    await asyncio.to_thread(self.verify, spec)
                    await pool.load(spec)
                except Exception as e:
                    self._failed(pool, spec, e)
                    continue
                self._served(spec)
                changed.append(name)
                log.info("now serving %s v%d", name, spec.version)
            await asyncio.to_thread(self._report, pool, desired)
        return changed

    async def retire(
        self, write: Callable[[], None], name: str, version: int | None = None
    ) -> None:
        """Runs `write`, a delete or an archive in the database, and stops serving what it
        removed here: the model, or only `version`. Both happen under the activation lock,
        since a sync that had read the database before the write would serve it again. The
        other replicas follow at their next sync."""
        async with self._switching:
            await asyncio.to_thread(write)
            if version is None:
                self.active.pop(name, None)
                self.catalog.pop(name, None)
            elif (entry := self.catalog.get(name)) is not None:
                entry.versions.pop(version, None)

    def _serves(self, pool: WorkerPool, spec: ModelSpec) -> bool:
        """Whether requests here get `spec`: it is the label, and every ready worker has it."""
        current = self.active.get(spec.name)
        if current is None or (current.version, current.sha256) != (spec.version, spec.sha256):
            return False
        return all(w.models.get(spec.name) == spec.version for w in pool.workers() if w.ready)

    def _due(self, name: str, spec: ModelSpec) -> bool:
        """Whether to try `spec` now: at once if newly desired, else when its back-off ends."""
        entry = self._backoff.get(name)
        return (
            entry is None
            or not entry.is_for(spec.version, spec.sha256)
            or time.monotonic() >= entry.next_try
        )

    def _failed(self, pool: WorkerPool, spec: ModelSpec, error: Exception) -> None:
        name = spec.name
        entry = self._backoff.get(name)
        if entry is None or not entry.is_for(spec.version, spec.sha256):
            served = self.served_version(pool, name)
            entry = self._backoff[name] = Degraded(spec.version, spec.sha256, "", served)
            log.error("cannot serve %s v%d, keeping v%s: %s", name, spec.version, served, error)
        # what /models and /readyz show: no server path or URL, whatever raised, and the
        # workers' own reasons (a LoadFailed says only that they failed)
        places = [p for p in (spec.artifact_dir, spec.artifact_url) if p]
        reason = describe_error(error, *places)
        details = getattr(error, "details", None)
        if isinstance(details, dict) and details:
            why = sorted({without_paths(str(d), *places) for d in details.values()})
            reason = f"{reason}: {'; '.join(why)}"
        entry.failed(reason, self.settings.registry_poll_s)

    def _served(self, spec: ModelSpec) -> None:
        self.active[spec.name] = spec
        self._backoff.pop(spec.name, None)

    def _report(self, pool: WorkerPool, desired: dict[str, ModelSpec]) -> None:
        """Writes this replica's placement of each desired model (only what changed)."""
        workers = pool.workers()
        for name, spec in desired.items():
            by_worker = {str(w.id): w.models.get(name) for w in workers if w.ready}
            served = self.served_version(pool, name)
            entry = self._backoff.get(name)
            try:
                self.placements.report(
                    name, spec.version, served, by_worker, entry.error if entry else None
                )
            except Exception:
                log.warning("could not record the placement of %s", name, exc_info=True)

    def served_version(self, pool: WorkerPool, name: str) -> int | None:
        """The version of `name` this replica's workers answer with: its label, unless no
        ready worker has it (it failed to load at start)."""
        current = self.active.get(name)
        if current is None:
            return None
        ready = [w for w in pool.workers() if w.ready]
        if ready and not any(w.models.get(name) == current.version for w in ready):
            return None
        return current.version

    def degraded(self) -> dict[str, dict[str, Any]]:
        """Models whose desired version this replica cannot load: what it serves instead,
        why, and when it retries (for /models, /readyz details and the operator)."""
        return {name: entry.public() for name, entry in sorted(self._backoff.items())}

    async def watch(self, pool: WorkerPool) -> None:
        """Runs `sync` every `registry_poll_s` until cancelled; then forgets this replica's
        placements, so it no longer counts as serving anything."""
        try:
            while True:
                await asyncio.sleep(self.settings.registry_poll_s)
                try:
                    await self.sync(pool)
                except Exception:
                    log.exception("registry sync failed; retrying")
        finally:
            self.placements.forget()

    def created(self, spec: ModelSpec) -> int:
        """When `spec`'s version was registered, in unix seconds (OpenAI's `created`); kept
        from the read that made the spec, so the request path never queries the database."""
        return self._created.get((spec.name, spec.version), 0)

    def spec(self, name: str, task: str | None = None) -> ModelSpec:
        """The active version of `name`; 404 if unknown, 400 if it does not do `task`."""
        spec = self.active.get(name)
        if spec is None:
            known = ", ".join(sorted(self.active)) or "none"
            raise NotFound(f"unknown model {name!r}; served models: {known}")
        self._check_task(spec, task)
        return spec

    @staticmethod
    def _check_task(spec: ModelSpec, task: str | None) -> None:
        if task is not None and spec.task != task:
            raise BadRequest(
                f"model {spec.name!r} is a {spec.task} model, not {TASK_NOUNS.get(task, task)}"
            )

    # -- aliases and traffic ----------------------------------------------------------------

    async def set_alias(self, name: str, alias: str, version: int) -> None:
        """Points `alias` at `version`: requests for `name@alias` get it from the next sync
        on every replica (at once on this one)."""
        await asyncio.to_thread(self._write_alias, name, alias, version)
        await self.reread_catalog()

    def _write_alias(self, name: str, alias: str, version: int | None) -> None:
        with self.db.session() as session:
            model = self._locked_model(session, name)
            if version is None:
                if not versions.delete_alias(session, model, alias):
                    raise NotFound(f"model {name!r} has no alias {alias!r}")
                return
            self._check_versions(model, [version])
            versions.set_alias(session, model, alias, version)

    async def delete_alias(self, name: str, alias: str) -> None:
        await asyncio.to_thread(self._write_alias, name, alias, None)
        await self.reread_catalog()

    async def set_traffic(self, pool: WorkerPool, name: str, split: dict[int, int]) -> None:
        """Splits the requests that name no version of `name` by weight (an empty split: all
        to the active version). Every version in it is verified and loaded here first, so a
        version that will not load is refused (409) before any request is sent to it."""
        for version in sorted(v for v, weight in split.items() if weight):
            spec = await asyncio.to_thread(self._version_spec, name, version)
            await asyncio.to_thread(self.verify, spec)
            await pool.ensure(spec)
        await asyncio.to_thread(self._write_traffic, name, split)
        await self.reread_catalog()
        log.info("traffic of %s: %s", name, split or "all to the active version")

    def _write_traffic(self, name: str, split: dict[int, int]) -> None:
        with self.db.session() as session:
            model = self._locked_model(session, name)
            self._check_versions(model, list(split))
            versions.set_traffic(session, model, split)

    @staticmethod
    def _locked_model(session: Any, name: str) -> Model:
        model = versions.locked_model(session, name)
        if model is None or model.archived_at is not None:
            raise NotFound(f"unknown model {name!r}")
        return model

    @staticmethod
    def _check_versions(model: Model, wanted: list[int]) -> None:
        known = {v.version for v in model.versions}
        missing = sorted(set(wanted) - known)
        if missing:
            raise NotFound(
                f"model {model.name!r} has no version {', '.join(map(str, missing))}; "
                f"its versions: {', '.join(map(str, sorted(known))) or 'none'}"
            )

    def list_models(self) -> list[Model]:
        with self.db.session() as session:
            return list(
                session.scalars(
                    select(Model)
                    .options(selectinload(Model.versions), selectinload(Model.aliases))
                    .order_by(Model.name)
                )
            )

    def get_model(self, name: str) -> Model:
        with self.db.session() as session:
            model = session.scalar(
                select(Model)
                .where(Model.name == name)
                .options(selectinload(Model.versions), selectinload(Model.aliases))
            )
        if model is None:
            raise NotFound(f"unknown model {name!r}")
        return model
