"""OpenAI's `created` of a served model is its version's creation time; the registry keeps it
in memory beside the spec, so /v1/models never queries the database."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select, update

from app.db import Database
from app.schemas.common import as_utc
from app.tables import ModelVersion
from tests.db.test_desired_state import NAME, started


def test_created_follows_the_served_version(db: Database, tmp_path: Path) -> None:
    earlier = datetime(2024, 2, 3, 4, 5, 6, tzinfo=UTC)

    async def scenario() -> None:
        registry, pool = await started(db, tmp_path, 2)
        with db.session() as session:
            first = session.scalar(select(ModelVersion.created_at).where(ModelVersion.version == 1))
            session.execute(
                update(ModelVersion).where(ModelVersion.version == 2).values(created_at=earlier)
            )
        assert first is not None
        assert registry.created(registry.active[NAME]) == int(as_utc(first).timestamp())
        await registry.activate(pool, NAME, 2)
        assert registry.created(registry.active[NAME]) == int(earlier.timestamp())

    asyncio.run(scenario())
