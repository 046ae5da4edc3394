"""`genserve serve` and `migrate`, the commands that own the database, against real SQLite.

`genserve models` reads the server over HTTP now: tests/cli/test_models.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import cli
from app.db import head_revision


def test_migrate_creates_the_database_at_head(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GENSERVE_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("GENSERVE_DATABASE_URL", raising=False)
    runner = CliRunner()
    result = runner.invoke(cli, ["migrate"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "genserve.db").is_file()
    assert f"database at {head_revision()}" in result.output


def test_migrate_goes_back_only_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENSERVE_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("GENSERVE_DATABASE_URL", raising=False)
    runner = CliRunner()
    head = f"database at {head_revision()}"
    assert head in runner.invoke(cli, ["migrate"]).output
    older = runner.invoke(cli, ["migrate", "0001"])  # an upgrade to an older revision is a no-op
    assert older.exit_code == 1 and "genserve migrate 0001 --downgrade" in older.output
    back = runner.invoke(cli, ["migrate", "0001", "--downgrade"])
    assert back.exit_code == 0 and "database at 0001" in back.output, back.output
    assert head in runner.invoke(cli, ["migrate"]).output


def test_help_lists_the_commands() -> None:
    result = CliRunner().invoke(cli, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for command in ("serve", "migrate", "models", "train", "jobs", "datasets"):
        assert command in result.output
