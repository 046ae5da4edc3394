"""The model registry: which models and versions exist, and which version each one serves.

The database is the source of truth; the API keeps the active specs in memory so that the
request path never queries it. Rows are written through app.services.versions only.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from app.db import Database
from app.errors import AppError, BadRequest, NotFound
from app.pool.base import WorkerPool
from app.services import versions
from app.services.versions import BUILTIN_PREFIX
from app.settings import Settings
from app.tables import Model, ModelVersion
from app.worker.protocol import ModelSpec
from models.artifacts import CONFIG_FILE, artifact_digest

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
        self._switching = asyncio.Lock()  # one activation at a time
        self._refused: set[tuple[str, int, str]] = set()  # versions that failed to load

    def resolve(self, artifact_path: str) -> Path:
        """Committed defaults live in the repository, everything else under the state dir."""
        if artifact_path.startswith(BUILTIN_PREFIX):
            return self.settings.pretrained_dir / artifact_path.removeprefix(BUILTIN_PREFIX)
        return self.settings.state_dir / artifact_path

    def sync_builtin(self) -> list[str]:
        """Registers the committed default artifacts; a changed one becomes a new version."""
        registered = []
        root = self.settings.pretrained_dir
        if not root.is_dir():
            return registered
        for directory in sorted(p for p in root.iterdir() if (p / CONFIG_FILE).is_file()):
            config = json.loads((directory / CONFIG_FILE).read_text())
            sha256, size = artifact_digest(directory)
            with self.db.session() as session:
                if versions.register_builtin(session, directory.name, config, sha256, size):
                    registered.append(config.get("name", directory.name))
        return registered

    def _spec(self, model: Model, version: ModelVersion) -> ModelSpec:
        return ModelSpec(
            name=model.name,
            version=version.version,
            kind=version.kind,
            task=model.task,
            artifact_dir=str(self.resolve(version.artifact_path)),
            sha256=version.sha256,
            config=version.config,
        )

    def desired(self) -> dict[str, ModelSpec]:
        """The versions the database says should be served."""
        with self.db.session() as session:
            rows = session.execute(
                select(Model, ModelVersion)
                .join(ModelVersion, ModelVersion.model_id == Model.id)
                .where(ModelVersion.is_active)
            ).all()
            return {model.name: self._spec(model, version) for model, version in rows}

    def refresh(self) -> dict[str, ModelSpec]:
        """Reloads the active versions from the database."""
        self.active = self.desired()
        return self.active

    def verify(self, spec: ModelSpec) -> None:
        """Digest of the artifact on disk against the registered sha256."""
        path = Path(spec.artifact_dir)
        try:
            sha256, _ = artifact_digest(path)
        except Exception as e:
            raise ArtifactMismatch(f"{spec.name} v{spec.version}: cannot read artifact: {e}") from e
        if sha256 != spec.sha256:
            raise ArtifactMismatch(
                f"{spec.name} v{spec.version}: artifact sha256 {sha256[:12]}... does not match "
                f"the registered {spec.sha256[:12]}...; refusing to serve it"
            )

    async def activate(self, pool: WorkerPool, name: str, version: int) -> ModelSpec:
        """Serve `version` of `name`: verify, hot-load on every worker, then record it.

        Until the workers have loaded it the old version answers; if loading fails nothing
        changes and the caller gets the error.
        """
        async with self._switching:
            spec = await asyncio.to_thread(self._version_spec, name, version)
            await asyncio.to_thread(self.verify, spec)
            current = self.active.get(name)
            if current is None or (current.version, current.sha256) != (version, spec.sha256):
                await pool.load(spec)
            await asyncio.to_thread(self._set_active, name, version)
            self.active[name] = spec
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
        """Serves what the database says is active (a job runner or another replica may have
        changed it). A version that will not load is put back to the one still serving."""
        desired = await asyncio.to_thread(self.desired)
        changed = []
        async with self._switching:
            for name, spec in desired.items():
                current = self.active.get(name)
                if current is not None and (current.version, current.sha256) == (
                    spec.version,
                    spec.sha256,
                ):
                    continue
                key = (name, spec.version, spec.sha256)
                if key in self._refused:
                    continue
                try:
                    await asyncio.to_thread(self.verify, spec)
                    await pool.load(spec)
                except Exception as e:
                    self._refused.add(key)
                    log.error("cannot serve %s v%d: %s", name, spec.version, e)
                    if current is not None:
                        await asyncio.to_thread(self._set_active, name, current.version)
                    continue
                self.active[name] = spec
                changed.append(name)
                log.info("now serving %s v%d", name, spec.version)
        return changed

    async def watch(self, pool: WorkerPool) -> None:
        """Runs `sync` every `registry_poll_s` until cancelled."""
        while True:
            await asyncio.sleep(self.settings.registry_poll_s)
            try:
                await self.sync(pool)
            except Exception:
                log.exception("registry sync failed; retrying")

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
                    select(Model).options(selectinload(Model.versions)).order_by(Model.name)
                )
            )

    def get_model(self, name: str) -> Model:
        with self.db.session() as session:
            model = session.scalar(
                select(Model).where(Model.name == name).options(selectinload(Model.versions))
            )
        if model is None:
            raise NotFound(f"unknown model {name!r}")
        return model
