"""Two real replicas (`genserve serve` processes) on one database, and a sampler that asks
each of them, every 50 ms, which version of a model answers."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from app.db import Database, downgrade, migrate
from app.services import versions
from app.settings import PRETRAINED_DIR
from models.artifacts import artifact_digest
from tests.e2e.server import Server
from tests.tiny_models import small_pretrained

MODEL = "sentiment"  # the smallest committed default: a replica starts in seconds
BODY = {"model": MODEL, "inputs": ["what a lovely day"]}
SAMPLE_S = 0.05


def fresh_database(url: str) -> None:
    """An empty, migrated database, so the replicas' own migrations have nothing to do."""
    if url.startswith("postgresql"):
        downgrade(url, "base")
    migrate(url)


def start_replicas(
    root: Path, url: str, names: tuple[str, ...] = ("a", "b"), **env: str
) -> list[Server]:
    """Starts every replica at once on `url` (`env`: more settings), then waits for each to
    be ready."""
    pretrained = small_pretrained(root / "pretrained", names=(MODEL,), generators=False)
    servers = []
    for name in names:
        state = root / name
        state.mkdir(parents=True)
        servers.append(
            Server(
                state,
                GENSERVE_DATABASE_URL=url,
                GENSERVE_PRETRAINED_DIR=str(pretrained),
                GENSERVE_REPLICA_ID=name,
                GENSERVE_REGISTRY_POLL_S="0.2",
                GENSERVE_RUNNER_SLOTS="0",
                GENSERVE_THREADS_PER_WORKER="1",
                GENSERVE_MAX_WAIT_MS="0",
                **env,
            )
        )
    for server in servers:
        server.ready()
    return servers


def add_version(
    url: str, replicas: list[Server], relative: str, source: Path = PRETRAINED_DIR / MODEL
) -> int:
    """Registers a copy of the artifact at `source` (the committed sentiment one) as the next,
    inactive version of its model; its files go to `relative` under each of `replicas`' state
    dirs."""
    for server in replicas:
        shutil.copytree(source, server.state_dir / relative)
    sha256, size = artifact_digest(source)
    config = json.loads((source / "config.json").read_text())
    db = Database(url)
    try:
        with db.session() as session:
            version = versions.register_trained(
                session,
                name=config["name"],
                task=config["task"],
                kind=config["kind"],
                artifact_path=relative,
                sha256=sha256,
                size=size,
                params={},
                config=config,
                dataset_id=None,
                activate=False,
            )
            return version.version
    finally:
        db.dispose()


class Sampler:
    """Asks each replica for the served version every 50 ms, in a thread per replica."""

    def __init__(self, replicas: list[Server]) -> None:
        self.samples: dict[str, list[tuple[float, int]]] = {s.url: [] for s in replicas}
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(s.url,), daemon=True) for s in replicas
        ]

    def _run(self, url: str) -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            while not self._stop.is_set():
                response = client.post("/classify", json=BODY)
                if response.status_code == 200:
                    self.samples[url].append((time.monotonic(), response.json()["version"]))
                self._stop.wait(SAMPLE_S)

    def __enter__(self) -> Sampler:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def longest_flap_ms(self) -> float:
        """The longest time any replica answered with a version older than one it had
        already answered with (0 when versions never go backwards)."""
        longest = 0.0
        for samples in self.samples.values():
            newest, since = 0, None
            for t, version in samples:
                if version > newest:
                    newest, since = version, None
                elif version < newest:
                    since = since if since is not None else t
                    longest = max(longest, (t - since) * 1000 + SAMPLE_S * 1000)
                else:
                    since = None
        return longest


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
