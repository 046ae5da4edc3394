"""The README's lifecycle walk-through, run command by command against real servers.

The commands come from the README itself (the block after the `lifecycle` marker), so the
README cannot drift from what works: train, fine-tune, alias, canary, promote, roll back,
export, import into a second deployment, delete. Only the ports and the second state dir are
swapped for the test's own.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx

from app.settings import REPO_ROOT
from tests.conftest import wait_until_ready
from tests.e2e.server import Server, free_port
from tests.tiny_models import small_pretrained

MARKER = "<!-- lifecycle: run line by line by tests/e2e/test_readme_lifecycle.py -->"
# what some commands must print, beyond exiting 0
EXPECT = {
    "models show my-gpt": "parent my-gpt v1",
    '"model": "my-gpt@staging"': '"version":2',
    "models traffic my-gpt 1=90": "v2 10%",
    "models activate my-gpt 2": "my-gpt v1 -> v2",
    "models rollback my-gpt": "my-gpt v2 -> v1",
}


def readme_commands() -> list[str]:
    """The walk-through's commands, continuation lines joined."""
    text = (REPO_ROOT / "README.md").read_text()
    block = text.split(MARKER, 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    return [c.strip() for c in block.replace("\\\n", " ").splitlines() if c.strip()]


def test_the_readme_lifecycle_walk_through_runs(tmp_path: Path) -> None:
    commands = readme_commands()
    assert len(commands) >= 12 and any("--from" in c for c in commands)
    first = tmp_path / "first"
    first.mkdir()
    server = Server(
        first,
        GENSERVE_PRETRAINED_DIR=str(small_pretrained(tmp_path / "pretrained", names=())),
        GENSERVE_DEFAULT_TEXT_MODEL="tiny-gpt",
        GENSERVE_DEFAULT_IMAGE_MODEL="tiny-cvae",
        GENSERVE_RUNNER_SLOTS="1",
        GENSERVE_THREADS_PER_WORKER="1",
        GENSERVE_RUNNER_THREADS="1",
    ).ready()
    second_port = free_port()
    second_url = f"http://127.0.0.1:{second_port}"
    env = {
        **os.environ,
        "GENSERVE_URL": server.url,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "GENSERVE_PRETRAINED_DIR": str(tmp_path / "pretrained"),
        "GENSERVE_DEFAULT_TEXT_MODEL": "tiny-gpt",
        "GENSERVE_DEFAULT_IMAGE_MODEL": "tiny-cvae",
    }
    env.pop("GENSERVE_DATABASE_URL", None)
    background: list[subprocess.Popen[bytes]] = []
    try:
        for command in commands:
            line = (
                command.replace("localhost:8000", server.url.removeprefix("http://"))
                .replace("http://127.0.0.1:8001", second_url)
                .replace("GENSERVE_PORT=8001", f"GENSERVE_PORT={second_port}")
                .replace("var/second", str(tmp_path / "second"))
            )
            if line.endswith("&"):  # the second deployment
                log = open(tmp_path / "second.log", "w")  # noqa: SIM115
                background.append(
                    subprocess.Popen(
                        ["bash", "-c", line.removesuffix("&")],
                        cwd=tmp_path,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
                with httpx.Client(base_url=second_url, timeout=5) as client:
                    wait_until_ready(client.get)
                continue
            done = subprocess.run(
                ["bash", "-c", line],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            output = done.stdout + done.stderr
            assert done.returncode == 0, f"{command}\n{output}\n{server.output()[-3000:]}"
            for needle, expected in EXPECT.items():
                if needle in command:
                    assert expected in re.sub(r"\s+", " ", output), f"{command}\n{output}"

        mine = server.client.get("/models/my-gpt").json()
        assert [v["version"] for v in mine["versions"]] == [1]
        assert mine["active_version"] == 1 and mine["aliases"] == {}
        with httpx.Client(base_url=second_url) as client:
            theirs = client.get("/models/my-gpt").json()
        (imported,) = theirs["versions"]
        assert theirs["active_version"] == imported["version"]
        assert imported["source"] == "imported" and imported["parent"] == {
            "model": "my-gpt",
            "version": 1,
        }
    finally:
        for process in background:
            process.terminate()
            process.wait(30)
        server.stop()
