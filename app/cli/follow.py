"""Following a job from the CLI: its progress until it ends, then (with --activate) until
the server answers with the version it produced. Both wait out a briefly unavailable server
rather than abandon a long job."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from app.cli import render
from app.cli.render import console
from app.client import ClientError, GenserveClient

POLL_INTERVAL_S = 0.5  # how often `train --follow` asks for the job
POLL_RETRIES = 20  # consecutive transient failures a follower waits out (about 10 s)
SERVE_TIMEOUT_S = 600.0  # how long `train --activate --follow` waits for the version to serve
FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})


def wait_served(client: GenserveClient, job_id: int | str) -> int:
    """Polls GET /models/{name} until the replica answering serves the job's version: the
    job's end only means the version is desired, and a request before this would get the old
    one. Says why meanwhile, if the replica reports itself degraded."""
    produced = poll(client, job_id).get("model_version") or {}
    name, version = produced.get("name"), produced.get("version")
    if name is None or version is None:
        console.print(render.safe(f"job {job_id} registered no version to serve"), markup=False)
        return 1
    deadline = time.monotonic() + SERVE_TIMEOUT_S
    reported = None
    while time.monotonic() < deadline:
        model = retrying(client.get_model, name)
        if model.get("served_version") == version:
            served = f"{name} v{version} is served by {model.get('replica')}"
            console.print(render.safe(served), markup=False)
            return 0
        if model.get("active_version") != version:
            console.print(
                render.safe(
                    f"{name} v{version} is no longer the active version "
                    f"(v{model.get('active_version')} is); not waiting for it"
                ),
                markup=False,
            )
            return 1
        degraded = model.get("degraded")
        if degraded and degraded.get("error") != reported:
            reported = degraded.get("error")
            console.print(
                render.safe(
                    f"{model.get('replica')} still serves v{degraded.get('served_version')}: "
                    f"{reported}; it retries"
                ),
                markup=False,
            )
        time.sleep(POLL_INTERVAL_S)
    late = f"{name} v{version} was not served within {SERVE_TIMEOUT_S:g} s"
    console.print(render.safe(late), markup=False)
    return 1


def follow_job(client: GenserveClient, job: dict[str, Any]) -> int:
    """Polls the job into a progress bar; Ctrl-C stops following, never the job."""
    job_id = job["id"]
    progress = render.job_progress()
    task = progress.add_task("", total=1.0, metrics="")
    render.show_job_progress(progress, task, job)  # before the first frame: never a blank one
    try:
        with progress:
            while True:
                render.show_job_progress(progress, task, job)
                if job["status"] in FINAL_STATUSES:
                    break
                time.sleep(POLL_INTERVAL_S)
                job = poll(client, job_id)
    except KeyboardInterrupt:
        console.print(
            f"stopped following job {job_id}; it keeps running on the server. "
            f"Cancel it with `genserve jobs cancel {job_id}`",
            markup=False,
        )
        return 130
    render.print_outcome(job)
    return 0 if job["status"] == "succeeded" else 1


def poll(client: GenserveClient, job_id: int | str) -> dict[str, Any]:
    """Waits out a restarting or busy server for a while rather than abandon a long job."""
    return retrying(client.get_job, job_id)


def retrying(call: Callable[[Any], dict[str, Any]], arg: Any) -> dict[str, Any]:
    """`call(arg)`, retried through POLL_RETRIES transient failures in a row."""
    failures = 0
    while True:
        try:
            return call(arg)
        except ClientError as exc:
            failures += 1
            if not exc.transient or failures >= POLL_RETRIES:
                raise
            time.sleep(POLL_INTERVAL_S)
