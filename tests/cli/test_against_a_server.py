"""The `genserve` command as a new user meets it (issue 19): the real command in a subprocess,
against a real `genserve serve`, in an empty directory, at 80 and 100 columns.

Quiet (no line per HTTP request or migration step without -v), a parameter error that names
each field and its bound, tables that fit 80 columns, `--json` for scripts, a progress bar
that keeps its shape on a terminal, `train --activate --follow` returning once the new
version is served, and `models activate` / `models rollback` switching what is served.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from app.settings import REPO_ROOT
from tests.cli.tty import genserve_on_a_tty
from tests.e2e.server import Server
from tests.reliability.conftest import start_server

pytestmark = pytest.mark.e2e

MODEL = "cli-sentiment"  # trained twice by `trained`: v1, then v2
TRAIN = ("train", "classify-logreg", "--dataset", "sentiment", "--name", MODEL)
ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # colours, cursor moves, line erasing
TIME = re.compile(r"\b\d+:\d\d:\d\d\b")  # the elapsed-time column, whole


@dataclass
class Followed:
    """One `train --activate --follow` on a terminal, and the model right after it exited."""

    columns: int
    code: int
    output: str
    model: dict[str, Any]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp("cli") / "state",
        GENSERVE_REGISTRY_POLL_S="0.2",
        GENSERVE_JOB_HEARTBEAT_S="0.2",
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def trained(server: Server, tmp_path_factory: pytest.TempPathFactory) -> list[Followed]:
    """MODEL trained twice with `--activate --follow`, at 100 then 80 columns."""
    cwd = tmp_path_factory.mktemp("tty")
    runs = []
    for columns in (100, 80):
        code, output = on_a_tty(cwd, columns, *TRAIN, "--activate", "--follow", url=server.url)
        model = server.client.get(f"/models/{MODEL}").json()  # at once: no poll in between
        runs.append(Followed(columns, code, output, model))
    return runs


@pytest.fixture
def empty(tmp_path: Path) -> Path:
    """The current directory of every command: it must stay empty."""
    return tmp_path


def genserve(
    cwd: Path, *args: str, url: str, columns: int = 80, **env: str
) -> subprocess.CompletedProcess[str]:
    """The console script's code path (`python -m app`), no terminal, COLUMNS wide, with no
    database settings: a command that opened one would create ./var."""
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("GENSERVE_") and k not in ("LINES", "NO_COLOR")
    }
    environ |= {"PYTHONPATH": str(REPO_ROOT), "COLUMNS": str(columns), "GENSERVE_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=cwd,
        env=environ | env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def on_a_tty(cwd: Path, columns: int, *args: str, url: str) -> tuple[int, str]:
    """`genserve ARGS` on a pseudo-terminal `columns` wide: exit code and all it wrote."""
    env = {"GENSERVE_URL": url}
    return genserve_on_a_tty(*args, cwd=cwd, columns=columns, rows=40, env=env, timeout=300)


def frames(output: str) -> list[str]:
    """Every state a terminal line went through: the bar redraws its line after a `\\r`."""
    text = ESCAPES.sub("", output)
    return [f.rstrip() for line in text.split("\n") for f in line.split("\r") if f.strip()]


def table_rows(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("│")]


def version_states(stdout: str) -> dict[int, str]:
    """MODEL's versions in the `models` table: version -> state (active, pending, served)."""
    cells = [[c.strip() for c in row.split("│")[1:-1]] for row in table_rows(stdout)]
    return {int(c[1]): c[2] for c in cells if c[0] == MODEL}


# quiet


def test_no_request_or_migration_lines_without_verbose(server: Server, empty: Path) -> None:
    for args in (["models"], ["jobs"], ["datasets"], ["jobs", "kinds"]):
        done = genserve(empty, *args, url=server.url)
        assert done.returncode == 0, done.stderr
        everything = done.stdout + done.stderr
        assert "HTTP Request:" not in everything and "alembic" not in everything, everything
        assert done.stderr == ""
    loud = genserve(empty, "-v", "models", url=server.url)
    assert loud.returncode == 0, loud.stderr
    assert f'HTTP Request: GET {server.url}/models "HTTP/1.1 200 OK"' in loud.stderr
    assert list(empty.iterdir()) == []  # no ./var, no .db


def test_migrations_log_one_line_unless_verbose(server: Server, empty: Path) -> None:
    assert "alembic" not in server.output()  # `serve` migrated an empty database
    assert "genserve.migrate database migrated from empty to " in server.output()
    state = {"GENSERVE_STATE_DIR": str(empty / "state")}
    done = genserve(empty, "migrate", url=server.url, **state)
    assert done.returncode == 0, done.stderr
    assert "alembic" not in done.stdout + done.stderr
    assert "database migrated from empty to " in done.stderr
    assert "database at " in done.stdout
    again = genserve(empty, "migrate", url=server.url, **state)
    assert "migrated" not in again.stderr  # nothing changed, nothing logged
    loud = genserve(empty, "-v", "migrate", "0001", "--downgrade", url=server.url, **state)
    assert loud.returncode == 0, loud.stderr
    assert "alembic.runtime.migration Running downgrade" in loud.stderr


# errors


def test_a_parameter_error_lists_each_field_and_its_bound(server: Server, empty: Path) -> None:
    params = ("-p", "lr=5", "-p", "max_steps=0", "-p", "tokenizer=xx", "-p", "colour=1")
    args = ("train", "text-gpt", "-d", "tinyshakespeare", "-n", "cli-refused", *params)
    done = genserve(empty, *args, url=server.url)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "error: invalid params for text-gpt",
        "  params.max_steps: Input should be greater than or equal to 1 (got 0)",
        "  params.lr: Input should be less than or equal to 1 (got 5)",
        "  params.tokenizer: Input should be 'char' or 'bpe' (got \"xx\")",
        "  params.colour: Extra inputs are not permitted (got 1)",
    ]
    assert server.client.get("/train", params={"name": "cli-refused"}).json()["count"] == 0


# tables and JSON


def test_tables_fit_80_columns_one_line_a_row(
    server: Server, trained: list[Followed], empty: Path
) -> None:
    models = server.client.get("/models").json()["data"]
    kinds = server.client.get("/train/kinds").json()["data"]
    expected_rows = {
        ("models",): sum(len(m["versions"]) for m in models),
        ("jobs",): server.client.get("/train").json()["count"],
        ("datasets",): server.client.get("/datasets").json()["count"],
        ("jobs", "kinds"): len(kinds),
    }
    for args, rows in expected_rows.items():
        done = genserve(empty, *args, url=server.url)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert max(map(len, lines)) <= 80, done.stdout
        assert len(table_rows(done.stdout)) == rows, done.stdout  # none wrapped
    kinds_list = genserve(empty, "jobs", "kinds", url=server.url).stdout
    assert len(kinds_list.splitlines()) <= len(kinds) + 6, kinds_list
    detail = genserve(empty, "jobs", "kinds", "text-gpt", url=server.url)
    assert detail.returncode == 0, detail.stderr
    assert max(map(len, detail.stdout.splitlines())) <= 80, detail.stdout
    assert "lr: number = 0.001 (0..1]" in detail.stdout
    assert "vocab_size: integer = 2048 [257..65536]" in detail.stdout


def test_listing_commands_print_json(server: Server, trained: list[Followed], empty: Path) -> None:
    def records(*args: str) -> Any:
        done = genserve(empty, *args, "--json", url=server.url, columns=20)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)  # whole: no table, colour or wrapping at 20 columns

    models = {m["name"]: m for m in records("models")}
    assert {v["version"] for v in models[MODEL]["versions"]} == {1, 2}
    assert [m["name"] for m in records("models", "list")] == list(models)  # placements move
    jobs = records("jobs", "--name", MODEL)
    assert [j["status"] for j in jobs] == ["succeeded", "succeeded"]
    datasets = records("datasets")
    assert "sentiment" in {d["name"] for d in datasets}
    kinds = records("jobs", "kinds")
    assert "classify-logreg" in {k["kind"] for k in kinds}
    gpt = records("jobs", "kinds", "text-gpt")
    assert gpt["kind"] == "text-gpt" and "lr" in {p["name"] for p in gpt["params"]}


# following and switching versions


@pytest.mark.parametrize("run", [0, 1], ids=["100 columns", "80 columns"])
def test_follow_with_activate_returns_once_the_new_version_is_served(
    trained: list[Followed], run: int
) -> None:
    followed = trained[run]
    version = run + 1
    assert followed.code == 0, followed.output
    assert "HTTP Request:" not in followed.output
    model = followed.model
    assert (model["active_version"], model["served_version"]) == (version, version)
    shown = frames(followed.output)
    assert shown[-1] == f"{MODEL} v{version} is served by {model['replica']}", shown
    bars = [f for f in shown if "━" in f]
    assert bars, shown
    for bar in bars:  # every redraw: one line, status, whole bar, percent and time
        assert len(bar) <= followed.columns, bar
        assert re.search(r"job \d+ (queued|running|succeeded)", bar), bar
        assert bar.count("━") >= 20 and re.search(r"\d+%", bar) and TIME.search(bar), bar


def test_rollback_and_activate_switch_the_served_version(
    server: Server, trained: list[Followed], empty: Path
) -> None:
    def served() -> int:
        body = {"model": MODEL, "inputs": ["what a great film"]}
        return server.client.post("/classify", json=body).json()["version"]

    assert served() == 2
    done = genserve(empty, "models", "rollback", MODEL, url=server.url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{MODEL} v2 -> v1, served by ")
    assert served() == 1  # the answer came once this (only) replica served v1
    states = version_states(genserve(empty, "models", url=server.url).stdout)
    assert (states[1], states[2]) == ("active", "")

    nothing = genserve(empty, "models", "rollback", MODEL, url=server.url)
    assert nothing.returncode == 1
    assert f"error: {MODEL} has no version below v1: nothing to roll back to" in nothing.stderr

    done = genserve(empty, "models", "activate", MODEL, "2", url=server.url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{MODEL} v1 -> v2, served by ")
    assert served() == 2
    missing = genserve(empty, "models", "activate", MODEL, "9", url=server.url)
    assert missing.returncode == 1 and "has no version 9" in missing.stderr
    assert list(empty.iterdir()) == []
