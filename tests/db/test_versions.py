"""The version writer on SQLite and PostgreSQL: numbering, the one-active rule, and which of
a changed default or a user's choice is served."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.db import Database
from app.services import versions
from app.tables import Model, ModelVersion

CONFIG = {"kind": "classify-nb", "task": "classification", "metrics": {"accuracy": 0.9}}


def state(db: Database, name: str = "m") -> list[tuple[int, str, bool]]:
    """(version, source, active) of every version of `name`, oldest first."""
    with db.session() as session:
        rows = session.execute(
            select(ModelVersion.version, ModelVersion.source, ModelVersion.is_active)
            .join(Model)
            .where(Model.name == name)
            .order_by(ModelVersion.version)
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


def builtin(db: Database, sha256: str) -> bool:
    with db.session() as session:
        return versions.register_builtin(session, "m", CONFIG, sha256, 10)


def trained(db: Database, activate: bool, task: str = "classification") -> int:
    with db.session() as session:
        new = versions.register_trained(
            session,
            name="m",
            task=task,
            kind="classify-nb",
            artifact_path="artifacts/m",
            sha256="t" * 64,
            size=10,
            params={},
            config=CONFIG,
            dataset_id=None,
            activate=activate,
        )
        return new.version


def test_a_changed_default_replaces_the_old_default(db: Database) -> None:
    assert builtin(db, "a" * 64) and not builtin(db, "a" * 64)
    assert builtin(db, "b" * 64)
    assert state(db) == [(1, "builtin", False), (2, "builtin", True)]


def test_a_changed_default_never_replaces_a_users_choice(db: Database) -> None:
    builtin(db, "a" * 64)
    assert trained(db, activate=False) == 2
    with db.session() as session:
        assert versions.set_active(session, "m", 2)
    builtin(db, "b" * 64)
    assert state(db) == [(1, "builtin", False), (2, "trained", True), (3, "builtin", False)]


def test_trained_versions_number_on_and_activate_when_asked(db: Database) -> None:
    assert [trained(db, activate=a) for a in (True, False, True)] == [1, 2, 3]
    assert state(db) == [(1, "trained", False), (2, "trained", False), (3, "trained", True)]
    with pytest.raises(ValueError, match="classification model"):
        trained(db, activate=False, task="text-generation")
    with db.session() as session:
        assert not versions.set_active(session, "unknown", 1)
