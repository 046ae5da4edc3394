"""The whole service killed at once (API, workers and runner, as when the machine dies) while
a training job runs and an upload is being stored; then started again on the same state dir
and database, SQLite and PostgreSQL.

After the restart: no partial dataset is registered nor left in the spool dir; every stored
dataset hashes to its sha256; the job, whose runner died with the machine, is reclaimed once
its heartbeat is older than GENSERVE_JOB_STALE_AFTER_S, resumes from its checkpoint and
registers exactly one version whose artifact matches its sha256; no job stays running.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from models.artifacts import artifact_digest
from tests.e2e.server import Server
from tests.reliability.conftest import start_server
from tests.tiny_models import TINY_GPT_PARAMS, small_pretrained

pytestmark = pytest.mark.e2e
NAME = "crash-gpt"
PARAMS = {
    **TINY_GPT_PARAMS,
    "max_steps": 1000,
    "eval_every": 100,  # a checkpoint every 100 steps
}


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (workers, runners, multiprocessing's helpers)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo.extend(children.get(tree[-1], []))
    return tree


def crash(srv: Server) -> None:
    """Freezes every process of the service, then SIGKILLs them: nobody cleans up."""
    tree = process_tree(srv.process.pid)
    assert len(tree) >= 3, tree  # the API, a worker, a runner
    for pid in tree:
        os.kill(pid, signal.SIGSTOP)
    for pid in tree:
        os.kill(pid, signal.SIGKILL)
    srv.process.wait()
    srv.client.close()


def wait_job(srv: Server, job_id: int, done: Any, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = srv.client.get(f"/train/{job_id}").json()
        if done(job):
            return job
        time.sleep(0.1)
    pytest.fail(f"job {job_id} stuck at {job}:\n{srv.output()[-3000:]}")


def upload_until_spooling(srv: Server, tmp: Path) -> threading.Thread:
    """Starts a 64 MB upload; returns once the server is writing it into its spool dir."""
    spool = Path(srv.state_dir) / "datasets" / "tmp"
    corpus = tmp / "big.txt"
    corpus.write_bytes(b"To be, or not to be, that is the question.\n" * 1_500_000)

    def send() -> None:
        try:
            with corpus.open("rb") as f, httpx.Client(base_url=srv.url, timeout=60) as client:
                client.post("/datasets", files={"file": ("big.txt", f)})
        except httpx.HTTPError:
            pass  # the server died under it

    thread = threading.Thread(target=send)
    thread.start()
    deadline = time.monotonic() + 60
    while not (spool.is_dir() and any(spool.iterdir())):
        assert time.monotonic() < deadline and thread.is_alive(), "the upload never spooled"
        time.sleep(0.002)
    return thread


def check_datasets(srv: Server) -> list[dict[str, Any]]:
    """Every registered upload's file is complete, and nothing else is half-written."""
    root = Path(srv.state_dir)
    datasets = srv.client.get("/datasets").json()["data"]
    for dataset in (d for d in datasets if not d["builtin"]):
        data = (root / "datasets" / f"{dataset['sha256']}.{dataset['format']}").read_bytes()
        assert hashlib.sha256(data).hexdigest() == dataset["sha256"]
        assert len(data) == dataset["size_bytes"]
    for stored in (root / "datasets").glob("*.*"):  # content-addressed: complete or absent
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == stored.name.split(".")[0]
    assert not list((root / "datasets" / "tmp").iterdir()), "a partial upload was left behind"
    return datasets


def test_a_killed_service_restarts_consistent(db_url: str, tmp_path: Path) -> None:
    state = tmp_path / "state"
    pretrained = small_pretrained(tmp_path / "pretrained", generators=False)
    env = {
        "GENSERVE_DATABASE_URL": db_url,
        "GENSERVE_JOB_HEARTBEAT_S": "0.2",
        "GENSERVE_JOB_STALE_AFTER_S": "2",
        "GENSERVE_REGISTRY_POLL_S": "0.2",
    }
    srv = start_server(state, pretrained, **env)
    try:
        body = {"kind": "text-gpt", "dataset": "tinyshakespeare", "name": NAME, "params": PARAMS}
        job = srv.client.post("/train", json=body).json()
        running = wait_job(srv, job["id"], lambda j: j["status"] == "running" and j["history"])
        datasets_before = srv.client.get("/datasets").json()["count"]
        uploading = upload_until_spooling(srv, tmp_path)
        crash(srv)
        uploading.join()
    finally:
        srv.stop()
    # A crash inside save_artifact leaves its temporary directory: the resumed job removes it.
    leftover = state / "artifacts" / NAME / f".job-{job['id']}.x1y2z3.tmp"
    leftover.mkdir(parents=True)
    (leftover / "config.json").write_text('{"half": ')

    srv = start_server(state, pretrained, **env)
    try:
        assert len(check_datasets(srv)) == datasets_before
        done = wait_job(srv, job["id"], lambda j: j["status"] in ("succeeded", "failed"))
        assert done["status"] == "succeeded", done["error"]
        assert done["attempts"] == 2 and done["history"][-1]["step"] == PARAMS["max_steps"]
        assert done["runner_id"] != running["runner_id"]  # reclaimed from the dead runner
        assert f"resuming job {job['id']} from its checkpoint" in srv.output()
        assert srv.client.get("/train", params={"status": "running"}).json()["count"] == 0

        model = srv.client.get(f"/models/{NAME}").json()
        assert [v["version"] for v in model["versions"]] == [1]
        artifacts = state / "artifacts" / NAME
        assert [p.name for p in artifacts.iterdir()] == [f"job-{job['id']}"]
        sha256, size = artifact_digest(artifacts / f"job-{job['id']}")
        assert (sha256, size) == (
            model["versions"][0]["sha256"],
            model["versions"][0]["size_bytes"],
        )
        assert not (state / "jobs" / str(job["id"])).exists()
    finally:
        srv.stop()
