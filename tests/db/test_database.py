"""The schema from Alembic, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import IntegrityError

from app.db import Database, downgrade, migrate
from app.services.registry import ModelRegistry
from app.tables import Dataset, JobMetric, Model, ModelVersion, TrainingJob
from tests.conftest import make_settings

TABLES = {"datasets", "training_jobs", "training_job_metrics", "models", "model_versions"}


def test_migrations_create_every_table_and_downgrade_cleanly(db: Database) -> None:
    assert set(inspect(db.engine).get_table_names()) >= TABLES
    columns = {c["name"] for c in inspect(db.engine).get_columns("model_versions")}
    assert {"version", "kind", "artifact_path", "sha256", "size_bytes", "params", "metrics",
            "dataset_id", "created_at", "is_active"} <= columns  # fmt: skip
    downgrade(db.url, "base")
    assert not TABLES & set(inspect(db.engine).get_table_names())
    migrate(db.url)
    assert set(inspect(db.engine).get_table_names()) >= TABLES


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'wal.db'}"
    migrate(url)
    database = Database(url)
    with database.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    database.dispose()


def test_job_with_metric_history_round_trips(db: Database) -> None:
    with db.session() as session:
        dataset = Dataset(
            name="tiny", kind="text", format="txt", sha256="a" * 64, size_bytes=3, path="d/a"
        )
        session.add(dataset)
        session.flush()
        job = TrainingJob(kind="text-gpt", name="tiny-gpt", dataset_id=dataset.id, params={"n": 1})
        job.history = [JobMetric(step=s, values={"loss": 3.0 / (s + 1)}) for s in range(3)]
        session.add(job)
    with db.session() as session:
        stored = session.scalars(select(TrainingJob)).one()
        assert stored.status == "queued" and stored.progress == 0.0 and stored.params == {"n": 1}
        assert [m.values["loss"] for m in stored.history] == [3.0, 1.5, 1.0]
        assert stored.created_at is not None


def test_dataset_sha256_is_unique(db: Database) -> None:
    row = {"kind": "text", "format": "txt", "sha256": "b" * 64, "size_bytes": 1, "path": "p"}
    with db.session() as session:
        session.add(Dataset(name="one", **row))
    with pytest.raises(IntegrityError), db.session() as session:
        session.add(Dataset(name="two", **row))


def test_at_most_one_active_version_per_model(db: Database) -> None:
    with db.session() as session:
        model = Model(name="m", task="classification", description="")
        session.add(model)
        session.flush()
        fields = {"kind": "classify-nb", "artifact_path": "x", "sha256": "c" * 64, "size_bytes": 1}
        session.add(ModelVersion(model_id=model.id, version=1, is_active=True, **fields))
        session.add(ModelVersion(model_id=model.id, version=2, is_active=False, **fields))
    with pytest.raises(IntegrityError), db.session() as session:
        second = session.scalars(select(ModelVersion).where(ModelVersion.version == 2)).one()
        second.is_active = True


def test_registry_registers_committed_defaults_once(db: Database, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, database_url=db.url)
    registry = ModelRegistry(db, settings)
    assert set(registry.sync_builtin()) >= {"sentiment", "digits"}
    assert registry.sync_builtin() == []  # idempotent across restarts
    active = registry.refresh()
    assert active["digits"].version == 1 and active["digits"].kind == "classify-cnn"
    assert Path(active["digits"].artifact_dir).is_dir()
    models = {m.name: m for m in registry.list_models()}
    assert [v.is_active for v in models["sentiment"].versions] == [True]
