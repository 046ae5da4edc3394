"""The registry's reconcile loop against a fake pool, on SQLite and PostgreSQL: the active
version in the database is desired state that a replica follows and never writes back."""

from __future__ import annotations

import asyncio
import shutil
import time
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import select

from app.db import Database
from app.pool.base import WorkerInfo, WorkerPool
from app.pool.errors import LoadFailed
from app.services import versions
from app.services.registry import ModelRegistry
from app.services.retention import Retention
from app.settings import PRETRAINED_DIR
from app.tables import Model, ModelPlacement, ModelVersion
from app.worker.protocol import ModelSpec
from models.artifacts import artifact_digest
from tests.conftest import make_settings

NAME = "sentiment"


class FakePool(WorkerPool):
    """One ready worker whose hot loads take `load_s` and fail for versions in `broken`."""

    def __init__(self, load_s: float = 0.0) -> None:
        self.specs: list[ModelSpec] = []
        self.served: dict[str, int] = {}
        self.loads: list[int] = []
        self.broken: set[int] = set()
        self.load_s = load_s

    async def start(self, specs: list[ModelSpec]) -> None:
        self.specs = list(specs)
        self.served = {s.name: s.version for s in specs}

    async def stop(self) -> None: ...

    async def infer(self, model: str, inputs: Any, rows: int) -> Any: ...

    def generate(self, model: str, prompt: str, params: dict[str, Any], n: int) -> Any: ...

    def check_room(self, model: str, sequences: int) -> None: ...

    async def load(self, spec: ModelSpec) -> None:
        self.loads.append(spec.version)
        await asyncio.sleep(self.load_s)
        if spec.version in self.broken:
            raise LoadFailed(f"cannot load v{spec.version}", details={1: "broken"})
        self.served[spec.name] = spec.version

    async def ensure(self, spec: ModelSpec) -> None: ...

    def workers(self) -> list[WorkerInfo]:
        return [WorkerInfo(1, 1, "cpu", True, dict(self.served), 0, 0)]


def add_version(db: Database, state_dir: Path, number: int, activate: bool) -> None:
    """A copy of the committed sentiment artifact as a trained version of NAME."""
    relative = f"artifacts/v{number}"
    shutil.copytree(PRETRAINED_DIR / NAME, state_dir / relative)
    sha256, size = artifact_digest(state_dir / relative)
    with db.session() as session:
        versions.register_trained(
            session,
            name=NAME,
            task="classification",
            kind="classify-logreg",
            artifact_path=relative,
            sha256=sha256,
            size=size,
            params={},
            config={},
            dataset_id=None,
            activate=activate,
        )


def desired(db: Database) -> int:
    with db.session() as session:
        return session.scalar(
            select(ModelVersion.version).join(Model).where(ModelVersion.is_active)
        )


async def started(
    db: Database, tmp_path: Path, count: int, load_s: float = 0.0
) -> tuple[ModelRegistry, FakePool]:
    """A registry serving v1 of `count` versions, on a fake pool; retries start at 0.5 s."""
    settings = make_settings(
        tmp_path, database_url=db.url, registry_poll_s=0.5, default_text_classifier="other"
    )
    for number in range(1, count + 1):
        add_version(db, settings.state_dir, number, activate=number == 1)
    registry, fake = ModelRegistry(db, settings), FakePool(load_s)
    await fake.start(list(registry.refresh().values()))
    return registry, fake


def test_a_sync_during_an_activation_never_switches_back(db: Database, tmp_path: Path) -> None:
    async def scenario() -> None:
        registry, pool = await started(db, tmp_path, 2, load_s=0.2)
        activation = asyncio.create_task(registry.activate(pool, NAME, 2))
        await asyncio.sleep(0.05)  # the activation is loading v2 when the poll comes
        await asyncio.gather(activation, registry.sync(pool))
        assert registry.active[NAME].version == 2 and pool.served[NAME] == 2
        assert pool.loads == [2], "the sync loaded the old version back"

    asyncio.run(scenario())


def test_a_version_that_will_not_load_here_is_retried_and_never_written_back(
    db: Database, tmp_path: Path
) -> None:
    async def scenario() -> None:
        registry, pool = await started(db, tmp_path, 2)
        pool.broken.add(2)
        with db.session() as session:  # another replica activates v2
            versions.set_active(session, NAME, 2)
        await registry.sync(pool)
        assert desired(db) == 2, "the replica wrote the desired state back"
        assert registry.active[NAME].version == 1 and pool.served[NAME] == 1
        degraded = registry.degraded()[NAME]
        assert degraded["desired_version"] == 2 and degraded["served_version"] == 1
        assert "cannot load v2" in degraded["error"]
        with db.session() as session:
            row = session.scalar(select(ModelPlacement))
            assert row is not None
            assert (row.state, row.desired_version, row.served_version) == ("degraded", 2, 1)
            assert row.workers == {"1": 1}

        await registry.sync(pool)  # within the back-off: no new try
        assert pool.loads == [2]
        pool.broken.clear()
        await asyncio.sleep(0.6)
        await registry.sync(pool)  # past it, and the artifact loads now
        assert pool.loads == [2, 2]
        assert registry.active[NAME].version == 2 and registry.degraded() == {}
        assert desired(db) == 2

    asyncio.run(scenario())


def test_a_sync_under_way_never_serves_a_model_archived_meanwhile(
    db: Database, tmp_path: Path
) -> None:
    """CI saw this: DELETE /models/{name} returned 204, and a sync that had read the desired
    state just before the archive committed served the model again."""

    async def scenario() -> None:
        registry, pool = await started(db, tmp_path, 1)
        read_catalog = registry.read_catalog

        def slow_catalog() -> Any:
            time.sleep(0.3)  # a database under load: the sync has read `desired` already
            return read_catalog()

        registry.read_catalog = slow_catalog  # type: ignore[method-assign]
        sync = asyncio.create_task(registry.sync(pool))
        await asyncio.sleep(0.1)
        retention = Retention(db, registry.settings)
        await registry.retire(partial(retention.archive_model, NAME), NAME)
        await sync
        assert NAME not in registry.active, "the sync serves the archived model again"
        await registry.sync(pool)
        assert NAME not in registry.active

    asyncio.run(scenario())
