"""The `genserve` command line against a real SQLite database."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import cli


def test_migrate_then_models_lists_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GENSERVE_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("GENSERVE_DATABASE_URL", raising=False)
    runner = CliRunner()
    result = runner.invoke(cli, ["migrate"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "genserve.db").is_file()
    result = runner.invoke(cli, ["models"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "sentiment" in result.output and "digits" in result.output
    assert "classify-cnn" in result.output


def test_help_lists_the_commands() -> None:
    result = CliRunner().invoke(cli, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for command in ("serve", "migrate", "models"):
        assert command in result.output
