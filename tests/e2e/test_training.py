"""Training over HTTP against a real server: one job per modality served right after,
activation and its sha256 check, cancellation, and a runner killed mid-job (SQLite and
PostgreSQL) that resumes from its checkpoint."""

from __future__ import annotations

import base64
import io
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from models.artifacts import artifact_digest
from tests.e2e.server import Server
from tests.tiny_models import TINY_GPT_PARAMS, small_pretrained

pytestmark = pytest.mark.e2e
TERMINAL = ("succeeded", "failed", "cancelled")


def start(tmp: Path, **env: str) -> Server:
    return Server(
        tmp,
        GENSERVE_PRETRAINED_DIR=str(
            small_pretrained(tmp / "pretrained", ("sentiment",), generators=False)
        ),
        GENSERVE_JOB_HEARTBEAT_S="0.2",
        GENSERVE_REGISTRY_POLL_S="0.2",
        GENSERVE_RUNNER_THREADS="1",
        **env,
    ).ready()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start(tmp_path_factory.mktemp("e2e-train"))
    yield srv
    srv.stop()


def submit(srv: Server, **body: Any) -> dict[str, Any]:
    response = srv.client.post("/train", json=body)
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/train/{job['id']}"
    assert job["status"] == "queued"
    return job


def wait_job(srv: Server, job_id: int, until: Any = TERMINAL, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = srv.client.get(f"/train/{job_id}").json()
        if (job["status"] in until) if isinstance(until, tuple) else until(job):
            return job
        time.sleep(0.1)
    pytest.fail(f"job {job_id} stuck at {job}:\n{srv.output()[-3000:]}")


def wait_served(srv: Server, path: str, body: dict[str, Any], version: int) -> dict[str, Any]:
    """Activation reaches the workers within a registry poll; wait for that version."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        response = srv.client.post(path, json=body)
        if response.status_code == 200 and response.json()["version"] == version:
            return response.json()
        time.sleep(0.1)
    pytest.fail(f"{body.get('model')} v{version} never served: {response.text}")


def verify_artifact(srv: Server, state: Path, name: str, version: int) -> None:
    model = srv.client.get(f"/models/{name}").json()
    row = next(v for v in model["versions"] if v["version"] == version)
    job = srv.client.get("/train", params={"name": name, "status": "succeeded"}).json()["data"]
    job_id = next(j["id"] for j in job if j["model_version"]["version"] == version)
    sha256, size = artifact_digest(state / "artifacts" / name / f"job-{job_id}")
    assert (sha256, size) == (row["sha256"], row["size_bytes"])


def test_text_job_trains_then_serves(server: Server) -> None:
    params = {**TINY_GPT_PARAMS, "max_steps": 30, "eval_every": 10}
    job = submit(
        server,
        kind="text-gpt",
        dataset="tinyshakespeare",
        name="e2e-gpt",
        params=params,
        activate=True,
    )
    done = wait_job(server, job["id"])
    assert done["status"] == "succeeded", done["error"]
    assert done["progress"] == 1.0
    assert done["model_version"] == {"name": "e2e-gpt", "version": 1}
    assert [row["step"] for row in done["history"]] == [10, 20, 30]
    assert done["metrics"]["val_loss"] < np.log(65)  # better than uniform over 65 chars
    assert done["params"]["lr"] == 1e-3  # defaults filled in and recorded

    out = wait_served(
        server,
        "/generate/text",
        {"model": "e2e-gpt", "prompt": "ROMEO:", "max_new_tokens": 8, "seed": 1},
        1,
    )
    assert out["choices"][0]["completion_tokens"] == 8
    model = server.client.get("/models/e2e-gpt").json()
    assert model["active_version"] == 1 and model["workers"] == [0]
    assert model["versions"][0]["metrics"]["val_loss"] == done["metrics"]["val_loss"]
    verify_artifact(server, Path(server.state_dir), "e2e-gpt", 1)


def test_bpe_job_on_an_uploaded_utf8_corpus_serves_characters_it_never_saw(
    server: Server, tmp_path: Path
) -> None:
    lines = ["Ça va? «Très bien», dit-elle — naïve.", "Zoë’s café: crème brûlée 🍮 ×3."]  # noqa: RUF001 (the point: characters outside ASCII)
    (tmp_path / "corpus.txt").write_text("\n".join(lines * 200) + "\n", encoding="utf-8")
    with (tmp_path / "corpus.txt").open("rb") as f:
        uploaded = server.client.post("/datasets", files={"file": ("corpus.txt", f)})
    assert uploaded.status_code == 201, uploaded.text
    template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}<assistant>"
    bad = {"kind": "text-gpt", "dataset": uploaded.json()["id"], "name": "e2e-bad-template"}
    refused = server.client.post("/train", json={**bad, "params": {"chat_template": "{% if %}"}})
    assert refused.status_code == 422 and "chat_template" in refused.text
    params = {
        **TINY_GPT_PARAMS,
        "max_steps": 20,
        "eval_every": 10,
        "tokenizer": "bpe",
        "vocab_size": 300,
        "chat_template": template,
        "chat_stop": "\n",
    }
    job = submit(
        server,
        kind="text-gpt",
        dataset=uploaded.json()["id"],
        name="e2e-bpe",
        params=params,
        activate=True,
    )
    done = wait_job(server, job["id"])
    assert done["status"] == "succeeded", done["error"]
    assert done["metrics"]["val_nats_per_char"] > 0
    unseen = "日本語 👋 Ωμέγα ✓"  # none of these characters is in the corpus
    body = {"model": "e2e-bpe", "prompt": unseen, "max_new_tokens": 6, "seed": 1}
    out = wait_served(server, "/generate/text", body, 1)
    assert out["choices"][0]["completion_tokens"] == 6
    scored = server.client.post("/score", json={"model": "e2e-bpe", "text": unseen}).json()
    assert "".join(t["token"] for t in scored["tokens"]) == unseen
    chat = server.client.post(
        "/v1/chat/completions",
        json={"model": "e2e-bpe", "messages": [{"role": "user", "content": unseen}], "seed": 2},
    )
    assert chat.status_code == 200, chat.text
    # the job's template made the prompt: "<user>" + text + "\n<assistant>", 1 line reply
    assert "\n" not in chat.json()["choices"][0]["message"]["content"]


def test_image_job_trains_a_conditional_generator(server: Server) -> None:
    params = {"epochs": 2, "latent_dim": 4, "hidden": 32, "batch_size": 128}
    job = submit(
        server, kind="image-vae", dataset="digits", name="e2e-cvae", params=params, activate=True
    )
    done = wait_job(server, job["id"])
    assert done["status"] == "succeeded", done["error"]
    assert [row["step"] for row in done["history"]] == [12, 24]  # 1,437 images / 128
    out = wait_served(
        server, "/generate/image", {"model": "e2e-cvae", "n": 2, "label": 3, "seed": 0}, 1
    )
    assert (out["width"], out["height"]) == (8, 8)
    assert [img["label"] for img in out["images"]] == [3, 3]
    png = Image.open(io.BytesIO(base64.b64decode(out["images"][0]["png_base64"])))
    assert png.size == (8, 8)


def test_classifier_job_on_an_uploaded_csv(server: Server, tmp_path: Path) -> None:
    good = ["great fun", "lovely and good", "good film", "really great", "so good", "fun fun"]
    bad = ["awful", "boring and bad", "bad film", "really awful", "so bad", "dull dull"]
    rows = ["text,label"] + [f"{t},good" for t in good * 3] + [f"{t},bad" for t in bad * 3]
    (tmp_path / "reviews.csv").write_text("\n".join(rows) + "\n")
    with (tmp_path / "reviews.csv").open("rb") as f:
        uploaded = server.client.post("/datasets", files={"file": ("reviews.csv", f)})
    assert uploaded.status_code == 201, uploaded.text
    dataset = uploaded.json()
    assert dataset["kind"] == "labelled-text" and dataset["meta"]["labels"] == ["bad", "good"]

    job = submit(
        server,
        kind="classify-logreg",
        dataset=dataset["id"],
        name="e2e-clf",
        params={"min_df": 1},
        activate=True,
    )
    done = wait_job(server, job["id"])
    assert done["status"] == "succeeded", done["error"]
    assert done["metrics"]["test_accuracy"] >= 0.8
    body = {"model": "e2e-clf", "inputs": ["so good and great", "awful and dull"]}
    out = wait_served(server, "/classify", body, 1)
    assert [r["label"] for r in out["results"]] == ["good", "bad"]


def test_activation_switches_versions_and_refuses_tampered_artifacts(server: Server) -> None:
    for order in (3, 4):
        job = submit(
            server,
            kind="text-ngram",
            dataset="tinyshakespeare",
            name="e2e-ngram",
            params={"order": order},
            activate=order == 3,
        )
        assert wait_job(server, job["id"])["status"] == "succeeded"
    body = {"model": "e2e-ngram", "prompt": "To be", "max_new_tokens": 4, "seed": 0}
    wait_served(server, "/generate/text", body, 1)
    model = server.client.get("/models/e2e-ngram").json()
    assert model["active_version"] == 1 and len(model["versions"]) == 2

    # Requests keep flowing while the new version loads: none fails, old then new answers.
    statuses: list[tuple[int, int | None]] = []
    done = threading.Event()

    def traffic() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            while not done.is_set():
                r = client.post("/generate/text", json=body)
                statuses.append((r.status_code, r.json().get("version")))

    thread = threading.Thread(target=traffic)
    thread.start()
    time.sleep(0.3)
    activated = server.client.post("/models/e2e-ngram/versions/2/activate")
    time.sleep(0.3)
    done.set()
    thread.join()
    assert activated.status_code == 200, activated.text
    assert activated.json()["active_version"] == 2
    assert {code for code, _ in statuses} == {200}
    assert statuses[0][1] == 1 and statuses[-1][1] == 2
    assert server.client.post("/generate/text", json=body).json()["version"] == 2

    # Version 1's bytes change on disk: it must not be served again.
    jobs = server.client.get("/train", params={"name": "e2e-ngram"}).json()["data"]
    v1_job = next(j["id"] for j in jobs if j["model_version"]["version"] == 1)
    config = Path(server.state_dir) / "artifacts" / "e2e-ngram" / f"job-{v1_job}" / "config.json"
    config.write_text(config.read_text().replace('"order": 3', '"order": 3 '))
    refused = server.client.post("/models/e2e-ngram/versions/1/activate")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "artifact_mismatch"
    assert server.client.post("/generate/text", json=body).json()["version"] == 2
    missing = server.client.post("/models/e2e-ngram/versions/9/activate")
    assert missing.status_code == 404


def test_cancel_queued_and_running_jobs(server: Server) -> None:
    params = {**TINY_GPT_PARAMS, "max_steps": 1_000_000, "eval_every": 1000}
    running = submit(
        server, kind="text-gpt", dataset="tinyshakespeare", name="e2e-long", params=params
    )
    wait_job(server, running["id"], lambda j: j["status"] == "running" and j["progress"] > 0)
    queued = submit(server, kind="text-ngram", dataset="tinyshakespeare", name="e2e-never")
    cancelled = server.client.post(f"/train/{queued['id']}/cancel").json()
    assert cancelled["status"] == "cancelled"

    asked = server.client.post(f"/train/{running['id']}/cancel")
    assert asked.status_code == 200 and asked.json()["cancel_requested"] is True
    done = wait_job(server, running["id"], timeout=30)
    assert done["status"] == "cancelled" and done["model_version"] is None
    assert server.client.post(f"/train/{running['id']}/cancel").status_code == 409
    assert not (Path(server.state_dir) / "jobs" / str(running["id"])).exists()
    assert server.client.get("/models/e2e-long").status_code == 404


def test_runner_killed_mid_job_resumes_from_its_checkpoint(db_url: str, tmp_path: Path) -> None:
    srv = start(tmp_path, GENSERVE_DATABASE_URL=db_url)
    try:
        params = {**TINY_GPT_PARAMS, "max_steps": 3000, "eval_every": 100}
        job = submit(
            srv,
            kind="text-gpt",
            dataset="tinyshakespeare",
            name="e2e-crash",
            params=params,
            activate=True,
        )
        running = wait_job(
            srv, job["id"], lambda j: j["status"] == "running" and len(j["history"]) >= 2
        )
        pid = int(running["runner_id"].split(":")[1])
        os.kill(pid, signal.SIGKILL)

        done = wait_job(srv, job["id"])
        assert done["status"] == "succeeded", done["error"]
        assert done["attempts"] == 2
        assert done["history"][-1]["step"] == 3000
        assert f"resuming job {job['id']} from its checkpoint" in srv.output()
        verify_artifact(srv, tmp_path, "e2e-crash", 1)
        body = {"model": "e2e-crash", "prompt": "A", "max_new_tokens": 4, "seed": 0}
        wait_served(srv, "/generate/text", body, 1)
    finally:
        srv.stop()


def test_a_job_past_the_time_limit_stops_and_registers_what_it_trained(tmp_path: Path) -> None:
    """GENSERVE_JOB_MAX_SECONDS=3: a GPT job asked for ten million steps ends in seconds,
    succeeded, with a servable version and the reason in its metrics."""
    srv = start(tmp_path, GENSERVE_JOB_MAX_SECONDS="3")
    try:
        params = {**TINY_GPT_PARAMS, "max_steps": 10_000_000, "eval_every": 50}
        job = submit(
            srv, kind="text-gpt", dataset="tinyshakespeare", name="e2e-capped", params=params
        )
        began = time.monotonic()
        done = wait_job(srv, job["id"], timeout=90)
        assert time.monotonic() - began < 60
        assert done["status"] == "succeeded", done["error"]
        reason = "time limit (GENSERVE_JOB_MAX_SECONDS=3)"
        assert done["stopped_reason"] == reason
        assert done["metrics"]["stopped_reason"] == reason
        assert len(done["history"]) < 10_000_000 // 50  # (on a slow machine, maybe none)
        assert done["model_version"] == {"name": "e2e-capped", "version": 1}
        model = srv.client.get("/models/e2e-capped").json()
        assert model["versions"][0]["metrics"]["stopped_reason"] == reason
        verify_artifact(srv, tmp_path, "e2e-capped", 1)
        activated = srv.client.post("/models/e2e-capped/versions/1/activate")
        assert activated.status_code == 200, activated.text
        body = {"model": "e2e-capped", "prompt": "ROMEO:", "max_new_tokens": 4, "seed": 0}
        assert wait_served(srv, "/generate/text", body, 1)["choices"][0]["completion_tokens"] == 4
    finally:
        srv.stop()
