"""The built-in datasets as the service registers them (SQLite and PostgreSQL): their real
size on disk, a text corpus counted in characters throughout (num_records, chars, splits),
and the committed default models linked to the dataset they were trained on. Rows written
before built-ins had sizes are described again at the next start."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select, update

from app.db import Database, migrate
from app.services.datasets import DatasetService
from app.services.registry import ModelRegistry
from app.tables import Dataset, Model, ModelVersion
from models.data.builtin import BUILTIN_DATASETS
from tests.conftest import DATA_DIR, make_settings
from tests.tiny_models import small_pretrained


def rows(db: Database) -> dict[str, Dataset]:
    with db.session() as session:
        return {d.name: d for d in session.scalars(select(Dataset).where(Dataset.builtin))}


def digits_version(db: Database) -> ModelVersion:
    with db.session() as session:
        return session.scalars(select(ModelVersion).join(Model).where(Model.name == "digits")).one()


def test_builtins_have_sizes_character_counts_and_their_models(db_url: str, tmp_path: Path) -> None:
    pretrained = small_pretrained(tmp_path / "pretrained", ("digits",), generators=False)
    settings = make_settings(tmp_path, database_url=db_url, pretrained_dir=pretrained)
    migrate(db_url)
    db = Database(db_url)
    try:
        ModelRegistry(db, settings).sync_builtin()  # at start-up, models come first
        service = DatasetService(settings, db)
        assert "digits" in service.sync_builtin()
        found = rows(db)

        digits = found["digits"]
        files = BUILTIN_DATASETS["digits"].files(DATA_DIR)
        assert digits.size_bytes == sum(f.stat().st_size for f in files) > 0
        assert (digits.num_records, digits.meta["record"]) == (1797, "image")
        # the committed digits classifier was trained on it: its version says so
        version = digits_version(db)
        assert (version.dataset_id, version.dataset_name, version.dataset_sha256) == (
            digits.id,
            "digits",
            digits.sha256,
        )

        corpus = found["tinyshakespeare"]  # ../shared/data is present wherever tests run
        size = (DATA_DIR / "tinyshakespeare.txt").stat().st_size
        assert corpus.meta["record"] == "character"
        assert corpus.num_records == corpus.meta["chars"] == sum(corpus.meta["splits"].values())
        assert corpus.num_records == 1_115_394 == corpus.size_bytes == size  # ASCII
        for row in found.values():
            assert row.size_bytes > 0, row.name

        # a row the old code wrote (no size, the training split's characters) is repaired
        with db.session() as session:
            session.execute(
                update(Dataset)
                .where(Dataset.id == corpus.id)
                .values(size_bytes=0, meta={**corpus.meta, "chars": 1_003_854})
            )
        assert service.sync_builtin() == []  # nothing new
        again = rows(db)["tinyshakespeare"]
        assert (again.size_bytes, again.meta["chars"]) == (size, 1_115_394)
        assert again.id == corpus.id
    finally:
        db.dispose()
