"""The CLI never lets a stored string act on the terminal: rows written before names were
checked (or by another client of the database) may hold escape sequences and rich markup.

A real server, rows put straight into its database as an old version would have left them,
and the real `genserve` command on a pseudo-terminal, colours on: the only escape sequences
that reach the terminal are the CLI's own colours, and the hostile text shows escaped.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.db import Database
from app.tables import Dataset, Model, ModelVersion, TrainingJob
from tests.cli.tty import genserve_on_a_tty
from tests.e2e.server import Server
from tests.reliability.conftest import start_server

# clears the screen, retitles the window, rings, reverses the line, and rich markup
HOSTILE = "\x1b[2Jwiped\x1b]0;pwned\x07[bold red]MARKUP[/]\u202eevil\x9b31m"
SHOWN = ("\\x1b[2Jwiped", "\\x1b]0;pwned\\x07", "[bold red]MARKUP[/]", "\\u202eevil", "\\x9b31m")
SGR = re.compile(r"\x1b\[[0-9;]*m")  # the CLI's own colours and styles


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, int]]:
    """A server whose database holds a hostile dataset, model version and failed job."""
    srv = start_server(tmp_path_factory.mktemp("tty") / "state", GENSERVE_RUNNER_SLOTS="0")
    db = Database(f"sqlite:///{srv.state_dir / 'genserve.db'}")
    try:
        with db.session() as session:
            dataset = Dataset(
                name=HOSTILE,
                kind="text",
                format="txt",
                sha256="e" * 64,
                size_bytes=1,
                path="datasets/old.txt",
                num_records=1,
                meta={"labels": [HOSTILE]},
                builtin=False,
            )
            model = Model(name=HOSTILE, task="classification", description=HOSTILE)
            session.add_all([dataset, model])
            session.flush()
            session.add(
                ModelVersion(
                    model_id=model.id,
                    version=1,
                    kind="text-tfidf",
                    artifact_path="artifacts/old",
                    sha256="0" * 64,
                    size_bytes=0,
                    metrics={f"{HOSTILE}loss": 0.5},
                    config={},
                    source="trained",
                    is_active=False,
                )
            )
            job = TrainingJob(
                kind="text-ngram",
                name=HOSTILE,
                dataset_id=dataset.id,
                status="failed",
                error=f"ValueError: {HOSTILE}",
                metrics={f"{HOSTILE}loss": 1.0},
            )
            session.add(job)
            session.flush()
            job_id = job.id
    finally:
        db.dispose()
    yield srv, job_id
    srv.stop()


@pytest.mark.e2e
@pytest.mark.parametrize(
    "command",
    [("datasets",), ("datasets", "show", "1"), ("models",), ("jobs",), ("jobs", "show", "JOB")],
)
def test_stored_strings_show_escaped_on_a_terminal(
    server: tuple[Server, int], command: tuple[str, ...]
) -> None:
    srv, job_id = server
    if command[-1] == "1":
        datasets = srv.client.get("/datasets").json()["data"]
        command = (*command[:-1], str(next(d["id"] for d in datasets if d["name"] == HOSTILE)))
    command = tuple(str(job_id) if part == "JOB" else part for part in command)
    code, output = genserve_on_a_tty(*command, "--url", srv.url)
    assert code == 0, output
    assert "\x1b[" in output, "colours are on: the terminal is a real one"
    visible = SGR.sub("", output)
    for raw in ("\x1b", "\x07", "\u202e", "\x9b"):
        assert raw not in visible, f"{raw!r} reached the terminal:\n{output!r}"
    for escaped in SHOWN:
        assert escaped in visible, f"{escaped!r} not shown:\n{visible}"


def test_the_pty_harness_sees_raw_bytes(tmp_path: Path) -> None:
    """The check above can fail: a raw ESC written to the terminal does come back as one."""
    script = tmp_path / "raw.py"
    script.write_text("print('\\x1b[2J')")
    master, slave = os.openpty()
    subprocess.run([sys.executable, str(script)], stdout=slave, check=True)
    os.close(slave)
    assert b"\x1b[2J" in os.read(master, 1024)
    os.close(master)
