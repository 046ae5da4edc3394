"""The S3 store round trip with real servers: GENSERVE_ARTIFACT_URL=s3://bucket/prefix on
moto's S3 server, credentials and endpoint in the standard AWS variables.

A training job publishes its artifact to the bucket (nothing under the state dir), registers
and activates it; a second replica with its own state dir and an empty cache (a node that
shares only the database and the bucket) fetches it by URL and serves it. Bytes changed in the
bucket are refused with the model and version named, and no path, URL or bucket. A worker
that already holds a version in its cache keeps serving it (the cache holds the registered
bytes, verified); a worker without it refuses the changed objects. A deleted version's
objects leave the bucket, and a restart sweeps objects no version names.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
import pytest

from tests.e2e.server import Server
from tests.e2e.test_training import submit, wait_job, wait_served
from tests.storage.conftest import S3Server
from tests.tiny_models import small_pretrained

pytestmark = pytest.mark.e2e
MODEL = "s3-ngram"
PROMPT = {"model": MODEL, "prompt": "To be", "max_new_tokens": 4, "seed": 0}


@dataclass
class Fleet:
    """Replicas sharing one database and one bucket, each with its own state dir."""

    s3: S3Server
    bucket: str
    tmp: Path
    env: dict[str, str]
    servers: list[Server] = field(default_factory=list)

    def start(self, name: str, wait: bool = True, **env: str) -> Server:
        state = self.tmp / name
        state.mkdir(exist_ok=True)
        server = Server(state, **self.env, **env)
        self.servers.append(server)
        return server.ready() if wait else server

    def fs(self) -> Any:
        return fsspec.filesystem("s3", skip_instance_cache=True, **self.s3.options())

    def job_prefix(self, job_id: int) -> str:
        return f"{self.bucket}/fleet/artifacts/{MODEL}/job-{job_id}"

    def tamper(self, job_id: int) -> None:
        """Changes the artifact's config.json in the bucket, keeping its size and manifest:
        only hashing the bytes can tell."""
        path = f"{self.job_prefix(job_id)}/config.json"
        fs = self.fs()
        config = fs.cat_file(path)
        changed = config.replace(b'"order": ', b'"order":\t', 1)
        assert changed != config and len(changed) == len(config)
        fs.pipe_file(path, changed)

    def places(self) -> list[str]:
        """What no error a client reads may contain."""
        return [str(self.tmp), self.bucket, self.s3.endpoint, "s3://", "/fleet/"]


@pytest.fixture(scope="module")
def fleet(s3: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("s3-fleet")
    bucket = s3.bucket()
    env = {
        **s3.env(),
        "GENSERVE_ARTIFACT_URL": f"s3://{bucket}/fleet",
        "GENSERVE_DATABASE_URL": f"sqlite:///{tmp / 'shared.db'}",
        "GENSERVE_PRETRAINED_DIR": str(
            small_pretrained(tmp / "pretrained", ("sentiment",), generators=False)
        ),
        "GENSERVE_JOB_HEARTBEAT_S": "0.2",
        "GENSERVE_REGISTRY_POLL_S": "0.2",
        "GENSERVE_RUNNER_THREADS": "1",
    }
    fleet = Fleet(s3, bucket, tmp, env)
    trainer = fleet.start("trainer")
    job = submit(
        trainer,
        kind="text-ngram",
        dataset="tinyshakespeare",
        name=MODEL,
        params={"order": 3},
        activate=True,
    )
    done = wait_job(trainer, job["id"])
    assert done["status"] == "succeeded", done["error"]
    yield fleet
    for server in fleet.servers:
        server.stop()


def registered(server: Server, version: int) -> dict[str, Any]:
    model = server.client.get(f"/models/{MODEL}").json()
    return next(v for v in model["versions"] if v["version"] == version)


def job_of(server: Server, version: int) -> int:
    jobs = server.client.get("/train", params={"name": MODEL}).json()["data"]
    return next(j["id"] for j in jobs if (j["model_version"] or {}).get("version") == version)


def assert_names_no_place(text: str, fleet: Fleet) -> None:
    assert not [p for p in fleet.places() if p in text], text


def test_a_trained_version_is_published_and_a_node_with_an_empty_cache_serves_it(
    fleet: Fleet,
) -> None:
    trainer = fleet.servers[0]
    assert wait_served(trainer, "/generate/text", PROMPT, 1)["version"] == 1
    sha256 = registered(trainer, 1)["sha256"]
    job_id = job_of(trainer, 1)

    # the artifact is in the bucket, manifest last, and nowhere under the state dir
    manifest = json.loads(fleet.fs().cat_file(f"{fleet.job_prefix(job_id)}/manifest.json"))
    assert manifest["sha256"] == sha256
    assert set(manifest["files"]) == {"config.json", "weights.safetensors", "README.md"}
    assert not (trainer.state_dir / "artifacts").exists()
    assert (trainer.state_dir / "artifact-cache" / sha256).is_dir()  # its worker fetched it

    node = fleet.start("node", GENSERVE_RUNNER_SLOTS="0")
    try:
        out = wait_served(node, "/generate/text", PROMPT, 1)
        assert out["choices"][0]["completion_tokens"] >= 1
        cached = node.state_dir / "artifact-cache" / sha256
        assert sorted(p.name for p in cached.iterdir()) == sorted(manifest["files"])
        model = node.client.get(f"/models/{MODEL}").json()
        assert model["active_version"] == 1 and model.get("degraded") is None
    finally:
        node.stop()


def test_changed_bytes_in_the_bucket_are_refused_by_name_and_a_cached_copy_still_serves(
    fleet: Fleet,
) -> None:
    trainer = fleet.servers[0]
    job = submit(
        trainer,
        kind="text-ngram",
        dataset="tinyshakespeare",
        name=MODEL,
        params={"order": 4},
        activate=False,
    )
    done = wait_job(trainer, job["id"])
    assert done["status"] == "succeeded", done["error"]
    assert done["model_version"]["version"] == 2

    # version 2, never fetched by any worker, changed in the bucket: activation is refused
    fleet.tamper(job["id"])
    refused = trainer.client.post(f"/models/{MODEL}/versions/2/activate")
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["code"] == "load_failed"
    assert MODEL in error["message"] and "2" in error["message"]
    reasons = list(error["details"].values())
    assert reasons and all(r.startswith(f"{MODEL} v2: ") and "sha256" in r for r in reasons)
    assert_names_no_place(refused.text, fleet)
    assert trainer.client.post("/generate/text", json=PROMPT).json()["version"] == 1

    # version 1 changed in the bucket too: a node without it in its cache refuses it ...
    fleet.tamper(job_of(trainer, 1))
    fresh = fleet.start("fresh-node", GENSERVE_RUNNER_SLOTS="0", GENSERVE_READY_REQUIRES="database")
    deadline = time.monotonic() + 60
    while (degraded := fresh.client.get(f"/models/{MODEL}").json().get("degraded")) is None:
        assert time.monotonic() < deadline, fresh.output()[-3000:]
        time.sleep(0.2)
    assert degraded["desired_version"] == 1 and degraded["served_version"] is None
    assert f"{MODEL} v1" in degraded["error"] and "sha256" in degraded["error"]
    assert_names_no_place(json.dumps(degraded), fleet)
    answer = fresh.client.post("/generate/text", json=PROMPT)
    assert answer.status_code == 503, answer.text
    assert_names_no_place(answer.text, fleet)
    fresh.stop()

    # ... while a replica that holds it in its cache serves it after a restart: the cache
    # holds the registered bytes, verified again at load
    trainer.stop()
    restarted = fleet.start("trainer")
    assert wait_served(restarted, "/generate/text", PROMPT, 1)["version"] == 1


def test_a_deleted_version_leaves_the_bucket_and_a_restart_sweeps_orphans(fleet: Fleet) -> None:
    trainer = fleet.servers[-1]  # the restarted trainer of the test above
    job_v2 = job_of(trainer, 2)
    fs = fleet.fs()
    assert fs.exists(f"{fleet.job_prefix(job_v2)}/manifest.json")
    assert trainer.client.delete(f"/models/{MODEL}/versions/2").status_code == 204
    fs.invalidate_cache()
    assert not fs.exists(f"{fleet.job_prefix(job_v2)}/manifest.json")
    assert not fs.exists(f"{fleet.job_prefix(job_v2)}/config.json")

    # what a crash between a delete's commit and the bucket's delete leaves: objects no
    # version names (here under a job that never existed); the next start removes them
    job_v1 = job_of(trainer, 1)
    orphan = fleet.job_prefix(9999)
    for name in fs.ls(fleet.job_prefix(job_v1), detail=False):
        fs.copy(name, f"{orphan}/{name.rsplit('/', 1)[1]}")
    fs.invalidate_cache()
    assert fs.exists(f"{orphan}/manifest.json")
    trainer.stop()
    restarted = fleet.start("trainer", GENSERVE_SWEEP_GRACE_S="0")
    fs.invalidate_cache()
    assert not fs.exists(f"{orphan}/manifest.json") and not fs.exists(f"{orphan}/config.json")
    assert fs.exists(f"{fleet.job_prefix(job_v1)}/manifest.json")
    assert wait_served(restarted, "/generate/text", PROMPT, 1)["version"] == 1
