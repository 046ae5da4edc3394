"""Fine-tuning and lineage against a real server and runner (SQLite and PostgreSQL): a job
trains a tiny GPT, a second starts from its weights (`from`), and GET /models shows the new
version's parent, job and dataset; the job's metrics, its last history row, the version's
metrics and its model card show one validation loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.e2e.test_training import start, submit, wait_job
from tests.tiny_models import TINY_GPT_PARAMS


def test_a_fine_tune_starts_from_its_parent_and_records_its_lineage(
    db_url: str, tmp_path: Path
) -> None:
    srv = start(tmp_path, GENSERVE_DATABASE_URL=db_url)
    try:
        params = {**TINY_GPT_PARAMS, "max_steps": 24, "eval_every": 8}
        base = {"kind": "text-gpt", "dataset": "tinyshakespeare"}
        parent = wait_job(srv, submit(srv, **base, name="ft-base", params=params)["id"])
        assert parent["status"] == "succeeded", parent["error"]
        val_loss = parent["metrics"]["val_loss"]
        assert val_loss < np.log(65)
        # one number: the job's metrics, its last history row, the version, its model card
        assert parent["history"][-1]["values"]["val_loss"] == val_loss
        model = srv.client.get("/models/ft-base").json()
        first = model["versions"][0]
        assert first["metrics"]["val_loss"] == val_loss
        card = Path(srv.state_dir) / "artifacts" / "ft-base" / f"job-{parent['id']}" / "README.md"
        assert f"- val_loss: {val_loss}\n" in card.read_text()
        assert (first["parent"], first["job_id"], first["dataset_name"]) == (
            None,
            parent["id"],
            "tinyshakespeare",
        )
        assert first["dataset_sha256"]

        # a learning rate too small to move the weights: the fine-tune scores as its parent
        tuned = {"max_steps": 1, "lr": 1e-9, "batch_size": params["batch_size"]}
        body = {
            **base,
            "name": "ft-child",
            "params": tuned,
            "from": {"model": "ft-base", "version": 1},
        }
        child = wait_job(srv, submit(srv, **body)["id"])
        assert child["status"] == "succeeded", child["error"]
        assert child["params"]["n_embd"] == TINY_GPT_PARAMS["n_embd"]  # the parent's
        assert abs(child["metrics"]["val_loss"] - val_loss) < 0.01
        version = srv.client.get("/models/ft-child").json()["versions"][0]
        assert version["parent"] == {"model": "ft-base", "version": 1}
        assert version["job_id"] == child["id"]
        assert (version["dataset_name"], version["dataset_sha256"]) == (
            "tinyshakespeare",
            first["dataset_sha256"],
        )
        assert version["metrics"]["val_loss"] == child["metrics"]["val_loss"]

        # patience: the best evaluation is the one registered, and every view agrees
        stop = {"max_steps": 400, "eval_every": 2, "lr": 1.0, "warmup_steps": 0, "patience": 2}
        body = {
            **base,
            "name": "ft-early",
            "params": stop,
            "from": {"model": "ft-base", "version": 1},
        }
        early = wait_job(srv, submit(srv, **body)["id"])
        assert early["status"] == "succeeded", early["error"]
        assert early["stopped_reason"] == "early_stopping"
        rows = [r["values"] for r in early["history"]]
        best = min(rows, key=lambda r: r["val_loss"])
        assert early["metrics"]["best_step"] == best["step"] < rows[-1]["step"] < 400
        assert early["metrics"]["val_loss"] == best["val_loss"] == rows[-1]["best_val_loss"]
        version = srv.client.get("/models/ft-early").json()["versions"][0]
        assert version["metrics"]["val_loss"] == best["val_loss"]
        assert version["metrics"]["stopped_reason"] == "early_stopping"
    finally:
        srv.stop()
