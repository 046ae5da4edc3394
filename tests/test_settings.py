"""Settings come from GENSERVE_* variables or .env and refuse unsafe values."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.settings import Settings


def test_defaults_work_on_a_laptop_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.db_url.startswith("sqlite:///") and settings.db_url.endswith("genserve.db")
    assert settings.worker_devices() == ["cpu"]
    assert settings.keys == []


def test_environment_and_dotenv_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("GENSERVE_PORT=9100\nGENSERVE_MAX_BATCH_SIZE=8\n")
    monkeypatch.setenv("GENSERVE_WORKERS", "3")
    monkeypatch.setenv("GENSERVE_DEVICE", "cpu")
    settings = Settings()
    assert settings.port == 9100 and settings.max_batch_size == 8
    assert settings.worker_devices() == ["cpu", "cpu", "cpu"]


def test_api_keys_are_parsed_and_hidden() -> None:
    settings = Settings(_env_file=None, api_keys="reader-key-1:read, admin-key-2:admin")  # type: ignore[call-arg]
    assert [k.scope for k in settings.keys] == ["read", "admin"]
    assert "reader-key-1" not in repr(settings.keys) and "reader-key-1" not in repr(settings)


@pytest.mark.parametrize(
    "values",
    [
        {"api_keys": "short:admin"},
        {"api_keys": "long-enough-key:root"},
        {"port": 0},
        {"max_batch_size": 0},
        {"device": "tpu"},
    ],
)
def test_unsafe_values_are_refused(values: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_a_relative_state_dir_is_made_absolute_where_the_service_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ray actors, Ray Train workers and job runners start in other directories (or on
    other nodes): `./var` must name the directory it named for the service."""
    monkeypatch.chdir(tmp_path)
    settings = Settings(_env_file=None, state_dir="var", pool="ray")  # type: ignore[call-arg]
    assert settings.state_dir == tmp_path / "var"
    monkeypatch.chdir("/")
    assert settings.state_dir.is_absolute() and settings.state_dir == tmp_path / "var"
