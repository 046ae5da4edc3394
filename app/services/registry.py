"""The model registry: which models and versions exist, and which version each one serves.

The database is the source of truth; the API keeps the active specs in memory so that the
request path never queries it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from app.db import Database
from app.errors import BadRequest, NotFound
from app.pool.base import ModelSpec
from app.settings import Settings
from app.tables import Model, ModelVersion
from models.checksum import CONFIG_FILE, artifact_digest

log = logging.getLogger("genserve.registry")
BUILTIN_PREFIX = "builtin:"
TASK_NOUNS = {
    "classification": "a classifier",
    "text-generation": "a text generator",
    "image-generation": "an image generator",
}


class ModelRegistry:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.active: dict[str, ModelSpec] = {}

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
                if self._register_builtin(session, directory.name, config, sha256, size):
                    registered.append(config.get("name", directory.name))
        return registered

    def _register_builtin(
        self, session: Session, dirname: str, config: dict, sha256: str, size: int
    ) -> bool:
        name = config.get("name", dirname)
        model = session.scalar(
            select(Model).where(Model.name == name).options(selectinload(Model.versions))
        )
        if model is None:
            model = Model(
                name=name,
                task=config.get("task", "classification"),
                description=config.get("description", ""),
            )
            session.add(model)
            session.flush()
        if any(v.sha256 == sha256 and v.source == "builtin" for v in model.versions):
            return False
        active = next((v for v in model.versions if v.is_active), None)
        version = ModelVersion(
            model_id=model.id,
            version=max((v.version for v in model.versions), default=0) + 1,
            kind=config["kind"],
            artifact_path=BUILTIN_PREFIX + dirname,
            sha256=sha256,
            size_bytes=size,
            params=config.get("training", {}).get("params", {}),
            metrics=config.get("metrics", {}),
            config=config,
            source="builtin",
            is_active=False,
        )
        session.add(version)
        # A retrained default replaces the old default, never a version a user activated.
        if active is None or active.source == "builtin":
            if active is not None:
                active.is_active = False
                session.flush()
            version.is_active = True
        log.info("registered builtin %s v%d (%s)", name, version.version, sha256[:12])
        return True

    def refresh(self) -> dict[str, ModelSpec]:
        """Reloads the active versions from the database."""
        with self.db.session() as session:
            rows = session.execute(
                select(Model, ModelVersion)
                .join(ModelVersion, ModelVersion.model_id == Model.id)
                .where(ModelVersion.is_active)
            ).all()
            self.active = {
                model.name: ModelSpec(
                    name=model.name,
                    version=version.version,
                    kind=version.kind,
                    task=model.task,
                    artifact_dir=str(self.resolve(version.artifact_path)),
                    sha256=version.sha256,
                    config=version.config,
                )
                for model, version in rows
            }
        return self.active

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
