"""A real S3-compatible server for the storage tests: moto's, in a subprocess on a free port.

moto[server] installs from PyPI, speaks S3's HTTP API (the same botocore/aiobotocore requests
s3fs sends to AWS), and starts in about a second, so every run gets a fresh, empty one.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.server import free_port

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "genserve-test", "AWS_SECRET_ACCESS_KEY": "genserve-test"}


@dataclass(frozen=True)
class S3Server:
    endpoint: str

    def env(self) -> dict[str, str]:
        """How a process finds the server: the standard variables botocore reads."""
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint, "AWS_DEFAULT_REGION": "us-east-1"}

    def options(self) -> dict[str, Any]:
        """The same as fsspec storage options (GENSERVE_ARTIFACT_STORAGE_OPTIONS)."""
        return {
            "endpoint_url": self.endpoint,
            "key": CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "secret": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        }

    def bucket(self) -> str:
        """A new, empty bucket."""
        import fsspec

        name = f"genserve-{uuid.uuid4().hex[:12]}"
        fsspec.filesystem("s3", skip_instance_cache=True, **self.options()).mkdir(name)
        return name


@pytest.fixture(scope="package")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    pytest.importorskip("s3fs", reason="s3fs is not installed (pip install 'genserve[s3]')")
    pytest.importorskip("moto.server", reason="moto[server] is not installed (the test extra)")
    port = free_port()
    log_path: Path = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log_path, "w+") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        endpoint = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None:
                    log.seek(0)
                    pytest.fail(f"moto's server exited:\n{log.read()}")
                try:
                    if httpx.get(f"{endpoint}/moto-api/", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail("moto's server did not answer within 60 s")
                time.sleep(0.1)
            yield S3Server(endpoint)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
