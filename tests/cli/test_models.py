"""`genserve models` as an HTTP client of a real app: it lists what the server serves and
never opens, migrates or creates a database where it runs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from typer.testing import CliRunner

from app.cli import cli
from app.db import migrate
from app.main import create_app
from app.settings import REPO_ROOT
from tests.conftest import make_settings, wait_until_ready
from tests.tiny_models import small_pretrained

API_KEY = "cli-read-key"


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real app (migrated SQLite, registry, one worker) served by uvicorn in a thread."""
    tmp = tmp_path_factory.mktemp("server")
    settings = make_settings(
        tmp,
        pretrained_dir=small_pretrained(tmp / "pretrained"),
        default_text_model="tiny-gpt",
        default_image_model="tiny-cvae",
        runner_slots=0,
        api_keys=f"{API_KEY}:read",
    )
    migrate(settings.db_url)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the app did not start"
        time.sleep(0.05)
    with httpx.Client(base_url=url, timeout=10) as client:
        wait_until_ready(client.get)
    yield url
    server.should_exit = True
    thread.join(30)
    sock.close()


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty current directory with no database settings: only the defaults (./var)."""
    monkeypatch.chdir(tmp_path)
    for name in ("GENSERVE_STATE_DIR", "GENSERVE_DATABASE_URL", "GENSERVE_URL", "GENSERVE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_models_lists_the_server_models_and_creates_no_database(
    server_url: str, workdir: Path
) -> None:
    env = {"GENSERVE_URL": server_url, "GENSERVE_API_KEY": API_KEY, "COLUMNS": "200"}
    result = CliRunner().invoke(cli, ["models"], env=env)
    assert result.exit_code == 0, result.output
    rows = {line.split()[1]: line for line in result.output.splitlines() if "│" in line[:2]}
    assert {"sentiment", "digits", "tiny-gpt", "tiny-cvae"} <= rows.keys(), result.output
    assert "classify-cnn" in rows["digits"] and "active" in rows["digits"]
    assert "accuracy=" in rows["digits"]
    assert list(workdir.iterdir()) == []  # no ./var/genserve.db

    state = workdir / "state"
    result = CliRunner().invoke(cli, ["models"], env={**env, "GENSERVE_STATE_DIR": str(state)})
    assert result.exit_code == 0, result.output
    assert not state.exists()


def test_models_takes_url_and_api_key_options(server_url: str, workdir: Path) -> None:
    args = ["models", "--url", server_url, "--api-key", API_KEY]
    result = CliRunner().invoke(cli, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "sentiment" in result.output
    result = CliRunner().invoke(cli, ["models", "--url", server_url, "--api-key", "wrong"])
    assert result.exit_code == 1
    assert "error:" in result.output and "API key" in result.output
    assert list(workdir.iterdir()) == []


def test_the_console_script_logs_no_request_and_no_migration(
    server_url: str, workdir: Path
) -> None:
    args = [sys.executable, "-m", "app", "models", "--url", server_url, "--api-key", API_KEY]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "COLUMNS": "200"}
    done = subprocess.run(args, cwd=workdir, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "sentiment" in done.stdout
    assert "HTTP Request" not in done.stderr and "alembic" not in done.stderr, done.stderr
    assert list(workdir.iterdir()) == []
