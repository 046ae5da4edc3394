"""A real `genserve serve` in a subprocess, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from app.settings import REPO_ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, state_dir: Path, access_log: bool = False, **env: str) -> None:
        self.state_dir = state_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(state_dir / "server.log", "w+")  # noqa: SIM115
        environ = {
            **os.environ,
            "GENSERVE_STATE_DIR": str(state_dir),
            "GENSERVE_PORT": str(self.port),
            "GENSERVE_WORKERS": "1",
            "GENSERVE_DEVICE": "cpu",
            **env,
        }
        if "GENSERVE_DATABASE_URL" not in env:
            environ.pop("GENSERVE_DATABASE_URL", None)  # the state dir's SQLite file
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app",
                "serve",
                "--access-log" if access_log else "--no-access-log",
            ],
            cwd=REPO_ROOT,
            env=environ,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def ready(self, timeout: float = 120) -> Server:
        """Waits for /readyz 200; a server that never gets there fails the test with its log."""
        import pytest

        from tests.conftest import wait_until_ready

        def get(path: str) -> httpx.Response:
            if self.process.poll() is not None:  # exited: no point waiting for it
                raise TimeoutError(f"the server exited with code {self.process.returncode}")
            return self.client.get(path)

        try:
            wait_until_ready(get, timeout=timeout)
        except TimeoutError:
            self.stop()
            pytest.fail(f"server never became ready:\n{self.output()}")
        return self

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> int:
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(
                    f"the server did not stop within 20 s of SIGTERM:\n{self.output()[-4000:]}"
                ) from None
        return self.process.returncode


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")
