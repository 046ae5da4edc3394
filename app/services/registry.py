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
import json
import logging
import time
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


class ModelRegistry:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.active: dict[str, ModelSpec] = {}
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
        """Reloads the active versions from the database."""
        self.active = self.desired()
        return self.active

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
        if task is not None and spec.task != task:
            raise BadRequest(
                f"model {name!r} is a {spec.task} model, not {TASK_NOUNS.get(task, task)}"
            )
        return spec

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
