"""`genserve` run on a pseudo-terminal, as a user's shell runs it: colours, widths, redraws."""

from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

from app.settings import REPO_ROOT


def genserve_on_a_tty(
    *args: str,
    cwd: Path = REPO_ROOT,
    columns: int = 400,
    rows: int = 50,
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> tuple[int, str]:
    """Runs `genserve ARGS` with a pseudo-terminal `columns` wide as its stdin, stdout and
    stderr; its exit code and everything it wrote (raw bytes, decoded)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    environ = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    environ |= {"TERM": "xterm-256color", "PYTHONIOENCODING": "utf-8"}
    environ |= {"PYTHONPATH": str(REPO_ROOT), **(env or {})}
    process = subprocess.Popen(
        [sys.executable, "-m", "app", *args],
        cwd=cwd,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=environ,
        close_fds=True,
    )
    os.close(slave)
    output = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
        code = process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
        os.close(master)
    return code, output.decode("utf-8", errors="replace")
